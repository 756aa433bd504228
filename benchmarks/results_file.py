"""Write a benchmark's rows (DESIGN.md: a JSON list of result rows) and say where."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write ``rows`` to ``path`` as indented JSON (creating its folder) and print the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
