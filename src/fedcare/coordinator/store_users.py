"""Users of the HTTP API: accounts with a role and one token, stored hashed.

A token is ``fc_<token id>.<secret>``: the id (16 hex digits, public) finds the account, the
secret (``secrets.token_urlsafe(32)``) is never stored, only its scrypt hash with a per-user
salt, and is compared in constant time. A token is shown once, when the account is made or
its token rotated; it expires (90 days by default) and can be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedcare.coordinator.db import USER_ROLES, UserRow
from fedcare.coordinator.rows import UserInfo, snapshot
from fedcare.coordinator.store_base import StoreBase, check_id, check_int
from fedcare.errors import ConflictError, NotFoundError, ValidationError

__all__ = ["DEFAULT_EXPIRY_DAYS", "UsersMixin", "hash_secret"]

DEFAULT_EXPIRY_DAYS = 90
_PREFIX = "fc_"
# scrypt cost: 16 MiB, about 50 ms a check (failed checks are rate-limited by the API).
_N, _R, _P = 2**14, 8, 1


def hash_secret(secret: str, salt: bytes) -> str:
    """The hex scrypt hash of a token's secret."""
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return digest.hex()


def _new_token() -> tuple[str, str, str, str]:
    """``(token, token_id, hash, salt)`` of a fresh token."""
    token_id, secret, salt = (
        secrets.token_hex(8),
        secrets.token_urlsafe(32),
        secrets.token_bytes(16),
    )
    return f"{_PREFIX}{token_id}.{secret}", token_id, hash_secret(secret, salt), salt.hex()


# Tokens already checked against a stored hash: sha256(secret, salt, hash) -> True. A signed-in
# user's next calls then cost a SHA-256 instead of 50 ms of scrypt (the API's latency target);
# the account row (revoked, expired, rotated: a new hash) is still read on every call. Holds
# no secret: a process that could read it could read the secrets in its requests.
_VERIFIED: dict[bytes, bool] = {}
_VERIFIED_MAX = 4096


def _verified(secret: str, salt: str, digest: str) -> bool:
    """Whether ``secret`` hashes to ``digest`` with ``salt`` (scrypt, remembered when true)."""
    key = hashlib.sha256(f"{salt}:{digest}:{secret}".encode()).digest()
    if key in _VERIFIED:
        return True
    good = hmac.compare_digest(hash_secret(secret, bytes.fromhex(salt)), digest)
    if good:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = True
    return good


class UsersMixin(StoreBase):
    """Add, list, revoke and rotate API accounts; authenticate a token."""

    def add_user(self, name: str, role: str, *, expires_days: int = DEFAULT_EXPIRY_DAYS) -> str:
        """Make an account; return its token (the only time it is seen).

        Raises
        ------
        ValidationError
            If the name, role or expiry is malformed (names it).
        ConflictError
            If an account ``name`` exists (revoked ones too: rotate it instead).
        """
        check_id(name, "user name")
        if role not in USER_ROLES:
            raise ValidationError(f"user role must be one of {USER_ROLES}, got {role!r}")
        check_int(expires_days, "expires_days", minimum=1, maximum=3650)
        token, token_id, digest, salt = _new_token()
        now = self._now()
        row = UserRow(
            name=name,
            role=role,
            token_id=token_id,
            token_hash=digest,
            salt=salt,
            created_at=now,
            expires_at=now + timedelta(days=expires_days),
            revoked_at=None,
        )
        try:
            with self._tx(write=True) as s:
                if s.get(UserRow, name) is not None:
                    raise ConflictError(f"a user named {name!r} already exists")
                s.add(row)
        except IntegrityError as err:
            raise ConflictError(f"a user named {name!r} already exists") from err
        return token

    def list_users(self) -> list[UserInfo]:
        """Every account, by name."""
        with self._tx(write=False) as s:
            return [
                snapshot(UserInfo, r) for r in s.scalars(select(UserRow).order_by(UserRow.name))
            ]

    def get_user(self, name: str) -> UserInfo:
        """The account ``name``; NotFoundError if there is none."""
        with self._tx(write=False) as s:
            return snapshot(UserInfo, self._user(s, name))

    def revoke_user(self, name: str) -> UserInfo:
        """Revoke an account's token now (idempotent); NotFoundError if there is none."""
        with self._tx(write=True) as s:
            row = self._user(s, name)
            if row.revoked_at is None:
                row.revoked_at = self._now()
            return snapshot(UserInfo, row)

    def rotate_user(self, name: str, *, expires_days: int = DEFAULT_EXPIRY_DAYS) -> str:
        """Give an account a new token (the old one stops working, a revoked account is
        active again); return the new token."""
        check_int(expires_days, "expires_days", minimum=1, maximum=3650)
        token, token_id, digest, salt = _new_token()
        with self._tx(write=True) as s:
            row = self._user(s, name)
            now = self._now()
            row.token_id, row.token_hash, row.salt = token_id, digest, salt
            row.expires_at, row.revoked_at = now + timedelta(days=expires_days), None
        return token

    def authenticate(self, token: str) -> UserInfo | None:
        """The account whose valid (known, unexpired, unrevoked) token ``token`` is; else None."""
        token_id, dot, secret = token.removeprefix(_PREFIX).partition(".")
        if not token.startswith(_PREFIX) or not dot or not secret or len(token) > 256:
            return None
        with self._tx(write=False) as s:
            row = s.scalars(select(UserRow).where(UserRow.token_id == token_id)).one_or_none()
            if row is None:
                hash_secret(secret, b"0" * 16)  # the same work whether or not the id exists
                return None
            info, digest, salt = snapshot(UserInfo, row), row.token_hash, row.salt
        good = _verified(secret, salt, digest)
        if not good or info.revoked_at is not None or info.expires_at <= self._now():
            return None
        return info

    @staticmethod
    def _user(s: Session, name: str) -> UserRow:
        row = s.get(UserRow, name)
        if row is None:
            raise NotFoundError(f"no user named {name!r}")
        return row
