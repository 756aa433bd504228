"""fedcare: federated learning and analytics for hospitals; the model travels, data stays.

The public API is what ``__all__`` lists (checked by a test). Everything else is internal.
"""

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
from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.errors import (
    AggregationError,
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
from fedcare.models.base import FitResult, LocalTrainSpec, ModelAdapter
from fedcare.records import ArrayRecord, Reply, ReplyError, Task
from fedcare.records.study import StudyConfig
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
from fedcare.transport.base import Grid

__version__ = "0.1.0"

#: Names loaded on first use (module, attribute), so ``import fedcare`` stays quick.
_LAZY = {
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
}

__all__ = [
    "Accountant",
    "AdaptiveClip",
    "AggregationError",
    "Aggregator",
    "AnalyticsSpec",
    "ArrayRecord",
    "AuditError",
    "AuditLog",
    "ChecksumError",
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
    # Heavier entry points load on first use, so ``import fedcare`` stays quick.
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'fedcare' has no attribute {name!r}")
