"""Aggregation: updates → weighted mean → server optimizer, and the strategies built from them.

``make_strategy("fedadam", server_lr=0.01)`` builds a strategy by its config name. Registered:
fedavg, fedsgd, fedavgm, fedprox (McMahan 2017; Hsu 2019; Li 2020) and fedadam, fedyogi,
fedadagrad (Reddi 2021). Third-party strategies register through the ``fedge.strategies``
entry-point group.
"""

from __future__ import annotations

import dataclasses
import difflib

from fedge.aggregation.accumulator import WeightedMeanAccumulator
from fedge.aggregation.base import Aggregate, ClientPlan, ServerState, Update
from fedge.aggregation.fedavg import FedAvg
from fedge.aggregation.fedavgm import FedAvgM
from fedge.aggregation.fedopt import FedAdagrad, FedAdam, FedYogi
from fedge.aggregation.fedprox import FedProx
from fedge.aggregation.fedsgd import FedSGD
from fedge.aggregation.optimizers import SGD, Adagrad, Adam, OptState, ServerOptimizer, Yogi
from fedge.aggregation.strategy import Strategy
from fedge.errors import ConfigError
from fedge.registry import Registry

__all__ = [
    "SGD",
    "STRATEGIES",
    "Adagrad",
    "Adam",
    "Aggregate",
    "ClientPlan",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedSGD",
    "FedYogi",
    "OptState",
    "ServerOptimizer",
    "ServerState",
    "Strategy",
    "Update",
    "WeightedMeanAccumulator",
    "Yogi",
    "make_strategy",
    "strategy_options",
]

STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "fedge.strategies")
for _cls in (FedAvg, FedSGD, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad):
    STRATEGIES.add(_cls.name, _cls)


def strategy_options(name: str) -> dict[str, float]:
    """The options a strategy accepts, with their defaults."""
    cls = STRATEGIES.get(name)
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def make_strategy(name: str, **options: float) -> Strategy:
    """Build the strategy registered as ``name`` with keyword float options."""
    cls = STRATEGIES.get(name)
    valid = strategy_options(name)
    for key, value in options.items():
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown option {key!r} for strategy {name!r}; valid options: "
                f"{', '.join(valid) or '(none)'}.{hint}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"strategy option {key} must be a number, got {value!r}")
    return cls(**{k: float(v) for k, v in options.items()})
