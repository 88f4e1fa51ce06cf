"""Data for federated experiments: partitioners that split a data set over virtual devices."""

from __future__ import annotations

from fedge.data.partition import PARTITIONERS, Partition, PartitionFn, make_partition

__all__ = ["PARTITIONERS", "Partition", "PartitionFn", "make_partition"]
