"""How the simulator scales: per-round time and peak memory at 100, 1,000 and 10,000 devices/round.

Issue 2: "time grows about linearly, memory stays flat past the chunk size". MNIST-5000 has
only 4,000 training digits, so the fleet (``--fleet`` devices, 20,000 by default) is built as
devices that each draw ``--examples`` (20) digits from that shared pool with a seeded RNG, as a
CSR :class:`fedge.data.partition.Partition` passed to ``Simulation(config, partition=...)``.
Devices overlap, which does not matter for timing: the data in memory is the same 4,000 digits
at every size, so what grows is the simulator's own work. Each device trains FedAvg, E=1, B=10,
lr 0.1 (two local steps).

Every (model, devices-per-round, chunk size) point runs in a fresh process for a few rounds;
the first round is a warm-up and is reported apart. Peak memory is that process's maximum RSS;
"setup" is the maximum RSS once the simulation is built (interpreter, torch, data, model), so
``peak - setup`` is what the rounds themselves added. Rows:

* 2NN (199,210 params) and logistic regression (7,850 params) at 100 / 1,000 / 10,000
  devices per round, automatic chunk size, ``federated_eval = false`` (training only);
* the same 10,000-device 2NN point with a fixed small chunk (``--small-chunk``, 8): memory is
  bounded by the chunk, not by the number of devices;
* the 10,000-device 2NN point with the default ``federated_eval = true``, unless
  ``--skip-federated-eval``: evaluating on the participants' data gathers all of their
  examples at once, so that part of the round is *not* chunked (see the note printed below).

    python benchmarks/bench_scale.py                  # everything, ~6 minutes on 2 busy cores
    python benchmarks/bench_scale.py --quick          # 100 and 1,000 only, under a minute
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, run_worker, table

MODELS = {"mnist_2nn": "2NN", "mnist_logreg": "logistic regression"}
SIZES = (100, 1_000, 10_000)
POOL_SEED = 20170217  # the shared-pool sampling seed


NOTES = """
Notes. Time per device is flat or falling: a round also has fixed costs (selection, the server
step, centralised evaluation on 1,000 digits, a last partial chunk) that 100 devices do not
amortise, so ratios under the ideal are expected. The few tens of MiB that peak memory still
gains past the chunk size are glibc's allocator, not retained state: glibc raises its mmap
threshold after the first large frees, so later chunk-sized tensors come from the heap, which
keeps some slack; with MALLOC_MMAP_THRESHOLD_=131072 the 2NN peak was the same at 100 and 1,000
devices (426 MiB both) but rounds were ~2x slower. With federated_eval on (the default), the
round gathers every participant's examples into one tensor to evaluate them, which is O(devices
per round) memory (10,000 x 20 x 784 float32 = 598 MiB) and is not chunked."""


def rounds_for(task: str, devices_per_round: int) -> int:
    """Rounds per point (one warm-up included): more for the cheap points, so means are stable."""
    rounds = 21 if devices_per_round <= 100 else 6 if devices_per_round <= 1_000 else 4
    return rounds * 3 - 2 if task == "mnist_logreg" else rounds  # logreg is ~10x cheaper


def worker(args: argparse.Namespace) -> None:
    """Run one point here and print one JSON line of measurements."""
    import numpy as np

    from fedge.data.partition import Partition
    from fedge.simulation import Simulation, load_config
    from fedge.tasks import get_task

    pool = len(get_task(args.task).load_data()[0])
    rng = np.random.default_rng(POOL_SEED)
    indices = rng.integers(0, pool, size=args.fleet * args.examples, dtype=np.int64)
    offsets = np.arange(args.fleet + 1, dtype=np.int64) * args.examples
    partition = Partition(indices, offsets)
    chunk: int | str = "auto" if args.chunk == "auto" else int(args.chunk)
    config = load_config(
        None,
        {
            "task": args.task,
            "rounds": args.rounds,
            "seed": 42,
            "partition.devices": args.fleet,  # must match: the config validates devices/round
            "client.epochs": 1,
            "client.batch_size": 10,
            "client.lr": 0.1,
            "strategy.name": "fedavg",
            "simulation.devices_per_round": args.per_round,
            "simulation.chunk_size": chunk,
            "simulation.federated_eval": args.federated_eval,
        },
    )
    sim = Simulation(config, partition=partition)
    setup_mib = peak_rss_mib()
    start = time.perf_counter()
    history = sim.run()
    run_s = time.perf_counter() - start
    seconds = [r.seconds for r in history.records]
    print(
        json.dumps(
            {
                "task": args.task,
                "devices_per_round": args.per_round,
                "chunk_size": sim.chunk_size,
                "federated_eval": args.federated_eval,
                "num_params": sim.spec.size,
                "rounds": len(seconds),
                "first_round_s": seconds[0],
                "mean_round_s": statistics.mean(seconds[1:]),
                "median_round_s": statistics.median(seconds[1:]),
                "stdev_round_s": statistics.stdev(seconds[1:]) if len(seconds) > 2 else 0.0,
                "run_s": run_s,
                "setup_rss_mib": setup_mib,
                "peak_rss_mib": peak_rss_mib(),
                "participants": history.final.participants,
                "final_accuracy": history.final.accuracy,
                "torch_threads": __import__("torch").get_num_threads(),
            }
        )
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=int, default=20_000, help="devices in the federation")
    parser.add_argument("--examples", type=int, default=20, help="examples per device")
    parser.add_argument("--small-chunk", type=int, default=8, help="the fixed-chunk row")
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 devices only")
    parser.add_argument("--skip-federated-eval", action="store_true", help="skip that row")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="mnist_2nn", help=argparse.SUPPRESS)
    parser.add_argument("--per-round", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--federated-eval", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    sizes = SIZES[:2] if args.quick else SIZES
    if max(sizes) > args.fleet:
        parser.error(f"--fleet ({args.fleet}) must be at least {max(sizes)}")
    script = str(Path(__file__).resolve())
    big = max(sizes)

    def point(task: str, k: int, chunk: int | str = "auto", fed_eval: bool = False) -> dict:
        cmd = [script, "--worker", "--task", task, "--per-round", str(k), "--chunk", str(chunk)]
        cmd += ["--rounds", str(rounds_for(task, k)), "--fleet", str(args.fleet)]
        cmd += ["--examples", str(args.examples)]
        if fed_eval:
            cmd.append("--federated-eval")
        result = run_worker(cmd)
        result["load_after"] = _load()
        print(
            f"  {MODELS[task]:>19}  {k:>6} devices  chunk {result['chunk_size']:>3}"
            f"{'  +federated eval' if fed_eval else ''}: "
            f"{result['mean_round_s']:.3f} s/round, peak {result['peak_rss_mib']:.0f} MiB "
            f"(load {result['load_after']})",
            flush=True,
        )
        return result

    load_before = _load()
    print(f"load average before: {load_before} ({os.cpu_count()} CPUs)", flush=True)
    main_rows: dict[str, dict[int, dict[str, Any]]] = {
        task: {k: point(task, k) for k in sizes} for task in MODELS
    }
    extra: list[tuple[str, dict[str, Any]]] = [
        (f"2NN, fixed chunk {args.small_chunk}", point("mnist_2nn", big, args.small_chunk)),
    ]
    if not args.skip_federated_eval:
        extra.append(("2NN, federated_eval on (default)", point("mnist_2nn", big, fed_eval=True)))
    load_after = _load()

    def row(name: str, r: dict[str, Any]) -> list[str]:
        k = r["devices_per_round"]
        return [
            name,
            f"{k:,}",
            str(r["chunk_size"]),
            str(r["rounds"] - 1),
            f"{r['first_round_s']:.3f}",
            f"{r['mean_round_s']:.3f}",
            f"{r['median_round_s']:.3f}",
            f"{r['mean_round_s'] / k * 1e3:.3f}",
            f"{r['setup_rss_mib']:.0f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['peak_rss_mib'] - r['setup_rss_mib']:.0f}",
        ]

    rows = [row(MODELS[task], r) for task, by_size in main_rows.items() for r in by_size.values()]
    rows += [row(name, r) for name, r in extra]
    print(
        f"\nMNIST-5000 pool of 4,000 digits; fleet of {args.fleet:,} devices x {args.examples} "
        "examples (seeded draws); FedAvg, E=1, B=10, lr 0.1; federated_eval off unless stated;"
        " one fresh process per row\n"
    )
    headers = ["model", "devices/round", "chunk", "rounds timed", "warm-up s", "mean s/round"]
    headers += ["median s", "ms/device", "setup MiB", "peak MiB", "peak-setup MiB"]
    print(table(headers, rows))

    ratio_rows: list[list[str]] = []
    for task, by_size in main_rows.items():
        base = by_size[sizes[0]]
        for k in sizes[1:]:
            r = by_size[k]
            ideal = k / sizes[0]
            t_ratio = r["mean_round_s"] / base["mean_round_s"]
            ratio_rows.append(
                [
                    MODELS[task],
                    f"{k:,} vs {sizes[0]:,}",
                    f"{t_ratio:.1f}x",
                    f"{ideal:.0f}x",
                    f"{t_ratio / ideal:.2f}",
                    f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x",
                    f"{r['peak_rss_mib'] - base['peak_rss_mib']:+.0f}",
                ]
            )
        for lo, hi in itertools.pairwise(sizes[1:]):
            t_ratio = by_size[hi]["mean_round_s"] / by_size[lo]["mean_round_s"]
            ratio_rows.append(
                [
                    MODELS[task],
                    f"{hi:,} vs {lo:,}",
                    f"{t_ratio:.1f}x",
                    f"{hi / lo:.0f}x",
                    f"{t_ratio / (hi / lo):.2f}",
                    f"{by_size[hi]['peak_rss_mib'] / by_size[lo]['peak_rss_mib']:.2f}x",
                    f"{by_size[hi]['peak_rss_mib'] - by_size[lo]['peak_rss_mib']:+.0f}",
                ]
            )
    print()
    print(
        table(
            ["model", "devices/round", "time ratio", "ideal", "time/ideal", "peak ratio", "MiB"],
            ratio_rows,
        )
    )
    auto_big = main_rows["mnist_2nn"][big]
    print()
    for name, r in extra:
        print(
            f"{name} at {big:,} devices: {r['mean_round_s']:.2f} s/round "
            f"({r['mean_round_s'] / auto_big['mean_round_s']:.2f}x the auto-chunk time), "
            f"peak {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] - auto_big['peak_rss_mib']:+.0f}"
            f" MiB vs auto chunk {auto_big['chunk_size']})"
        )
    print(NOTES)
    print(
        f"\nload average before {load_before}, after {load_after}; "
        f"{os.cpu_count()} CPUs shared; torch threads per worker: "
        f"{auto_big['torch_threads']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "load_before": load_before,
            "load_after": load_after,
            "fleet": args.fleet,
            "examples_per_device": args.examples,
            "points": [r for by_size in main_rows.values() for r in by_size.values()],
            "extra": [dict(r, label=name) for name, r in extra],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
