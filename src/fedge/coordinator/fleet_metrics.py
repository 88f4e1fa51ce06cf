"""The coordinator's gauges, read from its database each time Prometheus scrapes ``/metrics``.

What the database already knows is not counted twice in memory: participants of each job's last
finished round, ε spent, model versions by registry status, model versions refused by devices
and gateways (``fedge_model_refusals``: by job, ``reason`` -- the check that failed: release,
load, smoke, accuracy -- and ``tier``), and devices online and eligible
(as the gateways last reported them, plus devices that talk to the coordinator directly). Each
read is one grouped query on the same engine as the :class:`~fedge.coordinator.store.Store`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from sqlalchemy import and_, func, select
from sqlalchemy.orm import sessionmaker

from fedge.coordinator.schema import DeviceRow, GatewayRow, ModelVersionRow, RoundRow
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store
from fedge.telemetry.metrics import Metrics

__all__ = ["FleetGauges", "observe_coordinator"]

Reading = Iterator[tuple[float, dict[str, str]]]


class FleetGauges:
    """Grouped reads of the coordinator's database, one method per gauge."""

    def __init__(
        self,
        store: Store,
        settings: CoordinatorSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessionmaker(store.engine, expire_on_commit=False)
        self._settings, self._clock = settings, clock
        self._store = store

    def _last(self, *states: str) -> list[tuple[str, int, float | None]]:
        """(job, participants, ε) of each job's last round in one of ``states``."""
        last = (
            select(RoundRow.job_id, func.max(RoundRow.number).label("number"))
            .where(RoundRow.state.in_(states))
            .group_by(RoundRow.job_id)
            .subquery()
        )
        q = select(RoundRow.job_id, RoundRow.participants, RoundRow.epsilon).join(
            last, and_(RoundRow.job_id == last.c.job_id, RoundRow.number == last.c.number)
        )
        with self._sessions() as s:
            return [(job, int(n), eps) for job, n, eps in s.execute(q)]

    def participants(self) -> Reading:
        """Devices whose updates made up each job's last finished round."""
        for job, participants, _ in self._last("committed", "abandoned"):
            yield float(participants), {"job": job}

    def epsilon(self) -> Reading:
        """ε spent by each job with differential privacy (after its last committed round)."""
        for job, _, epsilon in self._last("committed"):
            if epsilon is not None:
                yield float(epsilon), {"job": job}

    def model_versions(self) -> Reading:
        """Model versions per job and registry status."""
        q = select(ModelVersionRow.job_id, ModelVersionRow.status, func.count()).group_by(
            ModelVersionRow.job_id, ModelVersionRow.status
        )
        with self._sessions() as s:
            for job, status, count in s.execute(q):
                yield float(count), {"job": job, "status": status}

    def refusals(self) -> Reading:
        """Model versions refused by devices or gateways, per job, reason (the check that
        failed) and tier of the refuser."""
        for job, check, tier, versions in self._store.refusal_counts():
            yield float(versions), {"job": job, "reason": check, "tier": tier}

    def _devices(self, column: str) -> Reading:
        now = self._clock()
        by_site: dict[str, int] = {}
        gateways = select(GatewayRow.site, func.sum(getattr(GatewayRow, column))).where(
            GatewayRow.last_seen >= now - self._settings.gateway_ttl_s
        )
        direct = select(DeviceRow.site, func.count()).where(
            DeviceRow.gateway_id.is_(None),
            DeviceRow.revoked.is_(False),
            DeviceRow.last_seen >= now - self._settings.device_ttl_s,
        )
        with self._sessions() as s:
            for q in (gateways.group_by(GatewayRow.site), direct.group_by(DeviceRow.site)):
                for site, count in s.execute(q):
                    key = site or "direct"
                    by_site[key] = by_site.get(key, 0) + int(count or 0)
        for site, count in sorted(by_site.items()):
            yield float(count), {"site": site}

    def online(self) -> Reading:
        """Devices online per site (gateways' last reports within their TTL; direct devices)."""
        return self._devices("online_devices")

    def eligible(self) -> Reading:
        """Devices eligible to train per site (a direct device checks in only when eligible)."""
        return self._devices("eligible_devices")


def observe_coordinator(metrics: Metrics, store: Store, settings: CoordinatorSettings) -> None:
    """Register the coordinator's database-read gauges with ``metrics``."""
    gauges = FleetGauges(store, settings)
    metrics.observe(
        "fedge.round.participants",
        "{device}",
        "Devices whose updates made up the job's last finished round",
        gauges.participants,
    )
    metrics.observe(
        "fedge.privacy.epsilon",
        "",
        "Privacy budget spent by the job: epsilon after its last committed round",
        gauges.epsilon,
    )
    metrics.observe(
        "fedge.model.versions",
        "{version}",
        "Model versions by registry status",
        gauges.model_versions,
    )
    metrics.observe(
        "fedge.model.refusals",
        "{version}",
        "Model versions refused by devices or gateways, by job, reason and tier",
        gauges.refusals,
    )
    metrics.observe("fedge.devices.online", "{device}", "Devices online, by site", gauges.online)
    metrics.observe(
        "fedge.devices.eligible", "{device}", "Devices eligible to train, by site", gauges.eligible
    )
