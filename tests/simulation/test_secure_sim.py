"""Secure aggregation in the simulator: the real SecAgg+ protocol sums every round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedge.errors import ConfigError
from fedge.simulation import Simulation, load_config
from fedge.simulation.secure import SecureRoundAggregator

FAST: dict[str, Any] = {
    "task": "digits_mlp",
    "rounds": 1,
    "partition.devices": 20,
    "simulation.devices_per_round": 8,
    "client.lr": 0.2,
}
SECURE = {**FAST, "secure_aggregation.enabled": True, "secure_aggregation.gateways": 3}


def test_secure_round_equals_plain_fedavg() -> None:
    plain = Simulation(load_config(None, FAST))
    secure = Simulation(load_config(None, SECURE))
    plain.run_round(1)
    record = secure.run_round(1)
    assert record.participants == 8 and record.extra["survivors"] == 8
    for name, value in plain.state.params.items():
        # quantisation step: 2·reach / levels per device, far below 1e-6 here
        np.testing.assert_allclose(secure.state.params[name], value, atol=1e-6)


@pytest.mark.parametrize("phase", ["advertise_keys", "share_keys", "masked_input"])
def test_dropouts_sum_exactly_the_survivors(phase: str) -> None:
    sim = Simulation(
        load_config(
            None,
            {
                **SECURE,
                "secure_aggregation.dropout_rate": 0.3,
                "secure_aggregation.dropout_phase": phase,
            },
        )
    )
    devices = sim.select(1)
    updates = sim._train(1, devices)
    acc = updates.accumulator
    assert isinstance(acc, SecureRoundAggregator)
    rows = {d: r for d, r in zip(acc._ids, acc._rows, strict=True)}
    aggregate = acc.result()
    dropped = {d for d, _ in acc.rejected}
    assert acc.stats["dropped"] >= len(dropped)
    survivors = [d for d in rows if d not in dropped]
    assert aggregate.num_accepted == len(survivors)
    expected = np.sum([rows[d] for d in survivors], axis=0)
    mean = sim.spec.flatten(aggregate.mean_delta)
    np.testing.assert_allclose(mean, expected[:-1] / expected[-1], atol=1e-6)
    assert aggregate.total_weight == pytest.approx(expected[-1], rel=1e-6)


def test_too_many_dropouts_abandon_the_round_and_keep_the_model() -> None:
    sim = Simulation(
        load_config(
            None,
            {
                **SECURE,
                "secure_aggregation.dropout_rate": 0.49,
                "secure_aggregation.dropout_phase": "share_keys",
                "secure_aggregation.neighbours": 7,
                "secure_aggregation.threshold": 7,
            },
        )
    )
    before = {k: v.copy() for k, v in sim.state.params.items()}
    record = sim.run_round(1)
    assert record.rejected > 0
    for name, value in before.items():
        np.testing.assert_array_equal(sim.state.params[name], value)


def test_secure_aggregation_with_central_dp_is_refused() -> None:
    with pytest.raises(ConfigError, match="distributed"):
        load_config(
            None,
            {
                **SECURE,
                "privacy.mode": "central",
                "privacy.clip_norm": 1.0,
                "privacy.noise_multiplier": 1.0,
            },
        )
