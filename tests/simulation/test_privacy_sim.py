"""Differential privacy in the simulator (issue 4, item 9), on the small digits task."""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from fedge.aggregation.base import Update
from fedge.cli import cli
from fedge.core.params import ParamSpec
from fedge.errors import CalibrationError, ConfigError, PrivacyBudgetExceeded
from fedge.privacy import (
    PrivacyAccountant,
    PrivacyConfig,
    clip_rows,
    local_epsilon,
    plan_privacy,
    rounds_within_budget,
)
from fedge.simulation import Simulation, load_config
from fedge.simulation.distributed import DistributedRoundAggregator, conditional_rounding
from fedge.simulation.privacy import PrivateRoundAggregator, SimulationPrivacy

logging.getLogger("absl").setLevel(logging.ERROR)

N, K = 30, 8
FAST: dict[str, Any] = {
    "task": "digits_mlp",
    "rounds": 3,
    "partition.devices": N,
    "simulation.devices_per_round": K,
    "client.batch_size": 10,
    "client.lr": 0.2,
}
CENTRAL: dict[str, Any] = {"privacy.mode": "central", "privacy.noise_multiplier": 0.8}
DELTA = N**-1.1


def _sim(**overrides: Any) -> Simulation:
    return Simulation(load_config(None, {**FAST, **overrides}))


def _numbers(sim: Simulation) -> list[tuple[Any, ...]]:
    return [(r.accuracy, r.loss, r.train_loss, r.participants) for r in sim.run().records]


def test_dp_off_gives_exactly_the_previous_numbers() -> None:
    # Recorded with the engine as it was before [privacy] existed (commit 7713850).
    before = [
        (0.21388888888888888, 2.260517374674479, 2.2868170806695525, 8),
        (0.31666666666666665, 2.2191685994466144, 2.2466013181240854, 8),
        (0.4666666666666667, 2.1700032552083335, 2.2213306146875684, 8),
    ]
    sim = _sim()
    assert sim.privacy is None and sim.config.sampling == "fixed"
    assert sim.select(1).tolist() == [9, 10, 12, 16, 17, 18, 21, 27]
    assert _numbers(sim) == before
    assert all(r.epsilon is None for r in _sim(rounds=1).run().records)


def test_central_dp_reports_epsilon_of_a_standalone_accountant() -> None:
    sim = _sim(rounds=4, **CENTRAL)
    assert sim.config.sampling == "poisson"
    records = sim.run().records
    eps = [r.epsilon for r in records]
    reference = PrivacyAccountant(0.8, K / N, DELTA, "rdp", sampling="poisson")
    assert eps == pytest.approx([reference.step() for _ in records], rel=1e-9)
    assert all(b > a for a, b in itertools.pairwise(eps))
    assert all(r.extra["noise_stddev"] == pytest.approx(0.8) for r in records)


def test_fixed_size_selection_is_accounted_as_such() -> None:
    sim = _sim(rounds=2, **CENTRAL, **{"simulation.sampling": "fixed"})
    records = sim.run().records
    assert [r.participants for r in records] == [K, K]
    ref = PrivacyAccountant(0.8, K / N, DELTA, "rdp", sampling="fixed_size", fleet_size=N)
    assert records[-1].epsilon == pytest.approx(ref.epsilon_after(2), rel=1e-9)
    poisson = PrivacyAccountant(0.8, K / N, DELTA, "rdp").epsilon_after(2)
    assert records[-1].epsilon > poisson  # replace-one costs more; never reported as Poisson


def test_budget_stops_before_the_round_that_would_exceed_it() -> None:
    z, max_eps = 1.0, 3.0
    fits = rounds_within_budget(max_eps, z, K / N, DELTA)
    assert 1 <= fits < 10
    history = _sim(
        rounds=10, **{"privacy.mode": "central", "privacy.noise_multiplier": z},
        **{"privacy.max_epsilon": max_eps},
    ).run()  # fmt: skip
    assert len(history.records) == fits
    assert history.records[-1].epsilon is not None and history.records[-1].epsilon <= max_eps
    assert history.stopped_reason is not None
    assert f"privacy budget reached after {fits} rounds" in history.stopped_reason
    assert "max_epsilon 3" in history.stopped_reason


def _aggregator(mode: str = "central", z: float = 1e-6, clip: float = 1.0, k: int = 4) -> Any:
    spec = ParamSpec(("w", "b"), ((3, 4), (4,)))
    plan = plan_privacy(
        PrivacyConfig(mode=mode, noise_multiplier=z, clip_norm=clip),  # type: ignore[arg-type]
        rounds=1, devices_per_round=k, fleet_size=100, sampling="poisson",
    )  # fmt: skip
    return spec, PrivateRoundAggregator(spec, plan, clip, np.random.default_rng(0))


