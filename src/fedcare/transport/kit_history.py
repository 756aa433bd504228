"""A site kit's earlier keys, kept by rotation so its audit chain can be handed over.

:func:`fedcare.transport.provisioning.rotate_site` gives a site a new key and certificate.
The site's audit log (and its sealed approvals) were signed with the old key, so the new kit
keeps what came before it::

    <kit>/previous/001/cert.pem      the first key's certificate
    <kit>/previous/001/key.pem       its private key (0600), until the handover is written
    <kit>/previous/002/...           the next one, after a second rotation

When the site first starts with the new kit, its audit log's last entry is signed with an
earlier key: :meth:`fedcare.audit.AuditLog.open` then writes a ``key-rotated`` entry, signed
with that earlier key, naming the new public key, and goes on under the new key. After that
handover the earlier *private* key is no longer needed and is deleted
(:func:`forget_previous_keys`); the certificates stay, so ``fedcare audit verify --kit``
checks the whole chain with every key the site has had, oldest first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["PREVIOUS_DIR", "carry_history", "forget_previous_keys", "kit_certs", "previous_keys"]

PREVIOUS_DIR = "previous"


def _previous(kit: Path) -> list[Path]:
    folder = Path(kit) / PREVIOUS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "cert.pem").is_file())


def kit_certs(kit: Path) -> list[Path]:
    """Every certificate the kit's holder has had, oldest first (the current one last)."""
    return [*(p / "cert.pem" for p in _previous(kit)), Path(kit) / "cert.pem"]


def previous_keys(kit: Path) -> list[Path]:
    """The earlier private keys still in the kit (oldest first): those not yet handed over."""
    return [p / "key.pem" for p in _previous(kit) if (p / "key.pem").is_file()]


def forget_previous_keys(kit: Path) -> None:
    """Delete the earlier private keys (after the handover); their certificates stay."""
    for key in previous_keys(kit):
        key.unlink(missing_ok=True)


def carry_history(old_kit: Path, new_kit: Path) -> None:
    """Copy ``old_kit``'s history, then its current cert and key, into ``new_kit/previous``."""
    target = Path(new_kit) / PREVIOUS_DIR
    target.mkdir(mode=0o700, exist_ok=True)
    earlier = _previous(old_kit)
    for folder in earlier:
        shutil.copytree(folder, target / folder.name)
    slot = target / f"{len(earlier) + 1:03d}"
    slot.mkdir(mode=0o700)
    shutil.copy2(Path(old_kit) / "cert.pem", slot / "cert.pem")
    key = slot / "key.pem"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write((Path(old_kit) / "key.pem").read_bytes())
