"""The site's own privacy ledger: every epsilon spend on each dataset, kept in its state folder.

One SQLite file (``<state_dir>/privacy_ledger.sqlite``, stdlib ``sqlite3``) holds one row per
(study id, round, dataset): the study's name, the round's DP events as JSON (the ``private``
mode's noise share and/or the site's own DP-SGD) and the dataset's epsilon after it. The
epsilon of a dataset composes ALL its events, across studies, in one RDP accountant at
:data:`~fedcare.privacy.budget.LEDGER_DELTA` (see :mod:`fedcare.privacy.budget`).

:meth:`SiteLedger.spend` checks and records in ONE write transaction, so two tasks cannot both
pass the check on the last bit of budget, and it is idempotent per (study id, round, dataset):
a retried task (the coordinator retries a failed round with the same round number) finds its
row and spends nothing more. A spend is recorded when the task is accepted, before training:
a task that then fails still counts (conservative: its noise may already have left the site).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fedcare.aggregation.private_sum import site_round_event
from fedcare.errors import ConfigError
from fedcare.models.task_config import SPEC_KEYS, TASK_KEYS, spec_from_config
from fedcare.privacy.accounting.analysis import DpEvent, event_from_dict
from fedcare.privacy.budget import LEDGER_DELTA, LEDGER_METHOD, check_budget
from fedcare.privacy.dp_sgd import CONFIG_KEYS as DP_SGD_KEYS
from fedcare.records.messages import Task
from fedcare.site.sqlite_tx import transaction

__all__ = [
    "LEDGER_FILE",
    "DatasetBudget",
    "SiteLedger",
    "Spend",
    "SpendDecision",
    "task_events",
]

LEDGER_FILE = "privacy_ledger.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    study_id TEXT NOT NULL,
    study TEXT NOT NULL,
    round INTEGER NOT NULL,
    events TEXT NOT NULL,
    epsilon_after REAL NOT NULL,
    recorded_at TEXT NOT NULL,
    UNIQUE (study_id, round, dataset)
)
"""
_COLUMNS = "dataset, study_id, study, round, events, epsilon_after, recorded_at"


@dataclass(frozen=True)
class Spend:
    """One recorded spend: a round of a study on a dataset."""

    dataset: str
    study_id: str
    study: str
    round: int
    events: tuple[DpEvent, ...]
    epsilon_after: float
    recorded_at: datetime


@dataclass(frozen=True)
class SpendDecision:
    """What :meth:`SiteLedger.spend` decided: recorded, already recorded, or refused."""

    ok: bool
    already: bool
    dataset: str
    spent: float
    after: float
    cap: float | None
    studies: int

    @property
    def remaining(self) -> float | None:
        """Budget left after this decision (None without a cap)."""
        if self.cap is None:
            return None
        return max(0.0, self.cap - (self.after if self.ok else self.spent))

    def reason(self) -> str:
        """A refusal's reason, for the coordinator's operator."""
        return (
            f"dataset {self.dataset}: this round would bring epsilon to {self.after:.3g} "
            f"(cap {self.cap:g}; spent {self.spent:.3g} across {self.studies} "
            f"{'study' if self.studies == 1 else 'studies'})"
        )


@dataclass(frozen=True)
class DatasetBudget:
    """A dataset's line in the ledger: epsilon spent, studies and rounds that spent it."""

    dataset: str
    epsilon: float
    studies: int
    rounds: int


def _row(values: tuple[object, ...]) -> Spend:
    dataset, study_id, study, rnd, events, eps, at = values
    data = json.loads(str(events))
    return Spend(
        dataset=str(dataset),
        study_id=str(study_id),
        study=str(study),
        round=int(str(rnd)),
        events=tuple(
            event_from_dict(e, what=f"ledger {study_id} round {rnd} events[{i}]")
            for i, e in enumerate(data)
        ),
        epsilon_after=float(str(eps)),
        recorded_at=datetime.fromisoformat(str(at)),
    )


