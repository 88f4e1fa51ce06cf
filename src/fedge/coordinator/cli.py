"""``fedge coordinator`` (the process) and the admin commands ``fedge jobs …``, ``fedge devices …``.

The admin commands talk to a running coordinator over its admin API with an admin certificate::

    fedge jobs create job.toml --pki pki --name admin
    fedge jobs list --url https://coord:8443 --cert admin.crt --key admin.key --ca ca.crt
"""

from __future__ import annotations

import datetime as dt
import functools
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import pydantic
from rich.console import Console
from rich.table import Table

from fedge.errors import ConfigError
from fedge.transport import messages as m

if TYPE_CHECKING:
    from fedge.transport.client import FedgeClient
    from fedge.transport.server import RunningServer

__all__ = ["coordinator_command", "devices_group", "jobs_group"]

F = TypeVar("F", bound=Callable[..., Any])


@click.command("coordinator")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="coordinator.toml (see examples/coordinator.toml).",
)
@click.option("--host", default=None, help="Listen address (overrides the config).")
@click.option("--port", type=int, default=None, help="Listen port; 0 picks a free one.")
@click.option("--database-url", default=None, help="SQLAlchemy URL (SQLite file, PostgreSQL).")
@click.option("--artifacts-dir", default=None, help="Directory of model artifacts.")
def coordinator_command(
    config_path: str | None,
    host: str | None,
    port: int | None,
    database_url: str | None,
    artifacts_dir: str | None,
) -> None:
    """Run the cloud coordinator: jobs, rounds, aggregation, admin API (mutual TLS).

    Stops cleanly on SIGTERM or Ctrl-C; restarted, it resumes every job from its last
    committed round.
    """
    from fedge.coordinator.app import run_coordinator
    from fedge.coordinator.config import load_coordinator_config
    from fedge.telemetry.tracing import setup_tracing

    config = load_coordinator_config(
        config_path,
        host=host,
        port=port,
        database_url=database_url,
        artifacts_dir=artifacts_dir,
    )
    tracing = setup_tracing(  # spans flush at exit; by default to traces.jsonl beside the config
        "coordinator", config.pki.name, config.telemetry_section(), state_dir=config.base_dir
    )
    click.echo(f"fedge coordinator {tracing.describe()}", err=True)

    def started(bound: int) -> None:
        click.echo(f"fedge coordinator listening on https://{config.host}:{bound}", err=True)

    def ops_started(ops: RunningServer) -> None:
        click.echo(
            f"fedge coordinator ops listener on {ops.url} (/metrics, /healthz, /dashboard/;"
            f" token in {config.ops_token_path()}, browsers: /login?token=…&next=/dashboard/)",
            err=True,
        )

    run_coordinator(config, on_started=started, on_ops_started=ops_started)


