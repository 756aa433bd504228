"""The audit log's byte format and its signatures: pure functions shared by writer and verifier.

An entry is one line of canonical JSON (sorted keys, no spaces, UTF-8, no NaN) ending in
``\\n``. ``hash`` is the SHA-256 hex of the canonical JSON of the entry without ``hash`` and
``sig``; ``sig`` is the base64 DER ECDSA-SHA256 signature of the ASCII ``hash``, normalised to
low-S and checked for canonical DER and base64, so a signature has exactly one accepted spelling.

The head checkpoint signs a *different* message (``HEAD_DOMAIN`` + ``seq:hash``), so an entry's
signature can never be replayed as a head that would hide a truncation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from fedcare.errors import ConfigError, ValidationError

GENESIS = "0" * 64
ENTRY_FIELDS = frozenset({"seq", "time", "event", "actor", "data", "prev", "hash", "sig"})
HEAD_FIELDS = frozenset({"version", "seq", "hash", "sig"})
HEAD_VERSION = 1
HEAD_DOMAIN = b"fedcare-audit-head\x00"
#: The entry, signed with the key in force, that hands the log over to a new key.
HANDOVER_EVENT = "key-rotated"
HEX64 = re.compile(r"[0-9a-f]{64}")
_EVENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")
# Order of the P-256 group; a signature with s above half of it is the malleable twin.
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA = ec.ECDSA(hashes.SHA256())


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8, NaN and infinities refused."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _plain(value: Any) -> Any:
    """JSON fallback: numpy scalars (anything with ``item()``) and paths become plain values."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def plain_data(event: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A detached, JSON-only copy of ``data`` (validated), as it will be stored."""
    try:
        text = json.dumps(
            dict(data), sort_keys=True, allow_nan=False, ensure_ascii=False, default=_plain
        )
        text.encode("utf-8")  # lone surrogates cannot be stored
    except (TypeError, ValueError) as err:
        raise ValidationError(
            f"audit event {event!r}: data {sorted(data)} is not JSON-serializable ({err})"
        ) from None
    copy: dict[str, Any] = json.loads(text)
    return copy


def check_event(event: str) -> str:
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise ValidationError(
            f"audit event name {event!r} is invalid: use 1 to 100 of A-Z, a-z, 0-9, "
            "'_', '.', ':', '/', '-', starting with a letter or digit"
        )
    return event


def utc_now() -> str:
    """The current UTC time, ISO-8601 with microseconds and a ``Z``."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """Parse a ``time`` field; ValueError if it is not UTC ISO-8601 ending in ``Z``."""
    if not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not UTC (no trailing 'Z')")
    return dt.datetime.fromisoformat(text[:-1] + "+00:00")


def entry_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of an entry without ``hash`` and ``sig``."""
    content = canonical({k: v for k, v in body.items() if k not in ("hash", "sig")})
    return hashlib.sha256(content).hexdigest()


def head_message(seq: int, hash_: str) -> bytes:
    return HEAD_DOMAIN + f"{seq}:{hash_}".encode("ascii")


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    """Base64 of the low-S DER ECDSA-SHA256 signature of ``message``."""
    r, s = decode_dss_signature(key.sign(message, _ECDSA))
    if s > _P256_N // 2:
        s = _P256_N - s
    return base64.b64encode(encode_dss_signature(r, s)).decode("ascii")


def signature_problem(key: ec.EllipticCurvePublicKey, message: bytes, sig: Any) -> str | None:
    """None if ``sig`` is the one accepted spelling of a valid signature, else why not."""
    if not isinstance(sig, str):
        return "signature is not a string"
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return "signature is not valid base64"
    if base64.b64encode(raw).decode("ascii") != sig:
        return "signature is not canonical base64"
    try:
        r, s = decode_dss_signature(raw)
    except ValueError:
        return "signature is not a DER ECDSA signature"
    if encode_dss_signature(r, s) != raw or not 0 < s <= _P256_N // 2:
        return "signature is not canonical (DER, low-S)"
    try:
        key.verify(raw, message, _ECDSA)
    except InvalidSignature:
        return "signature does not verify with the signer's public key"
    return None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 private key in a kit's ``key.pem``; ConfigError naming the file."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"audit key_path {path}: cannot read a PEM private key ({err})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"audit key_path {path}: not an ECDSA P-256 private key")
    return key


PublicKeys = ec.EllipticCurvePublicKey | Sequence[ec.EllipticCurvePublicKey]
CertPaths = Path | str | Sequence[Path | str]


def load_cert_key(cert_path: Path | str) -> ec.EllipticCurvePublicKey:
    """The ECDSA public key of the PEM certificate at ``cert_path``; ConfigError naming it."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"audit cert_path {cert_path}: cannot read a PEM certificate ({err})"
        ) from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"audit cert_path {cert_path}: the certificate's key is not ECDSA")
    return key


def load_public_keys(
    cert_path: CertPaths | None, public_key: PublicKeys | None
) -> list[ec.EllipticCurvePublicKey]:
    """The signer's public keys, oldest first, from certificate files or given (not both).

    One key is the usual case; several are the keys a participant has had, in the order it
    used them (its kit's key rotated). An empty list means: do not check signatures.
    """
    if cert_path is not None and public_key is not None:
        raise ConfigError("give cert_path or public_key, not both")
    if public_key is not None:
        keys = [public_key] if isinstance(public_key, ec.EllipticCurvePublicKey) else public_key
        for key in keys:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ConfigError(f"public_key must be an ECDSA public key, got {type(key)}")
        return list(keys)
    if cert_path is None:
        return []
    paths = [cert_path] if isinstance(cert_path, (str, os.PathLike)) else list(cert_path)
    return [load_cert_key(p) for p in paths]


def public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    """A public key as a handover entry names it: base64 of its DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")
