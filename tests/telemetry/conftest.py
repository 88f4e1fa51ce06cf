"""A real SDK tracer provider that keeps finished spans in memory, installed for one test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fedge.telemetry.tracing import use_provider


class Spans:
    """The finished spans of the test, by name."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def wait_for(self, name: str, timeout: float = 30.0) -> ReadableSpan:
        """The span ``name`` once it has ended (a server span ends just after its response)."""
        deadline = time.monotonic() + timeout
        while not self.named(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.one(name)

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (
            f"{len(found)} spans named {name!r} in {[s.name for s in self.all()]}"
        )
        return found[0]


@contextmanager
def capture_spans() -> Iterator[Spans]:
    """Trace with a real SDK provider that keeps finished spans in memory, for the block."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "fedge-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_provider(provider)
    try:
        yield Spans(exporter)
    finally:
        use_provider(None)


@pytest.fixture
def spans() -> Iterator[Spans]:
    with capture_spans() as captured:
        yield captured


def parent_id(s: ReadableSpan) -> int | None:
    """The span id of ``s``'s parent (None for a root)."""
    return s.parent.span_id if s.parent is not None else None


def span_id(s: ReadableSpan) -> int:
    ctx = s.get_span_context()
    assert ctx is not None
    return ctx.span_id


def trace_id(s: ReadableSpan) -> int:
    ctx = s.get_span_context()
    assert ctx is not None
    return ctx.trace_id
