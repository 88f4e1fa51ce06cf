"""Shared helpers for benchmarks: run a worker in a fresh process and collect its JSON."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# where benchmarks write their results: benchmarks/results (the README's figures), unless
# FEDGE_BENCH_RESULTS names another directory (run_all.py's quick runs write to a scratch one)
RESULTS = Path(os.environ.get("FEDGE_BENCH_RESULTS") or ROOT / "benchmarks" / "results")


def run_worker(module_args: list[str], *, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python <args>`` in a fresh process; return its last-line JSON plus wall time.

    ``process_s`` is the whole process (interpreter start, imports, work, exit) measured here.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *module_args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module_args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = elapsed
    return result


def peak_rss_mib() -> float:
    """Peak resident memory of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])
