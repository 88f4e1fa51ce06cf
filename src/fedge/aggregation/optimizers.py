"""Server optimizers: turn the round's mean delta into new global params.

The mean delta Δ (local − global, averaged) is used as a pseudo-gradient *ascent* direction:
``x ← x + η·Δ`` is FedAvg with server learning rate η.

- :class:`SGD` — ``x ← x + η·Δ``; with momentum β (FedAvgM, Hsu et al. 2019, arXiv:1909.06335)
  ``u ← β·u + Δ;  x ← x + η·u``.
- :class:`Adam`, :class:`Yogi`, :class:`Adagrad` — Reddi et al. 2021, "Adaptive Federated
  Optimization", arXiv:2003.00295, Algorithm 2::

      m ← β₁·m + (1 − β₁)·Δ
      v ← v + Δ²                                   (FedAdagrad)
      v ← v − (1 − β₂)·Δ²·sign(v − Δ²)             (FedYogi)
      v ← β₂·v + (1 − β₂)·Δ²                       (FedAdam)
      x ← x + η·m / (√v + τ)

  with m₋₁ = 0 and v₋₁ = τ² (the paper asks for v₋₁ ≥ τ²) and no bias correction, as in the
  paper. Defaults follow the paper: β₁ = 0.9, β₂ = 0.99, τ = 1e-3, η = 1e-2.

Optimizers are frozen dataclasses; state is a ``Mapping[str, Params]`` passed in and returned
anew, never modified in place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedge.core.params import Array, Params
from fedge.errors import ConfigError, ShapeMismatchError

__all__ = ["SGD", "Adagrad", "Adam", "OptState", "ServerOptimizer", "Yogi"]

OptState = Mapping[str, Params]


class ServerOptimizer(ABC):
    """Applies the round's mean delta to the global params, carrying explicit state."""

    @abstractmethod
    def init(self, params: Params) -> OptState:
        """The optimizer state before the first round."""

    @abstractmethod
    def step(
        self, params: Params, mean_delta: Params, opt_state: OptState
    ) -> tuple[Params, OptState]:
        """New params and new state after one round (inputs are left untouched)."""


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool) -> None:
    above_low = low < value or (not low_open and low == value)
    if not (np.isfinite(value) and above_low and value < high):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}), got {value}")


def _slot(opt_state: OptState, key: str, params: Params) -> Params:
    if key not in opt_state or opt_state[key].keys() != params.keys():
        raise ShapeMismatchError(
            f"server optimizer state has no {key!r} slot matching the params; was this state "
            "made by a different strategy?"
        )
    return opt_state[key]


@dataclass(frozen=True)
class SGD(ServerOptimizer):
    """``x ← x + lr·u`` with ``u ← momentum·u + Δ`` (plain FedAvg when momentum is 0)."""

    lr: float = 1.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _check_range("server_lr", self.lr, 0.0, np.inf, low_open=True)
        _check_range("momentum", self.momentum, 0.0, 1.0, low_open=False)

    def init(self, params: Params) -> OptState:
        """No state for plain SGD; a zero momentum buffer otherwise."""
        if self.momentum == 0.0:
            return {}
        return {"momentum": {k: np.zeros_like(v, dtype=np.float32) for k, v in params.items()}}

    def step(
        self, params: Params, mean_delta: Params, opt_state: OptState
    ) -> tuple[Params, OptState]:
        """One server SGD (momentum) step along the mean delta."""
        if self.momentum == 0.0:
            return {k: _f32(params[k] + self.lr * mean_delta[k]) for k in params}, {}
        buf = _slot(opt_state, "momentum", params)
        new_buf = {k: _f32(self.momentum * buf[k] + mean_delta[k]) for k in params}
        new_params = {k: _f32(params[k] + self.lr * new_buf[k]) for k in params}
        return new_params, {"momentum": new_buf}


@dataclass(frozen=True)
class _Adaptive(ServerOptimizer):
    lr: float = 1e-2
    beta1: float = 0.9
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_range("server_lr", self.lr, 0.0, np.inf, low_open=True)
        _check_range("beta1", self.beta1, 0.0, 1.0, low_open=False)
        _check_range("tau", self.tau, 0.0, np.inf, low_open=True)

    @abstractmethod
    def _second_moment(self, v: Array, delta_sq: Array) -> Array:
        """v_t from v_{t-1} and Δ_t² (the only line where the variants differ)."""

    def init(self, params: Params) -> OptState:
        """m₋₁ = 0 and v₋₁ = τ² for every tensor."""
        m = {k: np.zeros_like(a, dtype=np.float32) for k, a in params.items()}
        v = {k: np.full_like(a, self.tau**2, dtype=np.float32) for k, a in params.items()}
        return {"m": m, "v": v}

    def step(
        self, params: Params, mean_delta: Params, opt_state: OptState
    ) -> tuple[Params, OptState]:
        """One step of Reddi et al. Algorithm 2 (server side)."""
        m_old, v_old = _slot(opt_state, "m", params), _slot(opt_state, "v", params)
        m = {k: _f32(self.beta1 * m_old[k] + (1.0 - self.beta1) * mean_delta[k]) for k in params}
        v = {k: _f32(self._second_moment(v_old[k], np.square(mean_delta[k]))) for k in params}
        new = {k: _f32(params[k] + self.lr * m[k] / (np.sqrt(v[k]) + self.tau)) for k in params}
        return new, {"m": m, "v": v}


@dataclass(frozen=True)
class Adagrad(_Adaptive):
    """FedAdagrad: ``v ← v + Δ²``."""

    def _second_moment(self, v: Array, delta_sq: Array) -> Array:
        return v + delta_sq


@dataclass(frozen=True)
class Adam(_Adaptive):
    """FedAdam: ``v ← β₂·v + (1 − β₂)·Δ²``."""

    beta2: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("beta2", self.beta2, 0.0, 1.0, low_open=False)

    def _second_moment(self, v: Array, delta_sq: Array) -> Array:
        return self.beta2 * v + (1.0 - self.beta2) * delta_sq


@dataclass(frozen=True)
class Yogi(_Adaptive):
    """FedYogi: ``v ← v − (1 − β₂)·Δ²·sign(v − Δ²)``."""

    beta2: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("beta2", self.beta2, 0.0, 1.0, low_open=False)

    def _second_moment(self, v: Array, delta_sq: Array) -> Array:
        sign: Array = np.sign(v - delta_sq)
        return v - (1.0 - self.beta2) * delta_sq * sign


def _f32(a: np.ndarray) -> Array:
    out: Array = np.asarray(a, dtype=np.float32)
    return out
