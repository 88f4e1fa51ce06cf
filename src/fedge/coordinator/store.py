"""The coordinator's database: one :class:`Store` over any SQLAlchemy URL.

``Store("sqlite:///coordinator.db")`` by default; ``Store("postgresql+psycopg://…")`` in larger
deployments — the same contract tests run against both. Every method is one transaction; rows
come back detached (``expire_on_commit=False``), to be read, not modified. A duplicate partial
or update is detected by the database's unique constraints, so exactly-once holds even when two
requests race. SQLAlchemy errors are mapped to :class:`~fedge.errors.ConfigError` (cannot
connect) at construction; :class:`~fedge.errors.ProtocolError` marks a conflicting insert.

The tables' queries live in one mixin each, over one :class:`~.store_base.StoreBase` (engine,
schema, migrations, transactions): :class:`~.store_rounds.RoundStore` (jobs, rounds and the
contributions counted in them), :class:`~.store_fleet.FleetStore` (gateways and devices) and
:class:`~.store_registry.RegistryStore` (model versions, releases, checkpoints, commits).
"""

from __future__ import annotations

from fedge.coordinator.store_fleet import FleetStore
from fedge.coordinator.store_registry import RegistryStore
from fedge.coordinator.store_rounds import RoundStore

__all__ = ["Store"]


class Store(RoundStore, FleetStore, RegistryStore):
    """Jobs, rounds, participants, gateways, devices, model versions, checkpoints, receipts."""
