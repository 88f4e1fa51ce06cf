"""Distributed DP with secure aggregation across the three roles' services, in process.

The same world as :mod:`tests.coordinator.test_secure_aggregation` (real PKI, real SecAgg+
sessions and crypto, devices in threads, HTTP left out). Devices clip, add their discrete
Gaussian share of the noise and mask; the coordinator commits a model that differs from the
noiseless FedAvg of the clipped updates by noise of exactly the planned scale, and records the ε
the simulator reports for the same settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.core.params import Params, ParamSpec
from fedge.device.secure import secure_vector
from fedge.errors import ValidationError
from fedge.privacy import clip_tree, load_privacy_config, secure_generator
from fedge.simulation.privacy import SimulationPrivacy
from fedge.transport import messages as m

from .test_secure_aggregation import (
    ADMIN,
    Fleet,
    World,
    build_world,
    committed,
    hand_out,
    job_spec,
    run_round,
)

CLIP = 0.5
PRIVACY = {"mode": "distributed", "clip_norm": CLIP, "noise_multiplier": 1.0}
SECURE = {"phase_timeout_s": 3.0}  # range, levels, bits and weighting follow from the noise


@pytest.fixture(scope="module")
def dp_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("dp-fleet"))


@pytest.fixture
def dp_world(tmp_path: Path, dp_fleet: Fleet) -> Iterator[World]:
    w = build_world(tmp_path, dp_fleet)
    yield w
    w.close()


def _spec(**over: Any) -> m.JobSpec:
    return job_spec(**{"privacy": PRIVACY, "secure_aggregation": SECURE, **over})


def _share(delta: Params, examples: int, task: m.TaskAssignment) -> np.ndarray:
    """What the device runtime does: clip (work.privatise), then noise and discretise."""
    assert task.secagg is not None
    clipped, _ = clip_tree(delta, CLIP)
    return secure_vector(clipped, examples, task.secagg, task.privacy, secure_generator())


def _noiseless(base: Params, updates: dict[str, tuple[Params, int]], who: list[str]) -> Params:
    """DP-FedAvg without noise: base + Σ clip(Δ) / K, every device weighing 1."""
    clipped = {d: clip_tree(updates[d][0], CLIP)[0] for d in who}
    k = 6
    return {n: base[n] + sum(clipped[d][n].astype(np.float64) for d in who) / k for n in base}


def _residual(got: Params, want: Params) -> np.ndarray:
    spec = ParamSpec.of(dict(sorted(want.items())))
    return spec.flatten(got).astype(np.float64) - spec.flatten(want).astype(np.float64)


def test_secure_round_carries_the_planned_noise_and_records_epsilon(dp_world: World) -> None:
    dp_world.svc.admin.create_job(ADMIN, _spec())
    rt = dp_world.svc.driver.jobs["secure"]
    noise = rt.privacy_plan.distributed if rt.privacy_plan else None
    assert noise is not None and noise.devices == 3  # planned for min_devices survivors
    base = {k: v.copy() for k, v in rt.state.params.items()}
    tasks = hand_out(dp_world)
    task = next(iter(tasks.values()))
    assert task.privacy.mode == "distributed" and task.privacy.noise_stddev == pytest.approx(
        noise.per_device_stddev
    )
    assert task.secagg is not None and task.secagg.params["weighting"] == "uniform"
    outcomes, updates = run_round(dp_world, tasks, drop_on={}, vector=_share)
    assert all(o == ("done", "") for o in outcomes.values()), outcomes
    rnd, params = committed(dp_world)
    assert rnd.participants == 6
    residual = _residual(params, _noiseless(base, updates, sorted(updates)))
    # 6 shares of N_Z(0, σ_dev²) in the sum, ×γ/K: the committed model is off by exactly that
    expected = noise.summed_stddev(6) / 6
    assert float(np.std(residual)) == pytest.approx(expected, rel=0.1)
    assert abs(float(np.mean(residual))) < 5 * expected / math.sqrt(residual.size)
    # the noise on the sum is at least what z·Δ₂ asks for (6 survivors ≥ the 3 planned for)
    assert noise.summed_stddev(6) >= 1.0 * noise.l2_sensitivity * noise.granularity
    assert rnd.epsilon is not None and rnd.epsilon > 0
    assert rt.privacy_plan is not None and rt.privacy_plan.accountant is not None
    assert rnd.epsilon == pytest.approx(rt.privacy_plan.accountant.epsilon())
    view = dp_world.svc.admin.get_job(ADMIN, "secure")
    assert view.delta == pytest.approx(rt.privacy_plan.delta)


def test_a_dropout_leaves_the_noise_of_the_survivors(dp_world: World) -> None:
    dp_world.svc.admin.create_job(ADMIN, _spec())
    rt = dp_world.svc.driver.jobs["secure"]
    assert rt.privacy_plan is not None and rt.privacy_plan.distributed is not None
    noise = rt.privacy_plan.distributed
    base = {k: v.copy() for k, v in rt.state.params.items()}
    tasks = hand_out(dp_world)
    gone = sorted(tasks)[0]
    outcomes, updates = run_round(
        dp_world, tasks, drop_on={gone: "masked_input"}, vector=_share, scale=3.0
    )
    assert isinstance(outcomes[gone], BaseException)  # it vanished before its masked input
    rnd, params = committed(dp_world)
    assert rnd.participants == 5
    survivors = sorted(d for d in updates if d != gone)
    residual = _residual(params, _noiseless(base, updates, survivors))
    assert float(np.std(residual)) == pytest.approx(noise.summed_stddev(5) / 6, rel=0.1)


def test_network_and_simulator_agree_on_epsilon(dp_world: World) -> None:
    spec = _spec(rounds=3, min_devices=6)  # the simulator plans for K survivors
    dp_world.svc.admin.create_job(ADMIN, spec)
    rt = dp_world.svc.driver.jobs["secure"]
    sim = SimulationPrivacy(
        load_privacy_config(PRIVACY),
        rounds=3,
        devices_per_round=6,
        fleet_size=6,
        sampling="fixed_size",
        spec=rt.param_spec,
        seed=0,
    )
    plan = rt.privacy_plan
    assert plan is not None and plan.accountant is not None and sim.plan.accountant is not None
    assert plan.distributed == sim.plan.distributed
    for rounds in (1, 2, 3):
        assert plan.accountant.epsilon_after(rounds) == sim.plan.accountant.epsilon_after(rounds)


def test_distributed_dp_needs_secure_aggregation_and_owns_the_range() -> None:
    from fedge.coordinator.jobs import validate_spec

    with pytest.raises(ValidationError, match="add a secure_aggregation table"):
        validate_spec(job_spec(privacy=PRIVACY, secure_aggregation=None))
    for bad in ({"clip_lo": -2.0}, {"max_examples": 10}, {"weighting": "examples"}):
        with pytest.raises(ValidationError, match="follow from the noise plan"):
            _runtime(_spec(secure_aggregation={**SECURE, **bad})).secure_settings()
    with pytest.raises(ValidationError, match="bits = 20 is too few"):
        _runtime(_spec(secure_aggregation={**SECURE, "bits": 20})).secure_settings()
    settings = _runtime(_spec()).secure_settings()
    config = settings.config
    assert settings.weighting == "uniform" and config.levels is not None
    assert config.clip_range == (-config.levels / 2, config.levels / 2)  # step 1: exact
    assert 2 * 6 * config.levels <= 2**config.bits  # 6 devices at most, 2x headroom


def _runtime(spec: m.JobSpec) -> Any:
    from fedge.coordinator.jobs import JobRuntime, validate_spec

    task, strategy, privacy = validate_spec(spec)
    state = strategy.init(JobRuntime.initial_params(task, 0))
    return JobRuntime(spec, task, strategy, privacy, state, "", 6)


def test_the_example_job_is_accepted(dp_world: World) -> None:
    import tomllib

    path = Path(__file__).parents[2] / "examples" / "job_digits_dp_secagg.toml"
    spec = m.JobSpec.model_validate(tomllib.loads(path.read_text()))
    view = dp_world.svc.admin.create_job(ADMIN, spec)
    rt = dp_world.svc.driver.jobs[view.id]
    assert rt.privacy_plan is not None and rt.privacy_plan.distributed is not None
    assert rt.privacy_plan.distributed.devices == spec.min_devices
    assert view.delta == 1e-5 and rt.secure_settings().weighting == "uniform"
