"""The cloud coordinator: jobs, rounds, selection, streaming aggregation, model registry.

- :mod:`.service`   :class:`CoordinatorService` — uplink (gateways) and device services
- :mod:`.admin_service`  the admin API (jobs, devices, model registry); :mod:`.admin`,
  :mod:`.models` its operations and views
- :mod:`.secure_uplink`  secure aggregation's gateway routes; :mod:`.secure` the round's SecAgg+
  session, :mod:`.secure_setup` its settings and the coordinator's PKI
- :mod:`.driver`    deadline-driven round transitions, commit/abandon, restart recovery;
  :mod:`.live` a round in flight, :mod:`.publish` committing one, :mod:`.handouts` who gets work
- :mod:`.rounds`    the round state machine (sans I/O)
- :mod:`.selection` quotas over gateways (largest remainder), label selectors
- :mod:`.payloads`  checks on uploaded partial sums and updates; :mod:`.contributors` their sites
- :mod:`.jobs`      a job's task, strategy, server state, privacy and checkpoints
- :mod:`.store`     SQLAlchemy store (SQLite file or PostgreSQL): :mod:`.store_rounds`,
  :mod:`.store_fleet`, :mod:`.store_registry` over :mod:`.store_base`; :mod:`.schema` its tables
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
