"""The shape of McMahan et al. 2017, Table 2, on MNIST-5000: rounds to a target accuracy.

McMahan, Moore, Ramage, Hampson & Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017, arXiv:1602.05629, Table 2: the number of
communication rounds FedSGD (E=1, B=∞) and FedAvg need to reach a target test accuracy with the
2NN, 100 devices, C=0.1, IID and pathological non-IID (2 label-sorted shards per device).

Here: MNIST-5000 split 80/20 (stratified, seed 42), so 4,000 training digits over 100 devices
(40 each; non-IID = ``shards`` with 2 shards of 20 per device, so at most 2 digits per device),
10 devices per round, the 2NN (784-200-200-10), model seed 42.

* FedSGD: strategy ``fedsgd``; every device takes one full-batch gradient step, the server
  averages (server lr 1). Client lr tuned over ``--fedsgd-lrs``; capped at ``--max-rounds``.
* FedAvg: strategy ``fedavg``, E=5, B=10; client lr tuned over ``--fedavg-lrs``.

As in the paper, each cell is the best learning rate of its grid: the fewest rounds until the
centralised test accuracy (1,000 held-out digits, evaluated every round) first reaches
``--target``; the run stops there (``simulation.target_accuracy``). Each (strategy, split, lr)
runs in a fresh process; ``--seeds`` repeats everything over model/selection seeds.

    python benchmarks/bench_paper_table.py            # full grids, ~10 minutes on 2 busy cores
    python benchmarks/bench_paper_table.py --quick    # one lr per cell, cap 500, ~2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_worker, table

SPLITS = {"iid": "IID", "shards": "non-IID (2 shards)"}
STRATEGIES = {"fedsgd": "FedSGD (E=1, B=inf)", "fedavg": "FedAvg (E=5, B=10)"}

# The paper's Table 2, MNIST 2NN (target 97% test accuracy on full MNIST, 600 examples/device),
# rounds (speed-up over FedSGD); u = expected local updates per round = E * n / B.
PAPER_2NN = [
    ("FedSGD  E=1  B=inf  u=1", "1455", "4278"),
    ("FedAvg  E=1  B=10   u=60", "316 (4.6x)", "3275 (1.3x)"),
    ("FedAvg  E=10 B=10   u=600", "34 (42.8x)", "443 (9.7x)"),
    ("FedAvg  E=20 B=10   u=1200", "32 (45.5x)", "380 (11.3x)"),
]
PAPER_NOTE = """\
McMahan et al. 2017 (arXiv:1602.05629), Table 2, MNIST 2NN, target 97%, C=0.1, lr tuned per
row. The paper's 2NN rows use E in {1, 10, 20}; E=5, B=10 appears only in its CNN rows (CNN,
target 99%: FedSGD 626 IID / 483 non-IID rounds; FedAvg E=5 B=10: 20 (31.3x) / 229 (2.1x)).
Only 1455 (FedSGD, IID) is as the brief quotes it; every other paper number here is quoted from
memory and was NOT re-checked against the PDF for this benchmark (treat as approximate).
Why the speed-ups here are smaller: with 40 digits per device, E=5, B=10 is u = 5*40/10 = 20
local steps per round, against the paper's u = 5*600/10 = 300. The paper's speed-up grows with
u (its 2NN rows with u=12 and u=60 give 0.9x and 4.6x IID), so FedAvg's advantage here should
be that of a small-u row, and the 92% target on 4,000 digits is an easier, earlier point of the
curve than 97% on 60,000."""


def worker(args: argparse.Namespace) -> None:
    """Run one (strategy, split, lr, seed) here; print one JSON line."""
    from fedge.simulation import Simulation, load_config

    overrides: dict[str, Any] = {
        "task": "mnist_2nn",
        "rounds": args.max_rounds,
        "seed": args.seed,
        "partition.name": args.split,
        "partition.devices": 100,
        "client.lr": args.lr,
        "client.epochs": 5,
        "client.batch_size": 10,
        "strategy.name": args.strategy,
        "simulation.devices_per_round": 10,
        "simulation.eval_every": 1,
        "simulation.federated_eval": False,
        "simulation.target_accuracy": args.target,
    }
    if args.split == "shards":
        overrides["partition.shards_per_device"] = 2
    sim = Simulation(load_config(None, overrides))
    start = time.perf_counter()
    history = sim.run()
    acc = [r.accuracy for r in history.records if r.accuracy is not None]
    reached = history.stopped_reason is not None
    print(
        json.dumps(
            {
                "strategy": args.strategy,
                "split": args.split,
                "lr": args.lr,
                "seed": args.seed,
                "target": args.target,
                "max_rounds": args.max_rounds,
                "reached": reached,
                "rounds": len(history.records),
                "rounds_to_target": len(history.records) if reached else None,
                "best_accuracy": max(acc),
                "final_accuracy": acc[-1],
                "accuracy_every_10": acc[9::10],
                "run_s": time.perf_counter() - start,
                "mean_round_s": statistics.mean(r.seconds for r in history.records),
            }
        )
    )


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's choice: fewest rounds to target; if none reached, highest best accuracy."""
    return min(
        runs,
        key=lambda r: (
            not r["reached"],
            r["rounds_to_target"] or 0,
            -r["best_accuracy"],
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.92, help="test accuracy target")
    parser.add_argument("--max-rounds", type=int, default=1500, help="cap for every run")
    parser.add_argument("--fedsgd-lrs", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--fedavg-lrs", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--quick", action="store_true", help="one lr per cell, cap 500 rounds")
    parser.add_argument("--json", type=Path, help="write all runs here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="fedavg", help=argparse.SUPPRESS)
    parser.add_argument("--split", default="iid", help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.max_rounds = min(args.max_rounds, 500)
        args.fedsgd_lrs, args.fedavg_lrs = [0.3], [0.2]

    grids = {"fedsgd": args.fedsgd_lrs, "fedavg": args.fedavg_lrs}
    script = str(Path(__file__).resolve())
    load_before = _load()
    print(f"load average before: {load_before} ({os.cpu_count()} CPUs)", flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for strategy, lrs in grids.items():
        for split in SPLITS:
            for lr in lrs:
                for seed in args.seeds:
                    cmd = [script, "--worker", "--strategy", strategy, "--split", split]
                    cmd += ["--lr", str(lr), "--seed", str(seed), "--target", str(args.target)]
                    cmd += ["--max-rounds", str(args.max_rounds)]
                    r = run_worker(cmd)
                    r["load_after"] = _load()
                    runs.append(r)
                    print(
                        f"  {strategy:>6} {split:>6} lr {lr:<5} seed {seed}: "
                        + (
                            f"{r['rounds_to_target']} rounds"
                            if r["reached"]
                            else f"not reached in {r['rounds']}"
                        )
                        + f" (best acc {r['best_accuracy']:.3f}, {r['run_s']:.0f} s, "
                        f"load {r['load_after']})",
                        flush=True,
                    )
    load_after = _load()

    # Every run, then the paper-shaped table from the best lr of each cell (per seed).
    grid_rows = [
        [
            STRATEGIES[r["strategy"]],
            SPLITS[r["split"]],
            f"{r['lr']:g}",
            str(r["seed"]),
            str(r["rounds_to_target"]) if r["reached"] else f"> {r['rounds']}",
            f"{r['best_accuracy']:.3f}",
            f"{r['mean_round_s'] * 1e3:.0f}",
        ]
        for r in runs
    ]
    print(f"\nAll runs (target {args.target:.0%} test accuracy, cap {args.max_rounds} rounds)\n")
    print(
        table(
            ["", "split", "client lr", "seed", "rounds to target", "best acc", "ms/round"],
            grid_rows,
        )
    )

    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for strategy in grids:
        for split in SPLITS:
            for seed in args.seeds:
                cell = [
                    r
                    for r in runs
                    if (r["strategy"], r["split"], r["seed"]) == (strategy, split, seed)
                ]
                best[strategy, split, seed] = _best(cell)

    def cell(strategy: str, split: str, seed: int) -> str:
        r = best[strategy, split, seed]
        lrs = grids[strategy]
        edge = " [grid edge]" if len(lrs) > 1 and r["lr"] in (min(lrs), max(lrs)) else ""
        if not r["reached"]:
            return f"not reached in {r['rounds']} (best {r['best_accuracy']:.3f})"
        text = f"{r['rounds_to_target']} (lr {r['lr']:g}{edge})"
        if strategy != "fedsgd":
            base = best["fedsgd", split, seed]
            if base["reached"]:
                text += f" {base['rounds_to_target'] / r['rounds_to_target']:.1f}x"
            else:
                text += f" >{base['rounds'] / r['rounds_to_target']:.1f}x"
        return text

    for seed in args.seeds:
        print(
            f"\nRounds to {args.target:.0%} test accuracy, MNIST-5000 (4,000 train digits), 2NN, "
            f"100 devices, C=0.1 (seed {seed}); speed-up = FedSGD rounds / FedAvg rounds\n"
        )
        rows = [[STRATEGIES[s], *(cell(s, split, seed) for split in SPLITS)] for s in STRATEGIES]
        print(table(["2NN", *SPLITS.values()], rows))
    print("\nFor comparison, the paper (rounds to 97% on full MNIST, 600 digits per device):\n")
    print(table(["2NN (paper)", "IID", "non-IID"], [list(r) for r in PAPER_2NN]))
    print()
    print(PAPER_NOTE)
    print(
        f"\nload average before {load_before}, after {load_after}; {os.cpu_count()} CPUs "
        f"shared; wall time {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "target": args.target,
            "max_rounds": args.max_rounds,
            "grids": grids,
            "seeds": args.seeds,
            "load_before": load_before,
            "load_after": load_after,
            "runs": runs,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
