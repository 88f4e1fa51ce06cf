"""Tracing set-up and W3C trace context: where spans go (a bounded file in the state directory
by default), and how context crosses a hop."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from fedge.errors import ConfigError
from fedge.telemetry.export import JsonLinesSpanExporter, RotatingFile, read_spans
from fedge.telemetry.tracing import (
    DEFAULT_TRACES_FILE,
    TelemetrySection,
    context_of,
    current_traceparent,
    round_span,
    setup_tracing,
    shutdown_tracing,
    span,
    start_span,
    trace_headers,
    traceparent_of,
    tracing_enabled,
)
from fedge.transport import messages as m

from .conftest import Spans, capture_spans, parent_id, span_id, trace_id

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_by_default_spans_go_to_a_bounded_file_in_the_state_directory(tmp_path: Path) -> None:
    where = setup_tracing("device", "dev-1", TelemetrySection(), state_dir=tmp_path, environ={})
    path = tmp_path / DEFAULT_TRACES_FILE
    try:
        assert (where.exporter, where.target) == ("file", str(path.resolve()))
        assert tracing_enabled()
        line = where.describe()  # what the role's command prints at start-up
        assert str(path.resolve()) in line and "default" in line
        assert "rotated at 16 MiB" in line and '[telemetry] traces = "off"' in line
        with round_span("fedge.device.task", "job1", 2):
            pass
    finally:
        shutdown_tracing()  # flushes the batch
    (record,) = read_spans(path)
    assert record["name"] == "fedge.device.task"
    assert record["resource"]["service.instance.id"] == "dev-1"


def test_traces_off_records_and_injects_nothing_off_a_round(tmp_path: Path) -> None:
    section = TelemetrySection(traces="off")
    where = setup_tracing("device", "dev-1", section, state_dir=tmp_path, environ={})
    assert where.exporter == "off" and not tracing_enabled()
    assert where.describe() == 'tracing off ([telemetry] traces = "off")'
    with span("work") as s:
        assert not s.get_span_context().is_valid
        assert trace_headers() is None
        assert trace_headers({"a": "b"}) == {"a": "b"}
        assert current_traceparent() is None
    assert list(tmp_path.iterdir()) == []  # no file made


def test_traces_off_wins_over_every_exporter(tmp_path: Path) -> None:
    section = TelemetrySection(
        traces="off", otlp_endpoint="http://127.0.0.1:1", traces_file=tmp_path / "t.jsonl"
    )
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    where = setup_tracing("gateway", "gw", section, state_dir=tmp_path, environ=environ)
    assert where.exporter == "off" and not tracing_enabled()


@pytest.mark.parametrize(
    ("environ", "why"),
    [
        ({"OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED=true"),
        ({"OTEL_TRACES_EXPORTER": "none"}, "OTEL_TRACES_EXPORTER=none"),
    ],
)
def test_the_standard_variables_turn_tracing_off(
    tmp_path: Path, environ: dict[str, str], why: str
) -> None:
    section = TelemetrySection(traces_file=tmp_path / "t.jsonl")
    where = setup_tracing("device", "d", section, state_dir=tmp_path, environ=environ)
    assert where.exporter == "off" and not tracing_enabled()
    assert where.describe() == f"tracing off ({why})"


def test_without_a_state_directory_and_nothing_configured_tracing_is_off() -> None:
    where = setup_tracing("device", "dev-1", TelemetrySection(), environ={})
    assert where.exporter == "off" and not tracing_enabled()
    assert "no state directory" in where.describe()


def test_an_unwritable_state_directory_turns_the_default_off_and_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")  # the state "directory" is a file: nothing can be created in it
    where = setup_tracing("coordinator", "c", TelemetrySection(), state_dir=blocked, environ={})
    assert where.exporter == "off" and not tracing_enabled()
    assert f"cannot write {(blocked / DEFAULT_TRACES_FILE).resolve()}" in where.describe()
    with pytest.raises(OSError):  # a file the operator named must be writable
        setup_tracing("coordinator", "c", TelemetrySection(traces_file=blocked / "t.jsonl"))


def test_a_traces_file_is_rotated_so_it_stays_bounded(tmp_path: Path) -> None:
    """A process that runs for months keeps at most about twice the cap (plus one batch)."""
    cap = 4096
    section = TelemetrySection(traces_max_bytes=cap)
    where = setup_tracing("coordinator", "c", section, state_dir=tmp_path, environ={})
    shutdown_tracing()
    assert "rotated at 0.00390625 MiB, one older file kept" in where.describe()
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesSpanExporter.to_file(path, cap)
    with capture_spans() as spans:  # real SDK spans, written in batches of two
        for i in range(100):
            with span("fedge.round.training", attributes={"fedge.round": i}):
                pass
            if i % 2 == 1:
                assert exporter.export(spans.all()[-2:]).name == "SUCCESS"
    exporter.shutdown()
    backup = tmp_path / "spans.jsonl.1"
    assert path.stat().st_size <= cap and backup.stat().st_size <= cap
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "spans.jsonl",
        "spans.jsonl.1",
        "traces.jsonl",
    ]
    rounds = [r["attributes"]["fedge.round"] for r in read_spans(path, rotated=True)]
    assert rounds == list(range(rounds[0], 100))  # the newest spans, in order, none cut
    assert rounds[0] > 50  # the oldest are gone
    assert [r["attributes"]["fedge.round"] for r in read_spans(path)][-1] == 99


def test_a_file_moved_away_under_the_writer_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    file = RotatingFile(path, max_bytes=None)
    file.write("one\n")
    path.rename(tmp_path / "elsewhere")  # an operator's logrotate, or another process
    file.write("two\n")
    path.unlink()
    file.write("three\n")
    file.close()
    assert (tmp_path / "elsewhere").read_text() == "one\n"
    assert path.read_text() == "three\n"


def test_a_tiny_cap_is_refused() -> None:
    with pytest.raises(ValidationError):
        TelemetrySection(traces_max_bytes=100)
    with pytest.raises(ValidationError):
        TelemetrySection(traces="maybe")  # type: ignore[arg-type]


def test_off_a_root_still_gets_a_valid_context_that_children_share() -> None:
    """Tracing off records nothing, but a round keeps a W3C trace id for its logs and hops."""
    shutdown_tracing()
    root = start_span("fedge.round", root=True)
    other = start_span("fedge.round", root=True)
    ctx = root.get_span_context()
    assert ctx.is_valid and not root.is_recording() and ctx.trace_flags.sampled
    assert other.get_span_context().trace_id != ctx.trace_id  # a fresh trace per root
    tp = traceparent_of(root)
    assert tp == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
    assert context_of(tp) is not None
    child = start_span("fedge.round.training", traceparent=tp)
    assert child.get_span_context().trace_id == ctx.trace_id
    with span("relay", traceparent=tp):
        assert trace_headers({"a": "b"}) == {"a": "b", "traceparent": tp}
        assert current_traceparent() == tp


def test_off_passes_a_callers_context_through_unchanged() -> None:
    """A process that does not trace still hands on the round's context it was given."""
    with span("relay", traceparent=TP):
        assert trace_headers() == {"traceparent": TP}