def test_a_huge_update_contributes_at_most_the_clip_norm() -> None:
    spec, agg = _aggregator(clip=0.5)
    rng = np.random.default_rng(1)
    huge = {"w": rng.normal(size=(1, 3, 4)) * 1e6, "b": rng.normal(size=(1, 4)) * 1e6}
    small = {"w": np.full((2, 3, 4), 1e-3), "b": np.full((2, 4), 1e-3)}
    agg.add_stacked(["big"], {k: v.astype(np.float32) for k, v in huge.items()}, np.array([1e9]))
    agg.add_stacked(["a", "b"], {k: v.astype(np.float32) for k, v in small.items()})
    mean = spec.flatten(agg.result().mean_delta)
    small_norm = math.sqrt(16) * 1e-3
    assert np.linalg.norm(mean * 4) <= 0.5 + 2 * small_norm + 1e-4  # the weight 1e9 is ignored
    assert agg.norms[0] > 1e6 and agg.num_accepted == 3


def test_engine_clips_every_update() -> None:
    # Client lr 50 makes every local update enormous; the global model still moves by at most
    # (participants / K)·C (plus negligible noise) per round with server lr 1.
    sim = _sim(
        rounds=1, **{"client.lr": 50.0, "privacy.mode": "central"},
        **{"privacy.noise_multiplier": 1e-6, "privacy.clip_norm": 0.1},
    )  # fmt: skip
    before = sim.spec.flatten(sim.state.params)
    devices = sim.select(1)
    record = sim.run_round(1)
    moved = float(np.linalg.norm(sim.spec.flatten(sim.state.params) - before))
    assert record.participants == len(devices) > 0
    assert moved <= 0.1 * len(devices) / K + 1e-3
    assert moved > 0.01  # clipped, not dropped


def test_noise_has_std_z_c_over_k() -> None:
    spec, agg = _aggregator(z=2.0, clip=0.5, k=4)
    agg.add(Update("a", {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}, 1))
    draws = np.concatenate([spec.flatten(agg.result().mean_delta) for _ in range(2000)])
    expected = 2.0 * 0.5 / 4
    assert np.std(draws) == pytest.approx(expected, rel=0.03)  # 32,000 draws: ~0.4% s.e.


def test_noise_is_seeded_reproducible_and_differs_by_seed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedge.simulation.privacy"):
        a = _numbers(_sim(**CENTRAL))
    assert sum("seeded for simulation" in r.message for r in caplog.records) == 1
    assert _numbers(_sim(**CENTRAL)) == a
    assert _numbers(_sim(seed=7, **CENTRAL)) != a


def test_poisson_selection_is_deterministic_with_mean_k() -> None:
    sim = _sim(**{"simulation.sampling": "poisson"})  # also without DP, when asked for
    again = _sim(**{"simulation.sampling": "poisson"})
    other = _sim(seed=7, **{"simulation.sampling": "poisson"})
    picks = [sim.select(r) for r in range(1, 401)]
    assert all(np.array_equal(p, again.select(r)) for r, p in enumerate(picks, 1))
    assert any(not np.array_equal(p, other.select(r)) for r, p in enumerate(picks, 1))
    counts = np.array([len(p) for p in picks])
    # sd of one count is sqrt(N q (1 - q)) ≈ 2.4; of the mean of 400, ≈ 0.12
    assert counts.mean() == pytest.approx(K, abs=0.5)
    assert counts.std() > 1.0
    assert all(np.all(np.diff(p) > 0) for p in picks)


def test_adaptive_clipping_moves_the_clip_norm() -> None:
    sim = _sim(
        rounds=3, **{**CENTRAL, "privacy.noise_multiplier": 0.5, "privacy.clip_norm": 100.0},
        **{"privacy.adaptive_clipping.target_quantile": 0.5},
    )  # fmt: skip
    assert sim.privacy is not None and sim.privacy.plan.clip_count_stddev == K / 20
    records = sim.run().records
    clips = [r.extra["clip_norm"] for r in records]
    assert clips[0] == 100.0 and clips[1] < clips[0] and clips[2] < clips[1]  # all norms < 100
    ref = PrivacyAccountant(
        sim.privacy.plan.update_noise_multiplier, K / N, DELTA, clip_count_stddev=K / 20
    )
    assert records[-1].epsilon == pytest.approx(ref.epsilon_after(3), rel=1e-9)


def test_local_dp_runs_and_reports_local_epsilon() -> None:
    records = _sim(**{"privacy.mode": "local", "privacy.noise_multiplier": 0.05}).run().records
    assert [r.epsilon for r in records] == pytest.approx(
        [local_epsilon(0.05, r, DELTA) for r in (1, 2, 3)], rel=1e-9
    )
    assert all(r.accuracy is not None and math.isfinite(r.loss or math.nan) for r in records)


DISTRIBUTED: dict[str, Any] = {
    "privacy.mode": "distributed",
    "privacy.noise_multiplier": 0.8,
    "simulation.sampling": "fixed",
}


