"""A round is one connected trace across the three tiers, with real processes.

Coordinator, two gateways and six devices run as ``fedge --log-format json`` processes over mutual
TLS with no ``[telemetry]`` section at all: each writes its spans to the default place, the
bounded JSON-lines file ``traces.jsonl`` in its state directory, and says so at start-up. After a
one-round job with plain partial sums and one with secure aggregation the test stops them (they
flush their spans at exit) and checks, from the files alone, that each committed round is ONE
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

and that the JSON log lines of the round -- the coordinator's commit, each gateway's close, each
device's training, and every other line stamped with the job and round -- carry the job, the round
and the round's trace id, at every tier.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedge.demo.federation import LocalFederation, device_name, gateway_name
from fedge.telemetry.export import read_spans
from fedge.telemetry.tracing import DEFAULT_TRACES_FILE

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


def default_traces_file(fed: LocalFederation, name: str) -> Path:
    """Where process ``name`` writes its spans with nothing configured: its state directory
    (the coordinator's is the directory of its config file)."""
    state = fed.workdir / name
    return (
        state / DEFAULT_TRACES_FILE
        if name == "coordinator"
        else state / "state" / DEFAULT_TRACES_FILE
    )


def json_records(logs: Logs, name: str) -> list[dict[str, Any]]:
    """Every JSON log record of process ``name`` (its start-up lines are plain text)."""
    return [json.loads(x) for x in logs.text(name).splitlines() if x.startswith("{")]


def _children(spans: list[Span], parent: Span, name: str) -> list[Span]:
    return [s for s in spans if s["parent_span_id"] == parent["span_id"] and s["name"] == name]


SECURE = {"phase_timeout_s": 4.0, "max_examples": 100_000}
SECAGG = "POST /v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg"
SECAGG_PHASES = ("advertise_keys", "share_keys", "masked_input", "unmask")


def test_a_round_is_one_connected_trace_across_three_tiers(tmp_path: Path) -> None:
    plan = dataclasses.replace(small_plan(), log_format="json")  # and tracing as by default
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
        path = default_traces_file(fed, name)
        (said,) = logs.lines(name, "tracing: spans exported to file")  # printed at start-up
        assert f"file {path} (the default; rotated at 16 MiB" in said
        everything.extend(read_spans(path, rotated=True))
    records = {name: json_records(logs, name) for name in ["coordinator", *gateways, *devices]}
    for name, view in views.items():
        assert view.state == "completed", (name, view)
        # on a loaded machine an attempt may be abandoned first; the committed one is the subject
        (rnd,) = [r for r in view.rounds if r.state == "committed"]
        root = _check_round_trace(everything, view.id, rnd.round, gateways, secure=name == "secure")
        if name == "plain":
            assert root["attributes"]["fedge.participants"] == rnd.participants
        _check_round_logs(records, view.id, rnd.round, root["trace_id"], secure=name == "secure")


def _check_round_logs(
    records: dict[str, list[dict[str, Any]]], job: str, number: int, trace_id: str, *, secure: bool
) -> None:
    """The round's JSON log lines at every tier carry its job, round and trace id."""

    def of_round(name: str, pattern: str) -> list[dict[str, Any]]:
        found = [r for r in records[name] if re.search(pattern, r["message"])]
        assert found, f"{name} logged {pattern!r}"
        for r in found:
            assert (r.get("job"), r.get("round"), r.get("trace_id")) == (job, number, trace_id), r
            assert re.fullmatch(r"[0-9a-f]{16}", r["span_id"]), r
        return found

    of_round("coordinator", rf"^job {job} round {number} committed")
    trained = rf"^device dev-[a-z]-\d+:? (trained|secure round) {job}/{number} "
    devices = [name for name in records if name.startswith("dev-")]
    took_part = [d for d in devices if any(re.search(trained, r["message"]) for r in records[d])]
    assert len(took_part) >= 3, "the devices that trained logged it"
    for device in took_part:
        of_round(device, trained)
    for gw in ("gw-a", "gw-b"):
        of_round(gw, rf"^handed {job} round {number} to ")
        if not secure:
            of_round(gw, rf"^round {job}/{number} closed")
    # and every line stamped with this job and round, whatever logged it, has the round's trace
    for name, recs in records.items():
        for r in recs:
            if (r.get("job"), r.get("round")) == (job, number):
                assert r.get("trace_id") == trace_id, (name, r)


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
