"""Spans as JSON lines: the exporter fedge uses when no OTLP collector is configured.

Each finished span becomes one line (one JSON object) appended to a file or written to stderr::

    {"name": "fedge.round", "trace_id": "4bf9…", "span_id": "00f0…", "parent_span_id": null,
     "kind": "INTERNAL", "start_unix_nano": 1764…, "end_unix_nano": 1764…, "duration_ms": 812.5,
     "status": {"code": "OK", "description": ""}, "attributes": {"fedge.job": "mnist-1", …},
     "events": [...], "links": [...], "resource": {"service.name": "fedge-coordinator", …}}

Ids are lower-case hex as in ``traceparent``. A batch is written with one ``write`` call on a
file opened for appending. :func:`read_spans` reads such a file back.

**Bounded on disk.** A file is rotated before a batch would take it past ``max_bytes``: it is
renamed ``<name>.1`` (replacing the previous one) and a new file is begun, so one exporter never
keeps more than about twice ``max_bytes`` (one batch more at most: a batch is never split). The
writer checks before each batch that the path still names the file it holds open, so a file
another process (or an operator) rotated or removed is reopened rather than written to in its
old place; still, one file per process is the simpler thing to read.
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

from fedge.telemetry.tracing import DEFAULT_MAX_BYTES

__all__ = ["JsonLinesSpanExporter", "RotatingFile", "read_spans", "span_record"]


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


class RotatingFile:
    """Appends to ``path`` and rotates it to ``<path>.1`` before a write would pass
    ``max_bytes`` (None: never). Not thread-safe: the exporter serialises writes."""

    def __init__(self, path: Path, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".1")
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _reopen(self) -> None:
        os.close(self._fd)
        self._fd = self._open()

    def write(self, text: str) -> None:
        """Append ``text`` (whole: it is never split across files), rotating first if needed."""
        data = text.encode("utf-8")
        held = os.fstat(self._fd)
        try:
            named = os.stat(self.path)
            moved = (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino)
        except FileNotFoundError:
            moved = True
        if moved:  # rotated or removed under us: write where the path points now
            self._reopen()
            held = os.fstat(self._fd)
        if (
            self.max_bytes is not None
            and held.st_size
            and held.st_size + len(data) > self.max_bytes
        ):
            os.replace(self.path, self.backup)
            self._reopen()
        os.write(self._fd, data)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class JsonLinesSpanExporter(SpanExporter):
    """Writes each exported span as one JSON line through ``write`` (thread-safe)."""

    def __init__(self, write: Callable[[str], None], close: Callable[[], None] = lambda: None):
        self._write, self._close = write, close
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def to_file(
        cls, path: Path, max_bytes: int | None = DEFAULT_MAX_BYTES
    ) -> JsonLinesSpanExporter:
        """Append to ``path`` (created, with its directory, if missing), rotated to
        ``<path>.1`` at ``max_bytes`` (None: it grows without bound)."""
        file = RotatingFile(path, max_bytes)
        return cls(file.write, file.close)

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


def read_spans(path: Path, *, rotated: bool = False) -> list[dict[str, Any]]:
    """The span records of a JSON-lines traces file (empty when it does not exist); with
    ``rotated``, those of its rotated predecessor ``<path>.1`` first."""
    paths = [path.with_name(path.name + ".1"), path] if rotated else [path]
    records = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        records += [json.loads(line) for line in text.splitlines() if line.strip()]
    return records
