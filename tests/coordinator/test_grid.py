"""The coordinator's grid gives every task a finite deadline, the study's by default."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from fedcare.coordinator import CoordinatorStore
from fedcare.coordinator.grid import CoordinatorGrid
from fedcare.coordinator.hub import Hub
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task

from .helpers import running_study


@pytest.mark.parametrize(("timeout", "expected_s"), [(None, 123.0), (7.5, 7.5)])
def test_tasks_sent_without_a_timeout_get_the_default_deadline(
    store: CoordinatorStore, timeout: float | None, expected_s: float
) -> None:
    sid = running_study(store, "A")
    grid = CoordinatorGrid(store, store.artifacts, Hub(), sid, "d", default_timeout=123.0)
    task = Task(
        study_id=sid, round=1, site_id="A", kind="fit", params=ArrayRecord({"w": np.zeros(2)})
    )
    sent = datetime.now(timezone.utc)
    # Site A offers no dataset "d": the grid stops waiting for it at once.
    assert list(grid.send_and_receive([task], timeout=timeout)) == []
    [row] = store.list_tasks(sid, 1)
    assert row.deadline is not None
    deadline = row.deadline if row.deadline.tzinfo else row.deadline.replace(tzinfo=timezone.utc)
    waited = (deadline - sent).total_seconds()
    assert expected_s - 5 < waited < expected_s + 5, waited
