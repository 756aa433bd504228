import pytest

from fedcare.errors import ValidationError
from fedcare.secure.secagg.keys import KeyPair, derive_key, open_share, seal_share
from tests.secure.helpers import entropy_for


def _pairs() -> tuple[KeyPair, KeyPair]:
    return KeyPair.generate(entropy_for("a")), KeyPair.generate(entropy_for("b"))


def test_both_ends_derive_the_same_key_and_context_separates_keys() -> None:
    a, b = _pairs()
    ka = derive_key(a, b.public, purpose="mask", study_id="s", round=1, me="A", peer="B")
    kb = derive_key(b, a.public, purpose="mask", study_id="s", round=1, me="B", peer="A")
    assert ka == kb and len(ka) == 32
    other = [
        derive_key(a, b.public, purpose="share", study_id="s", round=1, me="A", peer="B"),
        derive_key(a, b.public, purpose="mask", study_id="s", round=2, me="A", peer="B"),
        derive_key(a, b.public, purpose="mask", study_id="t", round=1, me="A", peer="B"),
    ]
    assert len({ka, *other}) == 4


def test_sealed_share_opens_only_for_its_study_round_and_pair() -> None:
    a, b = _pairs()
    key = derive_key(a, b.public, purpose="share", study_id="s", round=1, me="A", peer="B")
    sealed = seal_share(
        key, b"secret", study_id="s", round=1, sender="A", receiver="B", entropy=entropy_for(1)
    )
    assert open_share(key, sealed, study_id="s", round=1, sender="A", receiver="B") == b"secret"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(ValidationError, match="failed authentication"):
        open_share(key, tampered, study_id="s", round=1, sender="A", receiver="B")
    for kwargs in (
        {"study_id": "s", "round": 2, "sender": "A", "receiver": "B"},
        {"study_id": "s", "round": 1, "sender": "C", "receiver": "B"},
        {"study_id": "z", "round": 1, "sender": "A", "receiver": "B"},
    ):
        with pytest.raises(ValidationError, match="tampered with or misrouted"):
            open_share(key, sealed, **kwargs)  # type: ignore[arg-type]


def test_bad_public_key_is_refused() -> None:
    a, _ = _pairs()
    with pytest.raises(ValidationError, match="expected 32"):
        a.shared(b"short")
