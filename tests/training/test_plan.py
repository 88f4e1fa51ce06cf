"""Batch schedules and the client optimizer settings."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.errors import ConfigError
from fedge.training import LocalTrainingConfig, batch_schedule, device_rng


@pytest.mark.parametrize(("n", "b", "e"), [(40, 10, 1), (37, 10, 3), (5, 10, 2), (12, None, 1)])
def test_each_epoch_visits_every_example_once(n: int, b: int | None, e: int) -> None:
    sched = batch_schedule(n, b, e, np.random.default_rng(0))
    width = n if b is None else min(b, n)
    assert sched.shape == (e * -(-n // width), width)
    per_epoch = np.split(sched, e)
    for epoch in per_epoch:
        seen = epoch[epoch >= 0]
        assert sorted(seen.tolist()) == list(range(n))


def test_schedule_is_deterministic_per_device_and_round() -> None:
    a = batch_schedule(30, 10, 1, device_rng(1, 2, 3))
    b = batch_schedule(30, 10, 1, device_rng(1, 2, 3))
    c = batch_schedule(30, 10, 1, device_rng(1, 2, 4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_settings_refused() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        LocalTrainingConfig(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        LocalTrainingConfig(lr=-1)
    with pytest.raises(ConfigError, match="momentum"):
        LocalTrainingConfig(momentum=1.0)
    with pytest.raises(ConfigError, match="at least one example"):
        batch_schedule(0, 10, 1, np.random.default_rng(0))


def test_plan_from_strategy() -> None:
    cfg = LocalTrainingConfig(epochs=5, batch_size=10, momentum=0.9)
    fedsgd = cfg.with_plan(proximal_mu=0.0, single_full_batch_step=True)
    assert (fedsgd.epochs, fedsgd.batch_size, fedsgd.momentum) == (1, None, 0.0)
    assert cfg.with_plan(proximal_mu=0.1, single_full_batch_step=False).proximal_mu == 0.1
