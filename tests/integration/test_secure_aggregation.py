"""Secure aggregation over the real network: devices → gateways (relays) → coordinator.

Real processes on loopback over mutual TLS (:class:`~fedge.demo.federation.LocalFederation`,
2 sites × 3 devices, task digits_mlp). A job with secure aggregation commits a round whose model
equals the plain FedAvg of a second job run on the same devices (deterministic full-batch
training from the same seed) within the quantisation bound; a device killed right after its
masked input reached the gateway does not stop the round from committing; and gw-b, whose
uplink runs through a proxy, loses its link at the moment it sends its relay sum: the sum waits
in its outbox and arrives once when the link is back, and the round commits.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.coordinator.artifacts import ArtifactStore
from fedge.core.params import Params
from fedge.core.serde import decode_params
from fedge.demo.federation import LocalFederation
from fedge.demo.proxy import TcpProxy
from fedge.transport.messages import TrainingPlan

from .harness import (
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    round_state,
    small_plan,
    wait_for_job,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECURE = {"phase_timeout_s": 4.0, "max_examples": 100_000}
FULL_BATCH = TrainingPlan(epochs=1, batch_size=None, lr=0.5)  # deterministic: no shuffling


class UploadTripwire(TcpProxy):
    """A :class:`TcpProxy` that, once armed, cuts the link (as :meth:`cut` does) at the first
    request whose client-to-server bytes exceed ``armed`` (before forwarding them): on gw-b's
    uplink in a secure round the only such upload is its relay sum (2,411 uint32 coordinates,
    ~10 KB; a batch of three joins is ~3.3 KB and every other request smaller)."""

    armed: int | None = None
    tripped = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sent: dict[socket.socket, int] = {}  # client bytes since the server last answered
        super().__init__(*args, **kwargs)

    def forward(self, client: socket.socket, data: bytes, from_client: bool) -> bool:
        sent = self._sent.get(client, 0) + len(data) if from_client else 0
        self._sent[client] = sent
        if from_client and self.armed is not None and sent > self.armed:
            self.armed, self.tripped = None, True
            self.cut()
            return False
        return True


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFederation, UploadTripwire]]:
    """2 sites x 3 devices; gw-b's uplink runs through an :class:`UploadTripwire`."""
    workdir: Path = tmp_path_factory.mktemp("secagg-fed")
    with LocalFederation(workdir, small_plan(3)) as fed:
        fed.create_pki()
        coordinator = fed.start_coordinator()
        proxy = UploadTripwire("127.0.0.1", int(coordinator.rsplit(":", 1)[1]))
        try:
            fed.start_gateway("a")
            fed.start_gateway("b", coordinator_url=f"https://127.0.0.1:{proxy.port}")
            for site in ("a", "b"):
                for i in range(3):
                    fed.start_device(site, i)

            # Quotas follow the eligible devices each gateway reports: wait until all 6 count.
            def everyone_eligible() -> bool:
                with coordinator_db(fed) as db:
                    gateways = db.list_gateways()
                return len(gateways) == 2 and all(g.eligible_devices == 3 for g in gateways)

            wait_until(everyone_eligible, timeout=180, what="both gateways counting 3 devices")
            yield fed, proxy
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def fed(federation: tuple[LocalFederation, UploadTripwire]) -> LocalFederation:
    return federation[0]


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


def test_uplink_cut_as_the_relay_sum_goes_up_it_arrives_once(
    federation: tuple[LocalFederation, UploadTripwire],
) -> None:
    """gw-b's uplink drops as its relay sum is uploaded; the sum waits in gw-b's outbox (retried
    while the link is down), is delivered once when the link is back, and the round commits.
    (Before the device-kill test below: it counts on all six devices.)"""
    fed, proxy = federation
    logs = Logs(fed)
    marks = logs.marks()
    spec = job_spec(
        "secure-uplink",
        plan=FULL_BATCH,
        training_deadline_s=20.0,
        secure_aggregation={**SECURE, "phase_timeout_s": 10.0},  # 15 s for the sums
    )
    proxy.armed = 6000
    job = create_job(fed, spec).id
    try:
        logs.wait_for(
            "gw-b",
            rf"relay sum relay-sum/{job}/1/gw-b not delivered yet, kept for retry",
            since=marks["gw-b"],
            timeout=90,
            count=2,
        )
        assert proxy.tripped
        assert round_state(fed, job, 1) == "training"  # the coordinator still waits for gw-b
    finally:
        proxy.armed = None
        proxy.restore()
    view = wait_for_job(fed, job, timeout=120)
    (rnd,) = view.rounds
    assert rnd.state == "committed", rnd.reason
    assert rnd.participants == 6 and rnd.gateways_reported == 2
    sent = logs.lines("gw-b", rf"relay sum {job}/1 sent: 3 device", marks["gw-b"])
    assert len(sent) == 1 and "duplicate" not in sent[0]
    posts = logs.lines(
        "coordinator",
        rf"POST /v1/gateway/jobs/{job}/rounds/1/secagg HTTP/1.1\" 200",
        marks["coordinator"],
    )
    assert len(posts) == 2  # one relay sum per gateway: the retried one went through once
    with coordinator_db(fed) as db:
        assert len({p.device_id for p in db.participants(job, 1)}) == 6


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
