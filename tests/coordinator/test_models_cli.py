"""``fedge models`` against a real coordinator service behind a real mutual-TLS server, in process.

The CLI talks HTTP to the admin API as an operator would (``--url``, ``--pki``): versions named
by SHA-256, by a prefix, by ``<job>/r<round>`` or ``<job>/production``; ``list`` with the ε,
size and refusals columns; ``show`` with ε, size and refusals; ``reject`` of a held candidate.
A device connected directly reports a refusal over the same server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fedge.cli import cli
from fedge.coordinator import CoordinatorService
from fedge.core.params import ParamSpec
from fedge.errors import UnknownNameError
from fedge.identity import PeerVerifier, PkiPaths, init_pki, issue
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.reports import refusal_report
from fedge.transport.server import RunningServer, ServerTls, start_server

from .helpers import (
    ADMIN,
    GW_A,
    GW_B,
    checkin,
    device_updates,
    model_params,
    partial_payload,
    spec,
)
from .test_registry import add_version
from .test_releases import commit_one_round, signed_service


@dataclass
class Served:
    svc: CoordinatorService
    pki: PkiPaths
    server: RunningServer
    initial: str
    v1: str

    def fedge(self, *args: str, ok: bool = True) -> Result:
        """``fedge ARGS --url … --pki …`` as the admin."""
        result = CliRunner().invoke(
            cli, [*args, "--url", self.server.url, "--pki", str(self.pki.directory)]
        )
        if ok:
            assert result.exit_code == 0, result.output + repr(result.exception)
        return result


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    pki = init_pki(tmp_path / "pki", "acme", validity_days=30)
    issue(pki.directory, "coordinator", "coord")
    issue(pki.directory, "admin", "admin")
    issue(pki.directory, "device", "solo", site="s9")
    svc = signed_service(tmp_path)
    initial, v1 = commit_one_round(svc)
    app = build_app(
        device=svc, uplink=svc, admin=svc.admin, verifier=PeerVerifier(pki.ca_cert, pki.crl)
    )
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)
    server = start_server(app, "127.0.0.1", 0, tls)
    try:
        yield Served(svc, pki, server, initial, v1)
    finally:
        server.stop()


def test_versions_by_name_prefix_and_production_and_reject(served: Served) -> None:
    svc, v1 = served.svc, served.v1
    acc1 = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    held = add_version(svc, v1, 2, acc1 - 0.5, 1.01)  # the gate holds it: a candidate
    assert svc.admin.get_model(ADMIN, held).status == "candidate"

    for ref in (v1, v1[:12], "digits/r1", "digits/production"):
        shown = json.loads(served.fedge("models", "show", ref).output)
        assert shown["sha256"] == v1 and shown["version"] == "digits/r1"
    shown = json.loads(served.fedge("models", "show", "digits/r1").output)
    assert shown["size"] == len(svc.artifacts.get(v1)) > 0  # the size is recorded and shown
    assert shown["epsilon"] is None and shown["refusals"] == []  # no DP in this job
    assert json.loads(served.fedge("models", "show", "digits/r0").output)["sha256"] == (
        served.initial
    )

    out = served.fedge("models", "reject", "digits/r2").output
    assert "digits/r2" in out and "is now rejected" in out
    assert svc.admin.get_model(ADMIN, held).status == "rejected"
    again = served.fedge("models", "reject", "digits/r2", ok=False)
    assert again.exit_code != 0 and "cannot become rejected" in str(again.exception)

    missing = served.fedge("models", "show", "digits/r9", ok=False)
    assert isinstance(missing.exception, UnknownNameError)
    assert "digits/r0, digits/r1, digits/r2" in str(missing.exception)
    vague = served.fedge("models", "show", "not-a-version", ok=False)
    assert "<job>/r<round>" in str(vague.exception)

    diff = served.fedge("models", "diff", "digits/r0", "digits/r1").output
    assert "digits/r0 → digits/r1" in diff and "L2 distance" in diff


def test_list_shows_size_and_a_refusal_reported_over_https(served: Served) -> None:
    device = FedgeClient(
        served.server.url,
        ca=served.pki.ca_cert,
        cert=served.pki.cert_for("solo"),
        key=served.pki.key_for("solo"),
    )
    with device:  # a device connected directly: POST /v1/jobs/digits/health
        receipt = device.report_health(
            "digits", refusal_report(served.v1, "release", "signature does not verify", 1)
        )
    assert receipt.accepted and "digits/r1" in receipt.reason
    listed = served.fedge("models", "list", "digits").output
    for header in ("ε", "size", "refused"):
        assert header in listed
    assert "1 (release)" in listed  # one reporter, the release check
    assert "KiB" in listed
    shown = json.loads(served.fedge("models", "show", "digits/r1").output)
    (refusal,) = shown["refusals"]
    assert (refusal["reporter"], refusal["tier"], refusal["check"]) == ("solo", "device", "release")
    assert refusal["sequence"] == 1 and refusal["via"] is None


def test_a_dp_jobs_versions_carry_epsilon(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    privacy = {"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0}
    svc.admin.create_job(ADMIN, spec(rounds=2, privacy=privacy))
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()
    for number in (1, 2):
        live = svc.live_round("digits")
        assert live is not None and live.number == number
        pspec = ParamSpec.of(model_params(svc, live.base_sha256))
        for gw, ids, seed in ((GW_A, ["a1", "a2"], number), (GW_B, ["b1", "b2"], 10 + number)):
            checkin(svc, gw)
            unit = [type(u)(u.device_id, u.delta, 1) for u in device_updates(pspec, ids, seed)]
            payload = partial_payload(gw, "digits", number, unit)
            assert svc.submit_partial(gw, "digits", number, payload).accepted
        svc.tick()
        if number == 1:
            checkin(svc, GW_A)
            checkin(svc, GW_B)
            svc.tick()
    views = {v.version: v for v in svc.admin.list_models(ADMIN, "digits")}
    rounds = {r.round: r.epsilon for r in svc.admin.get_job(ADMIN, "digits").rounds}
    assert views["digits/r0"].epsilon is None  # the initial model: nothing spent yet
    e1, e2 = views["digits/r1"].epsilon, views["digits/r2"].epsilon
    assert e1 is not None and e2 is not None and 0 < e1 < e2  # ε only grows
    assert (e1, e2) == (pytest.approx(rounds[1]), pytest.approx(rounds[2]))
    assert views["digits/r1"].metrics["epsilon"] == e1

    from rich.console import Console

    from fedge.coordinator.models_cli import _versions_table

    console = Console(width=220, record=True)
    console.print(_versions_table(list(views.values())))
    text = console.export_text()
    assert f"{e1:.3g}" in text and f"{e2:.3g}" in text
