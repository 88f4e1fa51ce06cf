"""OpenTelemetry tracing for a fedge role process: set-up, spans, and W3C trace context.

A role process (``fedge coordinator|gateway|device``) calls :func:`setup_tracing` once at start.
Its spans carry the resource ``service.name`` = ``fedge-coordinator`` / ``fedge-gateway`` /
``fedge-device`` and ``service.instance.id`` = the holder id (the certificate subject), and go to
the first of these that is configured:

1. an OTLP/HTTP collector: ``[telemetry] otlp_endpoint`` or, failing that, the standard
   ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (base URL;
   spans are posted to ``<base>/v1/traces``);
2. a JSON-lines file, one span per line: ``[telemetry] traces_file``
   (:mod:`fedge.telemetry.export`);
3. the console (JSON lines on stderr): ``[telemetry] console = true``.

With none of them (or ``OTEL_SDK_DISABLED=true``) tracing is off: no SDK is loaded, every span
helper here hands out the API's non-recording span and nothing is injected into requests, so
the cost is one context-variable read per call.

Trace context crosses every hop as a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``):
as an HTTP header on every request made inside a span (:func:`trace_headers`, used by
:mod:`fedge.transport.client` and :mod:`fedge.transport.aclient`; the API app extracts it, see
:mod:`fedge.telemetry.http`), and in the round's assignment messages, so that work that starts
later -- a gateway's share of a round, a device's training and report -- is parented to the
round (:func:`start_span` with ``traceparent=``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from pydantic import BaseModel, ConfigDict, Field

from fedge import __version__
from fedge.errors import ConfigError
from fedge.telemetry.logs import round_context

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "SERVICE_NAMES",
    "TRACEPARENT",
    "Attributes",
    "TelemetrySection",
    "TracingSetup",
    "activate",
    "context_of",
    "current_traceparent",
    "role_resource",
    "round_span",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start_span",
    "trace_headers",
    "traceparent_of",
    "tracing_enabled",
    "use_provider",
]

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
SERVICE_NAMES = {
    "coordinator": "fedge-coordinator",
    "gateway": "fedge-gateway",
    "device": "fedge-device",
}
Attributes = Mapping[str, AttributeValue]


def role_resource(role: str, holder: str) -> Resource:
    """The OpenTelemetry resource of a role process (traces and metrics alike)."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create(
        {
            "service.name": SERVICE_NAMES[role],
            "service.namespace": "fedge",
            "service.instance.id": holder,
            "service.version": __version__,
            "fedge.role": role,
        }
    )


_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()
_FILE_FLUSH_MS = 500  # a span reaches the file within half a second of its end


class TelemetrySection(BaseModel):
    """``[telemetry]`` of coordinator.toml, gateway.toml and device.toml: where spans go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # OTLP/HTTP collector base URL, e.g. "http://127.0.0.1:4318" (spans go to <base>/v1/traces);
    # unset: OTEL_EXPORTER_OTLP_ENDPOINT when that is set
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    traces_file: Path | None = None  # else: one JSON line per span in this file (relative: beside
    # the config file)
    console: bool = False  # else: one JSON line per span on stderr

    def resolved(self, base: Path) -> TelemetrySection:
        """The same section with a relative ``traces_file`` taken from ``base``."""
        if self.traces_file is None or self.traces_file.is_absolute():
            return self
        return self.model_copy(update={"traces_file": (base / self.traces_file).resolve()})


@dataclass(frozen=True)
class TracingSetup:
    """Where this process's spans go: ``exporter`` and its ``target`` (URL, file, "stderr")."""

    exporter: Literal["otlp", "file", "console", "off"]
    target: str = ""

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.exporter == "off":
            return "tracing off (set [telemetry] or OTEL_EXPORTER_OTLP_ENDPOINT to export spans)"
        return f"tracing: spans exported to {self.exporter} {self.target}".rstrip()


class _State:
    """The process's tracer (the no-op tracer while tracing is off) and its provider."""

    tracer: trace.Tracer = _NOOP
    provider: TracerProvider | None = None


def tracing_enabled() -> bool:
    """True when this process records and exports spans."""
    return _State.provider is not None


def use_provider(provider: TracerProvider | None) -> None:
    """Record spans with ``provider`` from now on (None: tracing off); the previous one is shut
    down. :func:`setup_tracing` calls it; tests pass a provider with an in-memory exporter."""
    previous = _State.provider
    _State.provider = provider
    _State.tracer = _NOOP if provider is None else provider.get_tracer("fedge", __version__)
    if previous is not None and previous is not provider:
        previous.shutdown()


