"""The dashboard's data: what the coordinator's database says about the fleet and the jobs.

Read-only views built from the :class:`~fedge.coordinator.store.Store` and the per-round records
of :class:`~fedge.coordinator.roundstats.RoundStats`, as pydantic models the JSON endpoints of
:mod:`fedge.dashboard.router` return. "Online" means seen within the coordinator's time-to-live
(``gateway_ttl_s`` for gateways, ``device_ttl_s`` for devices); a site's online and eligible
device counts are what its gateway reported at its last check-in.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from fedge.coordinator import admin, models
from fedge.coordinator.roundstats import RoundStats
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store
from fedge.transport.messages import ModelVersionView

__all__ = [
    "MAX_DEVICES",
    "MAX_VERSIONS",
    "DeviceInfo",
    "FleetView",
    "GatewayInfo",
    "JobDetail",
    "JobSummary",
    "PrivacyInfo",
    "RoundInfo",
    "SecAggInfo",
    "SiteInfo",
    "fleet_view",
    "job_detail",
    "job_summaries",
]


class GatewayInfo(BaseModel):
    """A gateway as of its last check-in."""

    id: str
    site: str
    online: bool
    online_devices: int
    eligible_devices: int
    last_seen: float


class DeviceInfo(BaseModel):
    """A device the coordinator has heard of (checked in directly, or counted in a round)."""

    id: str
    site: str | None
    gateway: str | None
    online: bool
    revoked: bool
    last_seen: float | None
    rounds_participated: int


class SiteInfo(BaseModel):
    """A site: its gateways and the devices they report online and eligible."""

    site: str
    gateways: list[str]
    gateways_online: int
    known_devices: int
    online_devices: int
    eligible_devices: int


class FleetView(BaseModel):
    """Sites, gateways and devices (the most recently seen, up to a limit), with totals."""

    now: float
    sites: list[SiteInfo]
    gateways: list[GatewayInfo]
    devices: list[DeviceInfo]
    devices_total: int  # every device the coordinator knows; ``devices`` may show fewer
    online_devices: int
    eligible_devices: int


class JobSummary(BaseModel):
    """A job in the job list."""

    id: str
    task: str
    state: str
    rounds_wanted: int
    rounds_committed: int
    current_round: int
    created_at: float


class SecAggInfo(BaseModel):
    """How a round's secure sum ended: tasks handed out, devices joined, survivors."""

    expected: int
    joined: int
    survivors: int
    abandoned: bool
    reason: str


class RoundInfo(BaseModel):
    """One round attempt with its metrics, secure-sum outcome and coordinator ingress."""

    round: int
    state: str
    participants: int
    gateways_reported: int
    accuracy: float | None
    loss: float | None
    epsilon: float | None
    reason: str
    started_at: float | None
    ended_at: float | None
    secagg: SecAggInfo | None = None
    received_bytes: int = 0
    device_direct_bytes: int = 0


class PrivacyInfo(BaseModel):
    """The job's privacy: mode, ε spent so far and the limit it may not pass (None: no limit)."""

    mode: str
    spent: float | None
    limit: float | None
    limit_kind: str  # "max_epsilon" (stops the job), "target_epsilon" (calibrated), or ""


class JobDetail(BaseModel):
    """Everything the dashboard shows about one job."""

    job: JobSummary
    secure_aggregation: bool
    rounds: list[RoundInfo]
    privacy: PrivacyInfo
    received_bytes: int
    device_direct_bytes: int
    models: list[ModelVersionView] = Field(default_factory=list)  # newest MAX_VERSIONS (+ prod.)
    models_total: int = 0


MAX_DEVICES = 200  # devices listed in a fleet view (a page redraws them at every poll)
MAX_VERSIONS = 50  # model versions listed in a job view, newest first (and production, always)


