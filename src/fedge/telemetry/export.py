"""Spans as JSON lines: the exporter fedge uses when no OTLP collector is configured.

Each finished span becomes one line (one JSON object) appended to a file or written to stderr::

    {"name": "fedge.round", "trace_id": "4bf9…", "span_id": "00f0…", "parent_span_id": null,
     "kind": "INTERNAL", "start_unix_nano": 1764…, "end_unix_nano": 1764…, "duration_ms": 812.5,
     "status": {"code": "OK", "description": ""}, "attributes": {"fedge.job": "mnist-1", …},
     "events": [...], "links": [...], "resource": {"service.name": "fedge-coordinator", …}}

Ids are lower-case hex as in ``traceparent``. A batch is written with one ``write`` call on a
file opened for appending, so a file may be shared by processes, but one file per process is
the simpler thing to read. :func:`read_spans` reads such a file back.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonLinesSpanExporter", "read_spans", "span_record"]


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _plain(mapping: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (mapping or {}).items()}


def span_record(s: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-ready dict (the line format of the module doc)."""
    ctx = s.get_span_context()
    assert ctx is not None  # a finished SDK span always has one
    start, end = s.start_time or 0, s.end_time or 0
    return {
        "name": s.name,
        "trace_id": _hex(ctx.trace_id, 32),
        "span_id": _hex(ctx.span_id, 16),
        "parent_span_id": _hex(s.parent.span_id, 16) if s.parent is not None else None,
        "kind": s.kind.name,
        "start_unix_nano": start,
        "end_unix_nano": end,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": {"code": s.status.status_code.name, "description": s.status.description or ""},
        "attributes": _plain(s.attributes),
        "events": [
            {"name": e.name, "unix_nano": e.timestamp, "attributes": _plain(e.attributes)}
            for e in s.events
        ],
        "links": [
            {"trace_id": _hex(link.context.trace_id, 32), "span_id": _hex(link.context.span_id, 16)}
            for link in s.links
        ],
        "resource": _plain(s.resource.attributes),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Writes each exported span as one JSON line through ``write`` (thread-safe)."""

    def __init__(self, write: Callable[[str], None], close: Callable[[], None] = lambda: None):
        self._write, self._close = write, close
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def to_file(cls, path: Path) -> JsonLinesSpanExporter:
        """Append to ``path`` (created, with its directory, if missing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def write(text: str) -> None:
            os.write(fd, text.encode("utf-8"))

        return cls(write, lambda: os.close(fd))

    @classmethod
    def to_stderr(cls) -> JsonLinesSpanExporter:
        """Write to the process's stderr."""

        def write(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()

        return cls(write)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the batch; FAILURE when the exporter is shut down or the write fails."""
        text = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            try:
                self._write(text)
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file; later batches are refused."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here (each batch is written at once)."""
        return True


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The span records of a JSON-lines traces file (empty when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
