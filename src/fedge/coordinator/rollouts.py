"""The coordinator's release manifests and staged rollouts, kept in its database.

The registry (:mod:`fedge.coordinator.registry`) says which version is production; this module
turns that into signed release manifests (:mod:`fedge.transport.manifests`) and serves each
gateway the one meant for it. It follows the registry rather than being told: whenever a job's
manifests lag behind its production version (a promotion by the release gate or an admin, a
rollback) :meth:`Rollouts.sync` issues the next manifest --

- straight to every gateway (``status`` production) when no canary policy is configured, when
  nothing was served before, when no gateway was seen recently, or when the version was served
  fleet-wide before (a rollback goes out at once);
- otherwise to the canary gateways only (``status`` canary, :mod:`fedge.coordinator.canary`),
  recorded as a :class:`~fedge.coordinator.schema.RolloutRow`, while every other gateway keeps
  the previous manifest. Health reports of the canaries' devices then widen the rollout (a new
  manifest for everyone) or halt it: the version is rolled back in the registry with the reason,
  and a new manifest, with a higher sequence, sends the canaries back to the previous version.

Every manifest has the next sequence of its job, so gateways and devices, which refuse a lower
sequence than one they accepted, can never be sent back by a replayed manifest.

Each decision of a canary stage goes into the audit log with ``actor`` "canary": its start and
its widening as ``rollout`` entries (the version, the previous one, the canary gateways, the
manifest, the reason), a halt as a ``rollback`` entry (rolled back, restored, the reason) like
an admin's rollback.

**Refusals.** The same route (``POST /v1/jobs/{job}/health``, :meth:`Rollouts.report`) takes
every refusal of a model, canary stage or not (:mod:`fedge.transport.reports`): a device's,
forwarded by its gateway or sent directly, and a gateway's own. Each is recorded in the registry
(:class:`~fedge.coordinator.schema.ModelRefusalRow`: per version, reporter and failed check,
with a count; ``fedge models show`` lists them, the ``fedge_model_refusals`` gauge counts the
versions refused by reason) and, the first time per version, reporter and check, in the audit
log as a ``refusal`` entry (actor: the reporter; the version, tier, forwarding gateway, check,
reason, manifest). A canary device's refusal also counts as a failed health check of its rollout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fedge.coordinator.audit import AuditLog
from fedge.coordinator.canary import CanaryPolicy, judge, pick_canaries
from fedge.coordinator.schema import (
    ModelVersionRow,
    ReleaseManifestRow,
    ReleaseRow,
    RolloutHealthRow,
    RolloutRow,
)
from fedge.coordinator.store import Store
from fedge.errors import AuthorizationError, ProtocolError, UnknownNameError
from fedge.identity import Identity, Role
from fedge.identity.signing import ReleaseSigningKey
from fedge.transport import messages as m
from fedge.transport.manifests import ManifestStatus, make_manifest
from fedge.transport.releases import release_metadata, version_id

__all__ = ["Rollouts"]

log = logging.getLogger(__name__)


class Rollouts:
    """Issues a job's release manifests, runs its canary stages and serves each gateway its own."""

    def __init__(
        self,
        store: Store,
        key: ReleaseSigningKey | None,
        policy: CanaryPolicy | None,
        gateway_ttl_s: float,
        audit: AuditLog | None = None,
    ) -> None:
        self.store, self.key, self.policy = store, key, policy
        self.gateway_ttl_s = gateway_ttl_s  # gateways seen within this long can be canaries
        self.audit = audit  # where the canary's decisions are recorded (None: nowhere)
        self._sessions = sessionmaker(store.engine, expire_on_commit=False)
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- serving --------------------------------------------------------------------------------
    def pointer(self, job_id: str, gateway_id: str | None, now: float) -> m.ModelRelease:
        """The manifest ``gateway_id`` (None: a device connected directly) is to serve."""
        with self._lock:
            self.sync(job_id, now)
            with self._tx() as s:
                active = _active(s, job_id)
                if active is not None and gateway_id in active.canary_gateways:
                    row = s.get(ReleaseManifestRow, (job_id, active.sequence))
                else:
                    row = _latest(s, job_id, audience="all")
        if row is None:
            raise UnknownNameError(f"job {job_id!r} has no production model version yet")
        return m.ModelRelease(
            sha256=row.sha256, metadata=dict(row.release_metadata), signature=row.signature
        )

    def sync(self, job_id: str, now: float) -> None:
        """Issue the manifest the job's production version calls for, if it is not out yet."""
        with self._lock:
            production = self.store.production_version(job_id)
            if production is None:
                return
            with self._tx() as s:
                active = _active(s, job_id)
                if active is not None and active.sha256 != production.sha256:
                    _end_superseded(s, active, production, now)
                    active = None
                latest = _latest(s, job_id)
                if active is not None or (
                    latest is not None
                    and latest.audience == "all"
                    and latest.sha256 == production.sha256
                ):
                    return  # up to date
                stable = _latest(s, job_id, audience="all")
                served_before = s.scalar(
                    select(ReleaseManifestRow.sequence).where(
                        ReleaseManifestRow.job_id == job_id,
                        ReleaseManifestRow.sha256 == production.sha256,
                        ReleaseManifestRow.audience == "all",
                    )
                )
                canaries: list[str] = []
                if self.policy is not None and stable is not None and served_before is None:
                    recent = self.store.list_gateways(seen_since=now - self.gateway_ttl_s)
                    canaries = pick_canaries(
                        [g.id for g in recent], self.policy.fraction, production.sha256
                    )
                status: ManifestStatus = "canary" if canaries else "production"
                row = self._issue(s, production, status, now)
                started: dict[str, object] | None = None
                if canaries:
                    assert self.policy is not None and stable is not None
                    why = f"on {len(canaries)} canary gateway(s) first"
                    started = {
                        "job": job_id,
                        "stage": "canary",
                        "version": version_id(job_id, production.round),
                        "previous_sha256": stable.sha256,
                        "canary_gateways": canaries,
                        "manifest": row.sequence,
                        "reason": why,
                    }
                    s.add(
                        RolloutRow(
                            job_id=job_id,
                            sha256=production.sha256,
                            previous_sha256=stable.sha256,
                            stage="canary",
                            canary_gateways=canaries,
                            min_healthy=self.policy.min_healthy,
                            max_failures=self.policy.max_failures,
                            hold_until=now + self.policy.hold_s,
                            sequence=row.sequence,
                            reason=why,
                            started_at=now,
                        )
                    )
                    log.info(
                        "job %s: %s goes to canary gateways %s first (manifest %d)",
                        job_id,
                        row.release_metadata.get("version"),
                        ", ".join(canaries),
                        row.sequence,
                    )
            if started is not None:
                self._record("rollout", production.sha256, started)

    def _issue(
        self, s: Session, version: ModelVersionRow, status: ManifestStatus, now: float
    ) -> ReleaseManifestRow:
        """Sign and store the job's next manifest, naming ``version``."""
        job_id = version.job_id
        last = s.scalar(
            select(func.max(ReleaseManifestRow.sequence)).where(ReleaseManifestRow.job_id == job_id)
        )
        release = s.get(ReleaseRow, version.sha256)
        if release is not None:
            metadata = dict(release.release_metadata)
        else:
            task = str(self.store.get_job(job_id).spec.get("task", ""))
            metadata = release_metadata(job_id, version.round, task, version.parent_sha256)
        manifest = make_manifest(
            self.key,
            version.sha256,
            metadata,
            status=status,
            sequence=(last or 0) + 1,
            issued_at=now,
        )
        row = ReleaseManifestRow(
            job_id=job_id,
            sequence=(last or 0) + 1,
            sha256=version.sha256,
            audience="canary" if status == "canary" else "all",
            release_metadata=manifest.metadata,
            signature=manifest.signature,
            issued_at=now,
        )
        s.add(row)
        s.flush()
        log.info(
            "job %s: release manifest %d names %s (%s)",
            job_id,
            row.sequence,
            metadata.get("version"),
            status,
        )
        return row

    # -- health and the canary verdict ----------------------------------------------------------
    def report(self, peer: Identity, job_id: str, report: m.HealthReport, now: float) -> m.Receipt:
        """Record a health report: a refusal from anyone (any time), and a canary device's
        health check (forwarded by its canary gateway), which may widen or halt the rollout.

        ``peer`` is a gateway forwarding its device's report (``device_id`` set), a gateway
        reporting its own refusal (no ``device_id``), or a device connected directly.
        """
        if peer.role is Role.GATEWAY:
            if report.device_id is None:  # the gateway's own refusal
                if report.check == "passed":
                    raise ProtocolError(
                        "a gateway reports the models it refuses, and forwards its devices'"
                        " health reports naming the device; a passed check must name one"
                    )
                reporter, tier, via = peer.name, "gateway", None
            else:
                reporter, tier, via = report.device_id, "device", peer.name
        elif peer.role is Role.DEVICE:
            if report.check == "passed":
                raise ProtocolError(
                    "devices connected directly are never canaries; health reports come from the"
                    " canary gateways' devices (refusals are welcome from any device)"
                )
            if report.device_id not in (None, peer.name):
                raise AuthorizationError(
                    f"device {peer.name!r} may not report for {report.device_id!r}"
                )
            reporter, tier, via = peer.name, "device", None
        else:
            raise AuthorizationError(f"a {peer.role} does not report model health")
        recorded = None
        if report.check != "passed":
            recorded = self._record_refusal(job_id, reporter, tier, via, report, now)
        if via is None:  # not a canary gateway's device: nothing for a rollout to judge
            assert recorded is not None
            return m.Receipt(accepted=True, reason=recorded)
        try:
            reason = self._canary_report(via, job_id, report, now)
        except (ProtocolError, AuthorizationError):
            if recorded is None:
                raise  # a passed check that no canary stage needs
            return m.Receipt(accepted=True, reason=recorded)
        return m.Receipt(accepted=True, reason=reason)

    def _record_refusal(
        self,
        job_id: str,
        reporter: str,
        tier: str,
        via: str | None,
        report: m.HealthReport,
        now: float,
    ) -> str:
        """Put a refusal in the registry and (the first time per reporter, version and check)
        in the audit log; returns the receipt's reason."""
        self.store.get_job(job_id)  # UnknownNameError for a job that does not exist
        version = self.store.get_model_version(report.sha256)
        if version is not None and version.job_id != job_id:
            raise ProtocolError(
                f"model {report.sha256[:12]} is a version of job {version.job_id!r}, not of"
                f" {job_id!r}; report it under its own job"
            )
        name = version_id(job_id, version.round) if version is not None else None
        row, new = self.store.record_refusal(
            job_id=job_id,
            sha256=report.sha256,
            reporter=reporter,
            tier=tier,
            via=via,
            check=report.check,
            reason=report.reason,
            sequence=report.sequence,
            now=now,
        )
        what = name or f"unknown model {report.sha256[:12]}"
        log.warning(
            "job %s: %s %s%s refused %s (%s): %s",
            job_id,
            tier,
            reporter,
            f" via {via}" if via else "",
            what,
            report.check,
            report.reason or "no reason given",
        )
        if new and self.audit is not None:
            self.audit.record(
                "refusal",
                reporter,
                report.sha256,
                {
                    "job": job_id,
                    "version": name,
                    "tier": tier,
                    "via": via,
                    "check": report.check,
                    "reason": report.reason,
                    "manifest": report.sequence,
                },
            )
        return f"refusal of {what} recorded ({report.check}, reported {row.count} time(s))"

    def _canary_report(
        self, gateway_id: str, job_id: str, report: m.HealthReport, now: float
    ) -> str:
        """Count a canary device's health report in its rollout and judge."""
        assert report.device_id is not None
        with self._lock:
            self.sync(job_id, now)
            with self._tx() as s:
                active = _active(s, job_id)
                if active is None or active.sha256 != report.sha256:
                    raise ProtocolError(
                        f"no canary rollout of model {report.sha256[:12]} is running for job"
                        f" {job_id!r}; the report is not needed"
                    )
                if gateway_id not in active.canary_gateways:
                    raise AuthorizationError(
                        f"gateway {gateway_id!r} is not a canary of this rollout; its devices"
                        " do not serve this version"
                    )
                row = s.get(RolloutHealthRow, (active.id, report.device_id))
                if row is None:
                    row = RolloutHealthRow(rollout_id=active.id, device_id=report.device_id)
                    s.add(row)
                row.gateway_id, row.check = gateway_id, report.check
                row.holdout_accuracy, row.reason = report.holdout_accuracy, report.reason
                row.reported_at = now
            log.info(
                "job %s canary %s: device %s via %s reports %s%s",
                job_id,
                report.sha256[:12],
                report.device_id,
                gateway_id,
                report.check,
                f" ({report.reason})" if report.reason else "",
            )
            return self._judge(job_id, now)

    def tick(self, now: float) -> None:
        """Judge every canary stage in progress (halts those whose hold time is up)."""
        with self._tx() as s:
            jobs = list(s.scalars(select(RolloutRow.job_id).where(RolloutRow.stage == "canary")))
        for job_id in jobs:
            with self._lock:
                self.sync(job_id, now)
                self._judge(job_id, now)

    def _judge(self, job_id: str, now: float) -> str:
        """Widen or halt the job's canary stage if its reports (or the clock) say so."""
        with self._tx() as s:
            active = _active(s, job_id)
            if active is None:
                return "no canary stage in progress"
            healthy, failed = _counts(s, active.id)
            policy = CanaryPolicy(
                fraction=1.0,
                min_healthy=active.min_healthy,
                max_failures=active.max_failures,
                hold_s=max(active.hold_until - active.started_at, 1e-9),
            )
            verdict = judge(policy, healthy, failed, active.started_at, now)
            if verdict.action == "wait":
                return verdict.reason
            active.stage = "widened" if verdict.action == "widen" else "halted"
            active.reason, active.ended_at = verdict.reason, now
            sha, stage = active.sha256, active.stage
            decided: dict[str, object] = {
                "job": job_id,
                "stage": stage,
                "canary_gateways": list(active.canary_gateways),
                "healthy": healthy,
                "failed": failed,
                "reason": verdict.reason,
            }
            if verdict.action == "widen":
                version = s.get(ModelVersionRow, active.sha256)
                assert version is not None
                widened = self._issue(s, version, "production", now)
                decided.update(version=version_id(job_id, version.round), manifest=widened.sequence)
        if verdict.action == "widen":
            self._record("rollout", sha, decided)
            log.info("job %s: canary rollout widened to every gateway: %s", job_id, verdict.reason)
            return verdict.reason
        try:
            old, restored = self.store.rollback_job(
                job_id, f"canary rollout halted: {verdict.reason}"
            )
            serving = version_id(restored.job_id, restored.round)
            decided.update(rolled_back=old.sha256, restored=restored.sha256)
            self._record("rollback", job_id, decided)
        except ProtocolError as exc:
            log.error("job %s: canary halted but cannot roll back: %s", job_id, exc)
            serving = "the previous version"
            self._record("rollout", sha, {**decided, "rollback_refused": str(exc)})
        self.sync(job_id, now)  # the canaries go back: a new manifest for everyone
        log.warning(
            "job %s: canary rollout halted (%s); serving %s again", job_id, verdict.reason, serving
        )
        return verdict.reason

    def _record(self, kind: str, subject: str, details: dict[str, object]) -> None:
        """Put a canary decision in the audit log (never raises: it has taken effect)."""
        if self.audit is not None:
            self.audit.record(kind, "canary", subject, details)

    # -- views ----------------------------------------------------------------------------------
    def served_as(self, version: ModelVersionRow, round_base: str | None) -> str:
        """What ``version`` is as it is served now (a ``version`` label of models served): the
        ``canary`` or ``production`` release, else the model of the open ``round``, else other."""
        with self._tx() as s:
            active = _active(s, version.job_id)
            if active is not None and active.sha256 == version.sha256:
                return "canary"
            stable = _latest(s, version.job_id, audience="all")
        if stable is not None and stable.sha256 == version.sha256:
            return "production"
        return "round" if version.sha256 == round_base else "other"

    def view(self, sha256: str) -> m.RolloutView | None:
        """The latest staged rollout of a version, as ``fedge models show`` prints it."""
        with self._tx() as s:
            row = s.scalars(
                select(RolloutRow)
                .where(RolloutRow.sha256 == sha256)
                .order_by(RolloutRow.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            healthy, failed = _counts(s, row.id)
        return m.RolloutView(
            stage=row.stage,
            canary_gateways=list(row.canary_gateways),
            healthy=healthy,
            failed=failed,
            min_healthy=row.min_healthy,
            max_failures=row.max_failures,
            hold_until=row.hold_until,
            sequence=row.sequence,
            reason=row.reason,
            started_at=row.started_at,
            ended_at=row.ended_at,
        )


def _active(s: Session, job_id: str) -> RolloutRow | None:
    q = select(RolloutRow).where(RolloutRow.job_id == job_id, RolloutRow.stage == "canary")
    return s.scalars(q.order_by(RolloutRow.id.desc()).limit(1)).first()


def _latest(s: Session, job_id: str, audience: str | None = None) -> ReleaseManifestRow | None:
    q = select(ReleaseManifestRow).where(ReleaseManifestRow.job_id == job_id)
    if audience is not None:
        q = q.where(ReleaseManifestRow.audience == audience)
    return s.scalars(q.order_by(ReleaseManifestRow.sequence.desc()).limit(1)).first()


def _counts(s: Session, rollout_id: int) -> tuple[int, int]:
    rows = s.execute(
        select(RolloutHealthRow.check, func.count())
        .where(RolloutHealthRow.rollout_id == rollout_id)
        .group_by(RolloutHealthRow.check)
    )
    counts = {str(check): int(n) for check, n in rows}
    healthy = counts.pop("passed", 0)
    return healthy, sum(counts.values())


def _end_superseded(
    s: Session, active: RolloutRow, production: ModelVersionRow, now: float
) -> None:
    """End a canary stage whose version is no longer production (rolled back, or replaced)."""
    version = s.get(ModelVersionRow, active.sha256)
    if version is not None and version.status == "rolled_back":
        active.stage, active.reason = "halted", version.status_reason or "rolled back"
    else:
        active.stage = "superseded"
        active.reason = f"production became {version_id(production.job_id, production.round)}"
    active.ended_at = now
