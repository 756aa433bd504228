"""Key agreement for secure aggregation: X25519, HKDF-derived seeds and AEAD share transport.

Each site makes two X25519 key pairs per round: ``c`` (to encrypt the shares it sends to its
neighbours through the coordinator) and ``s`` (to agree pairwise mask seeds). From one
Diffie-Hellman secret HKDF-SHA256 derives a 32-byte key bound to a purpose, the study, the
round and the (ordered) pair of sites, so both ends derive the same key and no key is reused
across rounds, studies or purposes. Shares travel sealed with ChaCha20-Poly1305; the associated
data names study, round, sender and receiver, so a ciphertext replayed or rerouted by the
coordinator fails to open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcare.errors import ValidationError

__all__ = [
    "Entropy",
    "KeyPair",
    "derive_key",
    "open_share",
    "seal_share",
]

#: A source of random bytes: ``os.urandom`` outside simulation, a seeded stream inside.
Entropy = Callable[[int], bytes]
KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw 32-byte strings (so it can be persisted and sent)."""

    private: bytes
    public: bytes
    #: The loaded private key, made on first use (a site agrees keys with every neighbour).
    _loaded: list[X25519PrivateKey] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    @classmethod
    def generate(cls, entropy: Entropy) -> KeyPair:
        sk = X25519PrivateKey.from_private_bytes(entropy(KEY_BYTES))
        return cls(sk.private_bytes_raw(), sk.public_key().public_bytes_raw())

    def private_key(self) -> X25519PrivateKey:
        """The private key as an object, loaded on first use and kept."""
        if not self._loaded:
            self._loaded.append(X25519PrivateKey.from_private_bytes(self.private))
        return self._loaded[0]

    def shared(self, peer_public: bytes) -> bytes:
        """The raw X25519 shared secret with ``peer_public``."""
        if len(peer_public) != KEY_BYTES:
            raise ValidationError(f"public key has {len(peer_public)} bytes, expected {KEY_BYTES}")
        sk = self.private_key()
        try:
            return sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as err:  # an all-zero (small-order) shared secret
            raise ValidationError(f"bad X25519 public key: {err}") from None


def _context(purpose: str, study_id: str, round: int, a: str, b: str) -> bytes:
    first, second = sorted((a, b))
    return "\x1f".join(("fedcare-secagg-v1", purpose, study_id, str(round), first, second)).encode()


def derive_key(
    pair: KeyPair,
    peer_public: bytes,
    *,
    purpose: str,
    study_id: str,
    round: int,
    me: str,
    peer: str,
) -> bytes:
    """A 32-byte key both ``me`` and ``peer`` derive alike (HKDF-SHA256 over X25519)."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=_context(purpose, study_id, round, me, peer),
    )
    return hkdf.derive(pair.shared(peer_public))


def _ad(study_id: str, round: int, sender: str, receiver: str) -> bytes:
    return "\x1f".join(("fedcare-share", study_id, str(round), sender, receiver)).encode()


def seal_share(
    key: bytes,
    plaintext: bytes,
    *,
    study_id: str,
    round: int,
    sender: str,
    receiver: str,
    entropy: Entropy,
) -> bytes:
    """``nonce || ChaCha20-Poly1305(plaintext)`` bound to study, round, sender and receiver."""
    nonce = entropy(NONCE_BYTES)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, plaintext, _ad(study_id, round, sender, receiver))
    return nonce + sealed


def open_share(
    key: bytes, sealed: bytes, *, study_id: str, round: int, sender: str, receiver: str
) -> bytes:
    """Inverse of :func:`seal_share`.

    Raises
    ------
    ValidationError
        If the ciphertext was altered, or was sealed for another study, round or pair.
    """
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, _ad(study_id, round, sender, receiver))
    except InvalidTag:
        raise ValidationError(
            f"share from site {sender!r} to {receiver!r} (study {study_id!r}, round {round}) "
            "failed authentication: tampered with or misrouted"
        ) from None
