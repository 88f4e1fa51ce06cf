"""Rich rendering for long runs: a progress bar per round and a summary table."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedge.privacy.plan import PrivacyPlan
from fedge.simulation.history import RoundRecord

__all__ = ["privacy_line", "round_progress", "summary_table"]


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


@contextmanager
def round_progress(
    total: int, console: Console, *, enabled: bool = True
) -> Iterator[Callable[[RoundRecord], None]]:
    """Yield a callback that advances a progress bar showing each round's accuracy and loss."""
    if not enabled:
        yield lambda _record: None
        return
    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task_id = progress.add_task("starting…", total=total)

    def advance(record: RoundRecord) -> None:
        eps = "" if record.epsilon is None else f"  ε {record.epsilon:.2f}"
        progress.update(
            task_id,
            advance=1,
            description=(
                f"acc {_fmt(record.accuracy)}  loss {_fmt(record.loss)}"
                f"  devices {record.participants}{eps}"
            ),
        )

    with progress:
        yield advance


def summary_table(records: Sequence[RoundRecord], title: str, max_rows: int = 25) -> Table:
    """Per-round table (thinned to ``max_rows``, always keeping the last round)."""
    show_eps = any(r.epsilon is not None for r in records)
    show_balanced = any(r.balanced_accuracy is not None for r in records)
    table = Table(title=title, title_justify="left")
    names = ["round", "accuracy", "loss", "fed. acc", "train loss", "devices", "rejected", "s"]
    if show_balanced:  # tasks with per-class recall: the mean recall over classes
        names.insert(2, "bal. acc")
    for name in names:
        table.add_column(name, justify="right")
    if show_eps:
        table.add_column("ε", justify="right")
    step = max(1, math.ceil(len(records) / max_rows))
    for i, r in enumerate(records):
        if i % step and i != len(records) - 1:
            continue
        row = [
            str(r.round),
            _fmt(r.accuracy),
            _fmt(r.loss),
            _fmt(r.federated_accuracy),
            _fmt(r.train_loss),
            str(r.participants),
            str(r.rejected),
            f"{r.seconds:.3f}",
        ]
        if show_balanced:
            row.insert(2, _fmt(r.balanced_accuracy))
        if show_eps:
            row.append(_fmt(r.epsilon, 3))
        table.add_row(*row)
    return table


def privacy_line(plan: PrivacyPlan) -> str:
    """One line on the job's differential privacy: mode, noise, clip, δ, sampling and budget."""
    what = {
        "central": "central DP (DP-FedAvg)",
        "local": "local DP",
        "distributed": "distributed DP",
    }
    z = f"z={plan.noise_multiplier:.4g}"
    if plan.update_noise_multiplier != plan.noise_multiplier and plan.mode != "local":
        z += f" (update z={plan.update_noise_multiplier:.4g}, adaptive clipping)"
    budget = "" if plan.max_epsilon is None else f" · stops before ε > {plan.max_epsilon:g}"
    planned = ""
    if plan.accountant is not None:
        planned = (
            f" · ε after {plan.rounds} rounds = {plan.accountant.epsilon_after(plan.rounds):.3g}"
        )
    return (
        f"[bold]privacy[/] {what.get(plan.mode, plan.mode)} · {z} · C={plan.clip_norm:g} · "
        f"δ={plan.delta:.3g} · {plan.sampling} sampling, {plan.accountant.kind if plan.accountant else ''} "
        f"accountant{planned}{budget} · simulation noise is seeded: NOT secure"
    )
