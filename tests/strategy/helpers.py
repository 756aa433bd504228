"""A grid whose sites answer with fixed updates: hand-computable strategy tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedcare.records import ArrayRecord, Reply, Task
from fedcare.transport.inmemory import InMemoryGrid


def fixed_site(update: Mapping[str, object], n: int) -> Callable[[Task], Reply]:
    """A site that replies to fit tasks with ``update`` and ``n`` samples, to evaluate with n."""

    def handle(task: Task) -> Reply:
        if task.kind == "evaluate":
            return Reply(
                task.study_id,
                task.round,
                task.site_id,
                "evaluate",
                num_samples=n,
                metrics={"accuracy": 0.5, "n": float(n)},
            )
        return Reply(
            task.study_id,
            task.round,
            task.site_id,
            "fit",
            arrays=ArrayRecord(update),
            num_samples=n,
        )

    return handle


def fixed_grid(
    updates: Mapping[str, tuple[list[float], int]], *, record: bool = False
) -> InMemoryGrid:
    return InMemoryGrid(
        {s: fixed_site({"w": np.array(u, dtype=np.float64)}, n) for s, (u, n) in updates.items()},
        record=record,
    )


PARAMS = ArrayRecord({"w": np.zeros(2)})
