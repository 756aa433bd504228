"""A study that may skip invalid rows: the site's handler of a dataset, by the task's plan.

A study's ``dataset.skip_invalid_rows: {max_fraction: 0.05}`` travels in its plan's ``data``
section (hashed: the steward approves it, :mod:`fedcare.records.plan`). For a task whose plan
carries it, the site runs the task on the dataset prepared with ``skip_invalid=True``
(:meth:`fedcare.site.config.DatasetEntry.prepared`, built on the first such task and kept):
rows that cannot be read or hold a value failing the data check are left out, counted by
reason (:class:`fedcare.data.cdm.invalid_rows.InvalidRows`). Every reply then carries the counts
in ``info["invalid_rows"]`` (JSON: rows, invalid, skipped, reasons; no row number, no value),
which the audit log records as ``rows-skipped`` (:func:`fedcare.site.mods.audit_mod`) and the
coordinator keeps in the round record's ``site_info``. Above ``max_fraction`` the task fails
(``invalid-rows``) naming the count and the fraction, its reply carrying the same counts with
``skipped: false``.

Without the option the dataset is prepared as before: rows the loader cannot read fail the
data check with their count (``data-check-failed``); values failing the schema's checks are set
missing, within the schema's ``max_invalid``, and above it fail the check with their count.
Analytics tasks carry no training plan, so they always read the dataset as prepared without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from fedcare.records.invalid_rows import InvalidRows
from fedcare.records.messages import Reply, Task
from fedcare.site.config import DatasetEntry, PreparedDataset

__all__ = ["INVALID_ROWS", "INVALID_ROWS_INFO", "InvalidRowsHandler", "max_skip_fraction"]

#: The error kind of a task failed because too many rows are invalid.
INVALID_ROWS = "invalid-rows"
#: The reply's info key holding the counts (:meth:`InvalidRows.to_info`).
INVALID_ROWS_INFO = "invalid_rows"

Handler = Callable[[Task], Reply]


def max_skip_fraction(plan: Mapping[str, Any]) -> float | None:
    """The plan's ``data.skip_invalid_rows.max_fraction``; ``None`` when it allows no skipping."""
    data = plan.get("data")
    skip = data.get("skip_invalid_rows") if isinstance(data, Mapping) else None
    fraction = skip.get("max_fraction") if isinstance(skip, Mapping) else None
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        return None
    return float(fraction)


class InvalidRowsHandler:
    """One dataset's handler: ``strict`` for tasks whose plan allows no skipping, the handler
    ``skipping()`` builds (with the counts of the rows it left out) for the others."""

    def __init__(
        self,
        dataset: str,
        strict: Handler,
        skipping: Callable[[], tuple[Handler, InvalidRows]],
    ) -> None:
        self.dataset = dataset
        self.strict = strict
        self._build = skipping
        self._skipping: tuple[Handler, InvalidRows] | None = None

    @classmethod
    def for_entry(
        cls, dataset: str, entry: DatasetEntry, app: Callable[[PreparedDataset], Handler]
    ) -> InvalidRowsHandler:
        """The handler of ``entry``: ``app`` of the dataset prepared now, and of the dataset
        prepared with ``skip_invalid=True`` on the first task whose plan allows skipping."""

        def skipping() -> tuple[Handler, InvalidRows]:
            prepared = entry.prepared(skip_invalid=True)
            assert prepared.invalid is not None
            return app(prepared), prepared.invalid

        return cls(dataset, app(entry.prepared()), skipping)

    def __call__(self, task: Task) -> Reply:
        max_fraction = max_skip_fraction(task.plan)
        if max_fraction is None or task.kind == "analytics":
            return self.strict(task)
        if self._skipping is None:
            self._skipping = self._build()
        handler, invalid = self._skipping
        if invalid.fraction > max_fraction:
            message = (
                f"dataset {self.dataset!r}: {invalid.count} of {invalid.rows} rows are invalid "
                f"({invalid.fraction:.1%}), more than the {max_fraction:.1%} the study's plan "
                f"allows to skip (dataset.skip_invalid_rows.max_fraction): "
                f"{invalid.reasons_text()}"
            )
            failed = Reply.failure(task, INVALID_ROWS, message)
            counts = replace(invalid, skipped=False).to_info()
            return replace(failed, info={**failed.info, INVALID_ROWS_INFO: counts})
        reply = handler(task)
        return replace(reply, info={**reply.info, INVALID_ROWS_INFO: invalid.to_info()})
