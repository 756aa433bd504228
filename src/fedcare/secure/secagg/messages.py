"""What the secure-aggregation stages send: a stage name, scalar config and named byte arrays.

Messages map onto fedcare tasks and replies one to one: the stage and a JSON header travel in
``Task.config`` (scalars only), byte payloads travel as uint8 (keys, ciphertexts), uint32
(shares) or uint64 (masked vectors) arrays in an :class:`ArrayRecord`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.secure.secagg.quantize import QuantSpec

__all__ = [
    "HEADER_KEY",
    "STAGES",
    "STAGE_KEY",
    "ClientMessage",
    "RoundSetup",
    "ServerMessage",
    "Stage",
    "as_bytes",
    "from_bytes",
]

Stage = Literal["advertise", "share", "mask", "unmask"]
STAGES: tuple[Stage, ...] = ("advertise", "share", "mask", "unmask")
STAGE_KEY = "secagg_stage"
HEADER_KEY = "secagg_header"


@dataclass(frozen=True)
class ServerMessage:
    """The coordinator's message to one site for one stage."""

    stage: Stage
    header: Mapping[str, Any] = field(default_factory=dict)
    payload: ArrayRecord = field(default_factory=ArrayRecord)

    def config(self) -> dict[str, str]:
        """The task config entries that carry this message's stage and header."""
        return {STAGE_KEY: self.stage, HEADER_KEY: json.dumps(dict(self.header), sort_keys=True)}

    @classmethod
    def from_task(cls, config: Mapping[str, Any], payload: ArrayRecord) -> ServerMessage:
        stage = config.get(STAGE_KEY)
        if stage not in STAGES:
            raise ValidationError(f"task config {STAGE_KEY}={stage!r}; expected one of {STAGES}")
        try:
            header = json.loads(str(config.get(HEADER_KEY, "{}")))
        except json.JSONDecodeError as err:
            raise ValidationError(f"task config {HEADER_KEY} is not JSON: {err}") from None
        if not isinstance(header, dict):
            raise ValidationError(f"task config {HEADER_KEY} must be a JSON object")
        return cls(stage, header, payload)


@dataclass(frozen=True)
class ClientMessage:
    """One site's answer to one stage."""

    stage: Stage
    payload: ArrayRecord = field(default_factory=ArrayRecord)


@dataclass(frozen=True)
class RoundSetup:
    """The public parameters of one secure-aggregation round."""

    study_id: str
    round: int
    sites: tuple[str, ...]
    neighbours: Mapping[str, tuple[str, ...]]
    threshold: int
    length: int
    quant: QuantSpec

    @cached_property
    def _points(self) -> dict[str, int]:
        return {site: i + 1 for i, site in enumerate(self.sites)}

    def point(self, site: str) -> int:
        """The site's Shamir evaluation point (1-based position among the round's sites).

        Raises
        ------
        ValueError
            If ``site`` is not one of the round's sites.
        """
        try:
            return self._points[site]
        except KeyError:
            raise ValueError(f"{site!r} is not one of the round's sites") from None

    def header_for(self, site: str) -> dict[str, Any]:
        """What ``site`` must know to take part (sent with the advertise stage)."""
        return {
            "study_id": self.study_id,
            "round": self.round,
            "threshold": self.threshold,
            "length": self.length,
            "clip": self.quant.clip,
            "bits": self.quant.bits,
            "point": self.point(site),
            "sites": len(self.sites),
            "neighbours": {v: self.point(v) for v in self.neighbours[site]},
        }


def as_bytes(array: np.ndarray) -> bytes:
    """The bytes carried by a uint8 payload array."""
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValidationError(f"payload must be a 1-d uint8 array, got {array.dtype}{array.shape}")
    return array.tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    """A uint8 payload array carrying ``data``."""
    return np.frombuffer(data, dtype=np.uint8)
