"""Composable aggregators: a base mean and layers that wrap an inner aggregator."""

from fedcare.aggregation.base import Aggregator, Contribution, Measurements
from fedcare.aggregation.chain import Layer, chain
from fedcare.aggregation.mean import WeightedMean
from fedcare.aggregation.validate import ValidateUpdates

__all__ = [
    "Aggregator",
    "Contribution",
    "Layer",
    "Measurements",
    "ValidateUpdates",
    "WeightedMean",
    "chain",
]
