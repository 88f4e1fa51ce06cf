"""Differential privacy in the simulator: a private round aggregator and the job's privacy state.

A DP round is the TFF composition distributor → client work → *private aggregator* → server
optimizer; only the aggregator changes. :class:`PrivateRoundAggregator` offers the surface the
engine uses from :class:`~fedge.aggregation.WeightedMeanAccumulator` (``add_stacked``, ``add``,
``rejected``, ``num_accepted``, ``result``), so the engine swaps one for the other:

- **central** (DP-FedAvg, McMahan et al. 2018, arXiv:1710.06963): every chunk of device deltas is
  flattened to a (devices, params) matrix, clipped row by row to L2 norm C (:func:`clip_rows`) and
  summed *unweighted* into one float64 vector, so memory stays O(chunk × params). The round's mean
  is ``(Σ clipped + N(0, (z_Δ·C)²)) / K`` with the fixed denominator K = planned devices per round
  (:func:`dp_fedavg_mean`), whatever number of devices Poisson sampling actually drew.
- **local**: each device adds its own N(0, (z_local·C)²) to its clipped update
  (:func:`local_dp_update`) before it is summed; the server only post-processes, so it may divide
  by the number of updates received.
- **distributed**: discrete Gaussian noise on each device, summed by real secure aggregation
  (:mod:`fedge.simulation.distributed`).

Adaptive clipping (Andrew et al. 2021, arXiv:1905.03871): the round also collects the participants'
unclipped norms; :meth:`SimulationPrivacy.finish_round` turns them into the noisy unclipped
fraction b̃ and moves C towards the target quantile for the next round.

:class:`SimulationPrivacy` holds what spans rounds: the :class:`PrivacyPlan` (accountant included),
the adaptive clip state and the noise generator, seeded for reproducibility and therefore marked
insecure (:func:`simulation_generator`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.base import Aggregate, Update
from fedge.core.params import ParamSpec
from fedge.errors import AggregationError, ConfigError, ShapeMismatchError
from fedge.privacy import (
    BudgetCheck,
    InsecureRandomnessWarning,
    PrivacyConfig,
    PrivacyPlan,
    Sampling,
    check_next_round,
    clip_rows,
    dp_fedavg_mean,
    local_dp_update,
    noisy_unclipped_fraction,
    plan_privacy,
    simulation_generator,
    update_clip,
)
from fedge.simulation.distributed import DistributedRoundAggregator

__all__ = ["PrivateRoundAggregator", "RoundAggregator", "SimulationPrivacy"]

log = logging.getLogger(__name__)

_NOISE_STREAM = 0xD9  # mixed into the run seed so privacy noise never shares a stream


class PrivateRoundAggregator:
    """One round's clipped, unweighted sum of device deltas; :meth:`result` adds the noise."""

    def __init__(
        self,
        spec: ParamSpec,
        plan: PrivacyPlan,
        clip_norm: float,
        rng: np.random.Generator,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.clip_norm = clip_norm
        self.rng = rng
        self._sum = np.zeros(spec.size, dtype=np.float64)
        self._norms: list[NDArray[np.float64]] = []
        self._accepted = 0
        self._rejected: list[tuple[str, str]] = []

    @property
    def num_accepted(self) -> int:
        """How many clipped updates were summed."""
        return self._accepted

    @property
    def rejected(self) -> tuple[tuple[str, str], ...]:
        """(device_id, reason) for every refused update (it counts as a zero update)."""
        return tuple(self._rejected)

    @property
    def norms(self) -> NDArray[np.float64]:
        """L2 norms of the accepted updates before clipping (for adaptive clipping)."""
        return np.concatenate(self._norms) if self._norms else np.zeros(0)

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the Gaussian noise on the sum (per device in local mode)."""
        z = (
            self.plan.noise_multiplier
            if self.plan.mode == "local"
            else self.plan.update_noise_multiplier
        )
        return z * self.clip_norm

    def add_stacked(
        self,
        device_ids: Sequence[str],
        stacked: Mapping[str, np.ndarray],
        weights: NDArray[np.floating] | None = None,
    ) -> int:
        """Clip D stacked deltas (and noise them, in local mode) into the sum; ``weights`` unused.

        DP-FedAvg weighs every device equally: an example-weighted sum would let one device's
        contribution exceed C.
        """
        ids = [str(d) for d in device_ids]
        if set(stacked) != set(self.spec.names):
            for d in ids:
                self._rejected.append((d, "parameter names do not match the model"))
            return 0
        try:
            matrix = self.spec.flatten_stacked(stacked, len(ids))
        except ShapeMismatchError as exc:
            raise AggregationError(str(exc)) from None
        finite = np.isfinite(matrix).all(axis=1)
        for i in np.flatnonzero(~finite).tolist():
            self._rejected.append((ids[i], "contains NaN or Inf; the update is rejected"))
        rows = matrix if finite.all() else matrix[finite]
        if rows.shape[0] == 0:
            return 0
        clipped, norms = clip_rows(rows, self.clip_norm)
        if self.plan.mode == "local":
            clipped = local_dp_update(clipped, self.clip_norm, self.plan.noise_multiplier, self.rng)
        self._sum += clipped.sum(axis=0, dtype=np.float64)
        self._norms.append(norms)
        self._accepted += int(rows.shape[0])
        return int(rows.shape[0])

    def add(self, update: Update) -> bool:
        """One device's delta tree (the per-device loop backend)."""
        stacked = {n: np.asarray(a)[None] for n, a in update.delta.items()}
        return self.add_stacked([update.device_id], stacked) == 1

    def result(self) -> Aggregate:
        """The private mean delta: noised fixed-denominator mean (central) or local-DP mean."""
        if self.plan.mode == "local":
            if self._accepted == 0:
                raise AggregationError("no device took part in this round; nothing to average")
            mean = (self._sum / self._accepted).astype(np.float32)
        else:
            mean = dp_fedavg_mean(
                self._sum,
                self.plan.devices_per_round,
                self.clip_norm,
                self.plan.update_noise_multiplier,
                self.rng,
            )
        return Aggregate(
            self.spec.unflatten(mean), float(self._accepted), self._accepted, self.rejected
        )


RoundAggregator = PrivateRoundAggregator | DistributedRoundAggregator


class SimulationPrivacy:
    """A job's privacy across rounds: plan and accountant, clip norm, seeded noise generator."""

    def __init__(
        self,
        config: PrivacyConfig,
        *,
        rounds: int,
        devices_per_round: int,
        fleet_size: int,
        sampling: Sampling,
        spec: ParamSpec,
        seed: int,
    ) -> None:
        if config.mode == "distributed" and sampling != "fixed_size":
            raise ConfigError(
                "privacy.mode = 'distributed' plans each device's noise for a known number of "
                "devices in the secure sum: set simulation.sampling = 'fixed' (accounted as "
                "fixed-size sampling with the RDP accountant), or use mode = 'central'"
            )
        if config.mode == "distributed" and config.adaptive_clipping is not None:
            raise ConfigError(
                "adaptive_clipping with mode = 'distributed' would need a secure sum of the clip "
                "counts too, which the simulator does not run: remove adaptive_clipping"
            )
        if config.mode == "none":
            raise ConfigError("SimulationPrivacy is for privacy modes other than 'none'")
        self.spec = spec
        self.plan = plan_privacy(
            config,
            rounds=rounds,
            devices_per_round=devices_per_round,
            fleet_size=fleet_size,
            sampling=sampling,
            dim=spec.size,
            min_devices=devices_per_round,
        )
        self.clip_state = self.plan.adaptive_clip
        self.seed = seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRandomnessWarning)
            self.rng = simulation_generator(seed * 256 + _NOISE_STREAM)
        log.warning(
            "privacy noise is seeded for simulation (seed=%d): reproducible and NOT secure; a "
            "real deployment draws it from fedge.privacy.secure_generator()",
            seed,
        )
        log.info(
            "privacy: mode=%s z=%.4g (update z=%.4g) C=%g δ=%.3g sampling=%s, budget %s",
            self.plan.mode,
            self.plan.noise_multiplier,
            self.plan.update_noise_multiplier,
            self.plan.clip_norm,
            self.plan.delta,
            self.plan.sampling,
            "none" if self.plan.max_epsilon is None else f"ε ≤ {self.plan.max_epsilon:g}",
        )

    @property
    def clip_norm(self) -> float:
        """The clip norm C of the next round (it moves with adaptive clipping)."""
        return self.plan.clip_norm if self.clip_state is None else self.clip_state.clip_norm

    @property
    def epsilon(self) -> float:
        """ε spent so far for the job's δ (per device, worst case, in local mode)."""
        assert self.plan.accountant is not None
        return self.plan.accountant.epsilon()

    def check_budget(self) -> BudgetCheck | None:
        """Whether one more round fits ``max_epsilon`` (None when there is no budget)."""
        if self.plan.max_epsilon is None:
            return None
        assert self.plan.accountant is not None
        return check_next_round(self.plan.accountant, self.plan.max_epsilon)

    def new_round(self, round_number: int) -> RoundAggregator:
        """An aggregator for round ``round_number``, clipping at the current C."""
        if self.plan.mode == "distributed":
            return DistributedRoundAggregator(
                self.spec, self.plan, self.rng, self.seed, round_number
            )
        return PrivateRoundAggregator(self.spec, self.plan, self.clip_norm, self.rng)

    def finish_round(self, aggregator: RoundAggregator) -> float:
        """Account for the round, move an adaptive C; returns ε spent so far."""
        if self.clip_state is not None:
            assert self.plan.clip_count_stddev is not None
            fraction = noisy_unclipped_fraction(
                aggregator.norms,
                aggregator.clip_norm,
                self.plan.devices_per_round,
                self.plan.clip_count_stddev,
                self.rng,
            )
            self.clip_state = update_clip(self.clip_state, fraction)
        assert self.plan.accountant is not None
        return self.plan.accountant.step()
