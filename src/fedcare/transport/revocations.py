"""The coordinator's revocation list (``revoked.json`` in its kit): certificate serials that
are no longer accepted, written by :mod:`fedcare.transport.provisioning` and read at every
handshake by :mod:`fedcare.transport.tls`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fedcare.errors import ConfigError

__all__ = ["Revocation", "read_revocations"]


@dataclass(frozen=True)
class Revocation:
    """One entry of ``revoked.json``: a certificate serial no longer accepted."""

    serial: int
    site_id: str
    revoked_at: str
    reason: str


def read_revocations(path: str | os.PathLike[str]) -> list[Revocation]:
    """The entries of a ``revoked.json``; an absent file means none.

    Raises
    ------
    ConfigError
        If the file is not a valid revocation list (names the file and the problem).
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != 1:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        return [
            Revocation(
                int(e["serial"], 16), str(e["site_id"]), str(e["revoked_at"]), str(e["reason"])
            )
            for e in doc["revoked"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"revocation list {path} is invalid: {err}") from None
