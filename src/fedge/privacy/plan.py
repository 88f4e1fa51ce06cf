"""Turn a validated ``[privacy]`` config plus the facts of a job into the numbers a round uses.

This is the hook for the simulator and the coordinator: call :func:`plan_privacy` once when the job
starts (it calibrates z when a target ε is given, fills in δ, and refuses impossible settings),
then per round use ``plan.accountant`` with :func:`fedge.privacy.budget.check_next_round` before the
round, the mechanisms during it, and ``plan.accountant.step()`` after it.

``sampling`` must say how the caller selects devices: ``"poisson"`` (each device independently with
probability K/N) or ``"fixed_size"`` (exactly K of N uniformly); see
:mod:`fedge.privacy.accountant` for why it matters.

Local DP is accounted per device for the worst case of a device that takes part in every round
(each device's own ledger counts only the rounds it actually joined).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedge.errors import PrivacyBudgetExceeded
from fedge.privacy.accountant import PrivacyAccountant, Sampling
from fedge.privacy.budget import rounds_within_budget
from fedge.privacy.calibration import calibrate_noise_multiplier, default_delta
from fedge.privacy.clipping import AdaptiveClipState, update_noise_multiplier
from fedge.privacy.config import PrivacyConfig, PrivacyMode
from fedge.privacy.distributed import DistributedNoisePlan, plan_distributed_noise

__all__ = ["PrivacyPlan", "plan_privacy"]


@dataclass(frozen=True)
class PrivacyPlan:
    """Resolved privacy settings of one job (frozen; build a fresh accountant per job)."""

    mode: PrivacyMode
    clip_norm: float
    noise_multiplier: float  # z of the round as a whole (the local multiplier in local mode)
    update_noise_multiplier: float  # z_Δ used on the update sum (= z without adaptive clipping)
    clip_count_stddev: float | None  # σ_b of the adaptive clipping count query
    delta: float
    max_epsilon: float | None
    rounds: int
    rounds_within_budget: int | None  # rounds that fit in max_epsilon (None without a budget)
    devices_per_round: int
    fleet_size: int
    sampling: Sampling
    accountant: PrivacyAccountant | None
    adaptive_clip: AdaptiveClipState | None
    distributed: DistributedNoisePlan | None


def plan_privacy(
    config: PrivacyConfig,
    *,
    rounds: int,
    devices_per_round: int,
    fleet_size: int,
    sampling: Sampling,
    dim: int | None = None,
    min_devices: int | None = None,
    sampled_per_round: int | None = None,
) -> PrivacyPlan:
    """Resolve ``config`` for a job of ``rounds`` rounds selecting K of N devices each round.

    ``dim`` (number of model parameters) and ``min_devices`` (fewest survivors a round commits
    with; default K) are needed for distributed DP, whose guarantee depends on both.
    ``sampled_per_round``: how many devices a round may select at most, when that is more than
    the K it plans for (over-selection); the accountant's sampling rate uses it (default K).
    """
    delta = config.delta if config.delta is not None else default_delta(fleet_size)
    if config.mode == "none":
        return PrivacyPlan(
            "none", config.clip_norm, 0.0, 0.0, None, delta, None, rounds, None,
            devices_per_round, fleet_size, sampling, None, None, None,
        )  # fmt: skip
    kind = config.accountant
    local = config.mode == "local"
    # Local DP: one Gaussian of multiplier z/2 per round, no sampling (see accountant.local_epsilon).
    sampled = max(devices_per_round, min(sampled_per_round or 0, fleet_size))
    k, n = (1, 1) if local else (sampled, fleet_size)
    rate = k / n
    if config.target_epsilon is not None:
        z = calibrate_noise_multiplier(
            config.target_epsilon,
            delta,
            rounds,
            k,
            n,
            kind,
            sampling="poisson" if local else sampling,
        )
        z = 2.0 * z if local else z
    else:
        assert config.noise_multiplier is not None
        z = config.noise_multiplier
    adaptive = config.adaptive_clipping
    sigma_b = None
    z_update = z
    adaptive_state = None
    if adaptive is not None:
        sigma_b = adaptive.clip_count_stddev or devices_per_round / 20.0
        z_update = update_noise_multiplier(z, sigma_b)
        adaptive_state = AdaptiveClipState(
            config.clip_norm, adaptive.target_quantile, adaptive.learning_rate
        )
    distributed = None
    z_accounted = z_update
    if config.mode == "distributed" and dim is not None:
        granularity = config.granularity or config.clip_norm / 1000.0
        distributed = plan_distributed_noise(
            z_update, min_devices or devices_per_round, config.clip_norm, granularity, dim
        )
        z_accounted = distributed.effective_noise_multiplier
    acc = PrivacyAccountant(
        z_accounted / 2.0 if local else z_accounted,
        rate,
        delta,
        kind,
        sampling="poisson" if local else sampling,
        fleet_size=n,
        clip_count_stddev=sigma_b,
    )
    fits = None
    if config.max_epsilon is not None:
        fits = rounds_within_budget(
            config.max_epsilon,
            acc.noise_multiplier,
            rate,
            delta,
            kind,
            sampling=acc.sampling,
            fleet_size=n,
            clip_count_stddev=sigma_b,
            max_rounds=rounds,
        )
        if fits == 0:
            raise PrivacyBudgetExceeded(
                f"max_epsilon {config.max_epsilon:g} is spent by the first round already "
                f"(ε after one round = {acc.epsilon_after(1):.4g} at δ={delta:.3g}): raise "
                f"max_epsilon above {acc.epsilon_after(1):.4g} or raise noise_multiplier"
            )
    return PrivacyPlan(
        config.mode, config.clip_norm, z, z_update, sigma_b, delta, config.max_epsilon, rounds,
        fits, devices_per_round, fleet_size, sampling, acc, adaptive_state, distributed,
    )  # fmt: skip
