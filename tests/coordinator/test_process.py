"""The real thing: `fedge coordinator` as a process, mutual TLS on loopback, admin CLI, a gateway."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedge.cli.main import cli
from fedge.core.params import ParamSpec
from fedge.core.serde import decode_params, encode_arrays
from fedge.errors import AuthorizationError
from fedge.identity import Role, init_pki, issue
from fedge.transport import messages as m
from fedge.transport.client import FedgeClient

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    init_pki(pki, "acme", validity_days=30)
    issue(pki, Role.COORDINATOR, "coordinator")
    issue(pki, Role.ADMIN, "admin")
    issue(pki, Role.GATEWAY, "gw-a", site="s1")
    for device in ("d1", "d2"):
        issue(pki, Role.DEVICE, device, site="s1")
    (tmp_path / "coordinator.toml").write_text(
        'host = "127.0.0.1"\nport = 0\ndatabase_url = "sqlite:///coord.db"\n'
        'artifacts_dir = "artifacts"\ntick_interval_s = 0.2\npoll_interval_s = 0.2\n'
        '[pki]\ndir = "pki"\nname = "coordinator"\n'
    )
    return tmp_path


def register_devices(gw: FedgeClient, pki: Path, *names: str) -> None:
    """What a gateway does before a partial names its devices: send their certificates."""
    ders = [
        x509.load_pem_x509_certificate((pki / "issued" / f"{n}.crt").read_bytes()).public_bytes(
            Encoding.DER
        )
        for n in names
    ]
    answer = gw.register_devices(
        m.DeviceCertificates(certificates=[base64.b64encode(d).decode() for d in ders])
    )
    assert sorted(answer.registered) == sorted(names), answer.refused


def _start(root: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedge", "coordinator", "--config", str(root / "coordinator.toml")],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on (https://\S+)", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"coordinator did not start: {proc.stderr.read()}")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def _admin(fleet: Path, url: str, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--url", url, "--pki", str(fleet / "pki")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _wait(pred: object, what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_coordinator_process_runs_a_round_over_mtls(fleet: Path) -> None:
    proc, url = _start(fleet)
    try:
        out = _admin(
            fleet,
            url,
            "jobs",
            "create",
            "--job-name",
            "digits",
            "--task",
            "digits_mlp",
            "--rounds",
            "1",
            "--devices-per-round",
            "2",
            "--min-devices",
            "2",
            "--over-selection",
            "1.0",
        )
        assert "created job digits" in out
        pki = fleet / "pki"
        gw = FedgeClient(
            url, ca=pki / "ca.crt", cert=pki / "issued/gw-a.crt", key=pki / "issued/gw-a.key"
        )
        with gw:
            with pytest.raises(AuthorizationError):
                gw.list_jobs()  # a gateway is no admin

            def assigned() -> list[m.RoundAssignment]:
                req = m.GatewayCheckIn(
                    gateway_id="gw-a",
                    site="s1",
                    nonce=m.new_nonce(),
                    online_devices=2,
                    eligible_devices=2,
                )
                return gw.gateway_checkin(req).assignments

            a = _wait(assigned, "an assignment")[0]  # type: ignore[index]
            model = gw.model(a.model_sha256)
            assert hashlib.sha256(model).hexdigest() == a.model_sha256
            params, _ = decode_params(model)
            spec = ParamSpec.of(params)
            sums = {
                n: np.full(s, 0.01, np.float64)
                for n, s in zip(spec.names, spec.shapes, strict=True)
            }
            meta = {
                "kind": "partial",
                "job": "digits",
                "round": str(a.round),
                "gateway": "gw-a",
                "site": "s1",
                "nonce": m.new_nonce(),
                "total_weight": "20.0",
                "num_accepted": "2",
                "contributors": json.dumps(["d1", "d2"]),
                "rejected": "[]",
            }
            payload = encode_arrays(sums, meta)
            register_devices(gw, pki, "d1", "d2")
            assert gw.submit_partial("digits", a.round, payload).accepted
            assert gw.submit_partial("digits", a.round, payload).duplicate
        _wait(lambda: "completed" in _admin(fleet, url, "jobs", "list"), "the job to complete")
        shown = _admin(fleet, url, "jobs", "show", "digits")
        assert "committed" in shown
        devices = _admin(fleet, url, "devices", "list")
        assert "d1" in devices and "gw-a" in devices
        assert "revoked=True" in _admin(fleet, url, "devices", "revoke", "d2")
    finally:
        assert _stop(proc) == 0  # SIGTERM: graceful shutdown, exit status 0
    proc, url = _start(fleet)  # restarted: the state is in the database
    try:
        assert "completed" in _admin(fleet, url, "jobs", "list")
    finally:
        assert _stop(proc) == 0


SPEC_FILE = """
name = "digits"
task = "digits_mlp"
rounds = 3
devices_per_round = 2
over_selection = 1.0
min_devices = 2
training_deadline_s = 45.0
selector = { zone = "north" }

