"""Cells and Markdown tables for ``tables.py`` and ``tables_repeated.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Row", "cell", "interval_cell", "one_run_cell", "table"]

Row = Mapping[str, Any]


def _num(value: float) -> str:
    """3 decimals; large numbers with thousands separators, tiny ones in 2 significant digits."""
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.2g}"
    return f"{value:.3f}"


def cell(row: Row, show_n: bool) -> str:
    if row["mean"] is None:
        return "n/a"
    text = f"{_num(row['mean'])} ± {_num(row['sd'])}"
    return f"{text} (n={row['n']})" if show_n else text


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, body)]


def interval_cell(row: Row) -> str:
    if row["mean"] is None:
        return "n/a"
    if row.get("lo") is not None and row.get("hi") is not None:
        return f"{row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"
    return f"{row['mean']:.3f} ± {row['sd']:.3f}"


def one_run_cell(row: Row) -> str:
    return f"{row['mean']:.3f}" if row["n"] == 1 else interval_cell(row)
