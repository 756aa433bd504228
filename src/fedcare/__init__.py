"""fedcare: federated learning and analytics for hospitals; the model travels, data stays.

The public API is what ``__all__`` lists (checked by a test). Everything else is internal.
"""

import typing

from fedcare._version import __version__
from fedcare.errors import (
    AggregationError,
    ApiError,
    AuditError,
    ChecksumError,
    ConfigError,
    DataError,
    DatasetUnavailableError,
    FedcareError,
    ModelError,
    RoundFailedError,
    SiteError,
    TransportError,
    ValidationError,
)

if typing.TYPE_CHECKING:  # the real types for mypy; at run time these load lazily
    from fedcare.aggregation import (
        AdaptiveClip,
        Aggregator,
        Contribution,
        CoordinateMedian,
        GaussianNoise,
        MultiKrum,
        NormBound,
        TrimmedMean,
        ValidateUpdates,
        WeightedMean,
        chain,
    )
    from fedcare.analytics import AnalyticsSpec, run_analytics
    from fedcare.audit import AuditLog, export_log, verify_log
    from fedcare.dashboard.client import Client
    from fedcare.data.base import Dataset, FederatedDataset, SiteData
    from fedcare.data.cdm import Schema, SiteMapping, check_table
    from fedcare.data.loaders import load_table
    from fedcare.data.registry import load_dataset
    from fedcare.evaluation.model_card import build_model_card
    from fedcare.grid import Grid
    from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
    from fedcare.privacy import Accountant, DpEvent
    from fedcare.records import ArrayRecord, Reply, ReplyError, Task
    from fedcare.records.study import StudyConfig
    from fedcare.simulation.run import run_simulation
    from fedcare.strategy import (
        FedAdagrad,
        FedAdam,
        FedAvg,
        FedAvgM,
        FedProx,
        FedYogi,
        RoundConfig,
        RoundRecord,
        Scaffold,
        Strategy,
        StrategyState,
        build_strategy,
        run_rounds,
    )

#: Public names and where they live (module, attribute). They load on first use, so that
#: ``import fedcare`` (and so every ``fedcare`` command) does not pay for scikit-learn, scipy,
#: pandas or torch until something needs them.
_LAZY = {
    "AdaptiveClip": ("fedcare.aggregation", "AdaptiveClip"),
    "Aggregator": ("fedcare.aggregation", "Aggregator"),
    "Contribution": ("fedcare.aggregation", "Contribution"),
    "CoordinateMedian": ("fedcare.aggregation", "CoordinateMedian"),
    "GaussianNoise": ("fedcare.aggregation", "GaussianNoise"),
    "MultiKrum": ("fedcare.aggregation", "MultiKrum"),
    "NormBound": ("fedcare.aggregation", "NormBound"),
    "TrimmedMean": ("fedcare.aggregation", "TrimmedMean"),
    "ValidateUpdates": ("fedcare.aggregation", "ValidateUpdates"),
    "WeightedMean": ("fedcare.aggregation", "WeightedMean"),
    "chain": ("fedcare.aggregation", "chain"),
    "Dataset": ("fedcare.data.base", "Dataset"),
    "FederatedDataset": ("fedcare.data.base", "FederatedDataset"),
    "SiteData": ("fedcare.data.base", "SiteData"),
    "FitResult": ("fedcare.models.base", "FitResult"),
    "LocalTrainSpec": ("fedcare.models.base", "LocalTrainSpec"),
    "ModelAdapter": ("fedcare.models.base", "ModelAdapter"),
    "ArrayRecord": ("fedcare.records", "ArrayRecord"),
    "Reply": ("fedcare.records", "Reply"),
    "ReplyError": ("fedcare.records", "ReplyError"),
    "Task": ("fedcare.records", "Task"),
    "StudyConfig": ("fedcare.records.study", "StudyConfig"),
    "FedAdagrad": ("fedcare.strategy", "FedAdagrad"),
    "FedAdam": ("fedcare.strategy", "FedAdam"),
    "FedAvg": ("fedcare.strategy", "FedAvg"),
    "FedAvgM": ("fedcare.strategy", "FedAvgM"),
    "FedProx": ("fedcare.strategy", "FedProx"),
    "FedYogi": ("fedcare.strategy", "FedYogi"),
    "RoundConfig": ("fedcare.strategy", "RoundConfig"),
    "RoundRecord": ("fedcare.strategy", "RoundRecord"),
    "Scaffold": ("fedcare.strategy", "Scaffold"),
    "Strategy": ("fedcare.strategy", "Strategy"),
    "StrategyState": ("fedcare.strategy", "StrategyState"),
    "build_strategy": ("fedcare.strategy", "build_strategy"),
    "run_rounds": ("fedcare.strategy", "run_rounds"),
    "Grid": ("fedcare.grid", "Grid"),
    "run_simulation": ("fedcare.simulation.run", "run_simulation"),
    "load_dataset": ("fedcare.data.registry", "load_dataset"),
    "load_table": ("fedcare.data.loaders", "load_table"),
    "Schema": ("fedcare.data.cdm", "Schema"),
    "SiteMapping": ("fedcare.data.cdm", "SiteMapping"),
    "check_table": ("fedcare.data.cdm", "check_table"),
    "AnalyticsSpec": ("fedcare.analytics", "AnalyticsSpec"),
    "run_analytics": ("fedcare.analytics", "run_analytics"),
    "Accountant": ("fedcare.privacy", "Accountant"),
    "DpEvent": ("fedcare.privacy", "DpEvent"),
    "AuditLog": ("fedcare.audit", "AuditLog"),
    "verify_log": ("fedcare.audit", "verify_log"),
    "export_log": ("fedcare.audit", "export_log"),
    "build_model_card": ("fedcare.evaluation.model_card", "build_model_card"),
    "Client": ("fedcare.dashboard.client", "Client"),
}

__all__ = [
    "Accountant",
    "AdaptiveClip",
    "AggregationError",
    "Aggregator",
    "AnalyticsSpec",
    "ApiError",
    "ArrayRecord",
    "AuditError",
    "AuditLog",
    "ChecksumError",
    "Client",
    "ConfigError",
    "Contribution",
    "CoordinateMedian",
    "DataError",
    "Dataset",
    "DatasetUnavailableError",
    "DpEvent",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "FedcareError",
    "FederatedDataset",
    "FitResult",
    "GaussianNoise",
    "Grid",
    "LocalTrainSpec",
    "ModelAdapter",
    "ModelError",
    "MultiKrum",
    "NormBound",
    "Reply",
    "ReplyError",
    "RoundConfig",
    "RoundFailedError",
    "RoundRecord",
    "Scaffold",
    "Schema",
    "SiteData",
    "SiteError",
    "SiteMapping",
    "Strategy",
    "StrategyState",
    "StudyConfig",
    "Task",
    "TransportError",
    "TrimmedMean",
    "ValidateUpdates",
    "ValidationError",
    "WeightedMean",
    "__version__",
    "build_model_card",
    "build_strategy",
    "chain",
    "check_table",
    "export_log",
    "load_dataset",
    "load_table",
    "run_analytics",
    "run_rounds",
    "run_simulation",
    "verify_log",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'fedcare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
