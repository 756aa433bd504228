"""Authorization matrix, part 3: sites, models, analytics, ledger, audit (see matrix_core.py)."""

from __future__ import annotations

from .helpers import Api
from .matrix_core import SIGNED_IN, V1

EXPECTED: dict[tuple[str, str], dict[str | None, int]] = {
    ("GET", f"{V1}/sites"): SIGNED_IN,
}


def fill(api: Api) -> dict[str, str]:
    """Placeholder values (none yet)."""
    return {}
