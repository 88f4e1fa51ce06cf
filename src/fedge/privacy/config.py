"""The ``[privacy]`` section of a job or simulation config, validated up front.

Every refusal names the setting and a value that would work. :func:`load_privacy_config` maps
pydantic's errors to :class:`fedge.errors.ConfigError` at the boundary.

Example (TOML)::

    [privacy]
    mode = "central"          # none | central | distributed | local
    clip_norm = 1.0
    target_epsilon = 4.0      # or: noise_multiplier = 1.1
    max_epsilon = 4.0         # the job stops before the round that would pass it
    accountant = "rdp"        # rdp | pld
    # delta defaults to 1 / N^1.1 for a fleet of N devices

    [privacy.adaptive_clipping]
    target_quantile = 0.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fedge.errors import ConfigError

__all__ = ["AdaptiveClippingConfig", "PrivacyConfig", "PrivacyMode", "load_privacy_config"]

PrivacyMode = Literal["none", "central", "distributed", "local"]


class AdaptiveClippingConfig(BaseModel):
    """Adaptive clipping to a quantile of update norms (Andrew et al. 2021, arXiv:1905.03871)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_quantile: float = 0.5  # γ: fraction of updates left unclipped
    learning_rate: float = 0.2  # η_C of the geometric update
    clip_count_stddev: float | None = None  # σ_b; None: expected devices per round / 20

    @field_validator("target_quantile")
    @classmethod
    def _quantile(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"target_quantile must be between 0 and 1 (e.g. 0.5), got {v}")
        return v

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"learning_rate must be > 0 (e.g. 0.2), got {v}")
        return v

    @field_validator("clip_count_stddev")
    @classmethod
    def _stddev(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(
                f"clip_count_stddev must be > 0 (e.g. devices per round / 20), got {v}"
            )
        return v


class PrivacyConfig(BaseModel):
    """How a job protects each device: mode, clipping, noise or target ε, δ, budget, accountant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: PrivacyMode = "none"
    clip_norm: float = 1.0  # L2 bound on each device's whole update (initial C when adaptive)
    noise_multiplier: float | None = None  # z; give this or target_epsilon, not both
    target_epsilon: float | None = None  # calibrate z so the job ends at this ε
    delta: float | None = None  # None: 1/N^1.1 for a fleet of N devices
    max_epsilon: float | None = None  # budget: stop before the round that would pass it
    accountant: Literal["rdp", "pld"] = "rdp"
    adaptive_clipping: AdaptiveClippingConfig | None = None
    granularity: float | None = None  # distributed mode: integer grid step; None: from bits

    @field_validator("clip_norm")
    @classmethod
    def _clip(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"clip_norm must be > 0 (try 1.0, or the median update norm), got {v}")
        return v

    @field_validator("noise_multiplier")
    @classmethod
    def _noise(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(
                f"noise_multiplier must be > 0 (e.g. 1.0; 0 would mean ε = ∞: use "
                f"mode = 'none' instead), got {v}"
            )
        return v

    @field_validator("target_epsilon", "max_epsilon")
    @classmethod
    def _eps(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be a finite ε > 0 (e.g. 1, 2, 4 or 8), got {v}")
        return v

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(
                f"delta must be in (0, 1) and well below 1/N for N devices (e.g. 1e-5, or leave "
                f"it out for 1/N^1.1), got {v}"
            )
        return v

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"granularity must be > 0 (e.g. 1e-3), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        noise_set = [k for k in ("noise_multiplier", "target_epsilon") if getattr(self, k)]
        if self.mode == "none":
            extra = noise_set + [k for k in ("max_epsilon",) if getattr(self, k) is not None]
            if extra or self.adaptive_clipping is not None:
                names = ", ".join(extra or ["adaptive_clipping"])
                raise ValueError(
                    f"mode is 'none' but {names} is set: set mode = 'central' (or 'distributed', "
                    f"'local') to use it, or remove {names}"
                )
            return self
        if len(noise_set) != 1:
            raise ValueError(
                f"mode '{self.mode}' needs exactly one of noise_multiplier (e.g. 1.0) or "
                f"target_epsilon (e.g. 4.0); got {', '.join(noise_set) or 'neither'}"
            )
        if (
            self.target_epsilon is not None
            and self.max_epsilon is not None
            and self.target_epsilon > self.max_epsilon
        ):
            raise ValueError(
                f"target_epsilon {self.target_epsilon:g} is above max_epsilon "
                f"{self.max_epsilon:g}: lower target_epsilon to at most {self.max_epsilon:g}"
            )
        if self.mode == "local" and self.adaptive_clipping is not None:
            raise ValueError(
                "adaptive_clipping needs a trusted aggregate of clip counts; remove it with "
                "mode = 'local'"
            )
        return self


def load_privacy_config(data: Mapping[str, Any] | None) -> PrivacyConfig:
    """Validate a ``[privacy]`` table; :class:`ConfigError` lists every problem with its fix."""
    try:
        return PrivacyConfig.model_validate(dict(data or {}))
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "privacy"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                model = AdaptiveClippingConfig if len(err["loc"]) > 1 else PrivacyConfig
                msg = f"unknown setting; allowed: {', '.join(model.model_fields)}"
            problems.append(f"[privacy] {where}: {msg}")
        raise ConfigError("; ".join(problems)) from None
