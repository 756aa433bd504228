"""The package runner's messages: a JSON header and raw numeric arrays, never a pickle.

One message is ``<4-byte big-endian header length><JSON header><array bytes...>``; the header
lists the arrays as ``[name, dtype, shape]`` in the order their C-order bytes follow. Only
plain numeric dtypes (bool, signed and unsigned integers, floats, at most 8 bytes, little
endian) are read, and the byte count must match the shapes exactly, so a message from the
untrusted runner is parsed by ``json`` and ``numpy.frombuffer`` alone.

Both sides import this module: the trusted one (:mod:`fedcare.models.package_runner`) and the
runner (:mod:`fedcare.models._package_worker`). It also carries what the adapter interface
passes besides arrays: a ``numpy.random.Generator``'s state (so the runner draws exactly the
numbers the in-process adapter would) and a :class:`~fedcare.models.base.LocalTrainSpec`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcare.errors import ModelError, ValidationError
from fedcare.models.base import LocalTrainSpec
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "decode_message",
    "encode_message",
    "generator_from_state",
    "rng_state",
    "spec_from_wire",
    "spec_to_wire",
]

_LEN = struct.Struct(">I")
_KINDS = frozenset("biuf")
#: Bit generators whose state travels (numpy's own; ``default_rng`` makes PCG64).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
_SPEC_FIELDS = ("epochs", "max_steps", "lr", "batch_size", "optimizer", "momentum", "l2", "prox_mu")


def encode_message(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] = {}) -> bytes:
    """``header`` (JSON-able) and ``arrays`` as one message."""
    listed, chunks = [], []
    for name, value in arrays.items():
        arr = np.asarray(value)  # not ascontiguousarray: it makes a 0-d array 1-d
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        if arr.dtype.kind not in _KINDS:
            raise ValidationError(f"array {name!r} has dtype {arr.dtype}; only numbers travel")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        listed.append([name, arr.dtype.str, list(arr.shape)])
        chunks.append(arr.tobytes())
    text = json.dumps({**header, "arrays": listed}).encode()
    return b"".join([_LEN.pack(len(text)), text, *chunks])


def _dtype(text: Any, name: str) -> np.dtype[Any]:
    try:
        dtype = np.dtype(text) if isinstance(text, str) and len(text) <= 4 else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _KINDS or dtype.itemsize > 8 or dtype.byteorder == ">":
        raise ValidationError(f"array {name!r}: dtype {text!r} is not a plain numeric dtype")
    return dtype


def decode_message(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of a message; ValidationError for anything malformed."""
    if len(data) < _LEN.size:
        raise ValidationError("runner message is shorter than its header length")
    (size,) = _LEN.unpack_from(data)
    end = _LEN.size + size
    try:
        header = json.loads(data[_LEN.size : end])
    except ValueError as err:
        raise ValidationError(f"runner message header is not JSON: {err}") from None
    listed = header.pop("arrays", None) if isinstance(header, dict) else None
    if not isinstance(listed, list):
        raise ValidationError("runner message header is no JSON object with an array list")
    arrays: dict[str, np.ndarray] = {}
    offset = end
    for entry in listed:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
            raise ValidationError(f"runner message lists a malformed array entry {entry!r:.80}")
        name, dtype_text, shape = entry
        dtype = _dtype(dtype_text, name)
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValidationError(f"array {name!r}: shape {shape!r:.80} is not a list of sizes")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if name in arrays or offset + nbytes > len(data):
            raise ValidationError(f"array {name!r} is listed twice or its bytes are missing")
        arrays[name] = np.frombuffer(data, dtype, count, offset).reshape(shape).copy()
        offset += nbytes
    if offset != len(data):
        raise ValidationError(f"runner message has {len(data) - offset} bytes beyond its arrays")
    return header, arrays


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's bit generator state, JSON-able (numpy gives plain ints and strings)."""
    state = dict(rng.bit_generator.state)
    if state.get("bit_generator") not in _BIT_GENERATORS:
        raise ModelError(
            f"a study package's rng must use one of numpy's bit generators "
            f"{list(_BIT_GENERATORS)}, got {state.get('bit_generator')!r}"
        )
    json.dumps(state)  # MT19937's key is an array: not supported above, but be sure
    return state


def generator_from_state(state: Any) -> np.random.Generator:
    """A fresh generator in ``state``; ValidationError for a state numpy refuses."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValidationError(f"rng state names no known bit generator: {name!r:.40}")
    bit_generator = getattr(np.random, str(name))()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError) as err:
        raise ValidationError(f"rng state is malformed: {err}") from None
    return np.random.Generator(bit_generator)


def spec_to_wire(spec: LocalTrainSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A training spec as JSON fields and arrays (the SCAFFOLD correction as ``correction/*``).
    A spec with DP-SGD is refused by the caller before it gets here."""
    fields = {name: getattr(spec, name) for name in _SPEC_FIELDS}
    arrays = dict(spec.correction.prefixed("correction")) if spec.correction is not None else {}
    return fields, arrays


def spec_from_wire(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LocalTrainSpec:
    """The runner's side of :func:`spec_to_wire`."""
    prefix = "correction/"
    correction = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    values = {name: fields[name] for name in _SPEC_FIELDS}
    return LocalTrainSpec(**values, correction=ArrayRecord(correction) if correction else None)
