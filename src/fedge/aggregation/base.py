"""The values that flow through a round: updates in, an aggregate out, explicit server state.

A round is client work → aggregator → server optimizer (the TFF / FedJAX decomposition):

- devices train from the global params as a :class:`ClientPlan` asks and send an :class:`Update`
  whose ``delta`` is *local params after training − global params*;
- a :class:`~fedge.aggregation.accumulator.WeightedMeanAccumulator` streams updates (or gateway
  partial sums) into an :class:`Aggregate`, the example-weighted mean delta;
- a strategy's server optimizer turns that mean delta into the next :class:`ServerState`.

All of these are frozen; arrays in them are never modified in place by fedge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedge.core.params import Params

__all__ = ["Aggregate", "ClientPlan", "ServerState", "Update"]


@dataclass(frozen=True)
class Update:
    """One device's contribution to a round: its params delta and how many examples it used."""

    device_id: str
    delta: Params  # local params after training − global params (float32, model's names/shapes)
    num_examples: int  # the weight of this update in the mean; must be > 0
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """The weighted mean of the accepted updates of a round, and which updates were refused."""

    mean_delta: Params
    total_weight: float
    num_accepted: int
    rejected: tuple[tuple[str, str], ...]  # (device_id, reason)


@dataclass(frozen=True)
class ClientPlan:
    """What a strategy asks devices to do locally (the client optimizer is configured apart)."""

    proximal_mu: float = 0.0  # FedProx: add (mu / 2)·‖w − w_global‖² to the local loss
    single_full_batch_step: bool = False  # FedSGD: one gradient step on all local data


@dataclass(frozen=True)
class ServerState:
    """Global params, the number of rounds applied so far and the server optimizer's state."""

    params: Params
    round: int
    opt_state: Mapping[str, Params]  # e.g. {"m": ..., "v": ...} for FedAdam; {} for FedAvg