def _client_options(func: F) -> F:
    """--url, --pki/--name or --cert/--key/--ca: how to reach the admin API."""
    options = [
        click.option(
            "--url",
            default="https://127.0.0.1:8443",
            show_default=True,
            envvar="FEDGE_COORDINATOR_URL",
            help="The coordinator's URL.",
        ),
        click.option(
            "--pki",
            "pki_dir",
            type=click.Path(file_okay=False),
            default=None,
            envvar="FEDGE_PKI",
            help="Fleet PKI directory holding the admin cert.",
        ),
        click.option(
            "--name",
            default="admin",
            show_default=True,
            help="Admin certificate name inside --pki.",
        ),
        click.option(
            "--cert",
            type=click.Path(dir_okay=False),
            default=None,
            help="Admin certificate (instead of --pki).",
        ),
        click.option(
            "--key", type=click.Path(dir_okay=False), default=None, help="Admin private key."
        ),
        click.option(
            "--ca", type=click.Path(dir_okay=False), default=None, help="Fleet CA certificate."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _connect(kw: dict[str, Any]) -> FedgeClient:
    from fedge.identity import PkiPaths
    from fedge.transport.client import FedgeClient

    pki = PkiPaths(Path(kw["pki_dir"])) if kw.get("pki_dir") else None
    cert = kw.get("cert") or (pki.cert_for(kw["name"]) if pki else None)
    key = kw.get("key") or (pki.key_for(kw["name"]) if pki else None)
    ca = kw.get("ca") or (pki.ca_cert if pki else None)
    if cert is None or key is None or ca is None:
        raise ConfigError("give --pki DIR (with --name) or all of --cert, --key and --ca")
    return FedgeClient(kw["url"], ca=ca, cert=cert, key=key)


def _with_client(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def wrapper(**kw: Any) -> None:
        keys = ("url", "pki_dir", "name", "cert", "key", "ca")
        conn = {k: kw.pop(k) for k in keys}
        with _connect(conn) as client:
            func(client, **kw)

    return wrapper


def _when(ts: float | None) -> str:
    return "–" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _jobs_table(jobs: list[m.JobView]) -> Table:
    table = Table(title="jobs")
    for col in ("job", "task", "strategy", "state", "round", "committed", "accuracy"):
        table.add_column(col)
    for j in jobs:
        done = [r for r in j.rounds if r.state == "committed"]
        table.add_row(
            j.id,
            j.spec.task,
            j.spec.strategy.name,
            j.state,
            str(j.current_round),
            f"{len(done)}/{j.spec.rounds}",
            _num(done[-1].accuracy if done else None),
        )
    return table


def _rounds_table(job: m.JobView) -> Table:
    table = Table(title=f"job {job.id} ({job.state}) — rounds")
    for col in (
        "round",
        "state",
        "devices",
        "gateways",
        "accuracy",
        "loss",
        "ε",
        "model",
        "ended",
        "reason",
    ):
        table.add_column(col)
    for r in job.rounds:
        table.add_row(
            str(r.round),
            r.state,
            str(r.participants),
            str(r.gateways_reported),
            _num(r.accuracy),
            _num(r.loss),
            _num(r.epsilon),
            (r.model_sha256 or "–")[:12],
            _when(r.ended_at),
            r.reason,
        )
    return table


@click.group("jobs")
def jobs_group() -> None:
    """Create, list, inspect, pause and resume training jobs (admin API)."""


@jobs_group.command("create")
@click.argument("spec_file", type=click.Path(dir_okay=False, exists=True), required=False)
@click.option("--job-name", "job_name", default=None, help="Job name (overrides the file).")
@click.option("--task", default=None, help="Task name, e.g. digits_mlp (`fedge tasks`).")
@click.option("--strategy", default=None, help="Strategy name, e.g. fedavg (`fedge strategies`).")
@click.option("--rounds", type=int, default=None, help="Rounds to commit.")
@click.option("--devices-per-round", type=int, default=None, help="K devices per round.")
@click.option("--min-devices", type=int, default=None, help="Fewest devices a round commits with.")
@click.option("--over-selection", type=float, default=None, help="Hand out K × this many tasks.")
@_client_options
@_with_client
def jobs_create(
    client: FedgeClient,
    spec_file: str | None,
    job_name: str | None,
    strategy: str | None,
    **flags: Any,
) -> None:
    """Create a job from a TOML job spec (SPEC_FILE) and/or flags."""
    data: dict[str, Any] = {}
    if spec_file is not None:
        try:
            data = tomllib.loads(Path(spec_file).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{spec_file} is not valid TOML: {exc}") from None
    if job_name is not None:
        data["name"] = job_name
    if strategy is not None:
        data["strategy"] = {**data.get("strategy", {}), "name": strategy}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        spec = m.JobSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"job spec: {exc}") from None
    view = client.create_job(spec)
    Console().print(f"created job [bold]{view.id}[/] ({view.state})")


@jobs_group.command("list")
@_client_options
@_with_client
def jobs_list(client: FedgeClient) -> None:
    """List every job."""
    Console().print(_jobs_table(client.list_jobs()))


@jobs_group.command("show")
@click.argument("job_id")
@_client_options
@_with_client
def jobs_show(client: FedgeClient, job_id: str) -> None:
    """Show a job and each of its rounds."""
    job = client.get_job(job_id)
    console = Console()
    console.print(_jobs_table([job]))
    console.print(_rounds_table(job))


@jobs_group.command("pause")
@click.argument("job_id")
@_client_options
@_with_client
def jobs_pause(client: FedgeClient, job_id: str) -> None:
    """Pause a job: no new work is handed out; rounds already training finish."""
    Console().print(f"job {job_id}: {client.pause_job(job_id).state}")


@jobs_group.command("resume")
@click.argument("job_id")
@_client_options
@_with_client
def jobs_resume(client: FedgeClient, job_id: str) -> None:
    """Resume a paused job."""
    Console().print(f"job {job_id}: {client.resume_job(job_id).state}")


@click.group("devices")
def devices_group() -> None:
    """List and revoke devices (admin API)."""


@devices_group.command("list")
@_client_options
@_with_client
def devices_list(client: FedgeClient) -> None:
    """List the devices the coordinator knows."""
    table = Table(title="devices")
    for col in ("device", "site", "gateway", "last seen", "revoked", "rounds"):
        table.add_column(col)
    for d in client.list_devices():
        table.add_row(
            d.id,
            d.site or "–",
            d.gateway or "(direct)",
            _when(d.last_seen),
            "yes" if d.revoked else "no",
            str(d.rounds_participated),
        )
    Console().print(table)


@devices_group.command("revoke")
@click.argument("device_id")
@_client_options
@_with_client
def devices_revoke(client: FedgeClient, device_id: str) -> None:
    """Refuse a device from now on (also revoke its certificate: `fedge pki revoke`)."""
    view = client.revoke_device(device_id)
    Console().print(f"device {view.id}: revoked={view.revoked}")
