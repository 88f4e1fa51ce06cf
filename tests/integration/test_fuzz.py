"""An API fuzz run (issue 5): schemathesis against the live coordinator's and a gateway's OpenAPI.

Each operation is called with generated requests, valid ones and invalid ones, over mutual TLS
with a certificate of the role the operation serves (admin, gateway or device), so the requests
get past authentication into the routes and services. Bounded: at most ``MAX_EXAMPLES`` requests
per operation and generation mode, and the whole run stops after ``BUDGET_S`` seconds. No answer
may be a server error (5xx).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Err

from fedge.demo.federation import FederationPlan, LocalFederation
from fedge.identity import PkiPaths, issue

from .harness import TASK, create_job, job_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

MAX_EXAMPLES = 25  # per operation and generation mode
BUDGET_S = 120.0  # the whole run (both servers)
LIVE_JOB = "fuzzjob"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """A coordinator and one gateway (no devices: nothing trains while the fuzzer runs)."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    plan = FederationPlan(sites=("a",), devices_per_site=0, task=TASK)
    with LocalFederation(workdir, plan) as fed:
        fed.start()
        issue(fed.pki, "device", "fuzz-device", site="a")
        create_job(fed, job_spec(LIVE_JOB, devices_per_round=1, min_devices=1))
        yield fed


def _session(pki: PkiPaths, holder: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE & co. would replace the fleet CA below
    session.verify = str(pki.ca_cert)
    session.cert = (str(pki.cert_for(holder)), str(pki.key_for(holder)))
    return session


def _holder(tags: list[str]) -> str:
    """The certificate an operation is meant for: admin, else device, else gateway."""
    if "admin" in tags:
        return "admin"
    if "device" in tags or "health" in tags:
        return "fuzz-device"
    return "gw-a"


def _fuzz(url: str, pki: PkiPaths, deadline: float) -> tuple[int, list[str]]:
    """Fuzz every operation the server at ``url`` documents; (requests made, server errors)."""
    with _session(pki, "admin") as admin:
        spec = admin.get(f"{url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    sessions = {h: _session(pki, h) for h in ("admin", "fuzz-device", "gw-a")}
    errors: list[str] = []
    calls = 0

    def call(case: Any, session: requests.Session) -> None:
        nonlocal calls
        if time.monotonic() > deadline:
            return
        calls += 1
        response = case.call(
            base_url=url, session=session, verify=session.verify, cert=session.cert, timeout=30
        )
        if response.status_code >= 500:
            errors.append(f"{case.operation.label}: {response.status_code} for {case!r}")

    try:
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # our own schema must load whole
                raise result.err()
            operation = result.ok()
            session = sessions[_holder(operation.tags or [])]
            fixed = {}
            if "{job_id}" in operation.path:  # half the time, aim at the live job
                fixed = {"job_id": LIVE_JOB}
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):
                strategies = [operation.as_strategy(generation_mode=mode)]
                if fixed and mode is schemathesis.GenerationMode.POSITIVE:
                    strategies.append(
                        operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                    )

                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=st.one_of(strategies))
                def run(case: Any) -> None:
                    call(case, session)  # noqa: B023 -- run() is called at once, in this loop

                try:
                    run()
                except Unsatisfiable:  # e.g. no invalid request exists for GET /v1/health
                    continue
    finally:
        for s in sessions.values():
            s.close()
    return calls, errors


def test_fuzzing_the_live_apis_finds_no_server_error(fed: LocalFederation) -> None:
    pki = PkiPaths(fed.pki)
    deadline = time.monotonic() + BUDGET_S
    assert fed.coordinator_url is not None
    report = {}
    for name, url in (("coordinator", fed.coordinator_url), ("gw-a", fed.gateway_urls["a"])):
        report[name] = _fuzz(url, pki, deadline)
    for name, (calls, errors) in report.items():
        assert calls > 50, f"{name}: only {calls} requests were made"
        assert not errors, f"{name} answered with server errors:\n" + "\n".join(errors[:20])
    logs = fed.workdir / "logs"
    for name in report:  # and nothing failed unexpectedly behind a 4xx either
        text = (logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        assert "failed unexpectedly" not in text and "Traceback" not in text, name
