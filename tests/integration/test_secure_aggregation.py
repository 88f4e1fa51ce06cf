"""Secure aggregation over the real network: devices → gateways (relays) → coordinator.

Real processes on loopback over mutual TLS (:class:`~fedge.demo.federation.LocalFederation`,
2 sites × 3 devices, task digits_mlp). A job with secure aggregation commits a round whose model
equals the plain FedAvg of a second job run on the same devices (deterministic full-batch
training from the same seed) within the quantisation bound; a device killed right after its
masked input reached the gateway does not stop the round from committing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.coordinator.artifacts import ArtifactStore
from fedge.core.params import Params
from fedge.core.serde import decode_params
from fedge.demo.federation import LocalFederation
from fedge.transport.messages import TrainingPlan

from .harness import (
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    running_federation,
    small_plan,
    wait_for_job,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECURE = {"phase_timeout_s": 4.0, "max_examples": 100_000}
FULL_BATCH = TrainingPlan(epochs=1, batch_size=None, lr=0.5)  # deterministic: no shuffling


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    workdir: Path = tmp_path_factory.mktemp("secagg-fed")
    with running_federation(workdir, small_plan(3)) as fed:
        # Quotas follow the eligible devices each gateway reports: wait until all 6 count.
        def everyone_eligible() -> bool:
            with coordinator_db(fed) as db:
                gateways = db.list_gateways()
            return len(gateways) == 2 and all(g.eligible_devices == 3 for g in gateways)

        wait_until(everyone_eligible, timeout=60, what="both gateways reporting 3 eligible devices")
        yield fed


def _model(fed: LocalFederation, sha: str) -> Params:
    """A committed model, read from the coordinator's artifact store beside the live process."""
    store = ArtifactStore(fed.workdir / "coordinator" / "artifacts")
    params, _ = decode_params(store.get(sha))
    return params


def _run(fed: LocalFederation, name: str, **over: Any) -> Any:
    spec = job_spec(name, plan=FULL_BATCH, training_deadline_s=20.0, **over)
    job = create_job(fed, spec).id
    view = wait_for_job(fed, job, timeout=150)
    assert view.state == "completed", view
    (rnd,) = view.rounds
    assert rnd.state == "committed" and rnd.model_sha256 is not None, rnd.reason
    return rnd


def test_secure_round_equals_plain_fedavg_over_the_network(fed: LocalFederation) -> None:
    logs = Logs(fed)
    marks = logs.marks()
    secure = _run(fed, "secure", secure_aggregation=SECURE)
    assert secure.participants == 6 and secure.gateways_reported == 2
    logs.wait_for("coordinator", r"secure aggregation over 6 devices", since=marks["coordinator"])
    for gw in ("gw-a", "gw-b"):
        summed = logs.lines(gw, r"summed masked input of dev-", marks[gw])
        assert len(summed) == 3
        assert logs.lines(gw, r"relay sum secure/1 sent: 3 device", marks[gw])
        assert not logs.lines(gw, r"round secure/1 closed", marks[gw])  # no plain partial
    with coordinator_db(fed) as db:
        assert len({p.device_id for p in db.participants("secure", 1)}) == 6
    plain = _run(fed, "plain")
    assert plain.participants == 6
    got, want = _model(fed, secure.model_sha256), _model(fed, plain.model_sha256)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    assert secure.model_sha256 != plain.model_sha256  # the secure sum is not bit-exact


def test_device_killed_after_its_masked_input_round_still_commits(fed: LocalFederation) -> None:
    logs = Logs(fed)
    marks = logs.marks()
    spec = job_spec(
        "secure-drop",
        plan=FULL_BATCH,
        training_deadline_s=20.0,
        secure_aggregation=SECURE,
    )
    job = create_job(fed, spec).id
    first = logs.wait_for(
        "gw-a", rf"summed masked input of dev-a-\d for {job}/1", since=marks["gw-a"]
    )
    victim = first[0].split("summed masked input of ", 1)[1].split()[0]
    fed.supervisor.kill(victim)
    view = wait_for_job(fed, job, timeout=150)
    (rnd,) = view.rounds
    assert rnd.state == "committed", rnd.reason
    assert rnd.participants == 6  # its masked input is in the sum; its neighbours unmask it
    assert logs.lines("coordinator", r"secure phase unmask closed", marks["coordinator"])