def test_distributed_dp_runs_through_secure_aggregation() -> None:
    sim = _sim(**DISTRIBUTED)
    assert sim.privacy is not None and sim.privacy.plan.distributed is not None
    noise = sim.privacy.plan.distributed
    records = sim.run().records
    assert [r.participants for r in records] == [K] * 3
    ref = PrivacyAccountant(
        noise.effective_noise_multiplier, K / N, DELTA, sampling="fixed_size", fleet_size=N
    )
    assert [r.epsilon for r in records] == pytest.approx([ref.epsilon_after(t) for t in (1, 2, 3)])
    assert records[-1].accuracy is not None and records[-1].accuracy > 0.2


def test_distributed_secure_sum_equals_the_plain_sum_of_noised_vectors() -> None:
    sim = _sim(**DISTRIBUTED)
    assert sim.privacy is not None
    agg = sim.privacy.new_round(1)
    assert isinstance(agg, DistributedRoundAggregator)
    rng = np.random.default_rng(3)
    deltas = {n: rng.normal(0, 0.05, (K, *s)).astype(np.float32)
              for n, s in zip(sim.spec.names, sim.spec.shapes, strict=True)}  # fmt: skip
    agg.add_stacked([f"d{i}" for i in range(K)], deltas)
    plain = np.sum(agg._rows, axis=0) * agg.noise.granularity / K
    secure = sim.spec.flatten(agg.result().mean_delta)
    np.testing.assert_allclose(secure, plain.astype(np.float32), rtol=1e-6, atol=1e-9)
    clipped_mean = clip_rows(
        np.concatenate([deltas[n].reshape(K, -1) for n in sim.spec.names], axis=1), 1.0
    )[0].mean(axis=0)
    # The noise on the mean has sd σ_dev·γ·√K / K: the error is noise, not bias.
    sd = agg.noise_stddev / K
    assert np.std(secure - clipped_mean) == pytest.approx(sd, rel=0.1)


def test_conditional_rounding_is_unbiased_and_bounded() -> None:
    rng = np.random.default_rng(0)
    scaled = rng.normal(0, 3.0, (4, 500))
    bound = float(np.linalg.norm(scaled, axis=1).max()) + 8.0
    draws = np.stack([conditional_rounding(scaled, bound, rng) for _ in range(400)])
    assert draws.dtype == np.int64
    assert np.all(np.linalg.norm(draws, axis=2) <= bound)
    assert np.all(np.abs(draws - scaled) < 1.0)
    assert np.abs(draws.mean(axis=0) - scaled).max() < 0.15  # 400 draws: s.e. ≤ 0.025


def test_distributed_needs_fixed_selection_and_no_adaptive_clipping() -> None:
    with pytest.raises(ConfigError, match="simulation.sampling = 'fixed'"):
        _sim(**{**DISTRIBUTED, "simulation.sampling": "poisson"})
    with pytest.raises(ConfigError, match="remove adaptive_clipping"):
        _sim(**DISTRIBUTED, **{"privacy.adaptive_clipping.target_quantile": 0.5})


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"privacy.mode": "central", "privacy.clip_norm": 0}, ConfigError, "clip_norm"),
        ({"privacy.mode": "central", "privacy.noise_multiplier": -1}, ConfigError, "noise"),
        ({"privacy.mode": "central", "privacy.noise_multiplier": 1, "privacy.delta": 1.5},
         ConfigError, "delta"),
        ({"privacy.mode": "central"}, ConfigError, "noise_multiplier"),
        ({"privacy.noise_multiplier": 1.0}, ConfigError, "mode is 'none'"),
        ({"privacy.mode": "central", "privacy.noise_multipler": 1.0}, ConfigError, "unknown"),
        ({"simulation.sampling": "sometimes"}, ConfigError, "sampling"),
        ({**CENTRAL, "privacy.accountant": "pld", "simulation.sampling": "fixed"},
         ConfigError, "Poisson"),
        ({"privacy.mode": "central", "privacy.target_epsilon": 0.01, "rounds": 50,
          "simulation.devices_per_round": N}, CalibrationError, "fewer devices per round"),
        ({**CENTRAL, "privacy.max_epsilon": 0.01}, PrivacyBudgetExceeded, "raise max_epsilon"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_up_front(
    overrides: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _sim(**overrides)


def test_simulation_privacy_is_only_for_dp_modes() -> None:
    with pytest.raises(ConfigError):
        SimulationPrivacy(
            PrivacyConfig(), rounds=1, devices_per_round=1, fleet_size=2, sampling="poisson",
            spec=ParamSpec(("w",), ((1,),)), seed=0,
        )  # fmt: skip


def test_history_and_cli_show_epsilon_and_the_stop_reason(tmp_path: Path) -> None:
    args = ["simulate", "--task", "digits_mlp", "--rounds", "10", "--devices", str(N)]
    args += ["--devices-per-round", str(K), "--out", str(tmp_path)]
    for item in ("privacy.mode=central", "privacy.noise_multiplier=1.0", "privacy.max_epsilon=3"):
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "ε" in result.output and "central DP" in result.output
    assert "privacy budget reached after" in result.output
    rows = json.loads((tmp_path / "history.json").read_text())
    assert all(r["epsilon"] is not None for r in rows)
    assert rows[-1]["epsilon"] <= 3.0
