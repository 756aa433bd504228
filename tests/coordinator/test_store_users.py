"""API accounts in the store, on SQLite and PostgreSQL: hashed tokens, expiry, revocation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fedcare.coordinator.db import UserRow
from fedcare.coordinator.store import CoordinatorStore
from fedcare.errors import ConflictError, NotFoundError, ValidationError

from .helpers import FakeClock


def test_a_token_authenticates_its_user_until_it_expires(
    store: CoordinatorStore, clock: FakeClock
) -> None:
    token = store.add_user("lea", "study-lead", expires_days=2)
    user = store.authenticate(token)
    assert user is not None and (user.name, user.role) == ("lea", "study-lead")
    assert (user.expires_at - user.created_at).days == 2
    clock.advance(2 * 86400 - 1)
    assert store.authenticate(token) is not None
    clock.advance(1)
    assert store.authenticate(token) is None


def test_only_the_salted_hash_of_the_secret_is_stored(store: CoordinatorStore) -> None:
    token = store.add_user("lea", "auditor")
    secret = token.partition(".")[2]
    with store.engine.connect() as conn:
        row = conn.execute(select(UserRow)).one()
    assert secret not in repr(tuple(row)) and len(row.token_hash) == 64
    other = store.add_user("max", "auditor")
    with store.engine.connect() as conn:
        salts = {r.salt for r in conn.execute(select(UserRow))}
    assert len(salts) == 2 and other != token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "fc_" + "0" * 16 + "." + t.partition(".")[2],  # unknown id
        lambda t: t.removeprefix("fc_"),  # no prefix
        lambda t: t.partition(".")[0],  # no secret
        lambda t: "",
    ],
)
def test_a_wrong_token_authenticates_nobody(store: CoordinatorStore, mangle) -> None:  # type: ignore[no-untyped-def]
    token = store.add_user("lea", "operator")
    assert store.authenticate(mangle(token)) is None


def test_revoke_and_rotate(store: CoordinatorStore) -> None:
    old = store.add_user("lea", "operator")
    assert store.revoke_user("lea").revoked_at is not None
    assert store.authenticate(old) is None
    new = store.rotate_user("lea")
    assert store.authenticate(old) is None
    user = store.authenticate(new)
    assert user is not None and user.revoked_at is None
    assert [u.name for u in store.list_users()] == ["lea"]


def test_bad_accounts_are_refused_with_their_reason(store: CoordinatorStore) -> None:
    store.add_user("lea", "operator")
    with pytest.raises(ConflictError, match="'lea' already exists"):
        store.add_user("lea", "auditor")
    with pytest.raises(ValidationError, match="role must be one of"):
        store.add_user("max", "admin")
    with pytest.raises(ValidationError, match="expires_days"):
        store.add_user("max", "auditor", expires_days=0)
    with pytest.raises(NotFoundError, match="no user named 'nobody'"):
        store.revoke_user("nobody")
    with pytest.raises(NotFoundError, match="no user named 'nobody'"):
        store.rotate_user("nobody")


def test_a_study_remembers_who_submitted_it(store: CoordinatorStore) -> None:
    mine = store.create_study("s", {}, 1, owner="lea")
    host = store.create_study("t", {}, 1)
    assert store.get_study(mine).owner == "lea" and store.get_study(host).owner is None
