"""Distributed DP in the simulator: discrete Gaussian noise under secure aggregation.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation" (ICML 2021, arXiv:2102.06387). Each device clips its update to L2 norm C,
scales it to the integer grid (granularity γ), rounds it with *conditional* randomized rounding
(unbiased rounding, redrawn until the rounded vector's norm is within the bound Δ₂ that the
accountant was planned with), and adds N_Z(0, σ_dev²) per coordinate. Only then does the vector
enter secure aggregation (:func:`fedge.secagg.run_secure_sum`: real SecAgg+ sessions, in process),
so neither a gateway nor the coordinator ever sees an un-noised sum. The integer total, times γ and
divided by K, is the round's mean delta. A device's share is made by
:func:`fedge.privacy.distributed.discretise_and_noise`, the function a networked device calls too.

The simulator selects exactly K devices for it (``simulation.sampling = "fixed"``, accounted as
sampling without replacement): the per-device noise is planned so that K devices' noise together
reach the target, and Poisson sampling could draw fewer. Unlike central DP, the secure sum needs
every participant's vector at once (as a real round has them on K devices), so memory here is
O(K × params) integers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.base import Aggregate, Update
from fedge.core.params import ParamSpec
from fedge.errors import AggregationError, ConfigError
from fedge.privacy import PrivacyPlan, clip_rows
from fedge.privacy.distributed import conditional_rounding, discretise_and_noise
from fedge.simulation.secure import spread_over_gateways

__all__ = ["DistributedRoundAggregator", "conditional_rounding"]

_GATEWAYS = 4  # devices are spread over this many simulated gateways


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
        return self.noise.summed_stddev(self.plan.devices_per_round)

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
        self._rows.extend(discretise_and_noise(clipped, self.noise.share, self.rng))
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
        lo, hi, levels = self.noise.secagg_range()
        config = SecAggConfig(
            clip_range=(lo, hi), bits=self.noise.secagg_bits(n), levels=levels, dropout_rate=0.0
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
