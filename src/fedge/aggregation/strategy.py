"""The :class:`Strategy` extension point: ``init`` / ``client_plan`` / ``apply`` / ``step``.

A strategy is a frozen dataclass of its options (the keyword floats of ``make_strategy``) that
names a server optimizer. The base class supplies the round: accumulate the updates into their
example-weighted mean (:class:`WeightedMeanAccumulator`), then let the server optimizer move the
global params. Robust rules (median, Krum...) override :meth:`Strategy.apply` with their own
aggregator and keep :meth:`Strategy.step`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import numpy as np

from fedge.aggregation.accumulator import WeightedMeanAccumulator
from fedge.aggregation.base import Aggregate, ClientPlan, ServerState, Update
from fedge.aggregation.optimizers import ServerOptimizer
from fedge.core.params import Params, ParamSpec

__all__ = ["Strategy"]


class Strategy(ABC):
    """A federated algorithm: what devices do, how updates are combined, how the server moves."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        self.optimizer()  # build once so bad options fail at construction (ConfigError)

    @abstractmethod
    def optimizer(self) -> ServerOptimizer:
        """The server optimizer this strategy applies to the mean delta."""

    def init(self, params: Params) -> ServerState:
        """Round-0 state: a validated copy of ``params`` and fresh optimizer state."""
        checked = ParamSpec.of(params).validate(params, finite=True)
        copy = {k: np.array(v, dtype=np.float32, copy=True) for k, v in checked.items()}
        return ServerState(params=copy, round=0, opt_state=self.optimizer().init(copy))

    def client_plan(self, state: ServerState) -> ClientPlan:
        """What devices should do locally this round (plain local SGD by default)."""
        return ClientPlan()

    def apply(self, state: ServerState, updates: Iterable[Update]) -> tuple[ServerState, Aggregate]:
        """Accumulate ``updates`` and take one server step; AggregationError if none is valid."""
        acc = WeightedMeanAccumulator(ParamSpec.of(state.params))
        for update in updates:
            acc.add(update)
        aggregate = acc.result()
        return self.step(state, aggregate), aggregate

    def step(self, state: ServerState, aggregate: Aggregate) -> ServerState:
        """Apply the server optimizer to an aggregate made elsewhere (simulator, gateways)."""
        mean_delta = ParamSpec.of(state.params).validate(aggregate.mean_delta, finite=True)
        params, opt_state = self.optimizer().step(state.params, mean_delta, state.opt_state)
        return ServerState(params=params, round=state.round + 1, opt_state=opt_state)
