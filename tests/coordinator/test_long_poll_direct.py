"""Long poll at the coordinator: a directly connected device's held check-in is answered with
its task as soon as a round opens (real PKI, real mutual TLS on loopback)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.identity import PeerVerifier
from fedge.transport import messages as m
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.server import ServerTls, start_server

from .helpers import ADMIN, spec
from .test_secure_aggregation import Fleet

HOLD_S = 120.0  # far longer than a wake-up needs: a task means the notification worked


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("fleet"))


def test_a_held_direct_device_gets_its_task_when_the_round_opens(
    tmp_path: Path, fleet: Fleet
) -> None:
    settings = CoordinatorSettings(long_poll_s=HOLD_S, max_held_checkins=10)
    svc = CoordinatorService(
        Store(f"sqlite:///{tmp_path / 'coord.db'}"), ArtifactStore(tmp_path / "a"), settings
    )
    svc.admin.create_job(ADMIN, spec(devices_per_round=1, min_devices=1, rounds=1))
    svc.tick()  # planned: no device has been seen yet
    paths = fleet.paths
    app = build_app(
        device=svc, uplink=svc, admin=svc.admin,
        verifier=PeerVerifier(paths.ca_cert, paths.crl), long_poll=svc.long_poll,
    )  # fmt: skip
    tls = ServerTls(paths.ca_cert, fleet.cert("coordinator"), paths.key_for("coordinator"))
    answers: list[m.TaskAssignment | m.Wait] = []

    def device() -> None:
        with FedgeClient(
            server.url, ca=paths.ca_cert, cert=fleet.cert("d-s1-0"),
            key=paths.key_for("d-s1-0"), timeout=HOLD_S + 30,
        ) as client:  # fmt: skip
            request = m.CheckInRequest(
                device_id="d-s1-0", nonce=m.new_nonce(),
                eligibility=m.Eligibility(num_examples=20), wait_s=HOLD_S,
            )  # fmt: skip
            answers.append(client.checkin(request))

    with start_server(app, "127.0.0.1", 0, tls, on_shutdown=svc.long_poll.close) as server:
        thread = threading.Thread(target=device, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        # held, and seen (the round can open only for a device the coordinator has counted)
        while svc.long_poll.held == 0 or svc.store.get_device("d-s1-0") is None:
            assert time.monotonic() < deadline, "the check-in was never held"
            time.sleep(0.02)
        assert answers == [] and svc.admin.get_job(ADMIN, "digits").rounds[0].state == "planned"
        svc.tick()  # the device is now seen: the round opens with a direct quota of 1
        thread.join(HOLD_S + 60)
    (task,) = answers
    assert isinstance(task, m.TaskAssignment) and task.round == 1
    live = svc.live_round("digits")
    assert live is not None and live.direct_assigned == {"d-s1-0"}
