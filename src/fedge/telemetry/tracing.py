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
3. the console (JSON lines on stderr): ``[telemetry] console = true``;
4. by default, with none of them: the JSON-lines file ``traces.jsonl`` in the role's state
   directory (:data:`DEFAULT_TRACES_FILE`; the coordinator's is its config file's directory,
   beside its database and ops token; when it cannot be written there, tracing is off and the
   start-up line says why). A traces file is rotated at ``[telemetry] traces_max_bytes``
   (16 MiB: one rotated file ``traces.jsonl.1`` is kept), so a process that runs for months
   keeps at most about twice that on disk.

The start-up log says where spans go. ``[telemetry] traces = "off"`` (or the standard
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``) turns tracing off: no SDK is loaded
and nothing is recorded or exported, but trace context still exists. A span started with no
parent (a round's root span, a gateway's share of a round from an older coordinator) gets a
fresh W3C context -- random trace and span ids, the sampled flag set so that a process further
down that does trace records its part -- and a span with a parent shares the parent's context.
So every round has a trace id, whatever is configured: its assignments carry it, requests made
for it inject it, and every log line of the round shows it (:mod:`fedge.telemetry.logs`). Off a
round (a poll, an admin call) nothing is injected, and with tracing off :func:`span` costs one
context-variable read.

