"""`fedge demo`'s default job (predictive maintenance under distributed DP), replayed in the simulator.

The demo runs 8 device processes behind 2 gateways. Each device holds the machines the demo deals
it (``fedge.device.collector.device_share``: natural keys i, i + 8, …) and trains the job's local
plan with the class-balanced loss. Every round hands tasks to ceil(K × 1.35) = all 8 devices,
commits with at least ``min_devices`` survivors, and takes as its mean the noised secure sum × γ / K.
This benchmark replays that job with the code the network path runs. The simulator's distributed-DP
round does the clipping, conditional rounding, discrete Gaussian shares and a real SecAgg+ sum. The
privacy plan is the *coordinator's*: ``plan_privacy`` called as ``fedge.coordinator.jobs`` calls
it, with noise for ``min_devices`` survivors, K in the denominator and sampling rate
ceil(1.35 K) / 8. The initial model is the coordinator's (the job's seed 0), and the strategy is
the demo's. Between seeds only what varies between two `fedge demo` runs changes: the local
batches and the DP noise.

Every setting runs over ``SEEDS`` seeds (not the seeds the settings were chosen on). The table gives
mean / min / max macro recall (balanced accuracy) and accuracy of the final model on the held-out
machines (the task's test set, what the demo's summary scores). It also gives how many seeds end
below the accuracy of always answering "healthy" (0.895; macro recall 0.200), the ε (δ = 1e-5) the
job reports, and the devices' update norm before clipping (median over devices, rounds and seeds),
to read against C. "previous defaults" is the demo as it was; "fedge demo" is read from
``fedge.cli.demo``, so the table follows the code. A second table checks the other use cases'
demos (``--usecase``): the previous and the current DP settings, and ``--no-dp``.

Run: ``python benchmarks/bench_demo_dp.py`` (about 3 minutes on 2 cores); writes
``benchmarks/results/demo_dp.json`` and ``demo_dp.txt``. ``--seeds 8 NAME …`` runs only the
settings whose name contains NAME (output to a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import RESULTS, table  # noqa: E402

from fedge.cli.demo import (  # noqa: E402
    DEMO_CLIP_NORM,
    DEMO_DELTA,
    DEMO_NOISE_MULTIPLIER,
    DEMO_OVER_SELECTION,
    USECASE_TASKS,
    demo_cohort,
    demo_command,
    demo_training_plan,
)
from fedge.coordinator.jobs import JobRuntime  # noqa: E402
from fedge.coordinator.selection import round_target  # noqa: E402
from fedge.data import Partition, make_partition  # noqa: E402
from fedge.demo.federation import FederationPlan  # noqa: E402
from fedge.device.collector import device_share  # noqa: E402
from fedge.privacy import plan_privacy  # noqa: E402
from fedge.simulation import Simulation, SimulationConfig  # noqa: E402
from fedge.simulation.distributed import DistributedRoundAggregator  # noqa: E402
from fedge.simulation.privacy import RoundAggregator  # noqa: E402
from fedge.tasks import get_task  # noqa: E402
from fedge.usecases.scores import class_scores, majority_scores  # noqa: E402

TASK = "maintenance"  # the default demo
FLEET = FederationPlan().num_devices  # 2 sites × 4 devices
ROUNDS = next(int(str(p.default)) for p in demo_command.params if p.name == "rounds")  # 5
INIT_SEED = 0  # the demo job's seed: the coordinator's initial model
# the settings were chosen on other seeds (0-15, 100-123, 300-331, 1000-1031, 2000-2031, 3000-3063)
SEEDS = tuple(range(5000, 5032))
OTHER_SEEDS = 8  # the other use cases: seeds per setting


@dataclass(frozen=True)
class Setting:
    """One demo job: its server strategy, local plan, DP and round settings."""

    name: str
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": "fedavg"})
    epochs: int = 5
    batch_size: int | None = 16  # None: one full batch
    lr: float = 0.1
    clip_norm: float = 1.0
    noise_multiplier: float | None = 0.5  # None: no DP (the --no-dp demo)
    min_devices: int = FLEET // 2
    devices_per_round: int = FLEET - max(1, FLEET // 4)
    rounds: int = ROUNDS


def demo_setting(name: str, *, dp: bool = True) -> Setting:
    """The job `fedge demo` creates now (with ``dp``: its DP defaults, else ``--no-dp``)."""
    per_round, min_devices = demo_cohort(FLEET, distributed_dp=dp)
    plan = demo_training_plan(usecase=True, dp=dp)
    return Setting(
        name,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        clip_norm=DEMO_CLIP_NORM,
        noise_multiplier=DEMO_NOISE_MULTIPLIER if dp else None,
        min_devices=min_devices,
        devices_per_round=per_round,
    )


PREVIOUS = Setting("previous defaults")  # C = 1, min_devices = 4, 5 epochs of batch 16 at lr 0.1
CURRENT = demo_setting("fedge demo (current defaults)")


def with_plan_of(source: Setting, s: Setting) -> Setting:
    """``s`` with the local plan (epochs, batch, lr) of ``source``."""
    return replace(s, epochs=source.epochs, batch_size=source.batch_size, lr=source.lr)


def settings() -> tuple[Setting, ...]:
    """The baseline, the new defaults, what each of their changes does alone, and the levers
    that did not help (server optimizers), with the no-DP demo as the reference."""
    return (
        PREVIOUS,
        CURRENT,
        # one change at a time from the previous defaults, and each one taken back from the new
        with_plan_of(CURRENT, replace(PREVIOUS, name="previous + 1-epoch plan")),
        replace(PREVIOUS, name="previous + C = 0.5", clip_norm=CURRENT.clip_norm),
        replace(PREVIOUS, name="previous + min_devices = 6", min_devices=CURRENT.min_devices),
        with_plan_of(PREVIOUS, replace(CURRENT, name="current, 5-epoch plan")),
        replace(CURRENT, name="current, C = 1", clip_norm=1.0),
        replace(CURRENT, name="current, min_devices = 4", min_devices=FLEET // 2),
        # fewer local steps: more recall of the faults, but now and then below majority accuracy
        replace(CURRENT, name="current, batch 20, lr 0.07", batch_size=20, lr=0.07),
        # server optimizers: momentum / Adam average over rounds, but not the noise of 5 rounds
        replace(
            PREVIOUS,
            name="previous, FedAvgM η 0.3 β 0.5",
            strategy={"name": "fedavgm", "server_lr": 0.3, "momentum": 0.5},
        ),
        replace(
            PREVIOUS,
            name="previous, FedAvgM η 0.1 β 0.9",
            strategy={"name": "fedavgm", "server_lr": 0.1, "momentum": 0.9},
        ),
        replace(
            PREVIOUS,
            name="previous, FedAdam η 0.03",
            strategy={"name": "fedadam", "server_lr": 0.03},
        ),
        replace(
            CURRENT,
            name="current, FedAvgM η 0.7 β 0.3",
            strategy={"name": "fedavgm", "server_lr": 0.7, "momentum": 0.3},
        ),
        replace(
            CURRENT, name="current, FedAdam η 0.03", strategy={"name": "fedadam", "server_lr": 0.03}
        ),
        # what the dropout tolerance costs, more rounds at the same ε, a smaller ε
        replace(CURRENT, name="current, min_devices = 8 (no dropout)", min_devices=FLEET),
        replace(CURRENT, name="current, 8 rounds, z = 0.64", rounds=8, noise_multiplier=0.64),
        replace(CURRENT, name="current, z = 0.7", noise_multiplier=0.7),
        demo_setting("no DP (--no-dp)", dp=False),
    )


def demo_partition(task: str = TASK) -> Partition:
    """The demo's split: device i plays back natural keys i, i + 8, … (as ``device_share``)."""
    train, _ = get_task(task).load_data()
    part = make_partition("natural", train.y, None, rng=np.random.default_rng(0), keys=train.keys)
    rows = [np.concatenate([part[k] for k in range(i, part.num_devices, FLEET)]) for i in range(FLEET)]  # fmt: skip
    for i in range(FLEET):  # the very rows a demo device streams into its store
        x, y = device_share(task, FLEET, i, partitioner="natural", seed=0)
        if not (np.array_equal(x, train.x[rows[i]]) and np.array_equal(y, train.y[rows[i]])):
            raise AssertionError(f"device {i}'s share of {task} differs from the demo's")
    return Partition.from_lists(rows)


