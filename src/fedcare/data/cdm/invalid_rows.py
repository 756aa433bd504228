"""Invalid rows of a site's table: which rows a study may leave out, and their counts by reason.

A row is *invalid* when it cannot be read (a CSV line with more fields than the header, an
unreadable DICOM file: the loaders count these in ``frame.attrs["unreadable_rows"]``) or when
one of its values fails the data check (:func:`fedcare.data.cdm.check_table`: a value that is
not a number or a date, out of range, an unmapped code, a non-integer or non-boolean). A row
with several bad values counts once, under the first by variable name. Missing values are not
invalid (the data check's ``max_missing`` judges them).

Only counts per reason are kept (:class:`fedcare.records.invalid_rows.InvalidRows`): no row
number and no value, so they may leave the site (a reply's ``info["invalid_rows"]``, the
site's audit log, the report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fedcare.data.loaders.base import UNREADABLE_ATTR, UNREADABLE_FILE, UNREADABLE_LINE
from fedcare.records.invalid_rows import InvalidRows

if TYPE_CHECKING:
    import pandas as pd

    from fedcare.data.cdm.harmonize import Problem

__all__ = [
    "UNREADABLE_ATTR",
    "UNREADABLE_FILE",
    "UNREADABLE_LINE",
    "InvalidRows",
    "invalid_row_reasons",
    "unreadable_counts",
    "without_invalid_rows",
]

_REASON = {
    "type-error": "unparseable value",
    "out-of-range": "out-of-range value",
    "unmapped-code": "unmapped code",
    "not-integer": "non-integer value",
    "not-boolean": "non-boolean value",
}


def invalid_row_reasons(problems: Iterable[Problem]) -> dict[int, str]:
    """Row number -> the reason of its first bad value (``"unparseable value in 'age'"``)."""
    reasons: dict[int, str] = {}
    for p in sorted(problems, key=lambda p: (p.row, p.variable)):
        if p.row not in reasons:
            reasons[p.row] = f"{_REASON.get(p.kind, p.kind)} in {p.variable!r}"
    return reasons


def unreadable_counts(frame: pd.DataFrame) -> dict[str, int]:
    """What the loader of ``frame`` could not read, by reason (empty: everything read)."""
    counts = frame.attrs.get(UNREADABLE_ATTR) or {}
    return {str(k): int(v) for k, v in counts.items() if int(v) > 0}


def without_invalid_rows(
    raw: pd.DataFrame, problems: Iterable[Problem]
) -> tuple[pd.DataFrame, InvalidRows]:
    """``raw`` without the rows that hold a bad value (``problems`` of its data check, rows
    numbered by position), and what was left out by reason, the unreadable records included.
    The table returned counts no unreadable record any more (they are in the counts)."""
    reasons = invalid_row_reasons(problems)
    unreadable = unreadable_counts(raw)
    invalid = InvalidRows.of(
        len(raw) + sum(unreadable.values()), Counter(reasons.values()), unreadable, skipped=True
    )
    kept = raw.drop(index=raw.index[sorted(reasons)]).reset_index(drop=True)
    kept.attrs = {k: v for k, v in raw.attrs.items() if k != UNREADABLE_ATTR}
    return kept, invalid