def test_a_process_that_traces_records_its_part_of_a_round_begun_with_tracing_off() -> None:
    """The sampled flag of a context made while off lets the next hop's SDK record its spans."""
    shutdown_tracing()
    tp = traceparent_of(start_span("fedge.round", root=True))
    assert tp is not None
    with capture_spans() as spans:  # another process, that traces
        start_span("fedge.gateway.round", traceparent=tp).end()
    got = spans.one("fedge.gateway.round")
    assert (trace_id(got), parent_id(got)) == (int(tp[3:35], 16), int(tp[36:52], 16))


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        setup_tracing("toaster", "t")


def test_spans_go_to_a_json_lines_file_with_the_role_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "gw.jsonl"
    where = setup_tracing("gateway", "gw-a", TelemetrySection(traces_file=path), environ={})
    try:
        assert where.exporter == "file" and where.target == str(path) and tracing_enabled()
        with round_span("fedge.gateway.round", "job1", 3, attributes={"fedge.quota": 2}) as outer:
            with span("inner"):
                pass
            tp = traceparent_of(outer)
    finally:
        shutdown_tracing()  # flushes the batch
    records = {r["name"]: r for r in read_spans(path)}
    outer_rec, inner = records["fedge.gateway.round"], records["inner"]
    assert outer_rec["resource"]["service.name"] == "fedge-gateway"
    assert outer_rec["resource"]["service.instance.id"] == "gw-a"
    assert outer_rec["attributes"] == {"fedge.job": "job1", "fedge.round": 3, "fedge.quota": 2}
    assert inner["parent_span_id"] == outer_rec["span_id"]
    assert inner["trace_id"] == outer_rec["trace_id"]
    assert tp is not None and tp.startswith(f"00-{outer_rec['trace_id']}-{outer_rec['span_id']}-")
    assert outer_rec["end_unix_nano"] >= outer_rec["start_unix_nano"] > 0