class SiteLedger:
    """The privacy ledger of one site (one SQLite file)."""

    def __init__(
        self, path: Path, *, delta: float = LEDGER_DELTA, method: str = LEDGER_METHOD
    ) -> None:
        self.path = Path(path)
        self.delta, self.method = delta, method
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as db:
            db.execute(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SiteLedger:
        return cls(Path(state_dir) / LEDGER_FILE)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path)

    @staticmethod
    def _spends(db: sqlite3.Connection, dataset: str | None) -> list[Spend]:
        where, args = ("WHERE dataset = ?", (dataset,)) if dataset is not None else ("", ())
        rows = db.execute(f"SELECT {_COLUMNS} FROM spends {where} ORDER BY id", args)
        return [_row(r) for r in rows.fetchall()]

    def spends(self, dataset: str | None = None) -> list[Spend]:
        """Recorded spends (of ``dataset``, or all), oldest first."""
        with self._tx() as db:
            return self._spends(db, dataset)

    def spent(self, dataset: str) -> float:
        """Epsilon spent on ``dataset`` so far (0.0 when nothing was)."""
        events = [e for s in self.spends(dataset) for e in s.events]
        return check_budget(events, [], None, delta=self.delta, method=self.method).spent

    def summary(self) -> list[DatasetBudget]:
        """One line per dataset, by name."""
        by_dataset: dict[str, list[Spend]] = {}
        for s in self.spends():
            by_dataset.setdefault(s.dataset, []).append(s)
        return [
            DatasetBudget(name, rows[-1].epsilon_after, len({r.study_id for r in rows}), len(rows))
            for name, rows in sorted(by_dataset.items())
        ]

    def spend(
        self,
        dataset: str,
        *,
        study_id: str,
        study: str,
        round: int,
        events: Sequence[DpEvent],
        cap: float | None,
        now: datetime | None = None,
    ) -> SpendDecision:
        """Record ``events`` for (``study_id``, ``round``, ``dataset``) unless over ``cap``.

        A spend already recorded for that key is not recorded again (``already=True``, ok).
        Refused spends change nothing.
        """
        with self._tx() as db:
            past = self._spends(db, dataset)
            studies = len({s.study_id for s in past})
            mine = [s for s in past if s.study_id == study_id and s.round == round]
            history = [e for s in past for e in s.events]
            if mine:
                eps = check_budget(history, [], cap, delta=self.delta, method=self.method).spent
                return SpendDecision(True, True, dataset, eps, eps, cap, studies)
            check = check_budget(history, events, cap, delta=self.delta, method=self.method)
            if check.ok:
                at = (now or datetime.now(timezone.utc)).isoformat()
                payload = json.dumps([e.to_dict() for e in events], sort_keys=True)
                db.execute(
                    f"INSERT INTO spends ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (dataset, study_id, study, round, payload, check.after, at),
                )
            return SpendDecision(check.ok, False, dataset, check.spent, check.after, cap, studies)


def task_events(task: Task, num_rows: int | None) -> list[DpEvent]:
    """The DP events a ``fit`` task spends, computed before it runs.

    The ``private`` mode's noise share (from the task's pipeline, see
    :func:`fedcare.aggregation.private_sum.site_round_event`) and the site's DP-SGD (from the
    task config and the dataset's ``num_rows``). Empty for other tasks and without DP.

    Raises
    ------
    ValidationError
        For a malformed pipeline entry; ConfigError for bad DP-SGD settings or DP-SGD on a
        dataset whose row count is unknown.
    """
    if task.kind != "fit":
        return []
    events: list[DpEvent] = []
    shared = site_round_event(task.pipeline)
    if shared is not None:
        events.append(shared)
    known = (*SPEC_KEYS, *TASK_KEYS, *DP_SGD_KEYS)  # not the secure-aggregation stage keys
    spec = spec_from_config({k: v for k, v in task.config.items() if k in known})
    if spec.dp is not None:
        if not num_rows:
            dataset = task.plan.get("dataset")
            raise ConfigError(f"dataset {dataset!r}: row count unknown, cannot account DP-SGD")
        events.append(spec.dp.event(num_rows, spec))
    return events
