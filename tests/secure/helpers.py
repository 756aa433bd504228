"""Drive the secure-aggregation state machines in memory, with chosen dropouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcare.secure.secagg import QuantSpec, SecAggClient, SecAggServer
from fedcare.secure.secagg.messages import ClientMessage, ServerMessage


def entropy_for(*seed: Any) -> Callable[[int], bytes]:
    gen = np.random.default_rng([abs(hash(s)) % 2**32 for s in map(str, seed)])
    return lambda n: gen.bytes(n)


@dataclass
class Run:
    result: Any
    transcript: list[tuple[str, str, Any]] = field(default_factory=list)  # (stage, site, msg)


def run_protocol(
    inputs: Mapping[str, np.ndarray],
    *,
    quant: QuantSpec | None = None,
    drop: Mapping[str, set[str]] | None = None,
    degree: int | None = None,
    threshold: int | None = None,
    seed: int = 0,
    tamper: Callable[[str, str, ServerMessage], ServerMessage] | None = None,
) -> Run:
    """Run one round; ``drop[stage]`` sites stop answering from that stage on."""
    quant = quant or QuantSpec(clip=10.0, bits=32)
    server = SecAggServer(quant, degree=degree, threshold=threshold)
    length = len(next(iter(inputs.values())))
    state, out = server.start("study-x", 3, list(inputs), length, seed=seed)
    clients = {s: SecAggClient(s) for s in inputs}
    cstate: dict[str, Any] = dict.fromkeys(inputs)
    gone: set[str] = set()
    run = Run(None)
    while state.stage is not None:
        stage = state.stage
        gone |= set((drop or {}).get(stage, set()))
        inbound: dict[str, ClientMessage] = {}
        for site, msg in out.items():
            run.transcript.append((stage, site, msg))
            if site in gone:
                continue
            if tamper is not None:
                msg = tamper(stage, site, msg)
            vec = inputs[site] if stage == "mask" else None
            cstate[site], reply = clients[site].step(
                cstate[site], msg, entropy_for(seed, site, stage), vector=vec
            )
            run.transcript.append((stage, site, reply))
            inbound[site] = reply
        state, out = server.step(state, inbound)
    run.result = state.result
    return run
