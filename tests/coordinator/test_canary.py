"""The canary rules without I/O: which gateways go first, the verdicts, and the [canary] section."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.coordinator.canary import CanaryPolicy, judge, pick_canaries
from fedge.coordinator.config import load_coordinator_config
from fedge.errors import ConfigError

GATEWAYS = [f"gw-{i}" for i in range(10)]


def test_canaries_are_a_stable_share_of_at_least_one_gateway() -> None:
    picked = pick_canaries(GATEWAYS, 0.25, "sha-1")
    assert len(picked) == 3 and set(picked) <= set(GATEWAYS)  # ceil(2.5)
    assert pick_canaries(reversed(GATEWAYS), 0.25, "sha-1") == picked  # order does not matter
    assert pick_canaries(GATEWAYS, 0.01, "sha-1") != []  # at least one
    assert pick_canaries(GATEWAYS, 1.0, "sha-1") == GATEWAYS
    assert pick_canaries([], 0.5, "sha-1") == []
    others = {tuple(pick_canaries(GATEWAYS, 0.25, f"sha-{i}")) for i in range(20)}
    assert len(others) > 1  # successive releases land on different gateways


def test_verdicts_halt_on_failures_widen_on_health_and_halt_when_the_hold_time_ends() -> None:
    policy = CanaryPolicy(fraction=0.5, min_healthy=2, max_failures=1, hold_s=60.0)
    assert judge(policy, 1, 1, started_at=0.0, now=10.0).action == "wait"
    assert judge(policy, 2, 1, started_at=0.0, now=10.0).action == "widen"
    assert judge(policy, 5, 2, started_at=0.0, now=10.0).action == "halt"  # failures first
    late = judge(policy, 1, 0, started_at=0.0, now=60.0)
    assert late.action == "halt" and "hold time" in late.reason


def test_the_canary_section_of_coordinator_toml(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text("[canary]\nfraction = 0.5\nmin_healthy = 3\nhold_s = 30\n")
    policy = load_coordinator_config(path).settings().canary
    assert policy == CanaryPolicy(fraction=0.5, min_healthy=3, max_failures=0, hold_s=30.0)
    assert load_coordinator_config(None).settings().canary is None  # absent: no staged rollout
    for bad, match in (
        ("fraction = 0", "fraction must be in"),
        ("min_healthy = 0", "min_healthy must be at least 1"),
        ("max_failures = -1", "max_failures must be >= 0"),
        ("hold_s = 0", "hold_s must be positive"),
        ("fractoin = 0.5", "fractoin"),
    ):
        path.write_text(f"[canary]\n{bad}\n")
        with pytest.raises(ConfigError, match=match):
            load_coordinator_config(path)
