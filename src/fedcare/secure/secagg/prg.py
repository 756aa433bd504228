"""A pseudo-random generator: a 32-byte seed expanded into a uniform uint64 vector.

The keystream of AES-256 in counter mode under the seed as key, the counter block starting at
zero, viewed as little-endian uint64 words: one call into OpenSSL (AES-NI), no Python loop over
elements (AES-CTR measured ~2.5x faster than ChaCha20 here). A seed must be used for one vector
only (keys are derived per purpose, pair, study and round).

The same keystream comes faster through AES-GCM: with a 96-bit all-zero IV, GCM encrypts with
the counter blocks ``0^96 || j`` for ``j = 2, 3, ...`` (NIST SP 800-38D, section 7.1), which are
exactly the CTR blocks from the third on, and OpenSSL's GCM code runs several blocks at once
with vector AES instructions (VAES) where the CPU has them (measured 1.8x faster than its CTR on
this project's machines). So the first two blocks come from CTR and the rest from GCM, whose
tag is never computed: the same bytes, bit for bit, under the same key (tested against CTR).
GCM's counter wraps its low 32 bits, CTR carries into the higher ones; they part after 2^32
blocks (64 GiB), so longer vectors use CTR alone.

:class:`MaskBuffer` expands many seeds of one length into a single reused buffer (the same
keystream as :func:`prg_uint64`): whoever removes or adds hundreds of masks in a row (the
coordinator unmasking, a site masking) then allocates and page-faults nothing per mask.
"""

from __future__ import annotations

import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedcare.errors import ValidationError

__all__ = ["MaskBuffer", "prg_uint64"]

_IV = bytes(16)  # the counter starts at zero: each key expands one vector only
_GCM_IV = bytes(12)  # GCM's first counter block is then 0^96 || 2, CTR's third block
_HEAD = 32  # bytes of the two CTR blocks before GCM's first
_GCM_MAX = 16 * 2**32  # beyond 2^32 blocks GCM's 32-bit counter wraps where CTR's carries


def _check_seed(seed: bytes) -> None:
    if len(seed) != 32:
        raise ValidationError(f"PRG seed has {len(seed)} bytes, expected 32")


def _check_length(length: int) -> None:
    if length < 0:
        raise ValidationError(f"PRG length must be >= 0, got {length}")


_zeros = memoryview(b"")  # the plaintext the keystream encrypts, grown on demand, never written
#: Bytes of plaintext per ``update_into`` call when expanding in pieces: a plaintext as long as
#: the vector, beside the output and the sum it goes into, no longer fits in a core's L2 cache
#: at 100k values (measured ~10-15 % slower on one thread)
_PIECE = 1 << 18


def _zero_bytes(nbytes: int) -> memoryview:
    global _zeros
    if len(_zeros) < nbytes:
        _zeros = memoryview(bytes(nbytes))
    return _zeros[:nbytes]


def _encrypt_zeros(
    context: CipherContext, out: memoryview, start: int, stop: int, piece: int
) -> None:
    """``out[start:stop]``: the next ``stop - start`` bytes of ``context``'s keystream, at most
    ``piece`` bytes a call."""
    while start < stop:
        start += context.update_into(_zero_bytes(min(piece, stop - start)), out[start:])


def _keystream_into(seed: bytes, out: memoryview, nbytes: int, *, one_call: bool) -> None:
    """The first ``nbytes`` of the AES-256-CTR keystream under ``seed``, written into ``out``
    (a byte view with at least 16 bytes to spare beyond ``nbytes``); ``one_call``: one
    ``update_into`` call per mode, else cache-sized pieces (see :class:`MaskBuffer`)."""
    key = algorithms.AES(seed)
    piece = max(nbytes, 1) if one_call else _PIECE
    if nbytes <= _HEAD or nbytes > _GCM_MAX:
        _encrypt_zeros(Cipher(key, modes.CTR(_IV)).encryptor(), out, 0, nbytes, piece)
        return
    _encrypt_zeros(Cipher(key, modes.CTR(_IV)).encryptor(), out, 0, _HEAD, piece)
    # the GCM context is dropped unfinished: no tag is ever made
    _encrypt_zeros(Cipher(key, modes.GCM(_GCM_IV)).encryptor(), out, _HEAD, nbytes, piece)


def _as_words(raw: np.ndarray) -> np.ndarray:
    """``raw``'s keystream bytes read as little-endian words, on any machine (in place)."""
    if sys.byteorder != "little":
        raw.byteswap(inplace=True)
    return raw


def prg_uint64(seed: bytes, length: int) -> np.ndarray:
    """``length`` uniform uint64 values determined by ``seed`` (32 bytes)."""
    _check_seed(seed)
    _check_length(length)
    raw = np.empty(length + 2, dtype=np.uint64)  # two spare words: room for a block beyond
    _keystream_into(seed, raw.data.cast("B"), 8 * length, one_call=False)
    return _as_words(raw[:length])


class MaskBuffer:
    """Expands seeds into ``length`` uint64 values in one reused buffer.

    :meth:`expand` returns a view that the next call overwrites: add it into an accumulator
    before expanding the next seed.

    Parameters
    ----------
    length:
        Values per expansion (the summed vector's length).
    one_call:
        Expand with one ``update_into`` call per mode, for threads that expand masks at once:
        ``cryptography`` releases the GIL during each call, and two threads measured ~1.5x
        faster than one this way, no faster in pieces. Otherwise (one thread) expand in
        cache-sized pieces, ~10-15 % faster. The same values either way.
    """

    def __init__(self, length: int, *, one_call: bool = False) -> None:
        _check_length(length)
        self.length = length
        self.one_call = one_call
        # update_into may want room for a block beyond the input: two spare words
        self._raw = np.empty(length + 2, dtype=np.uint64)
        self._bytes = self._raw.data.cast("B")

    def expand(self, seed: bytes) -> np.ndarray:
        """``prg_uint64(seed, length)``, written into this buffer (a view, overwritten later)."""
        _check_seed(seed)
        _keystream_into(seed, self._bytes, 8 * self.length, one_call=self.one_call)
        return _as_words(self._raw[: self.length])