def sim_config(s: Setting, seed: int, task: str = TASK) -> SimulationConfig:
    """The simulator config of ``s``: each round trains and sums all the devices given tasks."""
    summed = min(FLEET, round_target(s.devices_per_round, DEMO_OVER_SELECTION))
    data: dict[str, Any] = {
        "task": task,
        "rounds": s.rounds,
        "seed": seed,
        "partition": {"name": "natural", "devices": FLEET},
        "client": {
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "lr": s.lr,
            "class_weighting": "balanced",
        },
        "strategy": s.strategy,
        "simulation": {"devices_per_round": summed, "sampling": "fixed", "federated_eval": False},
        "secure_aggregation": {"enabled": True, "gateways": 2},
    }
    if s.noise_multiplier is not None:
        data["privacy"] = {
            "mode": "distributed",
            "clip_norm": s.clip_norm,
            "noise_multiplier": s.noise_multiplier,
            "delta": DEMO_DELTA,
        }
    else:  # the demo without DP: plain SecAgg+, each coordinate clipped to ±1
        data["secure_aggregation"]["clip"] = 1.0
    return SimulationConfig.model_validate(data)


def replay(
    s: Setting, seed: int, partition: Partition, task: str = TASK
) -> tuple[dict[str, Any], np.ndarray]:
    """One run of job ``s``: the final model's scores on the held-out devices and ε; and the
    devices' update norms before clipping (every device of every round)."""
    sim = Simulation(sim_config(s, seed, task), partition=partition)
    sim.state = sim.strategy.init(JobRuntime.initial_params(sim.task, INIT_SEED))
    rounds: list[DistributedRoundAggregator] = []
    if sim.privacy is not None:
        # the coordinator's plan: noise for min_devices survivors, mean over K, rate ceil(1.35K)/N
        sim.privacy.plan = plan_privacy(
            sim.config.privacy,
            rounds=s.rounds,
            devices_per_round=s.devices_per_round,
            fleet_size=FLEET,
            sampling="fixed_size",
            dim=sim.spec.size,
            min_devices=s.min_devices,
            sampled_per_round=round_target(s.devices_per_round, DEMO_OVER_SELECTION),
        )
        new_round = sim.privacy.new_round

        def watched(round_number: int) -> RoundAggregator:  # keeps each round's update norms
            aggregator = new_round(round_number)
            if isinstance(aggregator, DistributedRoundAggregator):
                rounds.append(aggregator)
            return aggregator

        sim.privacy.new_round = watched  # type: ignore[method-assign]
    history = sim.run()
    _, test = sim.task.load_data()
    final = class_scores(sim.task, sim.state.params, test.x, test.y)
    norms = np.concatenate([a.norms for a in rounds]) if rounds else np.zeros(0)
    return {
        "seed": seed,
        "macro_recall": final.macro_recall,
        "accuracy": final.accuracy,
        "recall": [float(r) for r in final.recall],
        "rounds_committed": sum(r.participants > 0 for r in history.records),
        "accuracy_per_round": [r.accuracy for r in history.records],
        "macro_recall_per_round": [r.balanced_accuracy for r in history.records],
        "epsilon": history.records[-1].epsilon if history.records else None,
        "update_norm_per_round": [float(np.median(a.norms)) for a in rounds if a.norms.size],
    }, norms


