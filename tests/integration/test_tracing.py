"""A round is one connected trace across the three tiers, with real processes.

Coordinator, two gateways and six devices run as ``fedge`` processes over mutual TLS, each writing
its spans to its own JSON-lines file (``[telemetry] traces_file``). After a one-round job with
plain partial sums and one with secure aggregation the test stops them (they flush their spans
at exit) and checks, from the files alone, that each committed round is ONE
trace rooted at the coordinator's ``fedge.round`` span, that it holds spans of all three services,
that every span's parent is in the trace, and that the hops are parented as designed::

    fedge.round (coordinator)
    ├── fedge.round.planned / configuring / training / aggregating
    └── fedge.gateway.round (each gateway)
        ├── fedge.device.task (each device of the site)
        │   ├── GET /v1/models/{sha256}            (gateway server span)
        │   └── fedge.device.report
        │       └── POST /v1/jobs/…/updates        (gateway server span)
        └── fedge.gateway.partial
            └── POST /v1/jobs/…/partials           (coordinator server span)

(with secure aggregation the round holds a span per SecAgg+ phase the coordinator ran,
the device's report holds its SecAgg+ requests to the gateway, and the gateway's
``fedge.gateway.relay_sum`` the masked sum it posts to the coordinator)

and that the coordinator's log line for the commit carries the round's trace id.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedge.demo.federation import device_name, gateway_name
from fedge.telemetry.export import read_spans

from .harness import (
    Logs,
    create_job,
    job_spec,
    running_federation,
    small_plan,
    wait_for_job,
    wait_gateways_counted,
)

pytestmark = pytest.mark.integration

UPDATES = "POST /v1/jobs/{job_id}/rounds/{round_number}/updates"
PARTIALS = "POST /v1/jobs/{job_id}/rounds/{round_number}/partials"

Span = dict[str, Any]


def _children(spans: list[Span], parent: Span, name: str) -> list[Span]:
    return [s for s in spans if s["parent_span_id"] == parent["span_id"] and s["name"] == name]


SECURE = {"phase_timeout_s": 4.0, "max_examples": 100_000}
SECAGG = "POST /v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg"
SECAGG_PHASES = ("advertise_keys", "share_keys", "masked_input", "unmask")


def test_a_round_is_one_connected_trace_across_three_tiers(tmp_path: Path) -> None:
    plan = dataclasses.replace(small_plan(), traces=True)
    with running_federation(tmp_path, plan) as fed:
        wait_gateways_counted(fed, {"gw-a": 3, "gw-b": 3}, timeout=120)
        views = {}
        for name, over in (("plain", {}), ("secure", {"secure_aggregation": SECURE})):
            spec = job_spec(name, training_deadline_s=20.0, **over)
            views[name] = wait_for_job(fed, create_job(fed, spec).id, timeout=300)
        logs = Logs(fed)
    # the federation is stopped: every process has flushed its spans at exit
    gateways = [gateway_name(s) for s in plan.sites]
    devices = [device_name(s, i) for s in plan.sites for i in range(plan.devices_per_site)]
    everything: list[Span] = []
    for name in ["coordinator", *gateways, *devices]:
        everything.extend(read_spans(fed.traces_file(name)))
    for name, view in views.items():
        assert view.state == "completed", (name, view)
        # on a loaded machine an attempt may be abandoned first; the committed one is the subject
        (rnd,) = [r for r in view.rounds if r.state == "committed"]
        root = _check_round_trace(everything, view.id, rnd.round, gateways, secure=name == "secure")
        if name == "plain":
            assert root["attributes"]["fedge.participants"] == rnd.participants
            closed = [
                x for gw in gateways for x in logs.lines(gw, rf"round {view.id}/{rnd.round} closed")
            ]
            assert len(closed) == 2 and all(f"trace={root['trace_id']}" in x for x in closed)
        committed = logs.lines("coordinator", rf"job {view.id} round {rnd.round} committed")
        assert committed, "the coordinator logged the commit"
        assert f"trace={root['trace_id']}" in committed[0]
        assert f"job={view.id} round={rnd.round}" in committed[0]


def _check_round_trace(
    everything: list[Span], job: str, number: int, gateways: list[str], *, secure: bool
) -> Span:
    """Check the trace of round ``number`` of ``job``; return its root span."""
    (root,) = [
        s
        for s in everything
        if s["name"] == "fedge.round"
        and (s["attributes"]["fedge.job"], s["attributes"]["fedge.round"]) == (job, number)
    ]
    assert root["parent_span_id"] is None
    assert root["resource"]["service.name"] == "fedge-coordinator"
    assert root["attributes"]["fedge.outcome"] == "committed"
    assert root["attributes"]["fedge.secure_aggregation"] is secure

    trace = [s for s in everything if s["trace_id"] == root["trace_id"]]
    ids = {s["span_id"] for s in trace}
    orphans = [s["name"] for s in trace if s is not root and s["parent_span_id"] not in ids]
    assert orphans == [], "every span's parent is in the round's trace"
    services = Counter(s["resource"]["service.name"] for s in trace)
    assert set(services) == {"fedge-coordinator", "fedge-gateway", "fedge-device"}

    phases = [s["name"] for s in sorted(trace, key=lambda s: s["start_unix_nano"])
              if s["parent_span_id"] == root["span_id"] and s["name"].startswith("fedge.round.")]  # fmt: skip
    assert phases == [
        f"fedge.round.{p}" for p in ("planned", "configuring", "training", "aggregating")
    ]

    if secure:  # the SecAgg+ phases, as the coordinator closed them
        secagg = [s["name"] for s in sorted(trace, key=lambda s: s["start_unix_nano"])
                  if s["parent_span_id"] == root["span_id"] and s["name"].startswith("fedge.secagg.")]  # fmt: skip
        assert secagg == [f"fedge.secagg.{p}" for p in SECAGG_PHASES], secagg

    gateway_rounds = _children(trace, root, "fedge.gateway.round")
    assert sorted(s["resource"]["service.instance.id"] for s in gateway_rounds) == gateways
    reported = 0
    for gw in gateway_rounds:
        holder = gw["resource"]["service.instance.id"]
        assert gw["resource"]["service.name"] == "fedge-gateway"
        tasks = _children(trace, gw, "fedge.device.task")
        site = gw["attributes"]["fedge.site"]
        assert tasks, f"{holder} handed out work"
        for task in tasks:
            device = task["resource"]["service.instance.id"]
            assert task["resource"]["service.name"] == "fedge-device"
            assert re.fullmatch(rf"dev-{site}-\d", device), (holder, device)
            # a device that did not finish before the deadline has no report (over-selection)
            for report in _children(trace, task, "fedge.device.report"):
                if secure:  # the SecAgg+ messages went through its gateway
                    received = [s for s in trace if s["parent_span_id"] == report["span_id"]]
                    assert received and all(
                        s["resource"]["service.instance.id"] == holder for s in received
                    )
                    reported += 1
                    continue
                (received,) = _children(trace, report, UPDATES)
                assert received["resource"]["service.instance.id"] == holder  # its gateway
                reported += received["attributes"]["http.response.status_code"] == 200
        upload_name = "fedge.gateway.relay_sum" if secure else "fedge.gateway.partial"
        (upload,) = _children(trace, gw, upload_name)
        (accepted,) = _children(trace, upload, SECAGG if secure else PARTIALS)
        assert accepted["resource"]["service.name"] == "fedge-coordinator"
        assert accepted["attributes"]["http.response.status_code"] == 200
    if not secure:  # every update counted in the round is in its trace
        assert reported == root["attributes"]["fedge.participants"]
    else:
        assert reported >= root["attributes"]["fedge.participants"]
    return root
