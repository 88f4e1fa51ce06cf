"""Differential privacy for fedge: clipping, noise, accounting, calibration, budgets, ledger.

Device-level (user-level) DP, ARCHITECTURE.md §4:

- :mod:`~fedge.privacy.clipping`     L2 clipping; adaptive clipping (Andrew et al. 2021)
- :mod:`~fedge.privacy.mechanisms`   DP-FedAvg Gaussian noise (McMahan et al. 2018); local DP
- :mod:`~fedge.privacy.distributed`  discrete Gaussian (Canonne et al. 2020); distributed DP for
  secure aggregation (Kairouz et al. 2021)
- :mod:`~fedge.privacy.accountant`   RDP / PLD accounting with Google's ``dp_accounting``
- :mod:`~fedge.privacy.budget`       stop before the round that would exceed ``max_epsilon``
- :mod:`~fedge.privacy.calibration`  target (ε, δ, rounds) → noise multiplier
- :mod:`~fedge.privacy.ledger`       the device's own ε ledger and limit (SQLite)
- :mod:`~fedge.privacy.config`       the ``[privacy]`` config section; :mod:`~fedge.privacy.plan`
  resolves it for a job
- :mod:`~fedge.privacy.rng`          secure generators; seeded ones marked insecure
"""

from __future__ import annotations

from fedge.privacy.accountant import (
    AccountantKind,
    PrivacyAccountant,
    Sampling,
    classic_rdp_to_epsilon,
    local_epsilon,
    round_event,
)
from fedge.privacy.budget import (
    BudgetCheck,
    check_next_round,
    require_next_round,
    rounds_within_budget,
)
from fedge.privacy.calibration import calibrate_noise_multiplier, default_delta
from fedge.privacy.clipping import (
    AdaptiveClipState,
    clip_rows,
    clip_tree,
    clip_update,
    noisy_unclipped_fraction,
    update_clip,
    update_noise_multiplier,
)
from fedge.privacy.config import (
    AdaptiveClippingConfig,
    PrivacyConfig,
    PrivacyMode,
    load_privacy_config,
)
from fedge.privacy.distributed import (
    DistributedNoisePlan,
    ShareRule,
    add_discrete_gaussian_noise,
    conditional_rounding,
    discrete_gaussian,
    discretise_and_noise,
    distributed_tau,
    plan_distributed_noise,
    rounded_l2_sensitivity,
)
from fedge.privacy.ledger import PrivacyLedger
from fedge.privacy.mechanisms import (
    add_gaussian_noise,
    dp_fedavg_mean,
    dp_fedavg_mean_tree,
    local_dp_update,
)
from fedge.privacy.plan import PrivacyPlan, plan_privacy
from fedge.privacy.rng import (
    InsecureRandomnessWarning,
    SeededForSimulation,
    is_secure,
    secure_generator,
    simulation_generator,
)

__all__ = [
    "AccountantKind",
    "AdaptiveClipState",
    "AdaptiveClippingConfig",
    "BudgetCheck",
    "DistributedNoisePlan",
    "InsecureRandomnessWarning",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacyLedger",
    "PrivacyMode",
    "PrivacyPlan",
    "Sampling",
    "SeededForSimulation",
    "ShareRule",
    "add_discrete_gaussian_noise",
    "add_gaussian_noise",
    "calibrate_noise_multiplier",
    "check_next_round",
    "classic_rdp_to_epsilon",
    "clip_rows",
    "clip_tree",
    "clip_update",
    "conditional_rounding",
    "default_delta",
    "discrete_gaussian",
    "discretise_and_noise",
    "distributed_tau",
    "dp_fedavg_mean",
    "dp_fedavg_mean_tree",
    "is_secure",
    "load_privacy_config",
    "local_dp_update",
    "local_epsilon",
    "noisy_unclipped_fraction",
    "plan_distributed_noise",
    "plan_privacy",
    "require_next_round",
    "round_event",
    "rounded_l2_sensitivity",
    "rounds_within_budget",
    "secure_generator",
    "simulation_generator",
    "update_clip",
    "update_noise_multiplier",
]
