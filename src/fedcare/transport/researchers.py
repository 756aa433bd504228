"""Researcher identities: a kit to sign study packages with (issue 13).

``fedcare provision add-researcher ROOT NAME`` writes ``ROOT/kits/researchers/NAME/``:
``key.pem`` (0600), ``cert.pem`` (issued by the federation CA with OU ``researcher`` and the
code-signing usage, :func:`fedcare.transport.certs.issue_researcher`), ``ca.pem`` and
``kit.yaml`` (``role: researcher``). The key signs packages (:mod:`fedcare.packages`); it
cannot open a TLS connection to the coordinator. Researcher ids are never reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fedcare.errors import ConfigError
from fedcare.packages.signing import check_researcher_id
from fedcare.transport.certs import issue_researcher
from fedcare.transport.provisioning import _load_federation, _write_kit

__all__ = ["add_researcher", "researcher_kit_dir"]


def researcher_kit_dir(root: str | os.PathLike[str], researcher_id: str) -> Path:
    """Where a researcher's kit lives under the federation folder ``root``."""
    return Path(root) / "kits" / "researchers" / researcher_id


def add_researcher(root: str | os.PathLike[str], researcher_id: str) -> Path:
    """Issue a researcher kit; no other kit changes. Returns the kit folder.

    Raises
    ------
    ConfigError
        If there is no federation at ``root``, the id is invalid, or it is already used.
    """
    root = Path(root)
    meta, ca = _load_federation(root)
    check_researcher_id(researcher_id)
    final = researcher_kit_dir(root, researcher_id)
    if final.exists():
        raise ConfigError(
            f"researcher {researcher_id!r} is already provisioned at {final}; researcher ids "
            "are never reused: choose another name"
        )
    key, cert = issue_researcher(ca, researcher_id, int(meta["days"]))
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{researcher_id}."))
    try:
        info = {"role": "researcher", "id": researcher_id, "federation": meta["name"]}
        _write_kit(tmp, ca[1], key, cert, info)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
