"""The cloud coordinator: jobs, rounds, selection, streaming aggregation, model registry.

- :mod:`.service`   :class:`CoordinatorService` — uplink (gateways), device and admin services
- :mod:`.driver`    deadline-driven round transitions, commit/abandon, restart recovery
- :mod:`.rounds`    the round state machine (sans I/O)
- :mod:`.selection` quotas over gateways (largest remainder), label selectors
- :mod:`.payloads`  checks on uploaded partial sums and updates
- :mod:`.jobs`      a job's task, strategy, server state, privacy and checkpoints
- :mod:`.store`     SQLAlchemy store (SQLite file or PostgreSQL); :mod:`.schema` its tables
- :mod:`.artifacts` content-addressed model artifacts on disk
- :mod:`.config`, :mod:`.app`, :mod:`.cli`  the ``fedge coordinator`` process and admin commands
"""

from __future__ import annotations

from fedge.coordinator.artifacts import ArtifactStore
from fedge.coordinator.rounds import Round, RoundState
from fedge.coordinator.selection import DIRECT, plan_quotas
from fedge.coordinator.service import CoordinatorService
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store

__all__ = [
    "DIRECT",
    "ArtifactStore",
    "CoordinatorService",
    "CoordinatorSettings",
    "Round",
    "RoundState",
    "Store",
    "plan_quotas",
]
