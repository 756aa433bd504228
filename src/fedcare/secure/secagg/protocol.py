"""SecAgg+ as sans-I/O state machines: :class:`SecAggServer` and :class:`SecAggClient`.

Four stages, each a pure transition ``(state, inbound) -> (state, outbound)``:

1. ``advertise``: each site sends two X25519 public keys (share transport, pairwise masks).
2. ``share``: each site Shamir-shares its self-mask seed and its mask private key among its
   neighbours (t of k + 1), sealed for each neighbour, relayed by the coordinator.
3. ``mask``: each site sends ``quantize(x) + PRG(b) + sum_v +-PRG(s_uv) mod 2^64``.
4. ``unmask``: each survivor reveals, per neighbour, the self-mask share if that neighbour's
   masked vector arrived, else the pairwise-key share; never both.

The coordinator removes the self-masks of survivors and the pairwise masks of sites that
dropped after sharing, and decodes the sum. Up to ``k + 1 - t`` of any site's share holders
may drop out (``n - t`` overall with a complete graph); more and the round fails with an
:class:`~fedcare.errors.AggregationError` naming the stage and the counts.
"""

from fedcare.secure.secagg.client import ClientState, SecAggClient
from fedcare.secure.secagg.messages import STAGES, ClientMessage, RoundSetup, ServerMessage, Stage
from fedcare.secure.secagg.server import SecAggResult, SecAggServer, ServerState

__all__ = [
    "STAGES",
    "ClientMessage",
    "ClientState",
    "RoundSetup",
    "SecAggClient",
    "SecAggResult",
    "SecAggServer",
    "ServerMessage",
    "ServerState",
    "Stage",
]
