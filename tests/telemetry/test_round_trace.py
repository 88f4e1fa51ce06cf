"""A round is one trace at the coordinator: root span, phase spans, assignments carrying its
context, and a restart adding to the trace of the round it abandons."""

from __future__ import annotations

import itertools
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from tests.coordinator.helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    make_service,
    model_params,
    partial_payload,
    spec,
)

from fedge.coordinator.traces import RoundTraces
from fedge.core.params import ParamSpec
from fedge.telemetry.round_trace import RoundTrace, record_finished, record_restart
from fedge.telemetry.tracing import context_of, current_traceparent

from .conftest import Spans, parent_id, span_id, trace_id

PHASES = ["planned", "configuring", "training", "aggregating"]


def _attrs(s: ReadableSpan) -> dict[str, object]:
    return dict(s.attributes or {})


def test_phases_are_children_of_the_root_and_end_in_turn(spans: Spans) -> None:
    rt = RoundTrace("job", 4, {"fedge.strategy": "fedavg"})
    for phase in PHASES:
        rt.phase(phase)
    with rt.active():
        assert context_of(rt.traceparent) is not None
    rt.end("committed", attributes={"fedge.accuracy": 0.9})
    rt.phase("late")  # after the end: nothing more
    root = spans.one("fedge.round")
    assert root.parent is None and root.status.status_code.name == "OK"
    assert _attrs(root) == {
        "fedge.job": "job", "fedge.round": 4, "fedge.strategy": "fedavg",
        "fedge.outcome": "committed", "fedge.accuracy": 0.9,
    }  # fmt: skip
    phases = [s for s in spans.all() if s.name.startswith("fedge.round.")]
    assert [s.name for s in phases] == [f"fedge.round.{p}" for p in PHASES]
    assert all(parent_id(s) == span_id(root) for s in phases)
    for earlier, later in itertools.pairwise(phases):
        assert earlier.end_time is not None and later.start_time is not None
        assert earlier.end_time <= later.start_time


def test_a_finished_span_is_recorded_under_the_current_one(spans: Spans) -> None:
    rt = RoundTrace("job", 5)
    rt.phase("training")
    with rt.active():
        record_finished("fedge.secagg.share_keys", 100.0, 102.5, {"fedge.missing": 1})
    record_finished("fedge.secagg.unmask", 103.0, 104.0, traceparent=rt.traceparent)
    rt.end("committed")
    got = spans.one("fedge.secagg.share_keys")
    assert parent_id(got) == span_id(spans.one("fedge.round.training"))  # the current span
    assert parent_id(spans.one("fedge.secagg.unmask")) == span_id(spans.one("fedge.round"))
    assert (got.start_time, got.end_time) == (100_000_000_000, 102_500_000_000)
    assert _attrs(got) == {"fedge.missing": 1}


def test_an_abandoned_round_is_an_error_with_its_reason(spans: Spans) -> None:
    rt = RoundTrace("job", 1)
    rt.end("abandoned", "only 1 device(s) reported")
    root = spans.one("fedge.round")
    assert root.status.status_code.name == "ERROR"
    assert root.status.description == "only 1 device(s) reported"
    assert _attrs(root)["fedge.outcome"] == "abandoned"


def test_record_restart_continues_the_trace(spans: Spans) -> None:
    rt = RoundTrace("job", 2)
    record_restart(rt.traceparent, "job", 2, "coordinator restarted")
    record_restart(None, "job", 3, "never traced")  # nothing
    restarted = spans.one("fedge.round.restarted")
    assert parent_id(restarted) == rt.root.get_span_context().span_id
    assert trace_id(restarted) == rt.root.get_span_context().trace_id


def test_tracing_off_records_nothing_but_the_round_has_a_trace_id(tmp_path: Path) -> None:
    rt = RoundTrace("job", 1)
    rt.phase("training")
    assert not rt.root.is_recording()
    assert rt.traceparent is not None and context_of(rt.traceparent) is not None
    with rt.active():  # the phase shares the root's context: log lines carry its trace id
        assert current_traceparent() == rt.traceparent
    rt.end("committed")
    traces = RoundTraces(make_service(tmp_path, Clock()).store.engine)
    traces.save("job", 1, rt.traceparent)
    assert traces.get("job", 1) == rt.traceparent
    traces.save("job", 2, None)  # an older coordinator's round: nothing kept
    assert traces.get("job", 2) is None


def test_a_coordinator_round_is_one_trace(tmp_path: Path, spans: Spans) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1))
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()  # planned -> configuring
    live = svc.live_round("digits")
    assert live is not None and live.traceparent is not None
    assert svc.driver.traces.get("digits", 1) == live.traceparent  # kept for a restart
    (assignment,) = checkin(svc, GW_A).assignments
    assert assignment.traceparent == live.traceparent
    checkin(svc, GW_B)
    pspec = ParamSpec.of(model_params(svc, live.base_sha256))
    for gw, ids in ((GW_A, ["a1", "a2"]), (GW_B, ["b1"])):
        ups = device_updates(pspec, ids, seed=len(ids))
        svc.submit_partial(gw, "digits", 1, partial_payload(gw, "digits", 1, ups))
    svc.tick()  # both reported: aggregate and commit
    root = spans.one("fedge.round")
    assert live.traceparent.split("-")[1] == f"{trace_id(root):032x}"
    attrs = _attrs(root)
    assert attrs["fedge.outcome"] == "committed" and attrs["fedge.participants"] == 3
    assert attrs["fedge.strategy"] == "fedavg" and attrs["fedge.task"] == "digits_mlp"
    assert isinstance(attrs["fedge.accuracy"], float)
    phases = [s.name for s in spans.all() if parent_id(s) == span_id(root)]
    assert phases == [f"fedge.round.{p}" for p in PHASES]
    assert _attrs(spans.one("fedge.round.configuring"))["fedge.quotas"] == ("gw-a=2", "gw-b=2")


def test_a_restart_adds_to_the_trace_of_the_round_in_flight(tmp_path: Path, spans: Spans) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=2))
    checkin(svc, GW_A)
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.traceparent is not None
    before = live.traceparent
    svc.store.close()  # "crash": the root span never ends

    make_service(tmp_path, clock)  # recovers: abandons round 1
    restarted = spans.one("fedge.round.restarted")
    assert f"{trace_id(restarted):032x}" == before.split("-")[1]
    assert f"{parent_id(restarted):016x}" == before.split("-")[2]
    assert "restarted" in str(_attrs(restarted)["fedge.reason"])