def shutdown_tracing() -> None:
    """Export what is still buffered and turn tracing off (also runs at interpreter exit)."""
    use_provider(None)


def _env_endpoint(environ: Mapping[str, str]) -> str | None:
    return environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def _exporter(
    section: TelemetrySection, environ: Mapping[str, str]
) -> tuple[SpanExporter | None, TracingSetup]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, TracingSetup("off")
    if section.otlp_endpoint is not None or _env_endpoint(environ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if section.otlp_endpoint is not None:
            url = section.otlp_endpoint.rstrip("/") + "/v1/traces"
            return OTLPSpanExporter(endpoint=url), TracingSetup("otlp", url)
        return OTLPSpanExporter(), TracingSetup("otlp", str(_env_endpoint(environ)))
    from fedge.telemetry.export import JsonLinesSpanExporter

    if section.traces_file is not None:
        path = section.traces_file
        return JsonLinesSpanExporter.to_file(path), TracingSetup("file", str(path))
    if section.console:
        return JsonLinesSpanExporter.to_stderr(), TracingSetup("console", "stderr")
    return None, TracingSetup("off")


def setup_tracing(
    role: str,
    holder: str,
    section: TelemetrySection | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> TracingSetup:
    """Start exporting this process's spans as ``section`` and the environment say (see the
    module doc); returns where they go. ``role`` is a key of :data:`SERVICE_NAMES`."""
    if role not in SERVICE_NAMES:
        raise ConfigError(f"unknown role {role!r}; expected one of {sorted(SERVICE_NAMES)}")
    exporter, where = _exporter(
        section or TelemetrySection(), os.environ if environ is None else environ
    )
    if exporter is None:
        use_provider(None)
        return where
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = role_resource(role, holder)
    provider = TracerProvider(resource=resource)
    delay = None if where.exporter == "otlp" else _FILE_FLUSH_MS  # None: the SDK's 5 s
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    use_provider(provider)
    log.info("%s", where.describe())
    return where


# -- spans and their context -------------------------------------------------------------------
def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a ``traceparent`` names (a remote parent), or None when it is absent/invalid."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def traceparent_of(s: Span) -> str | None:
    """The W3C ``traceparent`` naming span ``s`` as a parent (None for a non-recording span)."""
    if not s.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(s))
    return carrier.get(TRACEPARENT)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this thread or task, if any."""
    return traceparent_of(trace.get_current_span())


def trace_headers(headers: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``headers`` plus the current ``traceparent`` (unchanged when no span is current)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if not carrier:
        return None if headers is None else dict(headers)
    return {**(headers or {}), **carrier}


def start_span(
    name: str,
    *,
    traceparent: str | None = None,
    root: bool = False,
    attributes: Attributes | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Span:
    """Start a span (not made current; end it yourself). Its parent is the span ``traceparent``
    names if given and valid, else none at all with ``root``, else the current span."""
    parent = context_of(traceparent)
    if parent is None and root:
        parent = otel_context.Context()
    return _State.tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


@contextmanager
def span(
    name: str,
    *,
    traceparent: str | None = None,
    attributes: Attributes | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span current for the ``with`` block (parent: ``traceparent``'s span, else the current
    one); an exception escaping the block is recorded on it and marks it failed."""
    if _State.provider is None and traceparent is None:  # off: nothing to record or to pass on
        yield trace.get_current_span()
        return
    s = start_span(name, traceparent=traceparent, attributes=attributes, kind=kind)
    with trace.use_span(s, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield s


@contextmanager
def round_span(
    name: str,
    job_id: str,
    round_number: int,
    *,
    traceparent: str | None = None,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """:func:`span` for a round's work: ``fedge.job`` and ``fedge.round`` attributes, and the
    block's log records stamped with job and round."""
    ids: dict[str, AttributeValue] = {"fedge.job": job_id, "fedge.round": round_number}
    with (
        span(name, traceparent=traceparent, attributes={**ids, **(attributes or {})}) as s,
        round_context(job_id, round_number),
    ):
        yield s


@contextmanager
def activate(s: Span, job_id: str | None = None, round_number: int | None = None) -> Iterator[None]:
    """Make ``s`` current for the block (without ending it); logs carry job and round."""
    with trace.use_span(s, end_on_exit=False), round_context(job_id, round_number):
        yield
