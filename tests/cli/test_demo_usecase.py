"""`fedge demo` defaults to predictive maintenance and shows that the rare faults are caught."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.cli.demo import demo_command


def test_task_and_usecase_together_are_refused() -> None:
    result = CliRunner().invoke(demo_command, ["--task", "digits_mlp", "--usecase", "mobility"])
    assert result.exit_code == 2
    assert "--task or --usecase, not both" in result.output


@pytest.mark.integration
@pytest.mark.slow
def test_default_demo_learns_the_rare_faults(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    # without DP noise (on by default; its cost is measured apart): the data and the loss are
    # under test here
    argv = ["demo", "--rounds", "3", "--no-dp", "--workdir", str(workdir)]
    proc = subprocess.run(
        [sys.executable, "-m", "fedge", *argv],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stderr
    assert "its own share of maintenance" in out
    assert "job completed: 3 rounds committed" in out
    recall = re.search(r"recall +(.*) · macro ([0-9.]+) · accuracy ([0-9.]+)", out)
    baseline = re.search(r"always 'healthy': accuracy ([0-9.]+), macro recall ([0-9.]+)", out)
    assert recall is not None and baseline is not None, out
    assert float(baseline.group(2)) == pytest.approx(0.2)  # 5 classes, one of them caught
    # the federation catches faults: far above the baseline's macro recall and its accuracy
    assert float(recall.group(2)) > 0.6
    assert float(recall.group(3)) > float(baseline.group(1))
    assert "inner_race" in recall.group(1)