[strategy]
name = "fedavgm"
options = { momentum = 0.5 }

[plan]
epochs = 2
lr = 0.05
"""


def test_jobs_create_from_a_spec_file_then_pause_and_resume(fleet: Path) -> None:
    """`fedge jobs create SPEC_FILE` (TOML; a flag overrides the file), then `fedge jobs
    pause|resume` against the process: a paused job hands no work to a gateway. The job's
    selector is met by the labels the gateway forwards for its devices."""
    proc, url = _start(fleet)
    pki = fleet / "pki"
    gw = FedgeClient(
        url, ca=pki / "ca.crt", cert=pki / "issued/gw-a.crt", key=pki / "issued/gw-a.key"
    )
    north = {"zone": "north"}

    def assigned() -> list[m.RoundAssignment]:
        req = m.GatewayCheckIn(
            gateway_id="gw-a", site="s1", nonce=m.new_nonce(), online_devices=2,
            eligible_devices=2, device_labels={"d1": north, "d2": north},
        )  # fmt: skip
        return gw.gateway_checkin(req).assignments

    spec_file = fleet / "job.toml"
    spec_file.write_text(SPEC_FILE)
    try:
        out = _admin(fleet, url, "jobs", "create", str(spec_file), "--rounds", "1")
        assert "created job digits" in out
        admin = FedgeClient(
            url, ca=pki / "ca.crt", cert=pki / "issued/admin.crt", key=pki / "issued/admin.key"
        )
        with admin:
            spec = admin.get_job("digits").spec
        assert (spec.task, spec.rounds, spec.devices_per_round) == ("digits_mlp", 1, 2)
        assert spec.selector == north and spec.training_deadline_s == 45.0
        assert spec.strategy.name == "fedavgm" and spec.strategy.options == {"momentum": 0.5}
        assert (spec.plan.epochs, spec.plan.lr) == (2, 0.05)
        bad = fleet / "bad.toml"
        bad.write_text('name = "x"\ntask = \n')
        refused = CliRunner().invoke(
            cli, ["jobs", "create", str(bad), "--url", url, "--pki", str(pki)]
        )
        assert refused.exit_code != 0 and "not valid TOML" in str(refused.exception)
        assert "job digits: paused" in _admin(fleet, url, "jobs", "pause", "digits")
        assert "paused" in _admin(fleet, url, "jobs", "show", "digits")
        again = CliRunner().invoke(
            cli, ["jobs", "pause", "digits", "--url", url, "--pki", str(pki)]
        )
        assert again.exit_code != 0
        assert "only a running job can become paused" in again.output + str(again.exception)
        with gw:
            assert assigned() == []  # paused: no work is handed out
            assert "job digits: running" in _admin(fleet, url, "jobs", "resume", "digits")
            (a,) = _wait(assigned, "the resumed job's round")  # type: ignore[misc]
            assert (a.job_id, a.quota, a.selector) == ("digits", 2, north)
            assert (a.plan.epochs, a.plan.lr) == (2, 0.05)
        assert "running" in _admin(fleet, url, "jobs", "list")
    finally:
        assert _stop(proc) == 0
