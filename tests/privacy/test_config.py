"""PrivacyConfig refuses bad settings with messages naming the fix; plan_privacy resolves it."""

from __future__ import annotations

import math

import pytest

from fedge.errors import CalibrationError, ConfigError, PrivacyBudgetExceeded
from fedge.privacy.budget import check_next_round
from fedge.privacy.config import PrivacyConfig, load_privacy_config
from fedge.privacy.plan import plan_privacy


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"mode": "central", "noise_multiplier": 1.0, "delta": 1.0}, "delta must be in"),
        ({"mode": "central", "noise_multiplier": -1.0}, "noise_multiplier must be > 0"),
        ({"mode": "central", "noise_multiplier": 0.0}, "mode = 'none'"),
        ({"mode": "central", "target_epsilon": -2.0}, "target_epsilon: must be a finite ε > 0"),
        ({"mode": "central", "noise_multiplier": 1.0, "clip_norm": 0.0}, "clip_norm must be > 0"),
        ({"mode": "central"}, "exactly one of noise_multiplier"),
        ({"mode": "central", "noise_multiplier": 1.0, "target_epsilon": 2.0}, "exactly one"),
        ({"mode": "none", "target_epsilon": 2.0}, "set mode = 'central'"),
        ({"mode": "central", "target_epsilon": 8.0, "max_epsilon": 4.0}, "at most 4"),
        ({"mode": "central", "noise_multiplier": 1.0, "epsilon": 2.0}, "unknown setting"),
        ({"mode": "secret"}, "mode"),
        (
            {
                "mode": "central",
                "noise_multiplier": 1.0,
                "adaptive_clipping": {"target_quantile": 2},
            },
            "target_quantile must be between 0 and 1",
        ),
        (
            {"mode": "central", "noise_multiplier": 1.0, "adaptive_clipping": {"lr": 1}},
            "allowed: target_quantile",
        ),
    ],
)
def test_bad_settings_refused_with_a_fix(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_privacy_config(data)


def test_defaults_and_frozen() -> None:
    cfg = load_privacy_config(None)
    assert cfg.mode == "none"
    with pytest.raises(Exception):
        cfg.clip_norm = 2.0  # type: ignore[misc]


def test_plan_central_with_target_epsilon_calibrates_and_uses_default_delta() -> None:
    cfg = PrivacyConfig(mode="central", target_epsilon=4.0, max_epsilon=4.0)
    plan = plan_privacy(cfg, rounds=50, devices_per_round=100, fleet_size=1000, sampling="poisson")
    assert plan.delta == pytest.approx(1000**-1.1)
    assert plan.accountant is not None
    assert plan.accountant.epsilon_after(50) <= 4.0
    assert plan.rounds_within_budget == 50


def test_plan_budget_shorter_than_rounds_and_budget_spent() -> None:
    cfg = PrivacyConfig(mode="central", noise_multiplier=0.8, max_epsilon=6.0)
    plan = plan_privacy(cfg, rounds=500, devices_per_round=100, fleet_size=1000, sampling="poisson")
    assert plan.rounds_within_budget is not None and 0 < plan.rounds_within_budget < 500
    acc = plan.accountant
    assert acc is not None
    acc.step(plan.rounds_within_budget)
    assert not check_next_round(acc, 6.0).allowed
    spent = PrivacyConfig(mode="central", noise_multiplier=0.3, max_epsilon=0.01)
    with pytest.raises(PrivacyBudgetExceeded, match="raise max_epsilon above"):
        plan_privacy(spent, rounds=10, devices_per_round=500, fleet_size=1000, sampling="poisson")


def test_plan_impossible_target_refused() -> None:
    cfg = PrivacyConfig(mode="central", target_epsilon=0.05, delta=1e-9)
    with pytest.raises(CalibrationError, match="Change one of"):
        plan_privacy(
            cfg, rounds=10_000, devices_per_round=1000, fleet_size=1000, sampling="poisson"
        )


def test_plan_adaptive_clipping_keeps_total_multiplier() -> None:
    cfg = PrivacyConfig(
        mode="central", noise_multiplier=1.0, adaptive_clipping={"target_quantile": 0.5}
    )
    plan = plan_privacy(cfg, rounds=10, devices_per_round=100, fleet_size=1000, sampling="poisson")
    assert plan.clip_count_stddev == pytest.approx(5.0)  # K / 20
    assert plan.update_noise_multiplier > 1.0
    assert plan.accountant is not None
    assert plan.accountant.effective_noise_multiplier == pytest.approx(1.0)
    assert plan.adaptive_clip is not None and plan.adaptive_clip.clip_norm == 1.0


def test_plan_local_and_distributed_and_none() -> None:
    local = plan_privacy(
        PrivacyConfig(mode="local", target_epsilon=8.0),
        rounds=20, devices_per_round=10, fleet_size=100, sampling="fixed_size",
    )  # fmt: skip
    assert local.accountant is not None
    assert local.accountant.epsilon_after(20) <= 8.0
    dist = plan_privacy(
        PrivacyConfig(mode="distributed", noise_multiplier=1.0),
        rounds=20, devices_per_round=100, fleet_size=1000, sampling="poisson", dim=1000,
    )  # fmt: skip
    assert dist.distributed is not None
    assert dist.distributed.effective_noise_multiplier == pytest.approx(1.0, rel=1e-3)
    none = plan_privacy(
        PrivacyConfig(), rounds=5, devices_per_round=1, fleet_size=10, sampling="poisson"
    )
    assert none.accountant is None and math.isclose(none.delta, 10**-1.1)
