"""Security end to end (issue 5): hostile peers against a live coordinator and gateway.

One federation (two sites of two devices) runs one job while the probes go in. Each probe is
refused with a clear status and :class:`~fedge.transport.messages.ErrorBody` (or, for
certificates the TLS handshake refuses, a clear client-side error), the refusal is in the
server's log, and the last test shows the job completed with every round's result made only of
what the real devices (and the probe device's one valid update) sent.

The probe device ``probe-a`` is a certified device of site ``a``: it takes one slot of round 1
at gateway ``gw-a`` so that its broken updates reach the payload checks, then sends one valid
(zero) update, which is counted exactly once however often it is replayed.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.core.serde import decode_params
from fedge.demo.federation import LocalFederation
from fedge.errors import CertificateError, UnavailableError
from fedge.identity import PkiPaths, init_pki, issue
from fedge.transport.client import FedgeClient
from fedge.transport.messages import CheckInRequest, Eligibility, TaskAssignment, new_nonce

from .harness import (
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    running_federation,
    small_plan,
    wait_for_job,
)
from .probes import (
    Peer,
    Shapes,
    broken_arrays,
    error_of,
    partial_payload,
    update_payload,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

JOB = "secure"
NO_MODEL = "0" * 64


@dataclass
class Site:
    """The live federation, its PKI and the probe identities issued into it."""

    fed: LocalFederation
    pki: PkiPaths
    other: PkiPaths  # a second CA with a certificate of the same name as a real probe
    logs: Logs
    peers: list[Peer] = field(default_factory=list)

    @property
    def coordinator(self) -> str:
        assert self.fed.coordinator_url is not None
        return self.fed.coordinator_url

    @property
    def gateway(self) -> str:
        return self.fed.gateway_urls["a"]

    def peer(self, name: str | None, url: str, *, pki: PkiPaths | None = None) -> Peer:
        paths = pki or self.pki
        if name is None:
            p = Peer(url, self.pki.ca_cert)
        else:
            p = Peer(url, self.pki.ca_cert, paths.cert_for(name), paths.key_for(name))
        self.peers.append(p)
        return p

    def client(self, name: str, url: str, *, pki: PkiPaths | None = None) -> FedgeClient:
        paths = pki or self.pki
        return FedgeClient(
            url, ca=self.pki.ca_cert, cert=paths.cert_for(name), key=paths.key_for(name)
        )


@dataclass(frozen=True)
class Round1:
    """Round 1 of the job as the probe device holds it."""

    task: TaskAssignment
    checkin_nonce: str
    shapes: Shapes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir: Path = tmp_path_factory.mktemp("security")
    with running_federation(workdir, small_plan(2)) as fed:
        pki = PkiPaths(fed.pki)
        issue(pki.directory, "device", "probe-a", site="a")
        issue(pki.directory, "device", "probe-b", site="b")
        issue(pki.directory, "device", "probe-revoked", site="a")
        past = datetime.now(UTC) - timedelta(days=1)
        issue(
            pki.directory, "device", "probe-expired", site="a",
            not_before=past - timedelta(days=2), not_after=past,
        )  # fmt: skip
        other = init_pki(workdir / "other-ca", "fedge-demo")
        issue(other.directory, "device", "probe-a", site="a")
        s = Site(fed, pki, other, Logs(fed))
        try:
            yield s
        finally:
            for p in s.peers:
                p.close()


def _checkin(name: str, examples: int, nonce: str | None = None) -> CheckInRequest:
    return CheckInRequest(
        device_id=name, nonce=nonce or new_nonce(), eligibility=Eligibility(num_examples=examples)
    )


@pytest.fixture(scope="module")
def round1(site: Site) -> Round1:
    """The job, running, with round 1 handed to the probe device at gw-a."""
    logs = site.logs
    with site.client("probe-a", site.gateway) as probe:
        probe.checkin(_checkin("probe-a", 100))  # now gw-a counts it eligible: a third slot
        logs.wait_for("gw-a", r"gateway/checkin", since=logs.mark("gw-a"), count=2)
        spec = job_spec(
            JOB,
            rounds=2,
            devices_per_round=4,
            over_selection=1.5,
            training_deadline_s=30.0,
            report_deadline_s=5.0,
        )
        create_job(site.fed, spec)
        deadline = time.monotonic() + 60
        while True:
            nonce = new_nonce()
            answer = probe.checkin(_checkin("probe-a", 100, nonce))
            if isinstance(answer, TaskAssignment):
                break
            assert time.monotonic() < deadline, f"probe-a got no task: {answer}"
            time.sleep(0.2)
        model, _ = decode_params(probe.model(answer.model_sha256))
    assert (answer.job_id, answer.round) == (JOB, 1)
    return Round1(answer, nonce, {k: tuple(v.shape) for k, v in model.items()})


def test_handshake_refuses_missing_foreign_and_expired_certificates(
    site: Site, round1: Round1
) -> None:
    for name, url in (("coordinator", site.coordinator), ("gw-a", site.gateway)):
        since = site.logs.mark(name)
        with pytest.raises(httpx.TransportError):
            site.peer(None, url).get("/v1/health")
        for holder, pki in (("probe-a", site.other), ("probe-expired", site.pki)):
            with (
                site.client(holder, url, pki=pki) as stranger,
                pytest.raises((CertificateError, UnavailableError), match="certificate"),
            ):
                stranger.checkin(_checkin(holder, 10))
        logged = site.logs.text(name, since)
        assert "refused a TLS client: handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE" in logged
        assert "certificate rejected: unable to get local issuer certificate" in logged
        assert "certificate rejected: certificate has expired" in logged


def test_revocation_while_running_is_refused_at_once(site: Site, round1: Round1) -> None:
    servers = {"coordinator": site.coordinator, "gw-a": site.gateway}
    peers = {name: site.peer("probe-revoked", url) for name, url in servers.items()}
    for p in peers.values():  # authenticated: the model simply does not exist
        assert error_of(p.get(f"/v1/models/{NO_MODEL}"))[:2] == (404, "not_found")
    marks = {name: site.logs.mark(name) for name in servers}
    result = CliRunner().invoke(
        cli, ["pki", "revoke", "--dir", str(site.pki.directory), "probe-revoked"]
    )
    assert result.exit_code == 0, result.output
    for name, p in peers.items():  # the same kept-alive connection, the very next request
        status, code, detail = error_of(p.get(f"/v1/models/{NO_MODEL}"))
        assert (status, code) == (401, "certificate_revoked") and "revoked" in detail
        assert site.logs.lines(name, r"refused GET /v1/models/\S+ .*has been revoked", marks[name])


def test_wrong_site_other_identity_and_admin_calls_are_forbidden(
    site: Site, round1: Round1
) -> None:
    marks = site.logs.marks()
    stranger = site.peer("probe-b", site.gateway)  # a device of site b at site a's gateway
    status, code, detail = error_of(
        stranger.post_json("/v1/checkin", _json(_checkin("probe-b", 9)))
    )
    assert (status, code) == (403, "forbidden") and "site" in detail
    probe_at_gw = site.peer("probe-a", site.gateway)  # claims to be dev-a-0
    status, code, detail = error_of(
        probe_at_gw.post_json("/v1/checkin", _json(_checkin("dev-a-0", 9)))
    )
    assert (status, code) == (403, "forbidden") and "dev-a-0" in detail
    assert error_of(probe_at_gw.get("/v1/admin/jobs"))[:2] == (404, "not_found")  # not served

    probe = site.peer("probe-a", site.coordinator)
    for method, path in (
        ("GET", "/v1/admin/jobs"),
        ("GET", f"/v1/admin/jobs/{JOB}"),
        ("POST", f"/v1/admin/jobs/{JOB}/pause"),
        ("POST", "/v1/admin/devices/dev-a-0/revoke"),
    ):
        status, code, detail = error_of(probe.http.request(method, path))
        assert (status, code) == (403, "forbidden") and "admin" in detail, (path, detail)
    gateway = site.peer("gw-a", site.coordinator)
    assert error_of(gateway.get("/v1/admin/devices"))[:2] == (403, "forbidden")

    assert site.logs.lines("gw-a", r"refused POST /v1/checkin from device 'probe-b'", marks["gw-a"])
    assert site.logs.lines("gw-a", r"refused POST /v1/checkin .*dev-a-0", marks["gw-a"])
    refused_admin = site.logs.lines(
        "coordinator", r"refused \w+ /v1/admin/\S+ from device 'probe-a'", marks["coordinator"]
    )
    assert len(refused_admin) >= 4


def _json(request: CheckInRequest) -> object:
    return request.model_dump(mode="json")


def test_broken_partials_are_refused_before_the_aggregate(site: Site, round1: Round1) -> None:
    """gw-a's certificate, broken partials for the open round: none is recorded or summed."""
    shapes, rnd = round1.shapes, round1.task.round
    path = f"/v1/jobs/{JOB}/rounds/{rnd}/partials"
    mark = site.logs.mark("coordinator")
    gateway = site.peer("gw-a", site.coordinator)

    def partial(
        *,
        round_number: int = rnd,
        gateway: str = "gw-a",
        contributors: tuple[str, ...] = ("dev-a-0",),
        arrays: dict[str, Any] | None = None,
        **meta: str,
    ) -> bytes:
        return partial_payload(
            shapes, job=JOB, round_number=round_number, gateway=gateway,
            site=meta.pop("site", "a"), contributors=list(contributors), arrays=arrays, **meta,
        )  # fmt: skip

    good = partial()
    cases: list[tuple[str, bytes, int, str]] = [
        ("truncated", good[: len(good) // 2], 400, "wire_format"),
        ("pickled", pickle.dumps({"w": np.zeros(3)}), 400, "wire_format"),
        ("dtype", partial(arrays=broken_arrays(shapes, "dtype")), 400, "wire_format"),
        ("shape", partial(arrays=broken_arrays(shapes, "shape", np.float64)), 400, "shape_mismatch"),
        ("missing", partial(arrays=broken_arrays(shapes, "missing", np.float64)), 400, "shape_mismatch"),
        ("nan", partial(arrays=broken_arrays(shapes, "nan", np.float64)), 400, "non_finite"),
        ("inf", partial(arrays=broken_arrays(shapes, "inf", np.float64)), 400, "non_finite"),
        ("other gateway", partial(gateway="gw-b", site="b"), 403, "forbidden"),
        ("over quota", partial(contributors=tuple(f"dev-a-{i}" for i in range(9))), 409, "conflict"),
        ("bound to round 2", partial(round="2"), 409, "conflict"),
    ]  # fmt: skip
    for what, payload, status, code in cases:
        got = error_of(gateway.post_payload(path, payload))
        assert got[:2] == (status, code), (what, got)
    stale = partial(round_number=999)
    got = error_of(gateway.post_payload(f"/v1/jobs/{JOB}/rounds/999/partials", stale))
    assert got[:2] == (409, "conflict") and "stale round" in got[2]
    assert gateway.declare_huge_body(path, 300 * 1024 * 1024)[0] == 413  # nothing read
    device = site.peer("probe-a", site.coordinator)
    assert error_of(device.post_payload(path, good))[:2] == (403, "forbidden")

    with coordinator_db(site.fed) as db:
        assert not db.has_partial(JOB, rnd, "gw-a")  # nothing recorded for gw-a
    refused = site.logs.lines(
        "coordinator", rf"refused POST /v1/jobs/{JOB}/rounds/\d+/partials", mark
    )
    assert len(refused) >= len(cases) + 1


def test_broken_updates_are_refused_before_the_aggregate(site: Site, round1: Round1) -> None:
    """The probe device's broken updates at gw-a (and at the coordinator's device route)."""
    shapes, rnd = round1.shapes, round1.task.round
    path = f"/v1/jobs/{JOB}/rounds/{rnd}/updates"
    marks = site.logs.marks()

    def update(*, arrays: dict[str, Any] | None = None, **meta: str) -> bytes:
        device = meta.pop("device", "probe-a")
        return update_payload(
            shapes, job=JOB, round_number=rnd, device=device, arrays=arrays, **meta
        )

    good = update()
    huge = update(arrays={k: np.zeros(s, np.float32) for k, s in shapes.items()}, pad="x" * 200_000)
    cases: list[tuple[str, bytes, int, str]] = [
        ("oversized", huge, 413, "payload_too_large"),
        ("truncated", good[:-5], 400, "wire_format"),
        ("pickled", pickle.dumps({"w": np.zeros(3)}), 400, "wire_format"),
        (
            "float64",
            update(arrays={k: np.zeros(v, np.float64) for k, v in shapes.items()}),
            400,
            "wire_format",
        ),
        ("dtype", update(arrays=broken_arrays(shapes, "dtype")), 400, "wire_format"),
        ("shape", update(arrays=broken_arrays(shapes, "shape")), 400, "shape_mismatch"),
        ("missing", update(arrays=broken_arrays(shapes, "missing")), 400, "shape_mismatch"),
        ("nan", update(arrays=broken_arrays(shapes, "nan")), 400, "non_finite"),
        ("inf", update(arrays=broken_arrays(shapes, "inf")), 400, "non_finite"),
        ("claims dev-a-0", update(device="dev-a-0"), 400, "invalid"),
        ("bound to round 2", update(round="2"), 400, "invalid"),
        ("no examples", update(num_examples="0"), 400, "invalid"),
    ]
    probe = site.peer("probe-a", site.gateway)
    for what, payload, status, code in cases:
        got = error_of(probe.post_payload(path, payload))
        assert got[:2] == (status, code), (what, got)
    got = error_of(probe.http.post(path, json={"update": [0.0]}))
    assert got[:2] == (400, "invalid") and "octet-stream" in got[2]
    assert probe.declare_huge_body(path, 100 * 1024 * 1024)[0] == 413
    refused = site.logs.lines("gw-a", r"refused update of probe-a", marks["gw-a"])
    assert len(refused) >= len(cases) - 1  # the oversized one may be refused by the route

    direct = site.peer("probe-a", site.coordinator)  # the coordinator's own device route
    for what, payload, _, _ in cases:  # refused there too (its checks differ in order)
        got = error_of(direct.post_payload(path, payload))
        assert 400 <= got[0] < 500 and got[1] and got[2], (what, got)
    assert error_of(direct.post_payload(path, good))[:2] == (403, "forbidden")


def test_replayed_and_stale_updates_count_once(site: Site, round1: Round1) -> None:
    """One valid update from the probe: its replays and re-sends are not counted again."""
    shapes, rnd = round1.shapes, round1.task.round
    path = f"/v1/jobs/{JOB}/rounds/{rnd}/updates"
    marks = site.logs.marks()
    probe = site.peer("probe-a", site.gateway)
    got = error_of(
        probe.post_json("/v1/checkin", _json(_checkin("probe-a", 9, round1.checkin_nonce)))
    )
    assert got[:2] == (409, "conflict") and "replayed nonce" in got[2]

    valid = update_payload(shapes, job=JOB, round_number=rnd, device="probe-a")
    first = probe.post_payload(path, valid)
    assert first.status_code == 200 and first.json()["accepted"] is True
    again = probe.post_payload(path, valid)  # the same bytes: acknowledged, or the round closed
    assert (again.status_code, again.json().get("duplicate")) == (200, True) or error_of(again)[
        :2
    ] == (409, "conflict")
    resent = update_payload(shapes, job=JOB, round_number=rnd, device="probe-a")
    assert error_of(probe.post_payload(path, resent))[:2] == (409, "conflict")
    with site.client("probe-a", site.gateway) as client:  # no longer eligible: no more slots
        client.checkin(_checkin("probe-a", 0))

    site.logs.wait_for("gw-a", rf"round {JOB}/{rnd} closed: 3 accepted", since=marks["gw-a"])
    status, code, detail = error_of(probe.post_payload(path, valid))  # after the round: stale
    assert (status, code) == (409, "conflict") and "closed" in detail
    assert site.logs.lines(
        "gw-a", rf"refused POST {path} from device 'probe-a'.*409", marks["gw-a"]
    )


def test_job_completes_unharmed(site: Site, round1: Round1) -> None:
    """Every probe above was harmless: both rounds commit with exactly the real contributions."""
    view = wait_for_job(site.fed, JOB, timeout=180)
    assert view.state == "completed"
    assert [(r.round, r.state) for r in view.rounds] == [(1, "committed"), (2, "committed")]
    with coordinator_db(site.fed) as db:
        counted = {n: [p.device_id for p in db.participants(JOB, n)] for n in (1, 2)}
        receipts = {n: sorted(r.gateway_id for r in db.receipts(JOB, n)) for n in (1, 2)}
        revoked = {d.id for d in db.list_devices() if d.revoked}
    real = ["dev-a-0", "dev-a-1", "dev-b-0", "dev-b-1"]
    assert sorted(counted[1]) == sorted([*real, "probe-a"])  # the probe's one valid update, once
    assert sorted(counted[2]) == real
    assert receipts == {1: ["gw-a", "gw-b"], 2: ["gw-a", "gw-b"]}
    assert not revoked  # the device's admin call changed nothing
    first = view.rounds[0]
    assert first.participants == 5 and first.model_sha256 is not None
    assert first.accuracy is not None and np.isfinite(first.accuracy)
    with site.client("dev-a-0", site.coordinator) as device:
        final, _ = decode_params(device.model(view.rounds[-1].model_sha256 or ""))
    assert {k: tuple(v.shape) for k, v in final.items()} == round1.shapes
    assert all(np.isfinite(v).all() for v in final.values())
