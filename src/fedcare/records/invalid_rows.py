"""Counts of a site table's invalid rows, by reason: what may leave the site about them.

:mod:`fedcare.data.cdm.invalid_rows` finds the rows (unreadable records, values failing the
data check); this is the plain record of their counts that a reply carries as JSON in
``info["invalid_rows"]`` (:mod:`fedcare.site.row_skips`), the site's audit log records and the
report shows. No row number, no value: only how many rows, and how many per reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcare.errors import DataError

__all__ = ["InvalidRows", "invalid_rows_by_site"]


@dataclass(frozen=True)
class InvalidRows:
    """How many of a table's ``rows`` were invalid, by reason, and whether they were skipped."""

    rows: int
    reasons: Mapping[str, int] = field(default_factory=dict)
    skipped: bool = False

    @classmethod
    def of(cls, rows: int, *counts: Mapping[str, int], skipped: bool) -> InvalidRows:
        total: Counter[str] = Counter()
        for c in counts:
            total.update(c)
        return cls(rows, dict(sorted(total.items())), skipped)

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    @property
    def fraction(self) -> float:
        return self.count / self.rows if self.rows else 0.0

    def reasons_text(self) -> str:
        return ", ".join(f"{reason}: {n}" for reason, n in self.reasons.items())

    def describe(self) -> str:
        """``"12 of 240 rows (5.0%): unparseable value in 'age': 12"``."""
        return f"{self.count} of {self.rows} rows ({self.fraction:.1%}): {self.reasons_text()}"

    def sentence(self, site: str) -> str:
        """``"hospital-a skipped 12 of 240 rows (unparseable value in 'age': 12)"``."""
        verb = "skipped" if self.skipped else "failed on"
        reasons = f" ({self.reasons_text()})" if self.reasons else ""
        return f"{site} {verb} {self.count} of {self.rows} rows{reasons}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "invalid": self.count,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
        }

    def to_info(self) -> str:
        """The reply's ``info["invalid_rows"]`` (JSON of :meth:`to_dict`: counts only)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_info(cls, text: str) -> InvalidRows:
        """Read :meth:`to_info`; ``DataError`` if it is not such counts."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"invalid_rows info is not row counts: {text[:80]!r}") from err
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> InvalidRows:
        """Read :meth:`to_dict`; ``DataError`` if it is not such counts."""
        try:
            reasons = {str(k): int(v) for k, v in dict(data["reasons"]).items()}
            return cls(int(data["rows"]), reasons, bool(data["skipped"]))
        except (ValueError, TypeError, KeyError) as err:
            raise DataError(f"invalid_rows info is not row counts: {str(data)[:80]!r}") from err


def invalid_rows_by_site(history: Iterable[Mapping[str, Any]]) -> dict[str, InvalidRows]:
    """The last counts each site reported with an aggregated update (round records'
    ``fit.site_info[site]["invalid_rows"]``, as ``RoundRecord.to_dict()``); unreadable counts
    are left out."""
    out: dict[str, InvalidRows] = {}
    for record in history:
        fit = record.get("fit") or {}
        for site, info in (fit.get("site_info") or {}).items():
            text = info.get("invalid_rows") if isinstance(info, Mapping) else None
            if isinstance(text, str):
                try:
                    out[str(site)] = InvalidRows.from_info(text)
                except DataError:
                    continue
    return dict(sorted(out.items()))
