"""Where the federation's HE keys live, and the stand-in keys of a simulated federation.

Trust assumption: the key pair is generated once by whoever provisions the federation (the CA
operator, :mod:`fedcare.transport.provisioning`), who therefore could decrypt any update it
intercepts. The SECRET context goes only into site kits (``he_secret.ctx``, 0600) and the
operator's ``ca/`` folder (to provision later sites); the coordinator kit gets the PUBLIC
context (``he_public.ctx``), which can add ciphertexts but not decrypt them. A threshold or
multi-key CKKS scheme (keys generated jointly by the sites, decryption needing t of them) would
remove the trusted provisioner; TenSEAL does not offer one.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fedcare.errors import ConfigError, ValidationError
from fedcare.secure.he.ckks import CKKSBackend

__all__ = [
    "HE_PUBLIC_FILE",
    "HE_SECRET_FILE",
    "coordinator_context",
    "simulation_keys",
    "site_context",
]

HE_SECRET_FILE = "he_secret.ctx"
HE_PUBLIC_FILE = "he_public.ctx"


def site_context(path: Path) -> CKKSBackend:
    """A site's secret context from ``path`` (a kit's ``he_secret.ctx``).

    Raises
    ------
    ConfigError
        If the file is missing, does not parse, or holds no secret key (names the file).
    """
    if not path.is_file():
        raise ConfigError(f"no HE secret context at {path}: provision the federation with --he")
    try:
        backend = CKKSBackend.from_bytes(path.read_bytes(), what=str(path))
    except ValidationError as err:
        raise ConfigError(str(err)) from None
    if not backend.has_secret_key:
        raise ConfigError(f"HE context {path} holds no secret key; a site needs it to decrypt")
    return backend


def coordinator_context(path: Path) -> CKKSBackend:
    """The coordinator's public context from ``path``; refuses one that holds the secret key.

    Raises
    ------
    ConfigError
        If the file is missing, does not parse, or holds the secret key (names the file).
    """
    if not path.is_file():
        raise ConfigError(
            f"no HE public context at {path}: privacy mode 'encrypted' needs a federation "
            "provisioned with --he"
        )
    try:
        return CKKSBackend.public_from_bytes(path.read_bytes(), what=str(path))
    except ValidationError as err:
        raise ConfigError(str(err)) from None


@functools.cache
def simulation_keys() -> tuple[bytes, bytes]:
    """``(secret, public)`` contexts of this process's simulated federation.

    Simulation stands in for provisioning: one key pair per process, made on first use. The
    simulated sites load the secret half; the coordinator side is handed only the public half.
    """
    backend = CKKSBackend.keygen()
    return backend.secret_bytes(), backend.public_bytes()
