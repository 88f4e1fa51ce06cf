"""OpenTelemetry metrics for a fedge role process, read by Prometheus at ``/metrics``.

A role process (``fedge coordinator``, ``fedge gateway``) calls :func:`setup_metrics` once at
start: an OpenTelemetry ``MeterProvider`` with a Prometheus reader (the
``opentelemetry-exporter-prometheus`` package: OTel instruments rendered in the Prometheus text
format, units as suffixes, counters ending in ``_total``) on a registry of its own, served by
:func:`metrics_router` on the process's ops listener (:mod:`fedge.transport.ops`); and, when an
OTLP endpoint is configured (``otlp_endpoint``, else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``), a periodic OTLP/HTTP export of the same instruments.

Code that has something to count calls the ``record_*`` functions here; until
:func:`setup_metrics` ran (tests, the simulator, a device) they cost one attribute read and do
nothing. Every name starts with ``fedge_``:

====================================  ==========================================================
``fedge_rounds_committed_total``      rounds committed, by job (coordinator)
``fedge_rounds_abandoned_total``      rounds abandoned, by job (coordinator)
``fedge_round_duration_seconds``      histogram: a round from open to commit/abandon, by outcome
``fedge_round_phase_duration_seconds``  histogram: configuring, training, aggregating
``fedge_secagg_phase_duration_seconds``  histogram: each secure-aggregation phase
``fedge_dropouts_total``              devices lost, by phase: ``training`` (handed a task, never
                                      reported: at a gateway for its devices, at the coordinator
                                      for devices connected directly), ``report`` (coordinator:
                                      the quota of a gateway whose partial never arrived), and
                                      each secure-aggregation phase (coordinator)
``fedge_http_received_bytes_total``   request bytes, by tier and route group
``fedge_http_sent_bytes_total``       response bytes, by tier and route group
``fedge_requests_refused_total``      refused requests, by tier and ``reason`` (one of
                                      :data:`REFUSAL_REASONS`)
``fedge_models_served_total``         model payloads served (downloads), by tier and ``version``
                                      (one of :data:`SERVED_VERSIONS`)
``fedge_update_norm``                 histogram: L2 norm of plain device updates, by tier
``fedge_updates_clipped_total``       plain updates at the clip norm (clipped), by tier
``fedge_round_clipped_fraction``      gauge: of the plain updates a round brought this tier
                                      under central DP, the fraction that were clipped, for
                                      each job's last closed round (by job and tier)
====================================  ==========================================================

plus gauges a process observes when scraped (:meth:`Metrics.observe`): participants of the last
round, ε spent, model versions by status, devices online and eligible.

**Clipped fraction per round.** :func:`record_update_norm` counts a round's plain updates and
those at the clip norm; when the round closes at this tier (the coordinator's round reaching
committed or abandoned, :func:`record_round_transition`; a gateway forming its partial,
:func:`record_round_closed`) its fraction becomes the job's ``fedge_round_clipped_fraction``
until the job's next round closes. An update counted just after its round closed still counts
toward that round. A round without plain updates under central DP (secure aggregation, no DP,
local DP, every device dropped out) leaves the gauge as it was: it has no fraction.

**Cardinality.** Every label takes values from a fixed set (route groups, phases, reasons,
served-version kinds) or from the jobs and sites the operator configured; nothing that grows
with traffic or time (device ids, hashes, round numbers) is ever a label value. That is why
``version`` says what a served model *is* at that moment (the ``production`` or ``canary``
release, the model of an open ``round``, ``other``) rather than which one it is: the release gate
can promote a version every round, and the SDK keeps every label set it has seen for the life of
the process. Which version is production or canary is in the registry and the audit log.

**Privacy.** Only aggregate counts, sizes and durations leave the process, never a device id as
a label. Update norms are recorded only where the tier already sees the plain update (a gateway
or a coordinator receiving unmasked updates); with secure aggregation a gateway relays masked
vectors and the coordinator sees only sums, so no norm exists to record and none is estimated.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from fedge.errors import ConfigError
from fedge.telemetry.labels import (
    REFUSAL_REASONS,
    ROUTE_GROUPS,
    SERVED_VERSIONS,
    reason_for_status,
    route_group,
)
from fedge.telemetry.tracing import role_resource

if TYPE_CHECKING:
    from fastapi import APIRouter
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

__all__ = [
    "REFUSAL_REASONS",
    "ROUTE_GROUPS",
    "SERVED_VERSIONS",
    "Metrics",
    "MetricsSetup",
    "metrics_router",
    "reason_for_status",
    "record_dropouts",
    "record_model_served",
    "record_refused",
    "record_round_closed",
    "record_round_dropouts",
    "record_round_transition",
    "record_secagg_phase",
    "record_traffic",
    "record_update_norm",
    "route_group",
    "setup_metrics",
    "shutdown_metrics",
]

log = logging.getLogger(__name__)

TIERS = ("coordinator", "gateway")  # the roles that serve /metrics
_EXPORT_INTERVAL_MS = 15_000
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_NORM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100)
_CLIP_TOLERANCE = 1e-3  # an update within 0.1 % of the clip norm was clipped
_OPEN_ROUNDS = 1024  # rounds whose clipping is counted at once (the oldest forgotten past this)
_TERMINAL = frozenset({"committed", "abandoned"})


class _Instruments:
    """The process's instruments, made from one meter."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.committed = meter.create_counter(
            "fedge.rounds.committed", "{round}", "Rounds committed (a new model version)"
        )
        self.abandoned = meter.create_counter(
            "fedge.rounds.abandoned", "{round}", "Rounds abandoned (nothing published)"
        )

        def seconds(name: str, description: str) -> Histogram:
            return meter.create_histogram(
                name, "s", description, explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
            )

        self.round_duration = seconds(
            "fedge.round.duration", "Round duration, from open to commit or abandon"
        )
        self.phase_duration = seconds(
            "fedge.round.phase.duration",
            "Time a round spent in a phase (configuring, training, aggregating)",
        )
        self.secagg_phase_duration = seconds(
            "fedge.secagg.phase.duration", "Time a secure-aggregation phase stayed open"
        )
        self.dropouts = meter.create_counter(
            "fedge.dropouts", "{device}", "Devices that dropped out of a round, by phase"
        )
        self.received = meter.create_counter(
            "fedge.http.received", "By", "Request bytes received, by route group"
        )
        self.sent = meter.create_counter(
            "fedge.http.sent", "By", "Response bytes sent, by route group"
        )
        self.refused = meter.create_counter(
            "fedge.requests.refused", "{request}", "Requests refused, by reason"
        )
        self.models_served = meter.create_counter(
            "fedge.models.served",
            "{model}",
            "Model payloads served to gateways or devices, by what the version is",
        )
        self.update_norm = meter.create_histogram(
            "fedge.update.norm",
            "1",
            "L2 norm of plain (unmasked) device updates",
            explicit_bucket_boundaries_advisory=_NORM_BUCKETS,
        )
        self.clipped = meter.create_counter(
            "fedge.updates.clipped", "{update}", "Plain device updates at the clip norm"
        )


