"""The coordinator half of SecAgg+: a sans-I/O state machine over four stages.

``start`` returns the first outbound messages; ``step(state, inbound)`` takes every reply of the
current stage (sites that did not answer are simply absent) and returns the next state and
outbound messages. After the ``unmask`` stage the state holds the result: the sum of the
surviving sites' vectors, and who dropped out at which stage. The coordinator only relays: it
sees public keys, ciphertexts it cannot open, masked vectors and, at the end, shares of the
self-masks of survivors or of the pairwise keys of dropped sites, never both for one site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

import fedcare.secure.secagg.shamir as shamir
from fedcare.errors import AggregationError, ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.secagg.graph import default_degree, default_threshold, neighbour_graph
from fedcare.secure.secagg.keys import KeyPair, derive_key
from fedcare.secure.secagg.messages import (
    ClientMessage,
    RoundSetup,
    ServerMessage,
    Stage,
    as_bytes,
    from_bytes,
)
from fedcare.secure.secagg.quantize import QuantSpec, dequantize_sum
from fedcare.secure.secagg.unmask import MaskJob, add_vectors, apply_masks, default_workers

__all__ = ["SecAggResult", "SecAggServer", "ServerState"]

CHUNKS = 16  # 16-bit chunks in a 32-byte secret
#: Below this many values to expand and add (masks x length), the coordinator uses one thread.
PARALLEL_MIN_VALUES = 8_000_000


@dataclass(frozen=True)
class SecAggResult:
    """The decoded sum over ``sites`` and who dropped out at each stage."""

    total: np.ndarray
    sites: tuple[str, ...]
    dropped: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class ServerState:
    """Where a round stands; ``stage`` is the stage whose replies are awaited next."""

    setup: RoundSetup
    stage: Stage | None
    alive: tuple[str, ...]
    dropped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keys: Mapping[str, tuple[bytes, bytes]] = field(default_factory=dict)
    pairs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sharers: tuple[str, ...] = ()
    masked_sum: np.ndarray | None = None
    result: SecAggResult | None = None


class SecAggServer:
    """Runs one secure sum per round.

    Parameters
    ----------
    quant:
        Fixed-point encoding (clip and bits).
    degree:
        Neighbours per site (``None``: :func:`default_degree`).
    threshold:
        Shares needed to reconstruct a secret (``None``: :func:`default_threshold`).
    workers:
        Threads that remove masks at the end (``None``: :func:`default_workers`).
    """

    def __init__(
        self,
        quant: QuantSpec,
        *,
        degree: int | None = None,
        threshold: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.quant, self.degree, self.threshold = quant, degree, threshold
        self.workers = default_workers() if workers is None else workers

    def start(
        self, study_id: str, round: int, sites: Sequence[str], length: int, *, seed: int
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        """The first stage (advertise keys) for ``sites``, summing vectors of ``length``."""
        ordered = tuple(sorted(set(sites)))
        n = len(ordered)
        degree = min(self.degree or default_degree(n), n - 1)
        t = self.threshold or default_threshold(degree)
        low = default_threshold(degree)  # a strict majority: never both shares of one site
        if not low <= t <= degree + 1:
            raise AggregationError(
                f"secure aggregation threshold must be in [{low}, {degree + 1}] for degree "
                f"{degree} ({n} sites), got {t}"
            )
        if n > self.quant.max_sites():
            raise AggregationError(f"{n} sites overflow {self.quant.bits}-bit levels mod 2^64")
        setup = RoundSetup(
            study_id, round, ordered, neighbour_graph(ordered, degree, seed), t, length, self.quant
        )
        state = ServerState(setup=setup, stage="advertise", alive=ordered)
        return state, {s: ServerMessage("advertise", setup.header_for(s)) for s in ordered}

    def step(
        self, state: ServerState, inbound: Mapping[str, ClientMessage]
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        """Consume the replies to ``state.stage``; return the next state and messages.

        Raises
        ------
        AggregationError
            When too few sites remain to finish the round, naming the stage and the counts.
        """
        handlers = {
            "advertise": self._on_keys,
            "share": self._on_shares,
            "mask": self._on_masked,
            "unmask": self._on_unmask,
        }
        if state.stage is None:
            raise AggregationError("secure aggregation round is already finished")
        replies = {s: m for s, m in inbound.items() if s in state.alive and m.stage == state.stage}
        return handlers[state.stage](state, replies)

    def _workers(self, vectors: int, length: int) -> int:
        """Threads for ``vectors`` passes over ``length`` values: one for little work, where
        starting threads costs more than they save (measured: 10 sites x 100k values)."""
        return self.workers if vectors * length >= PARALLEL_MIN_VALUES else 1

    # stages -----------------------------------------------------------------------------------
    def _survivors(
        self, state: ServerState, got: Sequence[str], stage: Stage
    ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
        arrived = set(got)
        alive = tuple(s for s in state.alive if s in arrived)
        lost = tuple(s for s in state.alive if s not in arrived)
        t = state.setup.threshold
        if len(alive) < t:
            raise AggregationError(
                f"secure aggregation failed at stage {stage!r}: {len(alive)} of "
                f"{len(state.setup.sites)} sites remain ({len(lost)} dropped here: {list(lost)}), "
                f"threshold is {t}"
            )
        return alive, {**state.dropped, stage: lost}

    def _on_keys(
        self, state: ServerState, inbound: Mapping[str, ClientMessage]
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        keys: dict[str, tuple[bytes, bytes]] = {}
        for site, msg in inbound.items():
            try:
                keys[site] = (as_bytes(msg.payload["c_pk"]), as_bytes(msg.payload["s_pk"]))
            except (KeyError, ValidationError):
                continue
        alive, dropped = self._survivors(state, list(keys), "advertise")
        # each key as a read-only array once, shared by the ~k messages that relay it
        arrays = {v: (from_bytes(c_pk), from_bytes(s_pk)) for v, (c_pk, s_pk) in keys.items()}
        out = {}
        for s in alive:
            near = [v for v in state.setup.neighbours[s] if v in keys]
            payload = {f"c_pk/{v}": arrays[v][0] for v in near}
            payload |= {f"s_pk/{v}": arrays[v][1] for v in near}
            out[s] = ServerMessage("share", {}, ArrayRecord(payload, copy=False))
        new = replace(state, stage="share", alive=alive, dropped=dropped, keys=keys)
        return new, out

    def _on_shares(
        self, state: ServerState, inbound: Mapping[str, ClientMessage]
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        sent = {
            u: {k[3:]: v for k, v in m.payload.items() if k.startswith("to/")}
            for u, m in inbound.items()
        }
        alive, dropped = self._survivors(state, list(sent), "share")
        pairs: dict[str, tuple[str, ...]] = {}
        out = {}
        for v in alive:
            # a pair masks only when both sent each other shares: both ends then agree on it
            mutual = tuple(
                u
                for u in state.setup.neighbours[v]
                if u in sent and v in sent[u] and u in sent.get(v, {})
            )
            pairs[v] = mutual
            # relayed as received: the inbound records' arrays are read-only already
            payload = ArrayRecord({f"share/{u}": sent[u][v] for u in mutual}, copy=False)
            out[v] = ServerMessage("mask", {}, payload)
        new = replace(state, stage="mask", alive=alive, dropped=dropped, pairs=pairs, sharers=alive)
        return new, out

    def _on_masked(
        self, state: ServerState, inbound: Mapping[str, ClientMessage]
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        vectors = {}
        for site, msg in inbound.items():
            vec = msg.payload.get("masked")
            if vec is None or vec.dtype != np.uint64 or vec.shape != (state.setup.length,):
                continue
            vectors[site] = vec
        alive, dropped = self._survivors(state, list(vectors), "mask")
        total = np.zeros(state.setup.length, dtype=np.uint64)
        workers = self._workers(len(vectors), state.setup.length)
        add_vectors(total, list(vectors.values()), workers=workers)  # mod 2^64
        out = {}
        kept = set(alive)
        for v in alive:
            survived = [u for u in (*state.pairs[v], v) if u in kept]
            lost = [u for u in state.pairs[v] if u not in kept]
            out[v] = ServerMessage("unmask", {"survived": sorted(survived), "dropped": lost})
        new = replace(state, stage="unmask", alive=alive, dropped=dropped, masked_sum=total)
        return new, out

    def _on_unmask(
        self, state: ServerState, inbound: Mapping[str, ClientMessage]
    ) -> tuple[ServerState, dict[str, ServerMessage]]:
        _, dropped = self._survivors(state, list(inbound), "unmask")
        assert state.masked_sum is not None
        total = state.masked_sum.copy()
        setup = state.setup
        kept = set(state.alive)
        lost = [s for s in state.sharers if s not in kept]  # dropped after sharing
        wanted = [(u, "b") for u in state.alive] + [(u, "sk") for u in lost]
        secrets = self._reconstruct(state, inbound, wanted)
        jobs = self._mask_jobs(state, secrets, lost)
        apply_masks(total, jobs, workers=self._workers(len(jobs), setup.length))
        result = SecAggResult(
            dequantize_sum(total, len(state.alive), setup.quant), state.alive, dropped
        )
        return replace(state, stage=None, dropped=dropped, result=result), {}

    @staticmethod
    def _mask_jobs(
        state: ServerState, secrets: Mapping[tuple[str, str], bytes], lost: Sequence[str]
    ) -> list[MaskJob]:
        """What to remove: each pairwise mask of a site that dropped after sharing with a
        survivor (v added +mask iff v < u, so we add it iff not), its seed a key agreement that
        :func:`apply_masks` makes while other threads expand the survivors' self-masks."""
        setup, kept = state.setup, set(state.alive)
        jobs: list[MaskJob] = []
        for u in lost:
            sk = KeyPair(secrets[(u, "sk")], b"")
            for v in (p for p in state.pairs[u] if p in kept):
                derive = partial(
                    derive_key,
                    sk,
                    state.keys[v][1],
                    purpose="mask",
                    study_id=setup.study_id,
                    round=setup.round,
                    me=u,
                    peer=v,
                )
                jobs.append((derive, not v < u))
        jobs += [(secrets[(u, "b")], False) for u in state.alive]
        return jobs

    @staticmethod
    def _reconstruct(
        state: ServerState,
        inbound: Mapping[str, ClientMessage],
        wanted: Sequence[tuple[str, str]],
    ) -> dict[tuple[str, str], bytes]:
        """Each wanted ``(site, kind)`` secret from its holders' shares, all in one batch."""
        # each wanted secret's shares, by the name holders send them under: their indexes in
        # ``shares``, holders in arrival order
        slots: dict[str, list[int]] = {f"{kind}/{u}": [] for u, kind in wanted}
        points: list[int] = []
        shares: list[np.ndarray] = []
        for holder, msg in inbound.items():
            x = state.setup.point(holder)
            for name, share in msg.payload.items():
                slot = slots.get(name)
                if slot is not None and share.shape == (CHUNKS,):
                    slot.append(len(shares))
                    points.append(x)
                    shares.append(share)
        t = state.setup.threshold
        for (u, kind), held in zip(wanted, slots.values(), strict=True):
            if len(held) < t:
                raise AggregationError(
                    f"secure aggregation failed at stage 'unmask': {len(held)} shares of site "
                    f"{u!r}'s {_WHAT[kind]} arrived, threshold is {t} ({len(inbound)} sites "
                    "answered)"
                )
        keys = list(wanted)  # the first t shares of each, as shamir.reconstruct takes them
        first = np.array([held[:t] for held in slots.values()], dtype=np.intp).reshape(-1, t)
        # each share cast as ``astype`` would (a holder may send any numeric dtype)
        stacked = np.stack(shares or [np.zeros(CHUNKS)], dtype=np.int64, casting="unsafe")
        acc = shamir.interpolate_many(np.array(points, dtype=np.int64)[first], stacked[first])
        bad = np.flatnonzero((acc > 0xFFFF).any(axis=1))
        if bad.size:
            u, kind = keys[int(bad[0])]
            raise AggregationError(
                f"cannot reconstruct site {u!r}'s {_WHAT[kind]}: shares do not reconstruct a "
                "valid secret (inconsistent shares)"
            )
        return {k: row.astype("<u2").tobytes() for k, row in zip(keys, acc, strict=True)}


_WHAT = {"b": "self-mask seed", "sk": "pairwise key"}
