"""Role processes import only their own command: a gateway does not load torch."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from fedge.cli.main import cli

_PROBE = """
import sys
from click.testing import CliRunner
from fedge.cli.main import cli
result = CliRunner().invoke(cli, [{command!r}, "--help"])
assert result.exit_code == 0, result.output
print(sorted(m for m in ("torch", "fedge.simulation") if m in sys.modules))
"""


def _loaded_by(command: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(command=command)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return out.stdout.strip()


def test_the_gateway_command_does_not_import_torch() -> None:
    assert _loaded_by("gateway") == "[]"


def test_the_simulator_still_gets_what_it_needs() -> None:
    assert "torch" in _loaded_by("simulate")


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("simulate", "demo", "pki", "coordinator", "jobs", "gateway", "device", "report"):
        assert f"  {name} " in result.output


def test_an_unknown_command_is_refused() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output
