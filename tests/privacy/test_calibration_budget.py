"""Calibration round-trips; the budget stops a job at the right round."""

from __future__ import annotations

import pytest

from fedge.errors import CalibrationError, ConfigError, PrivacyBudgetExceeded
from fedge.privacy.accountant import PrivacyAccountant
from fedge.privacy.budget import check_next_round, require_next_round, rounds_within_budget
from fedge.privacy.calibration import calibrate_noise_multiplier, default_delta


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_calibration_round_trips(target: float) -> None:
    n, k, rounds = 1000, 50, 100
    delta = default_delta(n)
    z = calibrate_noise_multiplier(target, delta, rounds, k, n)
    eps = PrivacyAccountant(z, k / n, delta).epsilon_after(rounds)
    assert eps <= target
    assert eps == pytest.approx(target, rel=0.01)
    # A slightly smaller multiplier would overspend: z is (nearly) the smallest that fits.
    assert PrivacyAccountant(z * 0.99, k / n, delta).epsilon_after(rounds) > target


def test_calibration_with_pld_and_fixed_size() -> None:
    z_pld = calibrate_noise_multiplier(2.0, 1e-5, 50, 10, 1000, "pld")
    z_rdp = calibrate_noise_multiplier(2.0, 1e-5, 50, 10, 1000, "rdp")
    assert z_pld < z_rdp  # the tighter accountant needs less noise
    z_fixed = calibrate_noise_multiplier(
        2.0, 1e-5, 50, 10, 1000, sampling="fixed_size", tolerance=0.05
    )
    assert z_fixed > z_rdp


def test_default_delta() -> None:
    assert default_delta(1000) == pytest.approx(1000**-1.1)
    with pytest.raises(ConfigError):
        default_delta(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"rounds": 0}, "rounds"),
        ({"devices_per_round": 2000}, "devices_per_round"),
    ],
)
def test_bad_calibration_inputs(kwargs: dict[str, float], match: str) -> None:
    args = {
        "target_epsilon": 2.0,
        "delta": 1e-5,
        "rounds": 10,
        "devices_per_round": 10,
        "fleet_size": 1000,
    } | kwargs
    with pytest.raises(CalibrationError, match=match):
        calibrate_noise_multiplier(**args)  # type: ignore[arg-type]


def test_impossible_target_says_what_to_change() -> None:
    with pytest.raises(CalibrationError, match="rounds to at most") as info:
        calibrate_noise_multiplier(0.5, 1e-5, 5000, 1000, 1000, max_noise_multiplier=20.0)
    assert "target_epsilon to at least" in str(info.value)


def test_budget_stops_before_the_round_that_would_exceed() -> None:
    acc = PrivacyAccountant(1.0, 0.05, 1e-5)
    max_eps = 3.0
    fits = rounds_within_budget(max_eps, 1.0, 0.05, 1e-5)
    assert acc.epsilon_after(fits) <= max_eps < acc.epsilon_after(fits + 1)
    ran = 0
    while check_next_round(acc, max_eps).allowed:  # the job loop
        acc.step()
        ran += 1
    assert ran == fits
    check = check_next_round(acc, max_eps)
    assert not check.allowed and check.rounds_done == fits
    assert "raise max_epsilon" in check.message
    with pytest.raises(PrivacyBudgetExceeded, match=f"after {fits} rounds"):
        require_next_round(acc, max_eps)


def test_rounds_within_budget_edges() -> None:
    assert rounds_within_budget(1e-3, 1.0, 0.5, 1e-5) == 0  # budget spent by round one
    assert rounds_within_budget(50.0, 50.0, 0.01, 1e-5, max_rounds=1000) == 1000
    with pytest.raises(ConfigError, match="max_epsilon"):
        rounds_within_budget(-1.0, 1.0, 0.1, 1e-5)
