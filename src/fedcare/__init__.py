"""fedcare: federated learning and analytics for hospitals; the model travels, data stays.

The public API is what ``__all__`` lists (checked by a test). Everything else is internal.
"""

from fedcare.aggregation import Aggregator, Contribution, ValidateUpdates, WeightedMean, chain
from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.errors import (
    AggregationError,
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

__all__ = [
    "AggregationError",
    "Aggregator",
    "ArrayRecord",
    "ChecksumError",
    "ConfigError",
    "Contribution",
    "DataError",
    "Dataset",
    "DatasetUnavailableError",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "FedcareError",
    "FederatedDataset",
    "FitResult",
    "Grid",
    "LocalTrainSpec",
    "ModelAdapter",
    "ModelError",
    "Reply",
    "ReplyError",
    "RoundConfig",
    "RoundFailedError",
    "RoundRecord",
    "Scaffold",
    "SiteData",
    "SiteError",
    "Strategy",
    "StrategyState",
    "StudyConfig",
    "Task",
    "TransportError",
    "ValidateUpdates",
    "ValidationError",
    "WeightedMean",
    "__version__",
    "build_strategy",
    "chain",
    "load_dataset",
    "run_rounds",
    "run_simulation",
]


def __getattr__(name: str) -> object:
    # Heavier entry points load on first use, so ``import fedcare`` stays quick.
    if name == "run_simulation":
        from fedcare.simulation.run import run_simulation

        return run_simulation
    if name == "load_dataset":
        from fedcare.data.registry import load_dataset

        return load_dataset
    raise AttributeError(f"module 'fedcare' has no attribute {name!r}")
