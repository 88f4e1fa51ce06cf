"""Run every benchmark in turn (``make bench``), each in its own process, and say how each went.

Each benchmark prints its own table (with ratios against a baseline it measures in the same
run); this script only sequences them and prints a summary: seconds taken, exit status, the
1-minute load average before each one (the machine may be shared, and timings move with its
load). A ``--full`` run writes its results to ``benchmarks/results/`` (the README's figures); a
quick run writes them to a scratch directory it names (``FEDGE_BENCH_RESULTS``), so it never
overwrites those figures.

    .venv/bin/python benchmarks/run_all.py             # quick settings where a benchmark has them
    .venv/bin/python benchmarks/run_all.py --full      # the settings the README's figures use
    .venv/bin/python benchmarks/run_all.py --only predictor usecases
    .venv/bin/python benchmarks/run_all.py --list

Flower (``bench_simulator.py``) needs its own venv (``benchmarks/flower_baseline.py`` says how);
without it the simulator benchmark runs with ``--skip-flower``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOWER_VENV = HERE / ".venv-flower"


@dataclass(frozen=True)
class Bench:
    """One benchmark script and the arguments of its quick and full runs."""

    name: str
    quick: tuple[str, ...] = ()
    full: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return HERE / f"bench_{self.name}.py"


BENCHES = (
    Bench("simulator", quick=("--rounds", "5", "--repeats", "1")),
    Bench("scale", quick=("--quick",)),
    Bench("paper_table", quick=("--quick",)),
    Bench("secagg", quick=("--quick", "--skip-simulator")),
    Bench("privacy", quick=("--skip-utility",)),
    Bench("usecases", quick=("maintenance",)),
    Bench("demo_dp", quick=("--seeds", "4")),
    Bench("predictor", quick=("--quick",)),
    Bench("pki", quick=("--n", "200")),
    Bench("network_load", quick=("--devices", "200")),
    Bench("audit", quick=("--quick",)),
    Bench("metrics", quick=("--requests", "500")),
    Bench("tracing", quick=("--requests", "500")),
)


def _argv(bench: Bench, full: bool) -> list[str]:
    args = list(bench.full if full else bench.quick)
    if bench.name == "simulator" and not FLOWER_VENV.exists():
        args.append("--skip-flower")
    return [sys.executable, str(bench.script), *args]


def main() -> int:
    """Run the chosen benchmarks; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the README's settings (slow)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    names = [b.name for b in BENCHES]
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(names)}")
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    env = dict(os.environ)
    if not args.full:
        env["FEDGE_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="fedge-bench-")
        print(f"quick run: results go to {env['FEDGE_BENCH_RESULTS']}, not benchmarks/results")
    summary: list[tuple[str, float, int, float]] = []
    for bench in chosen:
        load = os.getloadavg()[0]
        print(f"\n=== {bench.script.name} (load {load:.1f}) ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call(_argv(bench, args.full), cwd=HERE.parent, env=env)
        summary.append((bench.name, time.perf_counter() - start, rc, load))
    print(f"\n{'benchmark':<14} {'seconds':>8} {'load':>5}  result")
    for name, seconds, rc, load in summary:
        print(f"{name:<14} {seconds:>8.1f} {load:>5.1f}  {'ok' if rc == 0 else f'exit {rc}'}")
    return 0 if all(rc == 0 for _, _, rc, _ in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
