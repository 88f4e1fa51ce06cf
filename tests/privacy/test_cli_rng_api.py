"""`fedge privacy` commands, secure vs seeded generators, and the public API."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import fedge.privacy
from fedge.privacy.accountant import PrivacyAccountant
from fedge.privacy.cli import privacy_group
from fedge.privacy.rng import (
    InsecureRandomnessWarning,
    SeededForSimulation,
    is_secure,
    secure_generator,
    simulation_generator,
)


def test_epsilon_command_json() -> None:
    args = ["epsilon", "--noise-multiplier", "4", "--sampling-rate", "0.01", "--rounds", "10000"]
    result = CliRunner().invoke(privacy_group, [*args, "--delta", "1e-5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["epsilon"] == pytest.approx(PrivacyAccountant(4, 0.01, 1e-5).epsilon_after(10_000))
    pld = CliRunner().invoke(privacy_group, [*args, "--delta", "1e-5", "--accountant", "pld"])
    assert pld.exit_code == 0 and pld.output.startswith("ε = ")


def test_calibrate_command_round_trips() -> None:
    args = ["calibrate", "--target-epsilon", "2", "--rounds", "100"]
    args += ["--devices-per-round", "50", "--fleet-size", "1000", "--json"]
    result = CliRunner().invoke(privacy_group, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["epsilon"] <= 2.0 and out["delta"] == pytest.approx(1000**-1.1)
    back = CliRunner().invoke(
        privacy_group,
        ["epsilon", "--noise-multiplier", str(out["noise_multiplier"]), "--sampling-rate", "0.05",
         "--rounds", "100", "--delta", str(out["delta"]), "--json"],
    )  # fmt: skip
    assert json.loads(back.output)["epsilon"] == pytest.approx(out["epsilon"])


def test_cli_refuses_bad_input_with_usage_error() -> None:
    result = CliRunner().invoke(
        privacy_group,
        ["epsilon", "--noise-multiplier", "1", "--sampling-rate", "0.1", "--rounds", "3",
         "--delta", "1.5"],
    )  # fmt: skip
    assert result.exit_code == 2 and "delta must be in (0, 1)" in result.output
    result = CliRunner().invoke(
        privacy_group,
        ["calibrate", "--target-epsilon", "0.01", "--delta", "1e-9", "--rounds", "10000",
         "--devices-per-round", "1000", "--fleet-size", "1000"],
    )  # fmt: skip
    assert result.exit_code == 2 and "Change one of" in result.output


@pytest.mark.parametrize("command", [[], ["calibrate"], ["epsilon"]])
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(privacy_group, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_secure_generators_are_fresh_and_seeded_ones_are_marked() -> None:
    a, b = secure_generator(), secure_generator()
    assert is_secure(a) and not np.array_equal(a.random(4), b.random(4))
    with pytest.warns(InsecureRandomnessWarning, match="NOT secure"):
        s = simulation_generator(7)
    assert isinstance(s, np.random.Generator) and not is_secure(s) and s.seed == 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = simulation_generator(7)
    np.testing.assert_array_equal(s.normal(size=3), again.normal(size=3))
    assert not is_secure(SeededForSimulation(1))


def test_public_api() -> None:
    assert sorted(fedge.privacy.__all__) == fedge.privacy.__all__
    for name in fedge.privacy.__all__:
        assert hasattr(fedge.privacy, name), name