def fleet_view(
    store: Store, settings: CoordinatorSettings, now: float, max_devices: int = MAX_DEVICES
) -> FleetView:
    """The fleet as the coordinator knows it at ``now``; the ``max_devices`` seen last listed."""
    gateways = [
        GatewayInfo(
            id=g.id,
            site=g.site,
            online=g.last_seen >= now - settings.gateway_ttl_s,
            online_devices=g.online_devices,
            eligible_devices=g.eligible_devices,
            last_seen=g.last_seen,
        )
        for g in store.list_gateways()
    ]
    device_seen = now - settings.device_ttl_s
    devices = [
        DeviceInfo(
            id=d.id,
            site=d.site,
            gateway=d.gateway,
            online=not d.revoked and (d.last_seen or 0.0) >= device_seen,
            revoked=d.revoked,
            last_seen=d.last_seen,
            rounds_participated=d.rounds_participated,
        )
        for d in admin.device_views(store)
    ]
    names = sorted({g.site for g in gateways} | {d.site for d in devices if d.site is not None})
    sites = []
    for name in names:
        at = [g for g in gateways if g.site == name and g.online]
        sites.append(
            SiteInfo(
                site=name,
                gateways=[g.id for g in gateways if g.site == name],
                gateways_online=len(at),
                known_devices=sum(1 for d in devices if d.site == name),
                online_devices=sum(g.online_devices for g in at),
                eligible_devices=sum(g.eligible_devices for g in at),
            )
        )
    return FleetView(
        now=now,
        sites=sites,
        gateways=gateways,
        devices=sorted(devices, key=lambda d: (-(d.last_seen or 0.0), d.id))[:max_devices],
        devices_total=len(devices),
        online_devices=sum(s.online_devices for s in sites),
        eligible_devices=sum(s.eligible_devices for s in sites),
    )


def job_summaries(store: Store) -> list[JobSummary]:
    """Every job, oldest first."""
    return [_summary(store, row.id) for row in store.list_jobs()]


def _summary(store: Store, job_id: str) -> JobSummary:
    job = store.get_job(job_id)
    rounds = store.list_rounds(job_id)
    return JobSummary(
        id=job.id,
        task=str(job.spec.get("task", "")),
        state=job.state,
        rounds_wanted=int(job.spec.get("rounds", 0)),
        rounds_committed=job.committed_rounds,
        current_round=rounds[-1].number if rounds else 0,
        created_at=job.created_at,
    )


def _privacy(spec: dict[str, Any], rounds: list[RoundInfo]) -> PrivacyInfo:
    privacy = dict(spec.get("privacy") or {})
    spent = [r.epsilon for r in rounds if r.epsilon is not None]
    kind = next((k for k in ("max_epsilon", "target_epsilon") if privacy.get(k) is not None), "")
    return PrivacyInfo(
        mode=str(privacy.get("mode", "none")),
        spent=max(spent) if spent else None,
        limit=float(privacy[kind]) if kind else None,
        limit_kind=kind,
    )


def job_detail(store: Store, stats: RoundStats, job_id: str) -> JobDetail:
    """One job: rounds with metrics, secure-sum outcomes and traffic; privacy; model versions."""
    summary = _summary(store, job_id)  # UnknownNameError for an unknown job
    spec = store.get_job(job_id).spec
    traffic = {t.round: t for t in stats.traffic(job_id)}
    secagg = {o.round: o for o in stats.secagg_outcomes(job_id)}
    rounds = []
    for r in store.list_rounds(job_id):
        t, o = traffic.get(r.number), secagg.get(r.number)
        rounds.append(
            RoundInfo(
                round=r.number,
                state=r.state,
                participants=r.participants,
                gateways_reported=r.gateways_reported,
                accuracy=r.accuracy,
                loss=r.loss,
                epsilon=r.epsilon,
                reason=r.reason,
                started_at=r.started_at,
                ended_at=r.ended_at,
                secagg=None
                if o is None
                else SecAggInfo(
                    expected=o.expected,
                    joined=o.joined,
                    survivors=o.survivors,
                    abandoned=o.abandoned,
                    reason=o.reason,
                ),
                received_bytes=t.received_bytes if t else 0,
                device_direct_bytes=t.device_direct_bytes if t else 0,
            )
        )
    versions = store.list_model_versions(job_id)
    shown = [v for v in versions[:-MAX_VERSIONS] if v.status == "production"]
    shown += versions[-MAX_VERSIONS:]
    return JobDetail(
        job=summary,
        secure_aggregation=spec.get("secure_aggregation") is not None,
        rounds=rounds,
        privacy=_privacy(spec, rounds),
        received_bytes=sum(r.received_bytes for r in rounds),
        device_direct_bytes=sum(r.device_direct_bytes for r in rounds),
        models=[models.version_view(store, row) for row in shown],
        models_total=len(versions),
    )
