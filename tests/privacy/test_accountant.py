"""The accountant against published reference values (source cited next to each value)."""

from __future__ import annotations

import itertools
import math

import pytest

from fedge.errors import ConfigError
from fedge.privacy.accountant import (
    AccountantKind,
    PrivacyAccountant,
    classic_rdp_to_epsilon,
    local_epsilon,
)


def test_abadi_2016_moments_accountant_example() -> None:
    # Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (arXiv:1607.00133), §3.1:
    # q = 0.01, σ = 4, δ = 1e-5, T = 10,000 steps gives ε ≈ 1.26 with the moments accountant
    # (versus ≈ 9.34 from the strong composition theorem).
    acc = PrivacyAccountant(4.0, 0.01, 1e-5, "rdp")
    orders, rdp = acc.rdp_curve(10_000)
    assert classic_rdp_to_epsilon(orders, rdp, 1e-5) == pytest.approx(1.26, abs=0.01)
    # dp_accounting's improved RDP→(ε, δ) conversion is tighter than the 2016 one.
    eps = acc.epsilon_after(10_000)
    assert 0.9 < eps < 1.26


@pytest.mark.parametrize(
    ("noise", "epochs", "published"),
    [
        # TensorFlow Privacy, tutorials/README.md, "Select Parameters" table (MNIST DP-SGD,
        # N = 60,000, batch 256, δ = 1e-5; ε from the RDP accountant with the classic conversion).
        (1.12, 60, 2.92),
        (0.6, 30, 9.74),
        (1.2, 10, 1.20),
    ],
)
def test_tf_privacy_mnist_tutorial_table(noise: float, epochs: int, published: float) -> None:
    steps = epochs * 60_000 // 256
    acc = PrivacyAccountant(noise, 256 / 60_000, 1e-5, "rdp")
    orders, rdp = acc.rdp_curve(steps)
    assert classic_rdp_to_epsilon(orders, rdp, 1e-5) == pytest.approx(published, rel=0.005)
    assert acc.epsilon_after(steps) <= published


def test_dp_accounting_gaussian_reference() -> None:
    # dp_accounting rdp/rdp_privacy_accountant_test.py::test_compute_epsilon_delta_gaussian:
    # σ = 4.530877117 with no sampling is exactly (1, 1e-6)-DP.
    acc = PrivacyAccountant(4.530877117, 1.0, 1e-6, "rdp")
    assert acc.epsilon_after(1) == pytest.approx(1.0, abs=1e-3)


def test_dp_accounting_pld_references() -> None:
    # dp_accounting pld/pld_privacy_accountant_test.py::test_gaussian_basic: σ = √3 composed
    # 3 times gives δ(ε=1) = 0.126936.
    acc = PrivacyAccountant(math.sqrt(3), 1.0, 0.126936, "pld")
    assert acc.epsilon_after(3) == pytest.approx(1.0, abs=1e-3)
    # ...::test_poisson_subsampled_gaussian: q = 0.2, σ = 0.5, 3 times: δ(ε=1) = 0.15594.
    acc = PrivacyAccountant(0.5, 0.2, 0.15594, "pld")
    assert acc.epsilon_after(3) == pytest.approx(1.0, abs=1e-3)


def test_pld_is_tighter_than_rdp_on_abadi_example() -> None:
    rdp = PrivacyAccountant(4.0, 0.01, 1e-5, "rdp").epsilon_after(10_000)
    pld = PrivacyAccountant(4.0, 0.01, 1e-5, "pld").epsilon_after(10_000)
    assert pld < rdp
    assert pld == pytest.approx(rdp, rel=0.15)


@pytest.mark.parametrize("kind", ["rdp", "pld"])
def test_epsilon_falls_with_noise_and_grows_with_rounds(kind: str) -> None:
    k: AccountantKind = "pld" if kind == "pld" else "rdp"
    by_noise = [PrivacyAccountant(z, 0.05, 1e-5, k).epsilon_after(50) for z in (0.8, 1.0, 1.5, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(by_noise))
    acc = PrivacyAccountant(1.0, 0.05, 1e-5, k)
    by_rounds = [acc.epsilon_after(t) for t in (1, 10, 50, 200)]
    assert all(a < b for a, b in itertools.pairwise(by_rounds))


def test_step_accumulates_and_matches_epsilon_after() -> None:
    acc = PrivacyAccountant(1.1, 0.1, 1e-5)
    assert acc.epsilon() == 0.0
    acc.step()
    acc.step(4)
    assert acc.rounds == 5
    assert acc.epsilon() == acc.epsilon_after(5)
    assert acc.step() == acc.epsilon_after(6)


def test_fixed_size_selection_uses_replace_one_and_costs_more() -> None:
    poisson = PrivacyAccountant(1.0, 0.1, 1e-5)
    fixed = PrivacyAccountant(1.0, 0.1, 1e-5, sampling="fixed_size", fleet_size=1000)
    assert fixed.epsilon_after(50) > poisson.epsilon_after(50)
    with pytest.raises(ConfigError, match="accountant = 'rdp'"):
        PrivacyAccountant(1.0, 0.1, 1e-5, "pld", sampling="fixed_size", fleet_size=1000)
    with pytest.raises(ConfigError, match="fleet_size"):
        PrivacyAccountant(1.0, 0.1, 1e-5, sampling="fixed_size")


def test_adaptive_clipping_query_is_composed() -> None:
    # Andrew et al. 2021, Thm 1: z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) with the count query is as private
    # as one Gaussian with multiplier z.
    z, sigma_b = 1.0, 5.0
    z_update = (z**-2 - (2 * sigma_b) ** -2) ** -0.5
    both = PrivacyAccountant(z_update, 0.1, 1e-5, clip_count_stddev=sigma_b)
    one = PrivacyAccountant(z, 0.1, 1e-5)
    assert both.effective_noise_multiplier == pytest.approx(z)
    assert both.epsilon_after(100) == pytest.approx(one.epsilon_after(100), rel=1e-9)
    # Forgetting the count query would under-report ε.
    assert PrivacyAccountant(z_update, 0.1, 1e-5).epsilon_after(100) < both.epsilon_after(100)
    pld = PrivacyAccountant(z_update, 0.1, 1e-5, "pld", clip_count_stddev=sigma_b)
    assert pld.epsilon_after(100) == pytest.approx(
        PrivacyAccountant(z, 0.1, 1e-5, "pld").epsilon_after(100), rel=1e-6
    )


def test_local_dp_epsilon_is_far_larger_than_central() -> None:
    central = PrivacyAccountant(1.0, 0.01, 1e-5).epsilon_after(100)
    local = local_epsilon(1.0, 100, 1e-5)
    assert local > 10 * central
    # One round of a Gaussian with multiplier z/2 = 2.265438558 is exactly (1, 1e-6)-DP
    # (dp_accounting's reference σ = 4.530877117 for sensitivity 1, see above).
    assert local_epsilon(2 * 4.530877117, 1, 1e-6) == pytest.approx(1.0, abs=1e-3)


def test_zero_noise_is_infinite_epsilon() -> None:
    assert PrivacyAccountant(0.0, 0.1, 1e-5).epsilon_after(1) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
    ],
)
def test_bad_accountant_settings_refused(kwargs: dict[str, float], match: str) -> None:
    args = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "delta": 1e-5} | kwargs
    with pytest.raises(ConfigError, match=match):
        PrivacyAccountant(**args)  # type: ignore[arg-type]
