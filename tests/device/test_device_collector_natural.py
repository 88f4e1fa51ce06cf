"""A demo device plays back real machines' data (natural partition of a use case)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.device.collector import device_share
from fedge.errors import DataError
from fedge.tasks import get_task


def test_natural_share_is_exactly_one_machine() -> None:
    train, _ = get_task("maintenance").load_data()
    assert train.keys is not None
    machines = np.unique(train.keys)
    x, y = device_share("maintenance", len(machines), 3, partitioner="natural")
    rows = np.flatnonzero(train.keys == machines[3])
    np.testing.assert_array_equal(x, train.x[rows])
    np.testing.assert_array_equal(y, train.y[rows])
    with pytest.raises(DataError, match="only"):
        device_share("maintenance", 10_000, 9_999, partitioner="natural")
    with pytest.raises(DataError, match="only"):
        device_share("maintenance", len(machines) + 1, 0, partitioner="natural")
    with pytest.raises(DataError, match="no device keys"):
        device_share("digits_mlp", 8, 0, partitioner="natural")


def test_fewer_devices_than_machines_deal_the_machines_round_robin() -> None:
    """8 demo devices over 72 machines: device 3 plays back machines 3, 11, 19, … in turn, and
    together the devices hold every training window exactly once."""
    train, _ = get_task("maintenance").load_data()
    assert train.keys is not None
    machines = np.unique(train.keys)
    x, y = device_share("maintenance", 8, 3, partitioner="natural")
    rows = np.concatenate([np.flatnonzero(train.keys == m) for m in machines[3::8]])
    np.testing.assert_array_equal(x, train.x[rows])
    np.testing.assert_array_equal(y, train.y[rows])
    sizes = [len(device_share("maintenance", 8, i, partitioner="natural")[1]) for i in range(8)]
    assert sum(sizes) == len(train.y)
