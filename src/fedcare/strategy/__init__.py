"""Strategies (FedAvg family, SCAFFOLD), site sampling and the one round loop."""

from fedcare.strategy.base import Instruction, Strategy, StrategyState, sample_sites
from fedcare.strategy.fedopt import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedOpt, FedProx, FedYogi
from fedcare.strategy.loop import RoundConfig, RoundRecord, evaluate_on_sites, run_round, run_rounds
from fedcare.strategy.registry import STRATEGIES, build_strategy
from fedcare.strategy.scaffold import Scaffold

__all__ = [
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "Instruction",
    "RoundConfig",
    "RoundRecord",
    "Scaffold",
    "Strategy",
    "StrategyState",
    "build_strategy",
    "evaluate_on_sites",
    "run_round",
    "run_rounds",
    "sample_sites",
]
