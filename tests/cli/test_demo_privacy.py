"""`fedge demo`'s privacy: distributed DP under secure aggregation, central without, none off."""

from __future__ import annotations

import pytest

from fedge.cli.demo import (
    DEMO_CLIP_NORM,
    DEMO_NOISE_MULTIPLIER,
    DEMO_OVER_SELECTION,
    demo_cohort,
    demo_privacy,
    demo_training_plan,
)
from fedge.coordinator.selection import round_target
from fedge.demo.federation import FederationPlan
from fedge.privacy import load_privacy_config, plan_privacy


def test_demo_privacy_follows_the_flags() -> None:
    assert demo_privacy(dp=False, secagg=True, noise_multiplier=1.0) == {}
    assert demo_privacy(dp=True, secagg=True, noise_multiplier=1.0)["mode"] == "distributed"
    assert demo_privacy(dp=True, secagg=False, noise_multiplier=1.0)["mode"] == "central"
    assert demo_privacy(dp=True, secagg=True, noise_multiplier=0.7)["noise_multiplier"] == 0.7


def test_distributed_dp_commits_only_with_the_devices_its_noise_is_planned_for() -> None:
    """8 devices: 6 per round, all 8 handed tasks; noise planned for 6, 2 may drop out."""
    assert demo_cohort(8, distributed_dp=True) == (6, 6)
    assert demo_cohort(8, distributed_dp=False) == (6, 4)
    assert round_target(6, DEMO_OVER_SELECTION) >= 8
    for fleet in range(1, 65):
        per_round, least = demo_cohort(fleet, distributed_dp=True)
        assert 1 <= least <= per_round <= fleet


def test_dp_shortens_the_use_cases_local_plan_only() -> None:
    dp, plain = (
        demo_training_plan(usecase=True, dp=True),
        demo_training_plan(usecase=True, dp=False),
    )
    assert (dp.epochs, plain.epochs) == (1, 5)
    assert dp.class_weighting == plain.class_weighting == "balanced"
    assert demo_training_plan(usecase=False, dp=True) == demo_training_plan(usecase=False, dp=False)


@pytest.mark.parametrize("secagg", [True, False])
def test_five_demo_rounds_fit_each_devices_privacy_limit(secagg: bool) -> None:
    """Devices decline tasks past their owner's ε limit: the default demo must stay under it."""
    fleet = FederationPlan()
    n = fleet.num_devices
    per_round, least = demo_cohort(n, distributed_dp=secagg)
    table = demo_privacy(dp=True, secagg=secagg, noise_multiplier=DEMO_NOISE_MULTIPLIER)
    assert table["clip_norm"] == DEMO_CLIP_NORM
    plan = plan_privacy(
        load_privacy_config(table),
        rounds=5,
        devices_per_round=per_round,
        fleet_size=n,
        sampling="fixed_size",
        dim=5_957,  # the maintenance model
        min_devices=least,
        sampled_per_round=round_target(per_round, DEMO_OVER_SELECTION),
    )
    assert plan.accountant is not None
    assert plan.accountant.epsilon_after(5) <= fleet.privacy_limit


@pytest.mark.parametrize("usecase", ["maintenance", "wearables", "mobility"])
def test_the_usecase_job_examples_are_the_demos_job(usecase: str) -> None:
    """examples/job_<usecase>.toml says it is the job `fedge demo` creates: it must stay so."""
    import tomllib
    from pathlib import Path

    from fedge.transport.messages import JobSpec

    path = Path(__file__).resolve().parents[2] / "examples" / f"job_{usecase}.toml"
    job = JobSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    n = FederationPlan().num_devices
    assert (job.devices_per_round, job.min_devices) == demo_cohort(n, distributed_dp=True)
    assert job.over_selection == DEMO_OVER_SELECTION
    assert job.plan == demo_training_plan(usecase=True, dp=True)
    assert job.privacy == demo_privacy(dp=True, secagg=True, noise_multiplier=DEMO_NOISE_MULTIPLIER)
    assert job.secure_aggregation is not None
