"""Secure aggregation (SecAgg+): key agreement, PRG masks, Shamir sharing, fixed point."""

from fedcare.secure.secagg.graph import default_degree, default_threshold, neighbour_graph
from fedcare.secure.secagg.protocol import (
    STAGES,
    ClientMessage,
    ClientState,
    SecAggClient,
    SecAggResult,
    SecAggServer,
    ServerMessage,
    ServerState,
)
from fedcare.secure.secagg.quantize import QuantSpec, dequantize_sum, error_bound, quantize

__all__ = [
    "STAGES",
    "ClientMessage",
    "ClientState",
    "QuantSpec",
    "SecAggClient",
    "SecAggResult",
    "SecAggServer",
    "ServerMessage",
    "ServerState",
    "default_degree",
    "default_threshold",
    "dequantize_sum",
    "error_bound",
    "neighbour_graph",
    "quantize",
]
