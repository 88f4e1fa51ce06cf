"""Real processes: devices serve through onnxruntime or torch, and report federated evaluation.

A coordinator, one gateway and three devices over mutual TLS; two devices run the local
prediction endpoint, one with ``[serving] runtime = "onnxruntime"``, one with torch. After two
rounds both serve the production version and answer the same rows with the same classes; each
version a round started from carries the devices' federated evaluation in the registry
(``fedge models list`` / ``show``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli import cli
from fedge.demo.federation import FederationPlan, LocalFederation, device_name

from .harness import Logs, create_job, job_spec, wait_for_job, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

JOB = "served"
SITE = "a"
RUNTIMES = {0: "onnxruntime", 1: "torch"}  # device index -> its serving runtime; 2 only trains


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    plan = FederationPlan(
        sites=(SITE,),
        devices_per_site=3,
        task="digits_mlp",
        rows_per_tick=1000,
        tick_s=0.2,
        coordinator_extra={"release_margin": 1.0},  # the gate promotes every committed round
    )
    workdir: Path = tmp_path_factory.mktemp("serving")
    with LocalFederation(workdir, plan) as federation:
        federation.create_pki()
        federation.start_coordinator()
        federation.start_gateway(SITE)
        logs = Logs(federation)
        for i in range(3):
            if i in RUNTIMES:
                federation.start_device(SITE, i, serve_job=JOB, serving={"runtime": RUNTIMES[i]})
            else:
                federation.start_device(SITE, i)
            logs.wait_for(device_name(SITE, i), r"POST \S+/v1/checkin \"HTTP/1.1 200", timeout=120)
        yield federation


def _model(fed: LocalFederation, i: int) -> dict[str, object] | None:
    try:
        answer = httpx.get(f"{fed.prediction_endpoint(SITE, i)}/model", timeout=5)
    except httpx.HTTPError:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


def test_both_runtimes_serve_production_and_the_registry_has_federated_evaluation(
    fed: LocalFederation,
) -> None:
    create_job(fed, job_spec(JOB, rounds=2, devices_per_round=3, min_devices=3))
    assert wait_for_job(fed, JOB, timeout=180).state == "completed"
    with fed.admin_client() as admin:
        versions = admin.list_models(JOB)
    committed = [v for v in versions if v.round is not None]
    production = next(v for v in versions if v.status == "production")
    wait_until(
        lambda: all(
            (m := _model(fed, i)) is not None and m["version"] == production.version
            for i in RUNTIMES
        ),
        timeout=120,
        what="both serving devices to load the production version",
    )
    rows = np.random.default_rng(0).uniform(0, 16, size=(32, 64)).round(2).tolist()
    answers = {}
    for i, runtime in RUNTIMES.items():
        model = _model(fed, i)
        assert model is not None and model["runtime"] == runtime
        url = f"{fed.prediction_endpoint(SITE, i)}/predict"
        answer = httpx.post(url, json={"inputs": rows}, timeout=10).json()
        assert answer["version"] == production.version
        answers[runtime] = answer["predictions"]
    assert answers["onnxruntime"] == answers["torch"]

    # the versions rounds started from (the initial model, then r1) were evaluated by devices
    parents = {v.parent_sha256 for v in committed}
    evaluated = [v for v in versions if v.sha256 in parents]
    assert len(evaluated) == 2
    for v in evaluated:
        assert v.federated is not None, v.version
        assert v.federated.devices == 3 and v.federated.examples >= 3
        assert 0.0 <= v.federated.accuracy <= 1.0 and v.federated.loss > 0
    newest = max(committed, key=lambda v: v.round or 0)
    assert newest.federated is None  # no round has started from it
    assert fed.coordinator_url is not None
    argv = ["--url", fed.coordinator_url, "--pki", str(fed.pki)]
    runner = CliRunner()
    listed = runner.invoke(cli, ["models", "list", JOB, *argv], terminal_width=250)
    assert listed.exit_code == 0 and "(3 dev," in listed.output, listed.output
    shown = runner.invoke(cli, ["models", "show", evaluated[0].sha256, *argv])
    assert json.loads(shown.output)["federated"]["devices"] == 3
