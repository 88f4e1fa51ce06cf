"""The per-site secure-aggregation routes over real mutual TLS: a gateway's batch of its devices'
items and its site inbox, against a real coordinator service; documented in the OpenAPI spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.coordinator.test_secure_aggregation import ADMIN, Fleet, _join, job_spec

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.errors import AuthorizationError, PayloadTooLarge, ValidationError
from fedge.identity import PeerVerifier
from fedge.transport import messages as m
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.server import RunningServer, ServerTls, start_server

pytestmark = pytest.mark.integration

ROUTES = "/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, RunningServer]]:
    root: Path = tmp_path_factory.mktemp("secagg-routes")
    fleet = Fleet(root / "fleet")
    svc = CoordinatorService(
        Store(f"sqlite:///{root / 'coord.db'}"),
        ArtifactStore(root / "artifacts"),
        CoordinatorSettings(poll_interval_s=0.2),
        secagg=fleet.authority(),
    )
    svc.admin.create_job(ADMIN, job_spec())
    paths = fleet.paths
    app = build_app(
        device=svc, uplink=svc, admin=svc.admin, verifier=PeerVerifier(paths.ca_cert, paths.crl),
        secagg_uplink=svc.secagg_uplink,
    )  # fmt: skip
    tls = ServerTls(paths.ca_cert, fleet.cert("coordinator"), paths.key_for("coordinator"),
                    crl=paths.crl)  # fmt: skip
    server = start_server(app, "127.0.0.1", 0, tls)
    try:
        with client(fleet, server, "gw-a") as gw:  # report, then take the round's quota
            for _ in range(2):
                request = m.GatewayCheckIn(
                    gateway_id="gw-a", site="s1", nonce=m.new_nonce(), online_devices=3,
                    eligible_devices=3,
                )  # fmt: skip
                gw.gateway_checkin(request)
                svc.tick()
        yield fleet, server
    finally:
        server.stop()
        svc.store.close()


def client(fleet: Fleet, server: RunningServer, name: str) -> FedgeClient:
    return FedgeClient(
        server.url, ca=fleet.paths.ca_cert, cert=fleet.cert(name),
        key=fleet.paths.key_for(name), timeout=10.0,
    )  # fmt: skip


def test_openapi_describes_the_site_routes(served: tuple[Fleet, RunningServer]) -> None:
    fleet, server = served
    with client(fleet, server, "gw-a") as gw:
        spec = gw._http.get("/openapi.json").json()
    batch = spec["paths"][f"{ROUTES}/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SecAggBatch"
    )
    assert "SecAggBatchReceipt" in str(batch["responses"]["200"])
    inbox = spec["paths"][f"{ROUTES}/inbox"]["get"]
    assert [p["name"] for p in inbox["parameters"]] == ["job_id", "round_number", "after"]
    assert "SecAggSiteInbox" in str(inbox["responses"]["200"])
    assert f"{ROUTES}/inbox/{{device_id}}" in spec["paths"]  # the per-device route stays


def test_a_batch_and_the_site_inbox_over_mutual_tls(served: tuple[Fleet, RunningServer]) -> None:
    fleet, server = served
    batch = m.SecAggBatch(joins=[_join(fleet, "d-s1-0"), _join(fleet, "d-s1-1", signer="d-s1-2")])
    with client(fleet, server, "gw-a") as gw:
        receipt = gw.relay_secagg_batch("secure", 1, batch)
        ok, forged = receipt.joins
        assert ok.accepted and (forged.accepted, forged.status) == (False, 403)
        assert "not signed by its certificate" in forged.reason
        box = gw.relay_secagg_site_inbox("secure", 1, 0)
        assert box.state == "joining" and box.messages == [] and box.next == 0
        # bounded, before the service: at most 256 items (422), a JSON body of 256 KiB (413)
        item = m.SecAggRelayed(device_id="d-s1-0", message="AAAA")
        too_many = m.SecAggBatch.model_construct(joins=[], messages=[item] * 257)
        with pytest.raises(ValidationError, match="at most 256"):
            gw.relay_secagg_batch("secure", 1, too_many)
        big = m.SecAggRelayed(device_id="d-s1-0", message="A" * 4000)
        too_big = m.SecAggBatch(messages=[big] * 100)  # 400 KB
        with pytest.raises(PayloadTooLarge):
            gw.relay_secagg_batch("secure", 1, too_big)
    with client(fleet, server, "d-s1-0") as device, pytest.raises(AuthorizationError):
        device.relay_secagg_batch("secure", 1, m.SecAggBatch())  # a device is no gateway
