"""Memory a system-benchmark run will need, estimated before it starts.

A run that would not fit in the machine's ``MemAvailable`` (less a margin for the other jobs
on it) is refused with the estimate printed; ``--force`` runs it anyway, and the federation's
memory guard (``system_federation.MIN_AVAILABLE_MB``) still stops it if the machine runs short.

The estimate counts, per process, a base (the Python process with its imports, measured at 1M
parameters where the model is negligible) plus a number of **model copies** (the model's
float32 bytes) held at its peak:

``coordinator``
    the global model, the running aggregate and what it holds of replies; ``+ per_site``
    copies for each site (replies or per-site buffers held at once).
``agent``
    the site agent (the task or reply in flight; none when the transport hands files to
    the worker).
``worker``
    the task worker, which trains. With ``fedcare.models.torch.TorchAdapter.fit`` as it is
    today a torch model needs **4** copies there, whatever the transport does: the received
    parameters (an ``ArrayRecord``; page cache, not heap, if they are a view of a mapped
    file), the module's weights (``load`` builds the module, then copies the parameters in,
    through a transient dict of tensors: a 3rd copy while loading), the gradients (SGD
    without momentum keeps no other state; momentum adds 1 copy, Adam 2), and the exported
    update (``state_dict().numpy().astype(np.float32)`` copies even float32 arrays). Only a
    ``fit`` that loads with ``torch.from_numpy`` and exports without ``astype`` brings it to 2
    (weights and gradients).

Profiles (``--memory-profile``; ``--copies coordinator=3,worker=2`` overrides single entries):

``streaming`` (default)
    issue 16's targets for the streaming transport (coordinator 3 copies plus a bounded buffer
    per site, agent 1), and the 4 worker copies above.
``whole-message``
    the transport before it (protocol 1.1: every task and reply one protobuf message), fitted
    to the measured polled peaks of a 4-site federation: 4.0 GB at 1.0M parameters, 8.6 GB at
    30.3M, 21.4 GB at 100.1M (about 44 copies in all: coordinator 4 + 4 per site, site 6).

The in-memory grid runs everything in one process: ``2 + 3 x sites`` copies (measured: 6.2 GB
at 100.1M parameters with 4 sites, 2.3 GB at 30.3M).

**1B** (``--sizes 1B``, 2 sites, an ``mlp`` with hidden widths (31,617, 31,617) on 10 features:
1,000,045,711 parameters, 4.0 GB; its largest tensor alone is 4.0 GB): by the ``streaming``
profile the coordinator needs about 12.8 GB and each site 20.9 GB (agent 4.3, worker 16.6),
54.6 GB in all, so the benchmark refuses it on a 24 GB machine. Even a coordinator that keeps
1 copy in memory (replies offloaded to disk), an agent that hands files over (0 copies) and a
2-copy worker (``--copies coordinator=1,agent=0,worker=2``) add up to 22.6 GB: the 1B round
fits a 24 GB machine only with the leaner ``fit`` and nearly nothing else running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

__all__ = [
    "BASE_MB",
    "PROFILES",
    "Copies",
    "Estimate",
    "grpc_estimate",
    "inmemory_estimate",
    "parse_copies",
]

BYTES_PER_PARAM = 4  # float32
#: Resident memory of each process with a negligible model (measured at 1M parameters, 4 MB:
#: the coordinator 676 MB, agents 308-312 MB, workers 593-611 MB; at 10M, 36 MB, the workers
#: were 735 MB: 4 copies more).
BASE_MB = {"coordinator": 660.0, "agent": 310.0, "worker": 590.0, "inmemory": 650.0}
#: A bounded transfer buffer per connected site at the coordinator (streaming transport).
SITE_BUFFER_MB = 64.0


@dataclass(frozen=True)
class Copies:
    """Model copies each process holds at its peak (see the module docstring)."""

    coordinator: float
    per_site: float
    agent: float
    worker: float


PROFILES: dict[str, Copies] = {
    "streaming": Copies(coordinator=3, per_site=0, agent=1, worker=4),
    "whole-message": Copies(coordinator=4, per_site=4, agent=2, worker=4),
}


def parse_copies(text: str, base: Copies) -> Copies:
    """``"coordinator=3,worker=2"`` applied to ``base``; raises ValueError naming a bad entry."""
    names = {f.name for f in fields(Copies)}
    changes: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in names:
            raise ValueError(f"--copies entry {item!r}: expected NAME=NUMBER, NAME one of {names}")
        try:
            changes[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--copies entry {item!r}: {value!r} is not a number") from None
    return replace(base, **changes)


@dataclass(frozen=True)
class Estimate:
    """Estimated peak resident memory of a run, by process, in MB."""

    parts: Mapping[str, float]  # "coordinator", "site (agent + worker)" x sites, ...
    how: str

    @property
    def total_mb(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v / 1e3:.1f} GB" for k, v in self.parts.items())
        return f"about {self.total_mb / 1e3:.1f} GB ({shown}; {self.how})"


def grpc_estimate(params: int, sites: int, copies: Copies, profile: str) -> Estimate:
    """A gRPC federation of ``sites`` sites on this machine (sum of the processes' peaks)."""
    model = params * BYTES_PER_PARAM / 1e6
    coordinator = BASE_MB["coordinator"] + model * (copies.coordinator + copies.per_site * sites)
    if profile == "streaming":
        coordinator += SITE_BUFFER_MB * sites
    agent = BASE_MB["agent"] + model * copies.agent
    worker = BASE_MB["worker"] + model * copies.worker
    parts = {"coordinator": coordinator}
    parts.update({f"site {k} (agent {agent / 1e3:.1f} + worker {worker / 1e3:.1f})": agent + worker
                  for k in range(sites)})  # fmt: skip
    how = (
        f"{profile} profile: model {model:,.0f} MB x copies coordinator "
        f"{copies.coordinator:g} + {copies.per_site:g}/site, agent {copies.agent:g}, worker "
        f"{copies.worker:g}"
    )
    return Estimate(parts, how)


def inmemory_estimate(params: int, sites: int) -> Estimate:
    """The in-memory grid: coordinator and every site in this one process."""
    model = params * BYTES_PER_PARAM / 1e6
    total = BASE_MB["inmemory"] + model * (2 + 3 * sites)
    return Estimate({"benchmark process": total}, f"in-memory grid: {2 + 3 * sites} copies")
