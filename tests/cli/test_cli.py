"""The ``fedge`` command line: help everywhere, simulate, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fedge.cli import cli

FAST = ["--task", "digits_mlp", "--rounds", "2", "--devices", "20", "--devices-per-round", "5"]


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, lazily loaded ones (fedge.cli.lazy.LazyGroup) included: each is
    looked up as ``fedge NAME`` would, so a lazy command that fails to import is caught here."""
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"`fedge {' '.join((*prefix, name))}` cannot be loaded"
        if isinstance(cmd, click.Group):
            out.extend(_all_commands(cmd, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


def test_every_lazy_command_is_reached() -> None:
    paths = {" ".join(p) for p in _all_commands(cli)}
    for name in ("models", "pki", "jobs", "audit", "privacy", "device", "gateway", "demo"):
        assert name in paths
    for sub in ("list", "show", "promote", "reject", "rollback", "diff", "export"):
        assert f"models {sub}" in paths


@pytest.mark.parametrize("path", _all_commands(cli), ids=lambda p: " ".join(p) or "fedge")
def test_help_on_every_command(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_simulate_writes_history_and_prints_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["simulate", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "final accuracy" in result.output
    rows = json.loads((out / "history.json").read_text())
    assert len(rows) == 2
    assert (out / "history.png").exists() and (out / "history.csv").exists()


def test_simulate_json_output_and_set_overrides() -> None:
    result = CliRunner().invoke(
        cli, ["simulate", *FAST, "--quiet", "--json", "--set", "strategy.name=fedavgm"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["round"] for r in rows] == [1, 2]


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "digits_mlp"\nrounds = 5\n[partition]\ndevices = 20\n')
    result = CliRunner().invoke(cli, ["simulate", str(cfg), "--rounds", "1", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 1


def test_listing_commands() -> None:
    runner = CliRunner()
    assert "mnist_2nn" in runner.invoke(cli, ["tasks"]).output
    assert "fedadam" in runner.invoke(cli, ["strategies"]).output
    assert "dirichlet" in runner.invoke(cli, ["partitioners"]).output


def _fedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedge", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.integration
def test_python_dash_m_and_clear_errors() -> None:
    assert "simulate" in _fedge("--help").stdout
    bad = _fedge("simulate", *FAST, "--strategy", "fedavgg")
    assert bad.returncode == 2
    assert "unknown strategy 'fedavgg'" in bad.stderr and "Did you mean 'fedavg'" in bad.stderr
    assert "Traceback" not in bad.stderr
    impossible = _fedge(
        "simulate", *FAST, "--set", "partition.name=dirichlet", "--set", "partition.alpha=0"
    )
    assert impossible.returncode == 2 and "alpha" in impossible.stderr