@dataclass(frozen=True)
class MetricsSetup:
    """Where this process's metrics go: always Prometheus text; OTLP when ``otlp`` is set."""

    tier: str
    otlp: str | None = None

    def describe(self) -> str:
        """One line for the start-up log."""
        where = "/metrics on the ops listener"
        return f"metrics: {where}" + (f" and OTLP {self.otlp}" if self.otlp else "")


class Metrics:
    """The process's meter provider, Prometheus registry and instruments (one per process)."""

    def __init__(
        self, tier: str, provider: MeterProvider, registry: CollectorRegistry, otlp: str | None
    ) -> None:
        self.tier = tier
        self.provider = provider
        self.registry = registry
        self.setup = MetricsSetup(tier, otlp)
        self.instruments = _Instruments(provider.get_meter("fedge"))
        self._phases: dict[tuple[str, int], tuple[str, float, float]] = {}  # state, since, open
        # clipping under central DP: [updates, clipped] of each open round, and of each job's
        # last closed one (round number first), read by fedge_round_clipped_fraction
        self._clipping: dict[tuple[str, int], list[int]] = {}
        self._last_clipped: dict[str, tuple[int, list[int]]] = {}
        self._lock = threading.Lock()
        self.instruments.meter.create_observable_gauge(
            "fedge.round.clipped_fraction",
            [self._clipped_fractions],
            "1",
            "Fraction of the plain updates of each job's last closed round that were clipped",
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every instrument (collected now)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def observe(
        self,
        name: str,
        unit: str,
        description: str,
        read: Callable[[], Iterable[tuple[float, Mapping[str, str]]]],
    ) -> None:
        """A gauge read when scraped: ``read()`` yields (value, labels); a failure is logged."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(value, dict(labels)) for value, labels in read()]
            except Exception:
                log.exception("metric %s could not be read", name)
                return []

        self.instruments.meter.create_observable_gauge(name, [callback], unit, description)

    def count_update(self, job_id: str, number: int, clipped: bool) -> None:
        """One plain update of round ``number`` of ``job_id`` under central DP, clipped or not."""
        with self._lock:
            last = self._last_clipped.get(job_id)
            if last is not None and last[0] >= number:  # its round closed here already
                counts = last[1] if last[0] == number else None
            else:
                counts = self._clipping.get((job_id, number))
                if counts is None:
                    if len(self._clipping) >= _OPEN_ROUNDS:  # never closed here: forget it
                        del self._clipping[next(iter(self._clipping))]
                    counts = self._clipping[(job_id, number)] = [0, 0]
            if counts is not None:
                counts[0] += 1
                counts[1] += clipped

    def round_closed(self, job_id: str, number: int) -> None:
        """Round ``number`` of ``job_id`` closed at this tier: its clipped fraction is the job's."""
        with self._lock:
            counts = self._clipping.pop((job_id, number), None)
            last = self._last_clipped.get(job_id)
            if counts is not None and (last is None or last[0] < number):
                self._last_clipped[job_id] = (number, counts)

    def _clipped_fractions(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            last = [(job, n, c) for job, (_, (n, c)) in self._last_clipped.items()]
        return [Observation(c / n, {"job": job, "tier": self.tier}) for job, n, c in last if n]

    def round_transition(self, job_id: str, number: int, previous: str, state: str) -> None:
        """A round changed phase: time the phase it left; at the end, the round and its outcome."""
        now = time.monotonic()
        key = (job_id, number)
        with self._lock:
            held = self._phases.pop(key, None)
            if state not in _TERMINAL:
                opened = held[2] if held is not None else now
                self._phases[key] = (state, now, opened)
        ins = self.instruments
        if held is not None and held[0] == previous:
            ins.phase_duration.record(now - held[1], {"phase": previous})
        if state in _TERMINAL:
            counter = ins.committed if state == "committed" else ins.abandoned
            counter.add(1, {"job": job_id})
            if held is not None:
                ins.round_duration.record(now - held[2], {"outcome": state})
            self.round_closed(job_id, number)


class _Current:
    """The process's :class:`Metrics`, or None while metrics are off."""

    metrics: Metrics | None = None


def _otlp_endpoint(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    if explicit:
        return explicit.rstrip("/") + "/v1/metrics"
    specific = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if specific:
        return specific
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/metrics" if base else None


def setup_metrics(
    tier: str,
    holder: str,
    *,
    otlp_endpoint: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Metrics:
    """Start this process's metrics (Prometheus reader; OTLP too when an endpoint is set).

    ``tier`` is ``coordinator`` or ``gateway``; ``holder`` its certificate subject. A second
    call replaces the first (its OTLP export is shut down).
    """
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; expected one of {list(TIERS)}")
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    readers: list[MetricReader] = [
        PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    ]
    otlp = _otlp_endpoint(otlp_endpoint, os.environ if environ is None else environ)
    if otlp is not None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp), export_interval_millis=_EXPORT_INTERVAL_MS
            )
        )
    shutdown_metrics()
    provider = MeterProvider(metric_readers=readers, resource=role_resource(tier, holder))
    metrics = Metrics(tier, provider, registry, otlp)
    _Current.metrics = metrics
    log.info("%s", metrics.setup.describe())
    return metrics


def shutdown_metrics() -> None:
    """Stop the process's metrics (flushes a last OTLP export); the record_* calls go quiet."""
    current, _Current.metrics = _Current.metrics, None
    if current is not None:
        current.provider.shutdown()


def metrics_router() -> APIRouter:
    """``GET /metrics``: the Prometheus text of the process's :class:`Metrics` (503 while off)."""
    from fastapi import APIRouter
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST

    router = APIRouter()

    @router.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Every fedge metric of this process, in the Prometheus text format."""
        current = _Current.metrics
        if current is None:
            return Response("metrics are off in this process\n", status_code=503)
        return Response(current.render(), media_type=CONTENT_TYPE_LATEST)

    return router


# -- what instrumented code calls (no-ops while metrics are off) -------------------------------
def record_round_transition(job_id: str, number: int, previous: str, state: str) -> None:
    """A round of ``job_id`` went from phase ``previous`` to ``state``."""
    if (current := _Current.metrics) is not None:
        current.round_transition(job_id, number, previous, state)


def record_secagg_phase(phase: str, seconds: float, missing: int) -> None:
    """A secure-aggregation phase closed after ``seconds`` with ``missing`` devices absent."""
    if (current := _Current.metrics) is not None:
        current.instruments.secagg_phase_duration.record(seconds, {"phase": phase})
        if missing:
            current.instruments.dropouts.add(missing, {"phase": phase})


def record_dropouts(phase: str, count: int) -> None:
    """``count`` devices dropped out of a round in ``phase``."""
    if (current := _Current.metrics) is not None and count > 0:
        current.instruments.dropouts.add(count, {"phase": phase})


def record_round_dropouts(counts: Mapping[str, int]) -> None:
    """A closed round's dropouts, by phase (see :func:`record_dropouts`)."""
    for phase, count in counts.items():
        record_dropouts(phase, count)


def record_traffic(group: str, received: int, sent: int) -> None:
    """One request of route ``group``: bytes received and sent (its tier is the process's)."""
    if (current := _Current.metrics) is not None:
        labels = {"tier": current.tier, "route": group}
        current.instruments.received.add(received, labels)
        current.instruments.sent.add(sent, labels)


def record_refused(reason: str) -> None:
    """A request (or a TLS handshake) was refused for ``reason`` (not in
    :data:`REFUSAL_REASONS`: counted as "other")."""
    if (current := _Current.metrics) is not None:
        label = reason if reason in REFUSAL_REASONS else "other"
        current.instruments.refused.add(1, {"tier": current.tier, "reason": label})


def record_model_served(version: str) -> None:
    """A model payload was served to a gateway or a device; ``version``: what it is, one of
    :data:`SERVED_VERSIONS` (else counted as "other")."""
    if (current := _Current.metrics) is not None:
        label = version if version in SERVED_VERSIONS else "other"
        current.instruments.models_served.add(1, {"tier": current.tier, "version": label})


def record_update_norm(
    tensors: Mapping[str, Any],
    clip_norm: float | None,
    job_id: str | None = None,
    round_number: int | None = None,
) -> None:
    """The L2 norm of a plain update (and whether it sat at ``clip_norm``: clipped); with the
    update's job and round, it also counts toward that round's clipped fraction (only under
    central DP, when ``clip_norm`` is given)."""
    current = _Current.metrics
    if current is None:
        return
    import numpy as np

    norm = float(np.sqrt(sum(float(np.vdot(t, t)) for t in tensors.values())))
    labels = {"tier": current.tier}
    current.instruments.update_norm.record(norm, labels)
    clipped = clip_norm is not None and norm >= clip_norm * (1 - _CLIP_TOLERANCE)
    if clipped:
        current.instruments.clipped.add(1, labels)
    if clip_norm is not None and job_id is not None and round_number is not None:
        current.count_update(job_id, round_number, clipped)


def record_round_closed(job_id: str, round_number: int) -> None:
    """This tier closed round ``round_number`` of ``job_id`` (a gateway formed its partial):
    its clipped fraction becomes the job's. The coordinator's rounds need no call: reaching
    committed or abandoned (:func:`record_round_transition`) closes them."""
    if (current := _Current.metrics) is not None:
        current.round_closed(job_id, round_number)
