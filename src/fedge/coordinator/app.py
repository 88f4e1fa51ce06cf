"""The ``fedge coordinator`` process: service + HTTP app + a ticking thread, until SIGTERM.

:func:`build_coordinator` makes the service from a :class:`CoordinatorConfig` (database, artifact
store; restart recovery happens here). :func:`run_coordinator` serves it over mutual TLS with
:func:`fedge.transport.server.run_server` and runs :meth:`CoordinatorService.tick` every
``tick_interval_s`` in a background thread; SIGTERM or SIGINT stops the server gracefully, then
the ticker and the ops listener (:mod:`fedge.transport.ops`: ``/metrics``, ``/healthz``, the
dashboard; started first, in a background thread), then closes the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedge.coordinator.artifacts import ArtifactStore
from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.service import CoordinatorService
from fedge.coordinator.store import Store

if TYPE_CHECKING:
    from fastapi import APIRouter

    from fedge.identity import PeerVerifier
    from fedge.transport.server import RunningServer

__all__ = [
    "Ticker",
    "build_coordinator",
    "ops_routers",
    "run_coordinator",
    "start_coordinator_ops",
]

log = logging.getLogger(__name__)


def build_coordinator(config: CoordinatorConfig) -> CoordinatorService:
    """The service for ``config`` (creates the schema; resumes jobs from their checkpoints).

    The coordinator's PKI files also let it run secure aggregation: the fleet CA and CRL check
    devices' key bindings, its certificate and key bind its own round keys.
    """
    from fedge.coordinator.secure_setup import SecAggAuthority
    from fedge.identity import RevocationChecker, load_certificate
    from fedge.identity.signing import ReleaseSigningKey

    tls = config.tls()
    revocation = (
        RevocationChecker(tls.crl, load_certificate(tls.ca_cert)) if tls.crl is not None else None
    )
    authority = SecAggAuthority.from_files(tls.ca_cert, tls.cert, tls.key, revocation)
    store = Store(config.resolved_database_url())
    key_path = config.release_key_path()
    return CoordinatorService(
        store,
        ArtifactStore(config.artifacts_path()),
        config.settings(),
        secagg=authority,
        release_key=ReleaseSigningKey.load(key_path) if key_path is not None else None,
    )


class Ticker:
    """Calls ``tick()`` every ``interval`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick, self._interval = tick, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedge-tick", daemon=True)

    def start(self) -> Ticker:
        """Start ticking."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception:  # keep ticking: one bad round must not stop the coordinator
                log.exception("tick failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and wait for the current tick to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def ops_routers(service: CoordinatorService) -> list[APIRouter]:
    """The routers the coordinator's ops listener serves besides /healthz and /login."""
    from fedge.dashboard import dashboard_router

    return [dashboard_router(service)]


def start_coordinator_ops(
    config: CoordinatorConfig, service: CoordinatorService, verifier: PeerVerifier
) -> RunningServer | None:
    """Start the ops listener (``[ops]``) in a background thread; None when it is disabled."""
    from fedge.telemetry.metrics import metrics_router
    from fedge.transport.ops import start_ops

    return start_ops(
        config.ops,
        config.ops_token_path(),
        title="fedge coordinator",
        verifier=verifier,
        tls=config.tls(),
        routers=[metrics_router(), *ops_routers(service)],
    )


def run_coordinator(
    config: CoordinatorConfig,
    on_started: Callable[[int], None] | None = None,
    on_ops_started: Callable[[RunningServer], None] | None = None,
) -> None:
    """Serve the coordinator until SIGTERM/SIGINT, then shut down cleanly.

    ``on_ops_started(server)`` is called once the ops listener listens (if it is enabled).
    """
    from fedge.coordinator.fleet_metrics import observe_coordinator
    from fedge.identity import PeerVerifier
    from fedge.telemetry.metrics import setup_metrics, shutdown_metrics
    from fedge.telemetry.traffic import TrafficMetricsMiddleware
    from fedge.transport.api import build_app
    from fedge.transport.server import run_server

    service = build_coordinator(config)
    metrics = setup_metrics(
        "coordinator", config.pki.name, otlp_endpoint=config.telemetry.otlp_endpoint
    )
    observe_coordinator(metrics, service.store, config.settings())
    tls = config.tls()
    assert tls.crl is not None  # PkiFiles.resolve always names one
    verifier = PeerVerifier(tls.ca_cert, tls.crl)
    app = build_app(
        device=service,
        uplink=service,
        admin=service.admin,
        verifier=verifier,
        title="fedge coordinator",
        secagg_uplink=service.secagg_uplink,
        long_poll=service.long_poll,
    )
    app.add_middleware(TrafficMetricsMiddleware)  # bytes in/out and refusals, by route
    ops = start_coordinator_ops(config, service, verifier)
    if ops is not None and on_ops_started is not None:
        on_ops_started(ops)
    ticker = Ticker(service.tick, config.tick_interval_s).start()
    try:
        run_server(
            app,
            config.host,
            config.port,
            tls,
            on_started=on_started,
            on_shutdown=service.long_poll.close,  # held check-ins are answered at once
        )
    finally:
        ticker.stop()
        if ops is not None:
            ops.stop()
        shutdown_metrics()
        service.store.close()
        log.info("coordinator stopped")
