"""Structured logs: the text and JSON formats, stamped with job, round, trace and span ids."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedge.errors import ConfigError
from fedge.identity import init_pki, issue
from fedge.telemetry.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_round,
    round_context,
)
from fedge.telemetry.tracing import span

from .conftest import Spans, span_id, trace_id


def _logged(
    formatter: logging.Formatter, message: str = "round %d committed", *args: object
) -> str:
    """Format one record made here and now (in this thread's context)."""
    logger = logging.getLogger("fedge.test")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args or (2,), None)
    ContextFilter().filter(record)
    return formatter.format(record)


def test_text_is_the_classic_line_when_nothing_is_known() -> None:
    line = _logged(TextFormatter())
    assert line.endswith(" INFO fedge.test: round 2 committed")


def test_text_appends_job_round_trace_and_span(spans: Spans) -> None:
    with round_context("job-1", 2), span("work"):
        line = _logged(TextFormatter())
    s = spans.one("work")
    assert line.endswith(
        f"round 2 committed [job=job-1 round=2 trace={trace_id(s):032x} span={span_id(s):016x}]"
    )


def test_json_has_the_fields_and_only_known_ones(spans: Spans) -> None:
    plain = json.loads(_logged(JsonFormatter()))
    assert set(plain) == {"time", "level", "logger", "message"}
    assert plain["level"] == "INFO" and plain["logger"] == "fedge.test"
    assert plain["message"] == "round 2 committed"
    assert plain["time"].endswith("+00:00")
    with round_context("job-1", 7), span("work"):
        rec = json.loads(_logged(JsonFormatter(), 'a "quoted"\n%s', "message"))
    s = spans.one("work")
    assert rec["message"] == 'a "quoted"\nmessage'
    assert (rec["job"], rec["round"]) == ("job-1", 7)
    assert (rec["trace_id"], rec["span_id"]) == (f"{trace_id(s):032x}", f"{span_id(s):016x}")


def test_json_carries_the_traceback() -> None:
    logger = logging.getLogger("fedge.test")
    try:
        raise ValueError("bad")
    except ValueError:
        record = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    rec = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad" in rec["exception"]


def test_round_context_nests_and_is_per_thread() -> None:
    seen: list[tuple[str | None, int | None]] = []
    with round_context("a", 1):
        with round_context("b", 2):
            assert current_round() == ("b", 2)
        assert current_round() == ("a", 1)
        worker = threading.Thread(target=lambda: seen.append(current_round()))
        worker.start()
        worker.join()
    assert current_round() == (None, None)
    assert seen == [(None, None)]  # another thread's work is not this round's


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(ConfigError, match="log format"):
        configure_logging("info", "xml")  # type: ignore[arg-type]


def test_configure_logging_installs_the_json_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream=stream)
        with round_context("j", 3):
            logging.getLogger("fedge.x").info("hello %s", "there")
    finally:
        root.handlers, root.level = saved
    rec = json.loads(stream.getvalue())
    assert (rec["message"], rec["job"], rec["round"]) == ("hello there", "j", 3)


@pytest.mark.integration
def test_the_fedge_command_logs_json_lines(tmp_path: Path) -> None:
    """`fedge --log-format json coordinator`: every stderr log line is one JSON object."""
    pki = init_pki(tmp_path / "pki", "t")
    issue(pki.directory, "coordinator", "coordinator")
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'port = 0\ndatabase_url = "sqlite:///{tmp_path / "c.db"}"\n'
        f'artifacts_dir = "{tmp_path / "art"}"\n[pki]\ndir = "{pki.directory}"\n'
        "[ops]\nenabled = false\n"
    )
    argv = [sys.executable, "-m", "fedge", "--log-level", "info", "--log-format", "json",
            "coordinator", "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:  # until it serves (and handles SIGTERM)
        lines.append(line)
        if "Started server process" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    lines.extend(rest.splitlines())
    records = [json.loads(x) for x in lines if x.startswith("{")]
    others = [x for x in lines if x.strip() and not x.startswith("{")]
    # click.echo's start-up lines, not logs: where spans go (by default, beside the config),
    # then the address it serves
    assert len(others) == 2, others
    assert f"tracing: spans exported to file {tmp_path / 'traces.jsonl'}" in others[0]
    assert "listening on" in others[1]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"] == "coordinator stopped" for r in records), records
