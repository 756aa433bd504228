"""Composable aggregators: a base mean and layers that wrap an inner aggregator (validation,
clipping, robust means, DP noise, update compression)."""

from fedcare.aggregation.adaptive_clip import AdaptiveClip
from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.chain import Layer, chain
from fedcare.aggregation.compression import Decompress, site_compress
from fedcare.aggregation.gaussian_noise import GaussianNoise
from fedcare.aggregation.krum import MultiKrum
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.median import CoordinateMedian
from fedcare.aggregation.norm_bound import NormBound, site_clip
from fedcare.aggregation.presets import build_aggregator
from fedcare.aggregation.trimmed_mean import TrimmedMean
from fedcare.aggregation.validate import ValidateUpdates

__all__ = [
    "AdaptiveClip",
    "Aggregator",
    "Contribution",
    "CoordinateMedian",
    "Decompress",
    "GaussianNoise",
    "Layer",
    "Measurements",
    "MultiKrum",
    "NormBound",
    "TrimmedMean",
    "ValidateUpdates",
    "WeightedMean",
    "build_aggregator",
    "chain",
    "site_clip",
    "site_compress",
]
