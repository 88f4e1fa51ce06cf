"""``fedge device --config device.toml``: collect local data, train when eligible, report."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click

__all__ = ["device_command"]

if TYPE_CHECKING:
    from fedge.device.config import DeviceConfig
    from fedge.device.serving import LocalEndpoint
    from fedge.device.store import LocalStore
    from fedge.identity.signing import ReleaseVerifyKey
    from fedge.transport.client import FedgeClient
    from fedge.transport.reports import ReportQueue

log = logging.getLogger(__name__)


@click.command("device")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The device's TOML file (see examples/device.toml).",
)
def device_command(config_path: str) -> None:
    """Run one edge device until SIGTERM/SIGINT."""
    from fedge.device.agent import DeviceAgent
    from fedge.device.backoff import Backoff
    from fedge.device.collector import DemoCollector, device_share
    from fedge.device.config import load_device_config
    from fedge.device.secure import SecAggCredentials
    from fedge.device.store import LocalStore
    from fedge.identity.signing import ReleaseVerifyKey
    from fedge.privacy import PrivacyLedger
    from fedge.storage.outbox import Outbox
    from fedge.telemetry.tracing import setup_tracing
    from fedge.transport.client import FedgeClient
    from fedge.transport.reports import ReportQueue

    cfg = load_device_config(config_path)
    tracing = setup_tracing("device", cfg.id, cfg.telemetry, state_dir=cfg.state_dir)
    click.echo(f"device {cfg.id} {tracing.describe()}")  # spans are flushed at exit
    import torch

    # a device trains small batches on cores it shares: more intra-op threads only spin against
    # each other (measured on 2 loaded cores: a first round of 4.4 s with 2 threads, 0.33 s with 1)
    torch.set_num_threads(cfg.torch_threads)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    holdout = cfg.serving.holdout_fraction if cfg.serving is not None else 0.0
    store = LocalStore(
        cfg.state_dir / "data.sqlite", cfg.data.retention_s, holdout_fraction=holdout
    )
    d = cfg.data
    x, y = device_share(d.task, d.num_devices, d.index, partitioner=d.partitioner, seed=d.seed)
    collector = DemoCollector.resuming(  # a restarted device appends no row twice
        store, x, y, rows_per_tick=d.rows_per_tick, interval_s=d.interval_s, cycle=d.cycle
    )
    client = FedgeClient(
        cfg.gateway_url,
        ca=cfg.pki.ca,
        cert=cfg.pki.cert,
        key=cfg.pki.key,
        timeout=cfg.request_timeout_s,
    )
    ledger = PrivacyLedger(cfg.state_dir / "privacy.sqlite", cfg.privacy_limit)
    reports = ReportQueue(client.report_health)  # refusals (and canary checks) to the gateway
    outbox = Outbox(cfg.state_dir / "outbox.sqlite")
    agent = DeviceAgent(
        device_id=cfg.id,
        link=client,
        store=store,
        policy=cfg.eligibility.policy(),
        ledger=ledger,
        outbox=outbox,
        labels=dict(cfg.labels),
        idle_poll_s=cfg.idle_poll_s,
        long_poll_s=cfg.long_poll_s,
        backoff=Backoff(base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s),
        secagg=SecAggCredentials.from_files(cfg.pki.ca, cfg.pki.cert, cfg.pki.key),
        release_key=ReleaseVerifyKey.load(cfg.pki.release_pub) if cfg.pki.release_pub else None,
        federated_evaluation=cfg.federated_evaluation,
        reports=reports,
    )
    stop = threading.Event()

    def on_signal(sig: int, frame: FrameType | None) -> None:
        log.info("device %s: %s, stopping", cfg.id, signal.Signals(sig).name)
        stop.set()
        if agent.polling:  # a held check-in changes nothing here: cut it short, clean up below
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    collecting = threading.Thread(target=collector.run, args=(stop,), daemon=True)
    collecting.start()
    click.echo(f"device {cfg.id} (site {cfg.site}) → {cfg.gateway_url}")
    endpoint = _start_serving(cfg, store, client, agent.release_key, reports, stop)
    try:
        agent.run(stop)
    finally:
        stop.set()
        if endpoint is not None:
            endpoint.stop()
        collecting.join(timeout=5)
        client.close()
        outbox.close()
        ledger.close()
        store.close()
        log.info("device %s stopped: %s", cfg.id, agent.stats)


def _start_serving(
    cfg: DeviceConfig,
    store: LocalStore,
    client: FedgeClient,
    release_key: ReleaseVerifyKey | None,
    reports: ReportQueue,
    stop: threading.Event,
) -> LocalEndpoint | None:
    """The local prediction endpoint and the thread keeping it on the production version."""
    if cfg.serving is None:
        return None
    from fedge.device.follower import ProductionFollower
    from fedge.device.predictor import HealthCheck, Predictor
    from fedge.device.serving import start_endpoint
    from fedge.transport.manifests import ManifestGuard

    s = cfg.serving
    health = HealthCheck(
        holdout=lambda: store.holdout(s.holdout_rows),  # the current holdout, at each check
        min_accuracy=s.min_accuracy,
        min_holdout_rows=s.min_holdout_rows,
    )
    if s.min_accuracy is not None and s.holdout_fraction == 0:
        log.warning(
            "serving: min_accuracy = %g but holdout_fraction = 0: the device keeps no holdout,"
            " so the accuracy check will be skipped",
            s.min_accuracy,
        )
    predictor = Predictor(s.task or cfg.data.task, health, runtime=s.runtime)
    follower = ProductionFollower(
        client,
        predictor,
        s.job,
        release_key,
        guard=ManifestGuard(cfg.state_dir / "manifests.json"),  # no downgrade across restarts
        reports=reports,  # refusals and canary health checks go to the gateway
    )
    endpoint = start_endpoint(predictor, s.host, s.port)
    threading.Thread(target=follower.run, args=(stop, s.poll_s), daemon=True).start()
    click.echo(f"prediction endpoint {endpoint.url} (job {s.job}, production version, {s.runtime})")
    return endpoint
