"""`fedge demo`'s privacy: distributed DP under secure aggregation, central without, none off."""

from __future__ import annotations

from fedge.cli.demo import DEMO_NOISE_MULTIPLIER, demo_privacy
from fedge.coordinator.selection import round_target
from fedge.demo.federation import FederationPlan
from fedge.privacy import load_privacy_config, plan_privacy


def test_demo_privacy_follows_the_flags() -> None:
    assert demo_privacy(dp=False, secagg=True, noise_multiplier=1.0) == {}
    assert demo_privacy(dp=True, secagg=True, noise_multiplier=1.0)["mode"] == "distributed"
    assert demo_privacy(dp=True, secagg=False, noise_multiplier=1.0)["mode"] == "central"


def test_five_demo_rounds_fit_each_devices_privacy_limit() -> None:
    """Devices decline tasks past their owner's ε limit: the default demo must stay under it."""
    fleet = FederationPlan()
    n = fleet.num_devices
    k = n - max(1, n // 4)  # the demo job's devices_per_round, over-selection and minimum
    table = demo_privacy(dp=True, secagg=True, noise_multiplier=DEMO_NOISE_MULTIPLIER)
    plan = plan_privacy(
        load_privacy_config(table),
        rounds=5,
        devices_per_round=k,
        fleet_size=n,
        sampling="fixed_size",
        dim=5_957,  # the maintenance model
        min_devices=n // 2,
        sampled_per_round=round_target(k, 1.35),
    )
    assert plan.accountant is not None
    assert plan.accountant.epsilon_after(5) <= fleet.privacy_limit
