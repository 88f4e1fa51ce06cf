"""Distributed DP in the simulator: discrete Gaussian noise under secure aggregation.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation" (ICML 2021, arXiv:2102.06387). Each device clips its update to L2 norm C,
scales it to the integer grid (granularity γ), rounds it with *conditional* randomized rounding
(unbiased rounding, redrawn until the rounded vector's norm is within the bound Δ₂ that the
accountant was planned with), and adds N_Z(0, σ_dev²) per coordinate. Only then does the vector
enter secure aggregation (:func:`fedge.secagg.run_secure_sum`: real SecAgg+ sessions, in process),
so neither a gateway nor the coordinator ever sees an un-noised sum. The integer total, times γ and
divided by K, is the round's mean delta.

The simulator selects exactly K devices for it (``simulation.sampling = "fixed"``, accounted as
sampling without replacement): the per-device noise is planned so that K devices' noise together
reach the target, and Poisson sampling could draw fewer. Unlike central DP, the secure sum needs
every participant's vector at once (as a real round has them on K devices), so memory here is
O(K × params) integers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.base import Aggregate, Update
from fedge.core.params import ParamSpec
from fedge.errors import AggregationError, ConfigError
from fedge.privacy import PrivacyPlan, add_discrete_gaussian_noise, clip_rows
from fedge.simulation.secure import spread_over_gateways

__all__ = ["DistributedRoundAggregator", "conditional_rounding"]

_GATEWAYS = 4  # devices are spread over this many simulated gateways
_NOISE_TAIL = 12.0  # the secure sum's range covers ±(C/γ + 1 + 12σ) per coordinate


def conditional_rounding(
    scaled: NDArray[np.float64], bound: float, rng: np.random.Generator, max_tries: int = 100
) -> NDArray[np.int64]:
    """Unbiased randomized rounding of each row, redrawn until its L2 norm is ≤ ``bound``."""
    floor = np.floor(scaled)
    frac = scaled - floor
    out = np.empty(scaled.shape, dtype=np.int64)
    todo = np.arange(scaled.shape[0])
    for _ in range(max_tries):
        draw = floor[todo] + (rng.random((todo.size, scaled.shape[1])) < frac[todo])
        ok = np.sqrt(np.einsum("ij,ij->i", draw, draw)) <= bound
        out[todo[ok]] = draw[ok].astype(np.int64)
        todo = todo[~ok]
        if todo.size == 0:
            return out
    raise AggregationError(
        f"randomized rounding exceeded the norm bound {bound:.4g} {max_tries} times; use a finer "
        "privacy.granularity"
    )


class DistributedRoundAggregator:
    """One round of distributed DP: per-device rounding and noise, then a real secure sum."""

    def __init__(
        self, spec: ParamSpec, plan: PrivacyPlan, rng: np.random.Generator, seed: int, round_: int
    ) -> None:
        if plan.distributed is None:
            raise ConfigError("distributed DP needs a plan made with the model size (dim)")
        self.spec = spec
        self.plan = plan
        self.noise = plan.distributed
        self.clip_norm = plan.clip_norm
        self.rng = rng
        self._graph_rng = random.Random(f"{seed}/{round_}")  # the SecAgg+ graph only
        self._round = round_
        self._ids: list[str] = []
        self._rows: list[NDArray[np.int64]] = []
        self._rejected: list[tuple[str, str]] = []
        self.norms = np.zeros(0)

    @property
    def num_accepted(self) -> int:
        """How many devices' noised vectors entered the secure sum."""
        return len(self._ids)

    @property
    def rejected(self) -> tuple[tuple[str, str], ...]:
        """(device_id, reason) for every refused update."""
        return tuple(self._rejected)

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the summed noise, in update units, with K devices."""
        d = self.noise
        return d.per_device_stddev * d.granularity * math.sqrt(self.plan.devices_per_round)

    def add_stacked(
        self,
        device_ids: Sequence[str],
        stacked: Mapping[str, np.ndarray],
        weights: NDArray[np.floating] | None = None,
    ) -> int:
        """Clip, scale, round and noise D stacked deltas on their devices; ``weights`` unused."""
        ids = [str(d) for d in device_ids]
        matrix = self.spec.flatten_stacked(stacked, len(ids))
        finite: NDArray[np.bool_] = np.asarray(np.isfinite(matrix).all(axis=1))
        for i in np.flatnonzero(~finite).tolist():
            self._rejected.append((ids[i], "contains NaN or Inf; the update is rejected"))
        if not finite.any():
            return 0
        clipped, norms = clip_rows(matrix[finite], self.clip_norm)
        self.norms = np.concatenate([self.norms, norms])
        scaled = clipped.astype(np.float64) / self.noise.granularity
        rounded = conditional_rounding(scaled, self.noise.l2_sensitivity, self.rng)
        noised = add_discrete_gaussian_noise(rounded, self.noise.per_device_stddev, self.rng)
        self._rows.extend(noised)
        self._ids.extend(i for i, ok in zip(ids, finite.tolist(), strict=True) if ok)
        return int(finite.sum())

    def add(self, update: Update) -> bool:
        """One device's delta tree (the per-device loop backend)."""
        stacked = {n: np.asarray(a)[None] for n, a in update.delta.items()}
        return self.add_stacked([update.device_id], stacked) == 1

    def result(self) -> Aggregate:
        """Securely sum the noised integer vectors; their mean over K devices, in update units."""
        from fedge.secagg import SecAggConfig, run_secure_sum

        n = len(self._ids)
        if n < self.noise.devices:
            raise AggregationError(
                f"only {n} of the {self.noise.devices} devices the noise was planned for took "
                "part: the round is abandoned (its sum would carry too little noise)"
            )
        reach = math.ceil(
            self.clip_norm / self.noise.granularity + 1 + _NOISE_TAIL * self.noise.per_device_stddev
        )
        levels = 2 * reach
        bits = max(32, math.ceil(math.log2(n * levels + 1)) + 1)
        config = SecAggConfig(
            clip_range=(-float(reach), float(reach)), bits=bits, levels=levels, dropout_rate=0.0
        )
        gateways = spread_over_gateways(self._ids, _GATEWAYS)
        vectors = np.asarray(self._rows, dtype=np.float64)
        outcome = run_secure_sum(
            vectors, self._ids, gateways, config, rng=self._graph_rng, round_id=self._round
        )
        if outcome.abandoned or outcome.total is None:
            raise AggregationError(f"secure aggregation abandoned the round: {outcome.reason}")
        mean = outcome.total * self.noise.granularity / self.plan.devices_per_round
        return Aggregate(self.spec.unflatten(mean.astype(np.float32)), float(n), n, self.rejected)
