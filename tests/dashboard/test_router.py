"""The dashboard router on the ops app, in process: access, data after real rounds, actions.

A real coordinator service (SQLite, real aggregation and evaluation) runs two rounds fed with
gateway partials; the ops app (:func:`fedge.transport.ops.build_ops_app`) serves the dashboard
router, driven through FastAPI's in-process client with the ops token (the certificate path over
real TLS is covered by tests/transport/test_ops.py and the browser test).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.coordinator.helpers import ADMIN, Clock, make_service, run_plain_round, spec

from fedge.coordinator import CoordinatorService
from fedge.dashboard import dashboard_router, views
from fedge.dashboard.router import ACTION_HEADER, TOKEN_ACTOR
from fedge.dashboard.views import fleet_view
from fedge.identity import PeerVerifier, init_pki
from fedge.transport.ops import build_ops_app

TOKEN = "t" * 43


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[CoordinatorService, TestClient]]:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=2))
    run_plain_round(svc, clock, 1)
    run_plain_round(svc, clock, 2)
    pki = init_pki(tmp_path / "pki", "dash")
    app = build_ops_app(
        title="test coordinator",
        verifier=PeerVerifier(pki.ca_cert, pki.crl),
        token=TOKEN,
        routers=[dashboard_router(svc)],
    )
    with TestClient(app, base_url="https://testserver") as client:
        yield svc, client
    svc.store.close()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_every_route_refuses_requests_without_rights(
    served: tuple[CoordinatorService, TestClient],
) -> None:
    _, client = served
    routes = ["/dashboard/", "/dashboard/static/dashboard.js", "/dashboard/api/fleet",
              "/dashboard/api/jobs", "/dashboard/api/jobs/digits"]  # fmt: skip
    for path in routes:
        assert client.get(path).status_code == 401, path
        wrong = client.get(path, headers={"Authorization": "Bearer " + "x" * 43})
        assert wrong.status_code == 401, path
        assert client.get(path, headers=_auth()).status_code == 200, path
    refused = client.post("/dashboard/api/jobs/digits/rollback", headers={ACTION_HEADER: "1"})
    assert refused.status_code == 401


def test_the_page_and_its_assets_come_from_the_package(
    served: tuple[CoordinatorService, TestClient],
) -> None:
    _, client = served
    page = client.get("/dashboard/", headers=_auth())
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/dashboard.js"' in page.text and "http://" not in page.text.replace(
        "http://www.w3.org", ""
    )
    js = client.get("/dashboard/static/dashboard.js", headers=_auth())
    assert js.headers["content-type"].startswith("text/javascript") and "function" in js.text
    assert client.get("/dashboard/static/../router.py", headers=_auth()).status_code == 404
    assert client.get("/dashboard/static/nope.js", headers=_auth()).status_code == 404


def test_a_cookie_from_the_login_link_opens_the_page(
    served: tuple[CoordinatorService, TestClient],
) -> None:
    _, client = served
    login = client.get(f"/login?token={TOKEN}&next=/dashboard/", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200  # the cookie is sent now
    assert client.get("/dashboard/api/whoami").json() == {"who": "ops token"}


def test_data_after_two_committed_rounds(served: tuple[CoordinatorService, TestClient]) -> None:
    svc, client = served
    fleet = client.get("/dashboard/api/fleet", headers=_auth()).json()
    assert [s["site"] for s in fleet["sites"]] == ["s1", "s2"]
    assert [(g["id"], g["online"], g["eligible_devices"]) for g in fleet["gateways"]] == [
        ("gw-a", True, 2),
        ("gw-b", True, 2),
    ]
    assert fleet["eligible_devices"] == 4
    assert sorted(d["id"] for d in fleet["devices"]) == ["d1", "d2", "d3", "d4"]
    assert all(d["rounds_participated"] == 2 and d["online"] for d in fleet["devices"])
    assert fleet["devices_total"] == 4
    few = fleet_view(svc.store, svc.settings, svc.clock(), max_devices=2)  # a large fleet
    assert (len(few.devices), few.devices_total, few.eligible_devices) == (2, 4, 4)

    (job,) = client.get("/dashboard/api/jobs", headers=_auth()).json()
    assert (job["id"], job["state"], job["rounds_committed"]) == ("digits", "completed", 2)
    detail = client.get("/dashboard/api/jobs/digits", headers=_auth()).json()
    rounds = detail["rounds"]
    assert [(r["round"], r["state"], r["participants"]) for r in rounds] == [
        (1, "committed", 4),
        (2, "committed", 4),
    ]
    stored = svc.store.list_rounds("digits")
    assert [r["accuracy"] for r in rounds] == [r.accuracy for r in stored]
    assert [r["loss"] for r in rounds] == [r.loss for r in stored]
    assert all(0 < r["received_bytes"] < r["device_direct_bytes"] for r in rounds)
    assert detail["received_bytes"] == sum(r["received_bytes"] for r in rounds)
    assert detail["privacy"] == {"mode": "none", "spent": None, "limit": None, "limit_kind": ""}
    assert detail["secure_aggregation"] is False and rounds[0]["secagg"] is None
    assert [m["round"] for m in detail["models"]] == [None, 1, 2]
    assert detail["models_total"] == 3
    assert client.get("/dashboard/api/jobs/nope", headers=_auth()).status_code == 404


def test_a_long_job_lists_its_newest_versions_and_production(
    served: tuple[CoordinatorService, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, _ = served
    r1 = next(v for v in svc.admin.list_models(ADMIN, "digits") if v.round == 1)
    if r1.status != "production":
        svc.admin.promote_model(ADMIN, r1.sha256)  # production is now older than the newest version
    monkeypatch.setattr(views, "MAX_VERSIONS", 1)
    detail = views.job_detail(svc.store, svc.driver.stats, "digits")
    assert [m.round for m in detail.models] == [1, 2]  # production, then the newest
    assert detail.models[0].status == "production"
    assert detail.models_total == 3


def test_rollback_and_promote_act_as_the_token(
    served: tuple[CoordinatorService, TestClient],
) -> None:
    svc, client = served
    versions = {v.round: v for v in svc.admin.list_models(ADMIN, "digits")}
    if versions[2].status == "candidate":  # the release gate held round 2: promote it first
        svc.admin.promote_model(ADMIN, versions[2].sha256)
    no_header = client.post("/dashboard/api/jobs/digits/rollback", headers=_auth())
    assert no_header.status_code == 403 and ACTION_HEADER in no_header.json()["detail"]

    back = client.post(
        "/dashboard/api/jobs/digits/rollback", headers={**_auth(), ACTION_HEADER: "1"}
    )
    assert back.status_code == 200 and back.json()["version"] == "digits/r1"
    status = {v.round: v.status for v in svc.admin.list_models(ADMIN, "digits")}
    assert (status[1], status[2]) == ("production", "rolled_back")
    assert TOKEN_ACTOR in svc.admin.get_model(ADMIN, versions[2].sha256).status_reason
    (audited,) = svc.driver.audit.entries(kinds=["rollback"])  # the audit log names who acted
    assert (audited.actor, audited.subject) == (TOKEN_ACTOR, "digits")

    again = client.post(
        f"/dashboard/api/models/{versions[2].sha256}/promote",
        headers={**_auth(), ACTION_HEADER: "1"},
    )
    assert again.status_code == 409  # rolled back versions stay out (the registry's rule)
