"""Running ``fedge demo`` as a real process in the demo tests, and finding what it left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_demo(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m fedge demo ARGV`` to the end; its lines are 200 columns wide (no wrapping)."""
    return subprocess.run(
        [sys.executable, "-m", "fedge", "demo", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def fedge_processes(workdir: Path) -> list[str]:
    """The command lines of every fedge process started with a config under ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmd and "fedge" in cmd:
            found.append(cmd)
    return found
