"""End to end through the real sessions: exact sums, dropouts at every phase, abandonment."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedge.secagg import DROP_PHASES, SecAggConfig, run_secure_sum


def grid_vectors(n: int, length: int, levels: int = 100, seed: int = 0) -> np.ndarray:
    """Vectors on the quantisation grid of clip (0, levels) with step 1: quantised exactly."""
    return np.random.default_rng(seed).integers(0, levels + 1, (n, length)).astype(np.float32)


GRID = SecAggConfig(clip_range=(0.0, 100.0), levels=100, dropout_rate=0.1)


def _ids(n: int) -> list[str]:
    return [f"dev{i:03d}" for i in range(n)]


def _gateways(ids: list[str], sites: int) -> dict[str, str]:
    return {d: f"gw{i % sites}" for i, d in enumerate(ids)}


@pytest.mark.parametrize("sites", [1, 3])
def test_integer_sum_is_exact(sites):
    ids = _ids(9)
    x = grid_vectors(9, 50)
    r = run_secure_sum(x, ids, _gateways(ids, sites), GRID, rng=random.Random(0))
    assert not r.abandoned and r.survivors == tuple(ids)
    assert r.integer_total is not None and r.total is not None
    assert (r.integer_total == x.astype(np.int64).sum(0)).all()
    assert (r.total == x.astype(np.float64).sum(0)).all()
    assert r.refusals == ()


@pytest.mark.parametrize("bits", [20, 32, 64])
def test_mean_matches_plain_fedavg_within_quantisation_bound(bits):
    n, length = 8, 300
    ids = _ids(n)
    x = np.random.default_rng(1).uniform(-1, 1, (n, length)).astype(np.float32)
    cfg = SecAggConfig(clip_range=(-1.0, 1.0), bits=bits, dropout_rate=0.1)
    r = run_secure_sum(x, ids, _gateways(ids, 2), cfg, rng=random.Random(1))
    assert r.total is not None
    plain_mean = x.astype(np.float64).mean(0)
    assert np.abs(r.total / n - plain_mean).max() <= r.params.step


def test_sparse_secagg_plus_graph():
    n = 14
    ids = _ids(n)
    x = grid_vectors(n, 40, seed=2)
    cfg = SecAggConfig(
        clip_range=(0.0, 100.0), levels=100, neighbours=6, threshold=4,
        dropout_rate=0.0, corrupt_fraction=0.0,
    )  # fmt: skip
    drops = {"dev003": "share_keys", "dev007": "masked_input"}
    r = run_secure_sum(x, ids, _gateways(ids, 2), cfg, drop_after=drops, rng=random.Random(2))
    assert r.params.neighbours == 6 and not r.abandoned
    keep = [i for i, d in enumerate(ids) if d != "dev003"]
    assert (r.integer_total == x[keep].astype(np.int64).sum(0)).all()


@pytest.mark.parametrize("phase", DROP_PHASES)
def test_dropouts_after_each_phase_give_the_survivors_sum(phase):
    n = 10
    ids = _ids(n)
    x = grid_vectors(n, 30, seed=3)
    drops = {"dev001": phase, "dev005": phase}
    r = run_secure_sum(x, ids, _gateways(ids, 2), GRID, drop_after=drops, rng=random.Random(3))
    assert not r.abandoned, r.reason
    # a device that vanished after sending its masked input is still in the sum
    gone = set() if phase == "masked_input" else set(drops)
    assert set(r.survivors) == set(ids) - gone
    rows = [i for i, d in enumerate(ids) if d not in gone]
    assert (r.integer_total == x[rows].astype(np.int64).sum(0)).all()


def test_mixed_dropouts_across_phases():
    n = 12
    ids = _ids(n)
    x = grid_vectors(n, 30, seed=4)
    drops = dict(zip(ids[:4], DROP_PHASES, strict=True))
    r = run_secure_sum(x, ids, _gateways(ids, 3), GRID, drop_after=drops, rng=random.Random(4))
    rows = [i for i, d in enumerate(ids) if drops.get(d, "masked_input") == "masked_input"]
    assert (r.integer_total == x[rows].astype(np.int64).sum(0)).all()


@pytest.mark.parametrize("phase", DROP_PHASES)
def test_too_many_dropouts_abandon_the_round(phase):
    n = 8
    ids = _ids(n)
    x = grid_vectors(n, 10)
    drops = {d: phase for d in ids[:5]}  # t = 4 of k = 7: five gone is too many
    r = run_secure_sum(x, ids, _gateways(ids, 2), GRID, drop_after=drops, rng=random.Random(5))
    assert r.abandoned and r.total is None and r.integer_total is None
    assert "threshold" in r.reason


def test_bad_device_input_drops_only_that_device():
    n = 9
    ids = _ids(n)
    x = np.random.default_rng(6).uniform(-1, 1, (n, 20)).astype(np.float32)
    x[2, 3] = np.nan
    r = run_secure_sum(x, ids, _gateways(ids, 2), SecAggConfig(), rng=random.Random(6))
    assert not r.abandoned and ids[2] not in r.survivors
    assert any("NaN" in msg for msg in r.refusals)
    rows = [i for i in range(n) if i != 2]
    assert np.abs(r.total - x[rows].astype(np.float64).sum(0)).max() <= 8 * r.params.step


def test_bytes_and_timings_reported():
    ids = _ids(6)
    r = run_secure_sum(grid_vectors(6, 1000), ids, _gateways(ids, 2), GRID)
    plain = 4 * 1000
    assert all(plain < b < 3 * plain for b in r.bytes_sent_per_device.values())
    assert {"device_mean_s", "device_max_s", "relay_max_s", "coordinator_s"} <= set(r.timings)
    assert {"device_mean_wall_s", "coordinator_wall_s"} <= set(r.timings)
    assert set(r.bytes_sent_per_gateway) == {"gw0", "gw1"}


@pytest.mark.slow
def test_hundred_devices_thirty_percent_dropout():
    n = 100
    ids = _ids(n)
    x = grid_vectors(n, 2000, seed=7)
    rng = random.Random(7)
    drops = {d: rng.choice(DROP_PHASES) for d in rng.sample(ids, 30)}
    cfg = SecAggConfig(clip_range=(0.0, 100.0), levels=100, dropout_rate=0.3)
    r = run_secure_sum(x, ids, _gateways(ids, 5), cfg, drop_after=drops, rng=rng)
    assert not r.abandoned, r.reason
    rows = [i for i, d in enumerate(ids) if drops.get(d, "masked_input") == "masked_input"]
    assert (r.integer_total == x[rows].astype(np.int64).sum(0)).all()
