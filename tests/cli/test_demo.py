"""`fedge demo` runs a whole federation as processes and leaves none behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .demo_run import fedge_processes, run_demo


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_a_networked_job_and_cleans_up(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = run_demo(
        "--rounds", "2", "--devices-per-site", "2", "--task", "digits_mlp",
        "--workdir", str(workdir), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job completed: 2 rounds committed" in proc.stderr
    assert "secure aggregation (SecAgg+) on" in proc.stderr  # the default; --no-secagg: off
    assert "(distributed DP)" in proc.stderr  # DP is on by default too; --no-dp: off
    assert re.search(r"\(ε,\s+δ\)\s+=\s+\([\d.e+]+,\s+1e-05\)", proc.stderr)  # the summary's ε
    coordinator = (workdir / "logs" / "coordinator.log").read_text()
    assert coordinator.count("secure phase unmask closed") == 2
    assert "answered by model version demo/r" in proc.stderr  # a device's local endpoint
    assert "now answers with demo/r" in proc.stderr  # the rollback reached the device
    assert "all processes stopped" in proc.stderr
    # the dashboard's login link, carrying the ops token the coordinator created in the workdir
    link = re.search(
        r"^dashboard +https://127\.0\.0\.1:\d+/login\?token=(\S+)&next=/dashboard/$",
        proc.stderr,
        re.M,
    )
    assert link is not None, proc.stderr
    assert link.group(1) == (workdir / "ops.token").read_text().strip()
    assert (workdir / "pki" / "ca.crt").exists()
    logs = {p.name for p in (workdir / "logs").iterdir()}
    assert {"coordinator.log", "gw-site-a.log", "gw-site-b.log", "dev-site-a-0.log"} <= logs
    assert fedge_processes(workdir) == []
