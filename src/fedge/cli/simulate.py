"""``fedge simulate``: federated learning over virtual devices in this process."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from fedge.cli.render import privacy_line, round_progress, summary_table

if TYPE_CHECKING:
    from fedge.simulation.history import RoundRecord

__all__ = ["recall_line", "run_simulation", "simulate_command"]

# flag name -> dotted config path
_FLAG_PATHS = {
    "task": "task",
    "rounds": "rounds",
    "seed": "seed",
    "devices": "partition.devices",
    "partition": "partition.name",
    "epochs": "client.epochs",
    "batch_size": "client.batch_size",
    "lr": "client.lr",
    "strategy": "strategy.name",
    "server_lr": "strategy.server_lr",
    "devices_per_round": "simulation.devices_per_round",
    "backend": "simulation.backend",
    "chunk_size": "simulation.chunk_size",
}


def _overrides(flags: dict[str, Any], settings: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        _FLAG_PATHS[k]: v for k, v in flags.items() if k in _FLAG_PATHS and v is not None
    }
    for item in settings:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. client.lr=0.05")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def recall_line(record: RoundRecord, class_names: Sequence[str]) -> str | None:
    """The final model's recall per class and balanced accuracy (None if the task has none)."""
    if record.recall is None or record.balanced_accuracy is None:
        return None
    names = list(class_names) or [f"class {c}" for c in range(len(record.recall))]
    if len(names) != len(record.recall):
        names = [f"class {c}" for c in range(len(record.recall))]
    each = " · ".join(
        f"{name} {'–' if r is None else f'{r:.3f}'}"
        for name, r in zip(names, record.recall, strict=True)
    )
    return f"recall per class (test set) {each} · balanced accuracy {record.balanced_accuracy:.4f}"


def run_simulation(
    config_path: str | None,
    overrides: dict[str, Any],
    out: str | None,
    *,
    quiet: bool = False,
    as_json: bool = False,
) -> None:
    """Load, run and report a simulation (shared by ``simulate`` and ``demo``)."""
    from fedge.simulation import Simulation, load_config

    started = time.perf_counter()
    config = load_config(config_path, overrides)
    console = Console(stderr=True, quiet=quiet)
    console.print(
        f"[bold]fedge simulate[/] task={config.task} strategy={config.strategy.name} "
        f"partition={config.partition.name} devices={config.partition.devices} "
        f"per round={config.simulation.devices_per_round} rounds={config.rounds} seed={config.seed}"
    )
    if config.privacy.mode != "none":
        # dp_accounting logs (via absl) each RDP order it drops as non-convergent: expected.
        logging.getLogger("absl").setLevel(logging.ERROR)
    sim = Simulation(config)
    if sim.privacy is not None:
        console.print(privacy_line(sim.privacy.plan))
    with round_progress(config.rounds, console, enabled=not quiet) as advance:
        history = sim.run(on_round=advance)
    total = time.perf_counter() - started
    records = history.records
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in records], indent=2))
    else:
        out_console = Console(quiet=quiet)
        out_console.print(summary_table(records, f"{config.task} · {config.strategy.name}"))
        accs = [r.accuracy for r in records if r.accuracy is not None]
        per_round = sum(r.seconds for r in records) / len(records)
        out_console.print(
            f"final accuracy {records[-1].accuracy:.4f} · best {max(accs):.4f} · "
            f"{len(records)} rounds · {per_round * 1000:.1f} ms/round · {total:.1f} s in all"
            + (f" · {history.stopped_reason}" if history.stopped_reason else "")
        )
        line = recall_line(records[-1], sim.task.class_names)
        if line is not None:
            out_console.print(line)
    if out:
        paths = history.write(out)
        console.print("wrote " + ", ".join(str(p) for p in paths))


def _simulation_options(fn: Any) -> Any:
    options = [
        click.option("--task", help="Task name (see `fedge tasks`)."),
        click.option("--rounds", type=int, help="Number of rounds."),
        click.option("--devices", type=int, help="Fleet size (virtual devices)."),
        click.option("--devices-per-round", type=int, help="Devices selected each round."),
        click.option("--epochs", type=int, help="Local epochs per round (E)."),
        click.option("--batch-size", type=int, help="Local batch size (B)."),
        click.option("--lr", type=float, help="Client learning rate."),
        click.option("--strategy", help="Strategy name (see `fedge strategies`)."),
        click.option("--server-lr", type=float, help="Server learning rate of the strategy."),
        click.option("--partition", help="Partitioner name (see `fedge partitioners`)."),
        click.option("--seed", type=int, help="Seed: same seed, same numbers."),
        click.option("--backend", type=click.Choice(["vectorized", "loop"]), help="Trainer."),
        click.option("--chunk-size", type=int, help="Devices trained at once (bounds memory)."),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override any setting by dotted path, e.g. --set partition.alpha=0.1.",
        ),
        click.option("--out", type=click.Path(), help="Write history.json/.csv/.png here."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or table."),
        click.option("--json", "as_json", is_flag=True, help="Print the history as JSON."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@click.command("simulate")
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False))
@_simulation_options
def simulate_command(
    config: str | None,
    settings: tuple[str, ...],
    out: str | None,
    quiet: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Run federated learning over virtual devices in this process.

    CONFIG is a TOML file (see examples/); flags and --set override it. Without CONFIG the
    defaults are the MNIST 2NN FedAvg setting of examples/mnist_fedavg.toml.
    """
    run_simulation(config, _overrides(flags, settings), out, quiet=quiet, as_json=as_json)
