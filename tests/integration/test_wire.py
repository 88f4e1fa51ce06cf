"""Raw data never goes on the wire: what real device processes send over mutual TLS, recorded.

A coordinator, a gateway and two serving devices run as processes (`fedge coordinator|gateway|
device`). The device processes start with ``tests/integration/wire_recorder`` on their
``PYTHONPATH``: in each, a recorder wraps the transport under the device's FedgeClient (each
request's method, URL, headers and body) and ``ssl.SSLSocket.send`` (every byte handed to TLS,
whatever sent it). The devices check in, fetch the round's model and its release signature,
train, upload their updates (two rounds); the first committed version goes to every device, the
second to the canary gateway first, and the devices fetch its release manifest, model and
signature, health-check it and report. Then every 4-value run
of each device's local data (its store's rows, holdout included, as float32 bytes) is searched
for in everything its process sent (only runs of four zeros are left out): none may be there.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.demo.federation import FederationPlan, LocalFederation, device_name

from .harness import Logs, create_job, job_spec, wait_for_job, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RECORDER = Path(__file__).parent / "wire_recorder"
SITE = "a"
DEVICES = 2
JOB = "wire"
WINDOW = 4  # float32 values: 16 bytes


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFederation, Path]]:
    """The federation after a round and a canary rollout, and where its devices' traffic is."""
    workdir: Path = tmp_path_factory.mktemp("wire")
    records = workdir / "wire"
    plan = FederationPlan(
        sites=(SITE,),
        devices_per_site=DEVICES,
        task="digits_mlp",
        rows_per_tick=1000,
        tick_s=0.2,
        coordinator_extra={
            "release_margin": 1.0,  # the gate promotes the committed round
            "canary": {"fraction": 1.0, "min_healthy": 1, "max_failures": 0, "hold_s": 240.0},
        },
    )
    with pytest.MonkeyPatch.context() as env, LocalFederation(workdir, plan) as fed:
        fed.create_pki()
        fed.start_coordinator()
        fed.start_gateway(SITE)
        env.setenv("FEDGE_WIRE_RECORD", str(records))  # only device processes record
        env.setenv("PYTHONPATH", str(RECORDER), prepend=os.pathsep)
        logs = Logs(fed)
        for i in range(DEVICES):
            fed.start_device(SITE, i, serve_job=JOB)
            logs.wait_for(device_name(SITE, i), r"POST \S+/v1/checkin \"HTTP/1.1 200", timeout=120)
        # round 1's version goes to every device; round 2's to the canary gateway first
        spec = job_spec(JOB, rounds=2, devices_per_round=DEVICES, min_devices=DEVICES)
        create_job(fed, spec)
        view = wait_for_job(fed, JOB, timeout=300)
        assert view.state == "completed" and view.rounds[-1].participants == DEVICES, view

        def reported() -> bool:
            return any(
                r["method"] == "POST" and r["url"].endswith(f"/v1/jobs/{JOB}/health")
                for r in requests(records)
            )

        wait_until(reported, timeout=120, what="a device's health report on the canary")
        fed.stop()  # every byte the devices sent is in the records now
        yield fed, records


def requests(records: Path, pid: str | None = None) -> list[dict[str, Any]]:
    """The requests recorded (of one process, or of all)."""
    found = []
    for path in sorted(records.glob(f"{pid or '*'}.requests.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


def local_data(fed: LocalFederation, index: int) -> np.ndarray:
    """Every row in device ``index``'s local store, holdout included, in order (float32)."""
    store = fed.workdir / device_name(SITE, index) / "state" / "data.sqlite"
    with closing(sqlite3.connect(store)) as db:
        rows = [bytes(x) for (x,) in db.execute("SELECT x FROM examples ORDER BY id")]
    return np.frombuffer(b"".join(rows), dtype="<f4")


def runs_found(data: np.ndarray, sent: bytes) -> tuple[int, int]:
    """(runs searched, runs found): every run of WINDOW consecutive values of ``data`` (across
    row ends too), as float32 bytes, anywhere in ``sent`` (at any byte offset). Only runs of
    four zeros are left out: they are the same 16 zero bytes as four zero deltas in any update
    and carry nothing about the data. A longer run contains a WINDOW-run, so is covered."""
    size = 4 * WINDOW
    windows_sent = {sent[i : i + size] for i in range(len(sent) - size + 1)}
    raw = data.tobytes()
    nonzero = np.convolve(data != 0, np.ones(WINDOW, dtype=int), mode="valid")
    searched = found = 0
    for start in np.flatnonzero(nonzero >= 1):
        searched += 1
        found += raw[4 * start : 4 * start + size] in windows_sent
    return searched, found


def _processes(records: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in records.glob("*.tls"))


def _device_of(fed: LocalFederation, pid: str) -> int:
    """Which device a recording process was (its check-ins name it)."""
    (device,) = {
        json.loads(base64.b64decode(r["body"]))["device_id"]
        for r in requests(fed.workdir / "wire", pid)
        if r["url"].endswith("/v1/checkin")
    }
    return int(device.rsplit("-", 1)[1])


def test_the_devices_requests_are_recorded_as_sent(
    recorded: tuple[LocalFederation, Path],
) -> None:
    fed, records = recorded
    pids = _processes(records)
    assert len(pids) == DEVICES
    gateway = fed.gateway_urls[SITE]
    kinds: set[str] = set()
    for pid in pids:
        sent = (records / f"{pid}.tls").read_bytes()
        for r in requests(records, pid):
            assert r["url"].startswith(gateway + "/v1/")  # only ever to its gateway
            path = r["url"][len(gateway) :].split("?")[0]
            parts = path.split("/")
            kind = f"{r['method']} " + "/".join(
                "{sha}" if len(p) == 64 else "{r}" if p.isdigit() else p for p in parts
            )
            kinds.add(kind)
            body = base64.b64decode(r["body"])
            assert body in sent  # the TLS recorder saw every body the client sent
            assert f"{r['method']} {path}".encode() in sent
    for kind in (
        "POST /v1/checkin",
        "GET /v1/models/{sha}",
        "GET /v1/models/{sha}/release",
        f"POST /v1/jobs/{JOB}/rounds/{{r}}/updates",
        f"GET /v1/jobs/{JOB}/production",
        f"POST /v1/jobs/{JOB}/health",
    ):
        assert kind in kinds, sorted(kinds)


def test_no_run_of_local_data_is_in_anything_a_device_sent(
    recorded: tuple[LocalFederation, Path],
) -> None:
    fed, records = recorded
    for pid in _processes(records):
        index = _device_of(fed, pid)
        data = local_data(fed, index)
        assert data.size > 10_000  # its share of the data set reached its store
        sent = (records / f"{pid}.tls").read_bytes()
        updates = [
            base64.b64decode(r["body"]) for r in requests(records, pid) if "/updates" in r["url"]
        ]
        assert updates and all(len(u) > 8_000 for u in updates)  # the trained update went out
        searched, found = runs_found(data, sent)
        assert searched > 10_000
        assert found == 0, f"{device_name(SITE, index)} sent {found} runs of its local data"
        # the search finds a run that is there: one row of the data, as it would travel
        _, control = runs_found(data, sent + data[64:128].tobytes())
        assert control > 0
