"""The dashboard router on the ops app, in process: access, data after real rounds, actions.

A real coordinator service (SQLite, real aggregation and evaluation) runs two rounds fed with
gateway partials; the ops app (:func:`fedge.transport.ops.build_ops_app`) serves the dashboard
router, driven through FastAPI's in-process client with the ops token (the certificate path over
real TLS is covered by tests/transport/test_ops.py and the browser test). A job with central
differential privacy and a budget shows the ε its rounds spent against that limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.coordinator.helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    make_service,
    partial_payload,
    run_plain_round,
    spec,
)

from fedge.coordinator import CoordinatorService
from fedge.dashboard import dashboard_router, views
from fedge.dashboard.router import ACTION_HEADER, TOKEN_ACTOR
from fedge.dashboard.views import fleet_view
from fedge.identity import PeerVerifier, init_pki
from fedge.transport.ops import build_ops_app

TOKEN = "t" * 43


@contextmanager
def serving(svc: CoordinatorService, tmp_path: Path) -> Iterator[TestClient]:
    """The ops app with ``svc``'s dashboard, in process."""
    pki = init_pki(tmp_path / "pki", "dash")
    app = build_ops_app(
        title="test coordinator",
        verifier=PeerVerifier(pki.ca_cert, pki.crl),
        token=TOKEN,
        routers=[dashboard_router(svc)],
    )
    with TestClient(app, base_url="https://testserver") as client:
        yield client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[CoordinatorService, TestClient]]:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=2))
    run_plain_round(svc, clock, 1)
    run_plain_round(svc, clock, 2)
    with serving(svc, tmp_path) as client:
        yield svc, client
    svc.store.close()


def run_dp_round(svc: CoordinatorService, clock: Clock, number: int) -> None:
    """Round ``number`` of job "digits" under central DP: each gateway sends the sum of two
    devices' clipped updates, each weighing 1 (what central DP asks of a partial)."""
    for _ in range(2):
        checkin(svc, GW_A, 2)
        checkin(svc, GW_B, 2)
        svc.tick()
    param_spec = svc.driver.runtime("digits").param_spec
    for gw, ids in ((GW_A, ["d1", "d2"]), (GW_B, ["d3", "d4"])):
        unit = [type(u)(u.device_id, u.delta, 1) for u in device_updates(param_spec, ids, number)]
        assert svc.submit_partial(gw, "digits", number, partial_payload(gw, "digits", number, unit))
    clock.now += 1
    svc.tick()


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


def test_promote_from_the_dashboard_takes_effect(
    served: tuple[CoordinatorService, TestClient],
) -> None:
    svc, client = served
    versions = {v.round: v for v in svc.admin.list_models(ADMIN, "digits")}
    (production,) = [v for v in versions.values() if v.status == "production"]
    # the newest round version not in production: a candidate the gate held, or retired
    target = next(versions[r] for r in (2, 1) if versions[r].status in ("candidate", "retired"))
    promoted = client.post(
        f"/dashboard/api/models/{target.sha256}/promote", headers={**_auth(), ACTION_HEADER: "1"}
    )
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["sha256"], promoted.json()["status"]) == (target.sha256, "production")
    now = {v.sha256: v for v in svc.admin.list_models(ADMIN, "digits")}
    assert now[target.sha256].status == "production"
    assert now[production.sha256].status == "retired"
    assert TOKEN_ACTOR in now[target.sha256].status_reason  # "promoted by ops-token"
    audited = svc.driver.audit.entries(kinds=["promotion"])[-1]
    assert (audited.actor, audited.subject) == (TOKEN_ACTOR, target.sha256)
    detail = client.get("/dashboard/api/jobs/digits", headers=_auth()).json()
    shown = {m["sha256"]: m["status"] for m in detail["models"]}
    assert shown[target.sha256] == "production" and shown[production.sha256] == "retired"


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


@pytest.mark.parametrize(
    ("limit", "kind"),
    [({"noise_multiplier": 1.0, "max_epsilon": 100.0}, "max_epsilon"),
     ({"target_epsilon": 12.0}, "target_epsilon")],
)  # fmt: skip
def test_a_dp_jobs_privacy_budget_spent_against_its_limit(
    tmp_path: Path, limit: dict[str, Any], kind: str
) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    privacy = {"mode": "central", "clip_norm": 1.0, "delta": 1e-5, **limit}
    svc.admin.create_job(ADMIN, spec(rounds=2, privacy=privacy))
    plan = svc.driver.runtime("digits").privacy_plan
    assert plan is not None and plan.accountant is not None
    accountant = plan.accountant
    run_dp_round(svc, clock, 1)
    run_dp_round(svc, clock, 2)
    with serving(svc, tmp_path) as client:
        detail = client.get("/dashboard/api/jobs/digits", headers=_auth()).json()
        summary = client.get("/dashboard/api/jobs", headers=_auth()).json()
    svc.store.close()
    assert (summary[0]["state"], summary[0]["rounds_committed"]) == ("completed", 2)
    rounds = detail["rounds"]
    assert [(r["round"], r["state"]) for r in rounds] == [(1, "committed"), (2, "committed")]
    spent = [r["epsilon"] for r in rounds]
    assert spent == pytest.approx([accountant.epsilon_after(1), accountant.epsilon_after(2)])
    assert 0 < spent[0] < spent[1]
    assert detail["privacy"] == {
        "mode": "central", "spent": spent[1], "limit": limit[kind], "limit_kind": kind,
    }  # fmt: skip
    if kind == "target_epsilon":  # the noise was calibrated to end the job at the target
        assert spent[1] == pytest.approx(limit[kind], rel=0.05)
    else:
        assert spent[1] < limit[kind]
