"""fedge's simulator against Flower and against its own per-device loop, in one run.

The setting (issue 2): MNIST-5000 split 80/20 (stratified, seed 42), 100 IID devices, 10 per
round, E=1, B=10, client lr 0.1, the 2NN, FedAvg, 20 rounds — ``examples/mnist_fedavg.toml``.

Each configuration runs in a fresh process so the whole-process time includes interpreter
start and imports, and peak memory is that process's own maximum RSS:

* fedge, vectorised virtual devices (the default backend), repeated ``--repeats`` times;
* fedge, the per-device reference loop (``simulation.backend = "loop"``);
* Flower 1.42 (``benchmarks/flower_baseline.py``, in its own venv, Ray on 2 CPUs), unless
  ``--skip-flower``; its peak memory is summed over all of its processes.

    python benchmarks/bench_simulator.py                 # everything (Flower takes ~1 min)
    python benchmarks/bench_simulator.py --skip-flower   # fedge only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, peak_rss_mib, run_worker, table

CONFIG = ROOT / "examples" / "mnist_fedavg.toml"


def worker(backend: str, rounds: int) -> None:
    """Run the simulation here and print one JSON line of measurements."""
    from fedge.simulation import Simulation, load_config

    config = load_config(CONFIG, {"rounds": rounds, "simulation.backend": backend})
    sim = Simulation(config)
    start = time.perf_counter()
    history = sim.run()
    seconds = [r.seconds for r in history.records]
    print(
        json.dumps(
            {
                "backend": backend,
                "first_round_s": seconds[0],
                "mean_round_s": statistics.mean(seconds[1:]),
                "run_s": time.perf_counter() - start,
                "peak_rss_mib": peak_rss_mib(),
                "final_accuracy": history.final.accuracy,
                "accuracies": [r.accuracy for r in history.records],
            }
        )
    )


def _row(name: str, r: dict[str, Any]) -> list[str]:
    return [
        name,
        f"{r['first_round_s']:.3f}",
        f"{r['mean_round_s'] * 1000:.1f}",
        f"{r.get('process_s', r.get('total_s', float('nan'))):.2f}",
        f"{r['peak_rss_mib']:.0f}",
        f"{r['final_accuracy']:.4f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the vectorised backend")
    parser.add_argument("--skip-flower", action="store_true", help="do not run Flower")
    parser.add_argument("--flower-json", type=Path, help="reuse a flower_baseline.py --json file")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--worker", choices=["vectorized", "loop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rounds)
        return

    script = str(Path(__file__).resolve())
    vec_runs = [
        run_worker([script, "--worker", "vectorized", "--rounds", str(args.rounds)])
        for _ in range(args.repeats)
    ]
    vec = min(vec_runs, key=lambda r: r["mean_round_s"])
    vec["process_s"] = statistics.median(r["process_s"] for r in vec_runs)
    loop = run_worker([script, "--worker", "loop", "--rounds", str(args.rounds)])
    results: dict[str, Any] = {
        "fedge_vectorized": vec,
        "fedge_loop": loop,
        "vectorized_runs": vec_runs,
    }
    rows = [_row("fedge (vectorised)", vec), _row("fedge (per-device loop)", loop)]
    flower: dict[str, Any] | None = None
    if args.flower_json:
        flower = json.loads(args.flower_json.read_text())
    elif not args.skip_flower:
        out = ROOT / "benchmarks" / ".flower-latest.json"
        script = ROOT / "benchmarks" / "flower_baseline.py"
        subprocess.run(
            [sys.executable, str(script), "--rounds", str(args.rounds), "--json", str(out)],
            check=True,
            timeout=3600,
        )
        flower = json.loads(out.read_text())
    if flower is not None:
        results["flower"] = flower
        rows.append(_row(f"Flower {flower.get('flwr_version', '')} (Ray)", flower))

    print(
        f"\nMNIST-5000, 2NN, FedAvg, 100 IID devices, 10/round, E=1, B=10, {args.rounds} rounds\n"
    )
    print(
        table(["", "first round s", "ms/round after", "process s", "peak MiB", "final acc"], rows)
    )
    print()
    ratios = [
        [
            "per-device loop / vectorised (per round)",
            f"{loop['mean_round_s'] / vec['mean_round_s']:.1f}x",
            "goal >= 2x",
        ],
    ]
    if flower is not None:
        ratios.append(
            [
                "Flower / vectorised (per round)",
                f"{flower['mean_round_s'] / vec['mean_round_s']:.1f}x",
                "goal >= 10x",
            ]
        )
        ratios.append(
            [
                "Flower / vectorised (whole process)",
                f"{flower['total_s'] / vec['process_s']:.1f}x",
                "",
            ]
        )
        ratios.append(
            [
                "Flower / vectorised (peak memory)",
                f"{flower['peak_rss_mib'] / vec['peak_rss_mib']:.1f}x",
                "",
            ]
        )
        ratios.append(
            [
                "accuracy difference (fedge - Flower)",
                f"{vec['final_accuracy'] - flower['final_accuracy']:+.4f}",
                "within noise",
            ]
        )
    ratios.append(
        ["fedge whole process (imports included)", f"{vec['process_s']:.2f} s", "goal < 5 s"]
    )
    ratios.append(["fedge peak memory", f"{vec['peak_rss_mib']:.0f} MiB", "goal < 500 MiB"])
    print(table(["ratio", "measured", "goal"], ratios))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
