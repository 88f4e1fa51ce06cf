"""``fedge``: the root command group; subcommands live in their own modules."""

from __future__ import annotations

import sys
from typing import Literal

import click

from fedge import __version__
from fedge.cli.lazy import LazyGroup
from fedge.errors import FedgeError
from fedge.telemetry.logs import LOG_FORMATS, configure_logging

__all__ = ["cli", "main"]

# Commands owned by other modules, imported only when they run (fedge.cli.lazy): a gateway or
# device process must not import what the simulator needs (torch); one that cannot be
# imported (an optional part) is left out.
_LAZY_COMMANDS = {
    "simulate": "fedge.cli.simulate:simulate_command",
    "demo": "fedge.cli.demo:demo_command",
    "privacy": "fedge.privacy.cli:privacy_group",
    "pki": "fedge.identity.cli:pki_group",
    "coordinator": "fedge.coordinator.cli:coordinator_command",
    "jobs": "fedge.coordinator.cli:jobs_group",
    "devices": "fedge.coordinator.cli:devices_group",
    "models": "fedge.coordinator.models_cli:models_group",
    "audit": "fedge.coordinator.audit_cli:audit_group",
    "report": "fedge.cli.report:report_command",
    "gateway": "fedge.gateway.cli:gateway_command",
    "device": "fedge.device.cli:device_command",
}


@click.group(
    cls=LazyGroup,
    lazy_commands=_LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="fedge")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="How much to log to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="text: readable lines; json: one JSON object per line. Both carry the job, round and "
    "trace ids of a round's work.",
)
def cli(log_level: str, log_format: Literal["text", "json"]) -> None:
    """fedge: federated learning for fleets of edge devices.

    Raw data stays on the device; only clipped, masked, optionally noised model updates travel.
    Start with `fedge demo`, or `fedge simulate examples/mnist_fedavg.toml`.
    """
    configure_logging(log_level, log_format)


@cli.command("tasks")
def tasks_command() -> None:
    """List the registered tasks (model + data bundles)."""
    from fedge.tasks import get_task, task_names

    names = task_names()
    width = max(map(len, names), default=0)
    for name in names:
        click.echo(f"{name:{width}s}  {get_task(name).description}")


@cli.command("strategies")
def strategies_command() -> None:
    """List the registered aggregation strategies."""
    from fedge.aggregation import STRATEGIES

    for name in STRATEGIES.names():
        doc = (STRATEGIES.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:12s} {doc[0] if doc else ''}")


@cli.command("partitioners")
def partitioners_command() -> None:
    """List the registered data partitioners."""
    from fedge.data.partition import PARTITIONERS

    for name in PARTITIONERS.names():
        doc = (PARTITIONERS.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:10s} {doc[0] if doc else ''}")


def main() -> None:
    """Entry point: run the CLI, turning fedge errors into one clear line and exit code 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FedgeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
