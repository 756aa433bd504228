"""The site half of SecAgg+: a sans-I/O state machine, one transition per stage.

``step(state, message, entropy, vector=...)`` returns the new state and the reply. The state is
plain data (:meth:`ClientState.to_dict` / :meth:`ClientState.from_dict`), so a site that runs
each task in a fresh worker process can keep it on disk between stages. A client aborts (raises
:class:`ValidationError`, which the site turns into an error reply) when the coordinator asks
for something unsafe: both shares of one peer, shares of a site that is not its neighbour, or an
unmasking with fewer than ``threshold`` survivors around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import fedcare.secure.secagg.shamir as shamir
from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.secagg.keys import Entropy, KeyPair, derive_key, open_share, seal_share
from fedcare.secure.secagg.messages import ClientMessage, ServerMessage, as_bytes, from_bytes
from fedcare.secure.secagg.prg import MaskBuffer
from fedcare.secure.secagg.quantize import QuantSpec, quantize

__all__ = ["ClientState", "SecAggClient"]

CHUNKS = 16


@dataclass(frozen=True)
class ClientState:
    """A site's secrets and progress in one round (``done``: the last stage answered)."""

    site_id: str
    header: Mapping[str, Any]
    done: str
    c: KeyPair
    s: KeyPair
    peers: Mapping[str, tuple[bytes, bytes]] = field(default_factory=dict)
    self_seed: bytes = b""
    held: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    mask_peers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; holds private keys, so the caller stores it with owner-only access."""
        return {
            "version": 1,
            "site_id": self.site_id,
            "header": dict(self.header),
            "done": self.done,
            "c": [self.c.private.hex(), self.c.public.hex()],
            "s": [self.s.private.hex(), self.s.public.hex()],
            "peers": {k: [a.hex(), b.hex()] for k, (a, b) in self.peers.items()},
            "self_seed": self.self_seed.hex(),
            "held": {k: list(v) for k, v in self.held.items()},
            "mask_peers": list(self.mask_peers),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientState:
        if data.get("version") != 1:
            raise ValidationError(
                f"secure aggregation state version {data.get('version')!r}; expected 1"
            )
        try:
            return cls(
                site_id=str(data["site_id"]),
                header=dict(data["header"]),
                done=str(data["done"]),
                c=KeyPair(*(bytes.fromhex(x) for x in data["c"])),
                s=KeyPair(*(bytes.fromhex(x) for x in data["s"])),
                peers={
                    k: (bytes.fromhex(a), bytes.fromhex(b)) for k, (a, b) in data["peers"].items()
                },
                self_seed=bytes.fromhex(data["self_seed"]),
                held={k: tuple(int(x) for x in v) for k, v in data["held"].items()},
                mask_peers=tuple(data["mask_peers"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValidationError(f"secure aggregation state is malformed: {err!r}") from None


class SecAggClient:
    """The client state machine of one site."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id

    def step(
        self,
        state: ClientState | None,
        message: ServerMessage,
        entropy: Entropy,
        *,
        vector: np.ndarray | None = None,
    ) -> tuple[ClientState, ClientMessage]:
        """Answer ``message``; the ``mask`` stage needs the float ``vector`` to sum.

        Raises
        ------
        ValidationError
            When the message is out of order, malformed or asks for something unsafe.
        """
        expected = {"advertise": None, "share": "advertise", "mask": "share", "unmask": "mask"}
        before = None if state is None else state.done
        if expected[message.stage] != before:
            raise ValidationError(
                f"site {self.site_id!r}: secure aggregation stage {message.stage!r} arrived after "
                f"stage {before!r}; expected it after {expected[message.stage]!r}"
            )
        if state is None:
            return self._advertise(message, entropy)
        if message.stage == "share":
            return self._share(state, message, entropy)
        if message.stage == "mask":
            if vector is None:
                raise ValidationError("the mask stage needs the vector to sum")
            return self._mask(state, message, vector, entropy)
        return self._unmask(state, message)

    def _advertise(
        self, message: ServerMessage, entropy: Entropy
    ) -> tuple[ClientState, ClientMessage]:
        header = dict(message.header)
        missing = {
            "study_id",
            "round",
            "threshold",
            "length",
            "clip",
            "bits",
            "point",
            "neighbours",
        } - set(header)
        if missing:
            raise ValidationError(f"secure aggregation header lacks {sorted(missing)}")
        holders = len(header["neighbours"]) + 1
        if not holders // 2 + 1 <= int(header["threshold"]) <= holders:
            raise ValidationError(
                f"site {self.site_id!r} refuses threshold {header['threshold']!r}: with "
                f"{holders} share holders it must be a strict majority, in "
                f"[{holders // 2 + 1}, {holders}]"
            )
        state = ClientState(
            self.site_id, header, "advertise", KeyPair.generate(entropy), KeyPair.generate(entropy)
        )
        reply = ArrayRecord(
            {"c_pk": from_bytes(state.c.public), "s_pk": from_bytes(state.s.public)}
        )
        return state, ClientMessage("advertise", reply)

    def _key(self, state: ClientState, peer: str, purpose: str) -> bytes:
        pair, pub = (
            (state.c, state.peers[peer][0])
            if purpose == "share"
            else (state.s, state.peers[peer][1])
        )
        return derive_key(
            pair,
            pub,
            purpose=purpose,
            study_id=state.header["study_id"],
            round=int(state.header["round"]),
            me=self.site_id,
            peer=peer,
        )

    def _share(
        self, state: ClientState, message: ServerMessage, entropy: Entropy
    ) -> tuple[ClientState, ClientMessage]:
        neighbours: dict[str, int] = state.header["neighbours"]
        peers = {}
        for v in neighbours:
            if f"c_pk/{v}" in message.payload and f"s_pk/{v}" in message.payload:
                peers[v] = (
                    as_bytes(message.payload[f"c_pk/{v}"]),
                    as_bytes(message.payload[f"s_pk/{v}"]),
                )
        t = int(state.header["threshold"])
        if len(peers) + 1 < t:
            raise ValidationError(
                f"site {self.site_id!r}: only {len(peers)} neighbours advertised keys; "
                f"sharing needs at least {t - 1} (threshold {t})"
            )
        seed = entropy(32)
        holders = [*peers, self.site_id]
        xs = [int(neighbours[v]) for v in peers] + [int(state.header["point"])]
        rows = shamir.split(seed + state.s.private, xs, t, entropy)
        state = replace(
            state,
            done="share",
            peers=peers,
            self_seed=seed,
            held={self.site_id: tuple(int(x) for x in rows[-1])},
        )
        out = {}
        for v, row in zip(holders[:-1], rows[:-1], strict=True):
            sealed = seal_share(
                self._key(state, v, "share"),
                row.astype("<u4").tobytes(),
                study_id=state.header["study_id"],
                round=int(state.header["round"]),
                sender=self.site_id,
                receiver=v,
                entropy=entropy,
            )
            out[f"to/{v}"] = from_bytes(sealed)
        return state, ClientMessage("share", ArrayRecord(out))

    def _mask(
        self, state: ClientState, message: ServerMessage, vector: np.ndarray, entropy: Entropy
    ) -> tuple[ClientState, ClientMessage]:
        length = int(state.header["length"])
        values = np.asarray(vector, dtype=np.float64)
        if values.shape != (length,):
            raise ValidationError(f"vector to sum has shape {values.shape}, expected ({length},)")
        held = dict(state.held)
        for name, sealed in message.payload.items():
            u = name.removeprefix("share/")
            if u not in state.peers or not name.startswith("share/"):
                raise ValidationError(f"site {self.site_id!r} got a share from non-neighbour {u!r}")
            plain = open_share(
                self._key(state, u, "share"),
                as_bytes(sealed),
                study_id=state.header["study_id"],
                round=int(state.header["round"]),
                sender=u,
                receiver=self.site_id,
            )
            held[u] = tuple(np.frombuffer(plain, dtype="<u4").tolist())
        mask_peers = tuple(sorted(k for k in held if k != self.site_id))
        quant = QuantSpec(float(state.header["clip"]), int(state.header["bits"]))
        y = quantize(values, quant, entropy)  # a fresh array: ours to add the masks into
        masks = MaskBuffer(length)  # one buffer for the self-mask and every pairwise mask
        np.add(y, masks.expand(state.self_seed), out=y)  # uint64 arithmetic wraps mod 2^64
        # every key first: alternating key agreement with AES measured ~10 % slower
        keys = [self._key(state, v, "mask") for v in mask_peers]
        for v, key in zip(mask_peers, keys, strict=True):
            (np.add if self.site_id < v else np.subtract)(y, masks.expand(key), out=y)
        state = replace(state, done="mask", held=held, mask_peers=mask_peers)
        return state, ClientMessage("mask", ArrayRecord({"masked": y}, copy=False))

    def _unmask(
        self, state: ClientState, message: ServerMessage
    ) -> tuple[ClientState, ClientMessage]:
        survived = [str(s) for s in message.header.get("survived", [])]
        dropped = [str(s) for s in message.header.get("dropped", [])]
        both = sorted(set(survived) & set(dropped))
        if both:
            raise ValidationError(
                f"site {self.site_id!r} refuses to unmask: the coordinator asked for both the "
                f"self-mask and the pairwise-key shares of {both}"
            )
        if self.site_id in dropped:
            raise ValidationError(f"site {self.site_id!r} refuses to reveal its own key share")
        unknown = sorted(set(survived + dropped) - set(state.held))
        if unknown:
            raise ValidationError(f"site {self.site_id!r} holds no shares of {unknown}")
        t = int(state.header["threshold"])
        if len(survived) < t:
            raise ValidationError(
                f"site {self.site_id!r} refuses to unmask: {len(survived)} survivors among its "
                f"neighbours and itself, threshold is {t}"
            )
        out = {f"b/{u}": np.asarray(state.held[u][:CHUNKS], dtype=np.uint32) for u in survived}
        out |= {f"sk/{u}": np.asarray(state.held[u][CHUNKS:], dtype=np.uint32) for u in dropped}
        return replace(state, done="unmask"), ClientMessage("unmask", ArrayRecord(out))
