"""``fedge gateway --config gateway.toml``: serve a site's devices, report to the coordinator."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from fedge.gateway.service import GatewayService
    from fedge.telemetry.metrics import Metrics

__all__ = ["gateway_command"]

log = logging.getLogger(__name__)


def _observe_site(metrics: Metrics, service: GatewayService) -> None:
    """The site's devices online and eligible, as the gateway reports them upstream."""

    def online() -> list[tuple[float, dict[str, str]]]:
        report = service.checkin_request()
        return [(float(report.online_devices), {"site": report.site})]

    def eligible() -> list[tuple[float, dict[str, str]]]:
        report = service.checkin_request()
        return [(float(report.eligible_devices), {"site": report.site})]

    metrics.observe("fedge.devices.online", "{device}", "Devices online at this site", online)
    metrics.observe(
        "fedge.devices.eligible", "{device}", "Devices eligible to train at this site", eligible
    )


@click.command("gateway")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The gateway's TOML file (see examples/gateway.toml).",
)
def gateway_command(config_path: str) -> None:
    """Run one site's edge gateway until SIGTERM/SIGINT."""
    from fedge.gateway.cache import ModelCache
    from fedge.gateway.config import load_gateway_config
    from fedge.gateway.secure import SecureRelay
    from fedge.gateway.service import GatewayService
    from fedge.gateway.uplink import Uplink
    from fedge.identity import PeerVerifier
    from fedge.identity.signing import ReleaseVerifyKey
    from fedge.storage.outbox import Outbox
    from fedge.telemetry.metrics import metrics_router, setup_metrics, shutdown_metrics
    from fedge.telemetry.tracing import setup_tracing
    from fedge.telemetry.traffic import TrafficMetricsMiddleware
    from fedge.transport.api import build_app
    from fedge.transport.client import FedgeClient
    from fedge.transport.longpoll import LongPoll
    from fedge.transport.manifests import ManifestGuard
    from fedge.transport.ops import start_ops
    from fedge.transport.reports import ReportQueue
    from fedge.transport.server import ServerTls, run_server

    cfg = load_gateway_config(config_path)
    tracing = setup_tracing("gateway", cfg.id, cfg.telemetry, state_dir=cfg.state_dir)
    click.echo(f"gateway {cfg.id} {tracing.describe()}")  # spans are flushed at exit
    if cfg.pki.crl is None:
        raise click.UsageError("a gateway needs pki.crl: revocations must take effect at once")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    client = FedgeClient(
        cfg.coordinator_url,
        ca=cfg.pki.ca,
        cert=cfg.pki.cert,
        key=cfg.pki.key,
        timeout=cfg.request_timeout_s,
    )
    outbox = Outbox(cfg.state_dir / "outbox.sqlite")
    reports = ReportQueue(client.report_health)  # the models this gateway refuses, upstream
    service = GatewayService(
        gateway_id=cfg.id,
        site=cfg.site,
        cache=ModelCache(
            cfg.state_dir / "models",
            client.model,
            fetch_release=client.release,
            release_key=(
                ReleaseVerifyKey.load(cfg.pki.release_pub) if cfg.pki.release_pub else None
            ),
            reports=reports,
        ),
        outbox=outbox,
        device_retry_s=cfg.device_retry_s,
        long_poll=LongPoll(cfg.long_poll_s, cfg.max_held_checkins),
    )
    service.production_source = client.production  # devices' prediction endpoints follow it
    service.health_sink = client.report_health  # devices' refusals and canary health reports
    service.manifests = ManifestGuard(cfg.state_dir / "manifests.json")  # survives restarts
    relay = SecureRelay(service, client)
    uplink = Uplink(
        service,
        client,
        checkin_interval_s=cfg.checkin_interval_s,
        send_interval_s=cfg.send_interval_s,
        secure=relay,
    )
    verifier = PeerVerifier(cfg.pki.ca, cfg.pki.crl)
    app = build_app(
        device=service,
        uplink=None,
        admin=None,
        verifier=verifier,
        title=f"fedge gateway {cfg.id}",
        secagg_relay=relay,
        long_poll=service.long_poll,
    )
    app.add_middleware(TrafficMetricsMiddleware)  # bytes in/out and refusals, by route
    _observe_site(
        setup_metrics("gateway", cfg.id, otlp_endpoint=cfg.telemetry.otlp_endpoint), service
    )
    tls = ServerTls(cfg.pki.ca, cfg.pki.cert, cfg.pki.key, cfg.pki.crl)
    ops = start_ops(
        cfg.ops,
        cfg.ops.token_file,
        title=f"fedge gateway {cfg.id}",
        verifier=verifier,
        tls=tls,
        routers=[metrics_router()],
    )
    if ops is not None:
        click.echo(
            f"gateway {cfg.id} ops listener on {ops.url} (/metrics, /healthz;"
            f" token in {cfg.ops.token_file})"
        )
    stop = threading.Event()
    threads = uplink.start(stop)

    def started(port: int) -> None:
        click.echo(
            f"gateway {cfg.id} (site {cfg.site}) listening on https://{cfg.listen_host}:{port}"
        )

    try:
        run_server(
            app,
            cfg.listen_host,
            cfg.listen_port,
            tls,
            access_log=False,
            on_started=started,
            on_shutdown=service.long_poll.close,  # held check-ins are answered at once
        )
    finally:
        if ops is not None:
            ops.stop()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        uplink.send_once()  # one last try: anything still pending stays in the outbox
        shutdown_metrics()
        client.close()
        outbox.close()
        log.info("gateway %s stopped", cfg.id)
