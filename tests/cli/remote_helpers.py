"""What the remote CLI tests share: the environment a desk has (the ``api`` fixture, the
real API served over TLS, is in tests/cli/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from ..dashboard.helpers import Api


def remote_env(api: Api, tmp_path: Path, role: str = "operator") -> dict[str, str | None]:
    """The token in the environment (never an option); no other setting from this machine."""
    config = tmp_path / "client.yaml"
    config.write_text("{}\n")
    return {
        "FEDCARE_TOKEN": api.tokens[role],
        "FEDCARE_CONFIG": str(config),
        "FEDCARE_COORDINATOR": None,
        "FEDCARE_CA": None,
    }
