"""Secure aggregation with distributed DP over the real network: devices → gateways → coordinator.

Real processes on loopback over mutual TLS (2 sites × 3 devices, task digits_mlp). The devices
train with a learning rate of 1e-9, so their clipped updates round to zero on the integer grid and
the noiseless FedAvg model is the initial model itself: what the committed model differs from it
by is the noise the six devices added before masking, and it must have exactly the planned scale
(σ_dev·γ·√6 / K per coordinate). The round's ε must be the simulator's for the same settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedge.coordinator.artifacts import ArtifactStore
from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_params
from fedge.demo.federation import LocalFederation
from fedge.privacy import load_privacy_config
from fedge.simulation.privacy import SimulationPrivacy
from fedge.transport.messages import TrainingPlan

from .harness import (
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    running_federation,
    small_plan,
    wait_for_job,
    wait_gateways_counted,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PRIVACY = {"mode": "distributed", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
STILL = TrainingPlan(epochs=1, batch_size=None, lr=1e-9)  # deltas ≪ γ: they round to zero


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    workdir: Path = tmp_path_factory.mktemp("dp-secagg-fed")
    with running_federation(workdir, small_plan(3)) as fed:
        wait_gateways_counted(fed, {"gw-a": 3, "gw-b": 3}, timeout=60)
        yield fed


def _model(fed: LocalFederation, sha: str) -> Params:
    store = ArtifactStore(fed.workdir / "coordinator" / "artifacts")
    params, _ = decode_params(store.get(sha))
    return params


def test_committed_model_is_the_noiseless_one_plus_the_planned_noise(
    fed: LocalFederation,
) -> None:
    logs = Logs(fed)
    marks = logs.marks()
    spec = job_spec(
        "dp",
        plan=STILL,
        training_deadline_s=20.0,
        min_devices=6,  # the simulator plans its noise for K survivors: the same settings
        privacy=PRIVACY,
        secure_aggregation={"phase_timeout_s": 4.0},
    )
    create_job(fed, spec)
    view = wait_for_job(fed, "dp", timeout=150)
    assert view.state == "completed", view
    (rnd,) = view.rounds
    assert rnd.state == "committed" and rnd.model_sha256 is not None, rnd.reason
    assert rnd.participants == 6
    logs.wait_for("coordinator", r"secure aggregation over 6 devices", since=marks["coordinator"])
    with coordinator_db(fed) as db:
        version = db.get_model_version(rnd.model_sha256)
        assert version is not None and version.parent_sha256 is not None
        fleet_size = db.get_job("dp").fleet_size
    got, initial = _model(fed, rnd.model_sha256), _model(fed, version.parent_sha256)
    spec_ = ParamSpec.of(dict(sorted(initial.items())))
    noise = spec_.flatten(got).astype(np.float64) - spec_.flatten(initial).astype(np.float64)

    sim = SimulationPrivacy(
        load_privacy_config(PRIVACY),
        rounds=1,
        devices_per_round=6,
        fleet_size=fleet_size,
        sampling="fixed_size",
        spec=spec_,
        seed=0,
    )
    plan = sim.plan.distributed
    assert plan is not None
    expected = plan.summed_stddev(6) / 6  # six devices' shares in the sum, × γ / K
    assert float(np.std(noise)) == pytest.approx(expected, rel=0.1)
    assert abs(float(np.mean(noise))) < 5 * expected / math.sqrt(noise.size)
    assert not np.allclose(got[spec_.names[0]], initial[spec_.names[0]])  # the noise is there
    assert sim.plan.accountant is not None
    assert rnd.epsilon == pytest.approx(sim.plan.accountant.epsilon_after(1), rel=1e-9)
    assert view.delta == PRIVACY["delta"]
    for gw in ("gw-a", "gw-b"):  # the gateways summed masked vectors and sent one sum each
        assert len(logs.lines(gw, r"summed masked input of dev-", marks[gw])) == 3
        assert logs.lines(gw, r"relay sum dp/1 sent: 3 device", marks[gw])
