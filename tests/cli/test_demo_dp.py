"""The default `fedge demo`, SecAgg+ and distributed DP on, learns the faults at the ε it reports.

Its noise comes from the devices' secure generators, so no two runs are alike. The thresholds
sit below the lowest of 232 replays (benchmarks/bench_demo_dp.py and the seeds the defaults were
chosen on): macro recall 0.54, accuracy 0.897; always answering "healthy" scores 0.2 and 0.895.
The previous defaults (C = 1, min_devices = 4, 5 local epochs) failed them in 22 of 32 replays.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .demo_run import run_demo


@pytest.mark.integration
@pytest.mark.slow
def test_default_dp_demo_learns_the_faults(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = run_demo("--workdir", str(workdir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stderr
    assert "commit with ≥ 6, secure aggregation (SecAgg+) on" in out
    assert "privacy      clip 0.5, noise multiplier 0.5:" in out
    assert "(distributed DP)" in out
    assert "job completed: 5 rounds committed" in out
    assert re.search(r"\(ε, δ\) = \(81\.1, 1e-05\)", out), out  # the same ε as before
    recall = re.search(r"recall +(.*) · macro ([0-9.]+) · accuracy ([0-9.]+)", out)
    baseline = re.search(r"always 'healthy': accuracy ([0-9.]+), macro recall ([0-9.]+)", out)
    assert recall is not None and baseline is not None, out
    assert float(baseline.group(2)) == pytest.approx(0.2)
    assert float(recall.group(2)) > 0.4  # macro recall: twice always answering "healthy"
    assert float(recall.group(3)) > 0.87  # accuracy (always "healthy": 0.895)