def summarise(
    s: Setting, replays: list[tuple[dict[str, Any], np.ndarray]], floor: float
) -> dict[str, Any]:
    """Mean / min / max of the final scores over seeds; seeds below the accuracy ``floor``."""
    runs = [run for run, _ in replays]
    macro = np.array([r["macro_recall"] for r in runs])
    acc = np.array([r["accuracy"] for r in runs])
    norms = np.concatenate([n for _, n in replays])
    return {
        "setting": asdict(s),
        "seeds": [r["seed"] for r in runs],
        "macro_recall": _stats(macro),
        "accuracy": _stats(acc),
        "below_majority_accuracy": int((acc < floor).sum()),
        "epsilon": runs[0]["epsilon"],
        "update_norm_median": float(np.median(norms)) if norms.size else None,
        "update_norm_quartiles": [float(q) for q in np.quantile(norms, [0.25, 0.75])]
        if norms.size
        else None,
        "runs": runs,
    }


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std()),
    }


def _rounded(value: Any) -> Any:
    """``value`` with every float to 4 decimals (the JSON holds every run of every setting)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _row(name: str, summary: dict[str, Any], clip: float | None) -> list[str]:
    m, a, eps = summary["macro_recall"], summary["accuracy"], summary["epsilon"]
    norm = summary["update_norm_median"]
    return [
        name,
        f"{m['mean']:.3f}",
        f"{m['min']:.3f}",
        f"{m['max']:.3f}",
        f"{a['mean']:.3f}",
        f"{a['min']:.3f}",
        f"{a['max']:.3f}",
        f"{summary['below_majority_accuracy']}/{len(summary['seeds'])}",
        "–" if eps is None else f"{eps:.1f}",
        "–" if norm is None or clip is None else f"{norm:.2f} / {clip:g}",
    ]


HEADERS = ["setting", "macro", "min", "max", "acc", "min", "max", "< majority", "ε", "‖Δ‖ / C"]


def run_settings(
    chosen: list[Setting], task: str, seeds: tuple[int, ...]
) -> tuple[list[dict[str, Any]], list[list[str]], dict[str, float]]:
    """Every setting over ``seeds`` on ``task``: summaries, table rows, the majority baseline."""
    partition = demo_partition(task)
    spec = get_task(task)
    _, test = spec.load_data()
    base = majority_scores(test.y, spec.num_classes)
    summaries, rows = [], []
    for s in chosen:
        start = time.perf_counter()
        summary = summarise(s, [replay(s, seed, partition, task) for seed in seeds], base.accuracy)
        summary["seconds"] = time.perf_counter() - start
        summaries.append(summary)
        clip = None if s.noise_multiplier is None else s.clip_norm
        rows.append(_row(s.name if task == TASK else f"{task}: {s.name}", summary, clip))
        print("  ".join(rows[-1]), f"({summary['seconds']:.0f} s)", flush=True)
    return summaries, rows, {"accuracy": base.accuracy, "macro_recall": base.macro_recall}


def main(argv: list[str] | None = None) -> None:
    """Run the settings over the seeds; print the tables and write them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per setting")
    parser.add_argument("names", nargs="*", help="only the settings whose name contains one")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # "privacy noise is seeded for simulation", once per run
    seeds = SEEDS[: args.seeds] if args.seeds <= len(SEEDS) else tuple(range(5000, 5000 + args.seeds))  # fmt: skip
    chosen = [s for s in settings() if not args.names or any(n in s.name for n in args.names)]
    started = time.perf_counter()
    summaries, rows, majority = run_settings(chosen, TASK, seeds)
    out: dict[str, Any] = {
        "task": TASK,
        "fleet": FLEET,
        "over_selection": DEMO_OVER_SELECTION,
        "seeds": list(seeds),
        "always_majority": majority,
        "settings": summaries,
        "other_usecases": {},
    }
    text = [
        f"fedge demo ({TASK}, {FLEET} devices, SecAgg+ and distributed DP, δ = {DEMO_DELTA:g}) "
        f"replayed over {len(seeds)} seeds; always 'healthy': accuracy {majority['accuracy']:.3f}, "
        f"macro recall {majority['macro_recall']:.3f}",
        table(HEADERS, rows),
    ]
    full = not args.names and args.seeds == len(SEEDS)
    if full:  # the other use cases' demos, previous against current DP settings
        other_rows: list[list[str]] = []
        for usecase, task in sorted(USECASE_TASKS.items()):
            if task == TASK:
                continue
            compared = [PREVIOUS, CURRENT, demo_setting("no DP (--no-dp)", dp=False)]
            found, rows_u, base_u = run_settings(compared, task, SEEDS[:OTHER_SEEDS])
            out["other_usecases"][usecase] = {"task": task, "majority": base_u, "settings": found}
            other_rows.extend(rows_u)
        text += [
            f"\nthe other use cases (--usecase), {OTHER_SEEDS} seeds; '< majority': below the "
            "accuracy of always answering the majority class (on mobility the balanced loss "
            "trades some of it for the rare event's recall, with or without DP)",
            table(HEADERS, other_rows),
        ]
    out["seconds"] = time.perf_counter() - started
    print("\n".join(text))
    target = RESULTS if full else Path(tempfile.mkdtemp(prefix="demo_dp-"))
    (target / "demo_dp.json").write_text(json.dumps(_rounded(out)) + "\n", encoding="utf-8")
    (target / "demo_dp.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    print(f"wrote {target / 'demo_dp.json'} and demo_dp.txt ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
