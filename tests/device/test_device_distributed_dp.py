"""The device's share of distributed DP: clipped, on the integer grid, noised before masking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedge.device.secure import secure_vector
from fedge.device.work import check_privacy_plan, privatise
from fedge.errors import PrivacyError
from fedge.privacy import plan_distributed_noise, secure_generator
from fedge.transport.messages import PrivacyPlan, SecAggPlan

DIM = 4_000
NOISE = plan_distributed_noise(1.0, 4, clip_norm=1.0, granularity=1e-3, dim=DIM)
PLAN = PrivacyPlan(
    mode="distributed",
    clip_norm=1.0,
    epsilon_cost=0.5,
    granularity=NOISE.granularity,
    noise_stddev=NOISE.per_device_stddev,
    rounding_bound=NOISE.l2_sensitivity,
)
SECAGG = SecAggPlan(session="job/1", params={"weighting": "uniform", "phase_timeout_s": 5.0})


def _delta(scale: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "b": (scale * rng.standard_normal(DIM // 2)).astype(np.float32),
        "a": (scale * rng.standard_normal(DIM // 2)).astype(np.float32),
    }


def test_share_is_the_clipped_update_on_the_grid_plus_its_noise() -> None:
    clipped, norm = privatise(_delta(0.1), PLAN, secure_generator())
    assert norm > 1.0  # the raw update was larger than clip_norm
    share = secure_vector(clipped, 50, SECAGG, PLAN, secure_generator())
    assert share.shape == (DIM,)  # uniform weighting: no weight coordinate
    assert np.array_equal(share, np.round(share))  # integers: quantisation adds nothing
    ordered = np.concatenate([clipped["a"], clipped["b"]]).astype(np.float64)  # sorted names
    noise = share * NOISE.granularity - ordered
    # rounding (< γ) plus N_Z(0, σ_dev²)·γ per coordinate
    assert float(np.std(noise)) == pytest.approx(
        NOISE.per_device_stddev * NOISE.granularity, rel=5 * math.sqrt(2 / DIM) + 0.01
    )
    assert np.abs(share).max() <= NOISE.reach


def test_two_shares_of_the_same_update_differ() -> None:
    clipped, _ = privatise(_delta(0.001), PLAN, secure_generator())
    one = secure_vector(clipped, 50, SECAGG, PLAN, secure_generator())
    two = secure_vector(clipped, 50, SECAGG, PLAN, secure_generator())
    assert not np.array_equal(one, two)


def test_incomplete_or_unsecured_plans_are_declined() -> None:
    check_privacy_plan(PLAN, secure=True)
    with pytest.raises(PrivacyError, match="no secure aggregation"):
        check_privacy_plan(PLAN, secure=False)
    with pytest.raises(PrivacyError, match="noise_stddev"):
        check_privacy_plan(PLAN.model_copy(update={"noise_stddev": None}))
    with pytest.raises(PrivacyError, match="noise generator"):
        secure_vector(_delta(0.0), 1, SECAGG, PLAN, None)
    with pytest.raises(PrivacyError, match="clip it first"):
        secure_vector(_delta(1.0), 1, SECAGG, PLAN, secure_generator())