Trace context crosses every hop as a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``):
as an HTTP header on every request made inside a span (:func:`trace_headers`, used by
:mod:`fedge.transport.client` and :mod:`fedge.transport.aclient`; the API app extracts it, see
:mod:`fedge.telemetry.http`), and in the round's assignment messages, so that work that starts
later -- a gateway's share of a round, a device's training and report -- is parented to the
round (:func:`start_span` with ``traceparent=``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
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
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TRACES_FILE",
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
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _random_id(bits: int) -> int:
    return secrets.randbits(bits) or 1  # 0 is the invalid id


class _ContextOnlyTracer(trace.NoOpTracer):
    """The tracer while tracing is off: it records nothing, yet every span has a valid context
    (a fresh one without a parent, the parent's own otherwise), so rounds keep their trace ids."""

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        links: object = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """A non-recording span: the parent's context, or new random W3C ids for a root."""
        parent = trace.get_current_span(context)
        ctx = parent.get_span_context()
        if ctx.is_valid:
            return parent if isinstance(parent, NonRecordingSpan) else NonRecordingSpan(ctx)
        fresh = SpanContext(_random_id(128), _random_id(64), is_remote=False, trace_flags=_SAMPLED)
        return NonRecordingSpan(fresh)


_OFF = _ContextOnlyTracer()
DEFAULT_TRACES_FILE = "traces.jsonl"  # in the role's state directory, when nothing is configured
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # a traces file is rotated at this size (one old one kept)
_FILE_FLUSH_MS = 500  # a span reaches the file within half a second of its end


class TelemetrySection(BaseModel):
    """``[telemetry]`` of coordinator.toml, gateway.toml and device.toml: where spans go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    traces: Literal["on", "off"] = "on"  # "off": record and export no span at all
    # OTLP/HTTP collector base URL, e.g. "http://127.0.0.1:4318" (spans go to <base>/v1/traces);
    # unset: OTEL_EXPORTER_OTLP_ENDPOINT when that is set
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    traces_file: Path | None = None  # else: one JSON line per span in this file (relative: beside
    # the config file)
    console: bool = False  # else: one JSON line per span on stderr
    # (else: <state dir>/traces.jsonl.) A traces file is rotated to <file>.1 at this size.
    traces_max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=4096)

    def resolved(self, base: Path) -> TelemetrySection:
        """The same section with a relative ``traces_file`` taken from ``base``."""
        if self.traces_file is None or self.traces_file.is_absolute():
            return self
        return self.model_copy(update={"traces_file": (base / self.traces_file).resolve()})


@dataclass(frozen=True)
class TracingSetup:
    """Where this process's spans go: ``exporter`` and its ``target`` (URL, file, "stderr");
    ``why`` says why tracing is off, or that a file is the default."""

    exporter: Literal["otlp", "file", "console", "off"]
    target: str = ""
    why: str = ""

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.exporter == "off":
            return f"tracing off ({self.why})" if self.why else "tracing off"
        line = f"tracing: spans exported to {self.exporter} {self.target}".rstrip()
        return f"{line} ({self.why})" if self.why else line


class _State:
    """The process's tracer (the context-only tracer while tracing is off) and its provider."""

    tracer: trace.Tracer = _OFF
    provider: TracerProvider | None = None


def tracing_enabled() -> bool:
    """True when this process records and exports spans."""
    return _State.provider is not None


def use_provider(provider: TracerProvider | None) -> None:
    """Record spans with ``provider`` from now on (None: tracing off); the previous one is shut
    down. :func:`setup_tracing` calls it; tests pass a provider with an in-memory exporter."""
    previous = _State.provider
    _State.provider = provider
    _State.tracer = _OFF if provider is None else provider.get_tracer("fedge", __version__)
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
    section: TelemetrySection, environ: Mapping[str, str], state_dir: Path | None
) -> tuple[SpanExporter | None, TracingSetup]:
    if section.traces == "off":
        return None, TracingSetup("off", why='[telemetry] traces = "off"')
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, TracingSetup("off", why="OTEL_SDK_DISABLED=true")
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None, TracingSetup("off", why="OTEL_TRACES_EXPORTER=none")
    if section.otlp_endpoint is not None or _env_endpoint(environ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        if section.otlp_endpoint is not None:
            url = section.otlp_endpoint.rstrip("/") + "/v1/traces"
            return OTLPSpanExporter(endpoint=url), TracingSetup("otlp", url)
        return OTLPSpanExporter(), TracingSetup("otlp", str(_env_endpoint(environ)))
    from fedge.telemetry.export import JsonLinesSpanExporter

    cap = section.traces_max_bytes
    rotation = f"rotated at {cap / 2**20:g} MiB, one older file kept"
    if section.traces_file is not None:
        path = section.traces_file
        return JsonLinesSpanExporter.to_file(path, cap), TracingSetup("file", str(path), rotation)
    if section.console:
        return JsonLinesSpanExporter.to_stderr(), TracingSetup("console", "stderr")
    if state_dir is None:
        return None, TracingSetup("off", why="no [telemetry] exporter and no state directory")
    path = (state_dir / DEFAULT_TRACES_FILE).resolve()
    try:
        exporter = JsonLinesSpanExporter.to_file(path, cap)
    except OSError as exc:  # a default must not stop the process: say why there are no spans
        why = f"cannot write {path}: {exc.strerror}; set [telemetry] traces_file or otlp_endpoint"
        return None, TracingSetup("off", why=why)
    why = f'the default; {rotation}; [telemetry] traces = "off" turns tracing off'
    return exporter, TracingSetup("file", str(path), why)


def setup_tracing(
    role: str,
    holder: str,
    section: TelemetrySection | None = None,
    *,
    state_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> TracingSetup:
    """Start exporting this process's spans as ``section`` and the environment say (see the
    module doc); returns where they go (the role's command prints :meth:`TracingSetup.describe`
    at start-up). ``role`` is a key of :data:`SERVICE_NAMES`; ``state_dir`` is the role's state
    directory, where spans go by default (without one, and nothing configured, tracing is off)."""
    if role not in SERVICE_NAMES:
        raise ConfigError(f"unknown role {role!r}; expected one of {sorted(SERVICE_NAMES)}")
    exporter, where = _exporter(
        section or TelemetrySection(), os.environ if environ is None else environ, state_dir
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
    return where


# -- spans and their context -------------------------------------------------------------------
def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a ``traceparent`` names (a remote parent), or None when it is absent/invalid."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _format(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def traceparent_of(s: Span) -> str | None:
    """The W3C ``traceparent`` naming span ``s`` as a parent (None when its context is invalid)."""
    ctx = s.get_span_context()
    return _format(ctx) if ctx.is_valid else None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this thread or task, if any."""
    return traceparent_of(trace.get_current_span())


def trace_headers(headers: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``headers`` plus the current ``traceparent`` (unchanged when no span is current)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None if headers is None else dict(headers)
    return {**(headers or {}), TRACEPARENT: _format(ctx)}


def start_span(
    name: str,
    *,
    traceparent: str | None = None,
    root: bool = False,
    attributes: Attributes | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: int | None = None,
) -> Span:
    """Start a span (not made current; end it yourself). Its parent is the span ``traceparent``
    names if given and valid, else none at all with ``root``, else the current span.
    ``start_time``: unix nanoseconds (default: now)."""
    parent = context_of(traceparent)
    if parent is None and root:
        parent = otel_context.Context()
    return _State.tracer.start_span(
        name, context=parent, kind=kind, attributes=attributes, start_time=start_time
    )


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