def test_console_writes_one_json_line_per_span_to_stderr(tmp_path: Path) -> None:
    code = (
        "from fedge.telemetry.tracing import TelemetrySection, setup_tracing, span\n"
        "setup_tracing('coordinator', 'c1', TelemetrySection(console=True), environ={})\n"
        "with span('hello'):\n    pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    lines = [json.loads(x) for x in out.stderr.splitlines() if x.startswith("{")]
    assert [r["name"] for r in lines] == ["hello"]  # flushed at exit
    assert lines[0]["resource"]["service.name"] == "fedge-coordinator"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps the protobuf bodies posted to /v1/traces."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _exported_names() -> list[tuple[str, str]]:
    names = []
    for path, body in _Collector.received:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            names.extend((path, f"{service}:{s.name}") for ss in rs.scope_spans for s in ss.spans)
    return names


def test_otlp_endpoint_from_config_receives_the_spans(collector: str) -> None:
    section = TelemetrySection(otlp_endpoint=collector, traces_file=Path("ignored.jsonl"))
    where = setup_tracing("coordinator", "coordinator", section, environ={})
    assert (where.exporter, where.target) == ("otlp", f"{collector}/v1/traces")
    with span("fedge.round"):
        pass
    shutdown_tracing()
    assert _exported_names() == [("/v1/traces", "fedge-coordinator:fedge.round")]


def test_otlp_endpoint_from_the_environment(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)  # the exporter reads it too
    where = setup_tracing("device", "dev-1", TelemetrySection(traces_file=Path("x.jsonl")))
    assert where.exporter == "otlp"
    with span("fedge.device.task"):
        pass
    shutdown_tracing()
    assert _exported_names() == [("/v1/traces", "fedge-device:fedge.device.task")]


def test_bad_endpoint_is_refused_in_config() -> None:
    with pytest.raises(ValidationError):
        TelemetrySection(otlp_endpoint="collector:4318")


def test_relative_traces_file_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    section = TelemetrySection(traces_file=Path("t/x.jsonl")).resolved(tmp_path)
    assert section.traces_file == (tmp_path / "t" / "x.jsonl").resolve()


# -- propagation -----------------------------------------------------------------------------
def test_traceparent_round_trips_and_parents_a_span(spans: Spans) -> None:
    assert context_of(None) is None and context_of("garbage") is None
    assert context_of("00-" + "0" * 32 + "-" + "0" * 16 + "-01") is None  # invalid ids
    child = start_span("child", traceparent=TP)
    child.end()
    got = spans.one("child")
    assert trace_id(got) == int(TP[3:35], 16)
    assert parent_id(got) == int(TP[36:52], 16)


def test_root_ignores_the_current_span(spans: Spans) -> None:
    with span("request"):
        root = start_span("fedge.round", root=True)
        root.end()
    assert spans.one("fedge.round").parent is None
    assert trace_id(spans.one("fedge.round")) != trace_id(spans.one("request"))


def test_headers_carry_the_current_span(spans: Spans) -> None:
    with span("outer") as s:
        headers = trace_headers({"content-type": "application/json"})
        assert headers == {"content-type": "application/json", "traceparent": traceparent_of(s)}
    outer = spans.one("outer")
    assert headers is not None
    assert headers["traceparent"].startswith(f"00-{trace_id(outer):032x}-{span_id(outer):016x}-")


def test_a_failing_block_marks_its_span_failed(spans: Spans) -> None:
    with pytest.raises(RuntimeError), span("boom"):
        raise RuntimeError("nope")
    got = spans.one("boom")
    assert got.status.status_code.name == "ERROR"
    assert [e.name for e in got.events] == ["exception"]


def test_assignments_carry_an_optional_valid_traceparent() -> None:
    base = {
        "job_id": "j", "round": 1, "task_name": "t", "model_sha256": "0" * 64, "quota": 1,
        "training_deadline": 1.0, "report_deadline": 2.0, "plan": {},
    }  # fmt: skip
    assert m.RoundAssignment.model_validate(base).traceparent is None  # an older coordinator
    assert m.RoundAssignment.model_validate({**base, "traceparent": TP}).traceparent == TP
    with pytest.raises(ValidationError):
        m.RoundAssignment.model_validate({**base, "traceparent": "00-xyz"})
    task = {
        "job_id": "j", "round": 1, "task_name": "t", "model_sha256": "0" * 64, "deadline": 1.0,
        "plan": {}, "nonce": "0" * 32,
    }  # fmt: skip
    assert m.TaskAssignment.model_validate(task).traceparent is None
    assert m.TaskAssignment.model_validate({**task, "traceparent": TP}).traceparent == TP
