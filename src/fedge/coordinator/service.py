"""``CoordinatorService``: the coordinator's logic behind the HTTP layer, testable without it.

It implements :class:`~fedge.transport.services.UplinkService` (gateways) and
:class:`~fedge.transport.services.DeviceService` (devices connected directly: the coordinator is
their site's gateway); it holds the other roles the app serves: ``admin``, a
:class:`~fedge.coordinator.admin_service.CoordinatorAdmin`
(:class:`~fedge.transport.services.AdminService`), and ``secagg_uplink``, a
:class:`~fedge.coordinator.secure_uplink.SecAggUplink`. Time moves only in
:meth:`CoordinatorService.tick` (see :mod:`fedge.coordinator.driver`); who gets work is
:mod:`fedge.coordinator.handouts`.

A partial aggregate is checked (:mod:`fedge.coordinator.payloads`) and then, under the lock: a
partial this gateway already delivered for this round is acknowledged as a duplicate and not
counted again (also after a restart: receipts are in the database); otherwise the round must be
the job's current one and still accepting, the gateway must hold a quota in it, its contributors
must belong to its site (a device's site is known from its certificate, which the gateway sends
before it names the device: :meth:`CoordinatorService.register_devices`; without a fleet CA an
unseen device is bound to the first site that reports it: :mod:`fedge.coordinator.contributors`),
be unrevoked and number no more than its quota, the nonce must be new, and under central DP the
sum must respect the clipping bound. Only then is the receipt recorded (exactly once: a unique
constraint) and the partial folded into the round's running sum.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fedge.aggregation import Update
from fedge.aggregation.evaluation import check_evaluation_allowed
from fedge.coordinator.admin_service import CoordinatorAdmin
from fedge.coordinator.artifacts import ArtifactStore
from fedge.coordinator.contributors import certify_devices, check_contributors
from fedge.coordinator.driver import RoundDriver
from fedge.coordinator.handouts import gateway_assignments, offer_task
from fedge.coordinator.live import LiveRound
from fedge.coordinator.payloads import (
    check_clipped,
    check_weights,
    decode_partial,
    decode_update,
    partial_limit,
)
from fedge.coordinator.releases import release_view
from fedge.coordinator.revocations import CrlAudit
from fedge.coordinator.rollouts import Rollouts
from fedge.coordinator.secure_setup import SecAggAuthority
from fedge.coordinator.secure_uplink import SecAggUplink
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store
from fedge.errors import AuthorizationError, ProtocolError, UnknownNameError, ValidationError
from fedge.identity import Identity, RevocationChecker, Role, authorize
from fedge.identity.signing import ReleaseSigningKey
from fedge.telemetry.metrics import record_model_served, record_update_norm
from fedge.transport import messages as m
from fedge.transport.longpoll import LongPoll

__all__ = ["CoordinatorService"]

_FLEET = (Role.DEVICE, Role.GATEWAY, Role.COORDINATOR, Role.ADMIN)

log = logging.getLogger(__name__)


class CoordinatorService:
    """Jobs, rounds and streaming aggregation of one coordinator; its fleet-facing API."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: CoordinatorSettings | None = None,
        clock: Callable[[], float] = time.time,
        secagg: SecAggAuthority | None = None,
        release_key: ReleaseSigningKey | None = None,
    ) -> None:
        self.store, self.artifacts = store, artifacts
        self.settings = settings or CoordinatorSettings()
        self.clock = clock
        self.driver = RoundDriver(store, artifacts, self.settings, clock)
        self.driver.secagg = secagg
        self.driver.release_key = release_key  # signs every model version it publishes
        # held check-ins of direct devices (long poll): woken whenever a round opens
        self.long_poll = LongPoll(self.settings.long_poll_s, self.settings.max_held_checkins)
        self.driver.on_open = self.long_poll.notify
        # signed release manifests and staged (canary) rollouts of production versions
        self.rollouts = Rollouts(
            store,
            release_key,
            self.settings.canary,
            self.settings.gateway_ttl_s,
            audit=self.driver.audit,  # the canary's decisions: start, widening, halt
        )
        self.driver.on_promoted = lambda job_id: self.rollouts.sync(job_id, self.clock())
        # revocations made with `fedge pki revoke` (new serials on the CRL) into the audit log
        crl = secagg.revocation if secagg is not None else None
        self.crl_audit = (
            CrlAudit(self.driver.audit, crl) if isinstance(crl, RevocationChecker) else None
        )
        self.driver.recover(clock())
        self.admin = CoordinatorAdmin(self.driver, self.rollouts)  # the admin API
        # the gateways' secure-aggregation routes; a finished phase ticks at once
        self.secagg_uplink = SecAggUplink(self.driver, self.tick)

    def tick(self, now: float | None = None) -> None:
        """Drive deadlines: open, close, aggregate, commit or abandon rounds as ``now`` says."""
        self.driver.tick(now)
        self.rollouts.tick(self.clock() if now is None else now)  # canary hold times
        if self.crl_audit is not None:
            self.crl_audit.check()

    def live_round(self, job_id: str) -> LiveRound | None:
        """The round of ``job_id`` in flight, if any (for inspection)."""
        return self.driver.live.get(job_id)

    # -- models -------------------------------------------------------------------------------
    def model(self, peer: Identity, sha256: str) -> bytes:
        """A published (or initial) model payload by content hash."""
        authorize(peer, roles=_FLEET)
        row = self.store.get_model_version(sha256)
        if row is None:
            raise UnknownNameError(f"no model version {sha256}")
        payload = self.artifacts.get(sha256)
        if peer.role in (Role.DEVICE, Role.GATEWAY):  # served to the fleet (not an admin's look)
            live = self.driver.live.get(row.job_id)
            record_model_served(self.rollouts.served_as(row, live.base_sha256 if live else None))
        return payload

    def release(self, peer: Identity, sha256: str) -> m.ModelRelease:
        """The release signature of a model version; UnknownNameError when it is unsigned."""
        authorize(peer, roles=_FLEET)
        row = self.store.get_release(sha256)
        if row is None:
            raise UnknownNameError(f"model version {sha256} has no release signature")
        return release_view(row)

    def production(self, peer: Identity, job_id: str) -> m.ModelRelease:
        """The signed release manifest this peer is to serve (a canary gateway's may be newer)."""
        authorize(peer, roles=_FLEET)
        gateway = peer.name if peer.role is Role.GATEWAY else None
        return self.rollouts.pointer(job_id, gateway, self.clock())

    def report_health(self, peer: Identity, job_id: str, report: m.HealthReport) -> m.Receipt:
        """A refusal of a model (a device's or a gateway's), or a canary device's health report
        forwarded by its gateway, which may widen or halt the rollout (Rollouts.report)."""
        authorize(peer, roles={Role.GATEWAY, Role.DEVICE})
        return self.rollouts.report(peer, job_id, report, self.clock())

    # -- gateways -----------------------------------------------------------------------------
    def gateway_checkin(self, peer: Identity, request: m.GatewayCheckIn) -> m.GatewayAssignments:
        """Record the gateway; hand it the quotas it holds in the rounds now open."""
        authorize(peer, roles={Role.GATEWAY}, site=request.site, name=request.gateway_id)
        self.driver.audit.record_contact(peer)  # enrolment, at its first check-in
        now = self.clock()
        self.store.upsert_gateway(
            peer.name, request.site, request.online_devices, request.eligible_devices, now
        )
        if request.device_labels:  # what jobs' selectors match (counted per gateway)
            foreign = self.store.record_device_labels(
                peer.name, request.site, request.device_labels, now
            )
            if foreign:
                log.warning(
                    "gateway %s forwarded labels of %d device(s) certified for another site, "
                    "ignored: %s", peer.name, len(foreign), ", ".join(foreign[:5]),
                )  # fmt: skip
        out = gateway_assignments(self.driver, peer.name)
        # the admin API's revocations reach the gateway here: it refuses these devices at once
        revoked = self.store.revoked_devices(request.site, m.MAX_REVOKED_DEVICES + 1)
        if len(revoked) > m.MAX_REVOKED_DEVICES:
            log.error(
                "site %s has more than %d revoked devices: gateway %s is told only the first; "
                "revoke their certificates (fedge pki revoke) so the CRL refuses them",
                request.site, m.MAX_REVOKED_DEVICES, peer.name,
            )  # fmt: skip
            revoked = revoked[: m.MAX_REVOKED_DEVICES]
        return m.GatewayAssignments(
            assignments=out,
            retry_after_s=self.settings.poll_interval_s,
            revoked_devices=revoked,
        )

    def submit_partial(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> m.Receipt:
        """Check a gateway's partial aggregate and fold it in, exactly once."""
        authorize(peer, roles={Role.GATEWAY})
        rt = self.driver.runtime(job_id)
        limit = partial_limit(rt.param_spec, self.settings.max_contributors)
        partial = decode_partial(
            payload,
            rt.param_spec,
            job_id=job_id,
            round_number=round_number,
            peer=peer,
            max_bytes=limit,
        )
        with self.driver.lock:
            if self.store.has_partial(job_id, round_number, peer.name):
                return m.Receipt(accepted=True, duplicate=True, reason="already counted")
            live = self._accepting(job_id, round_number)
            quota = live.machine.quotas.get(peer.name, 0)
            if quota == 0:
                raise ProtocolError(f"gateway {peer.name!r} has no quota in round {round_number}")
            if partial.num_accepted > quota:
                raise ProtocolError(
                    f"partial counts {partial.num_accepted} devices but {peer.name!r} was given "
                    f"a quota of {quota}"
                )
            known = self.store.get_devices(partial.contributors)  # one query, under the lock
            fleet_ca = self.driver.secagg is not None
            try:
                check_contributors(known, partial.contributors, peer, fleet_ca=fleet_ca)
            except AuthorizationError as exc:  # a site's work lost: say so where operators look
                log.error(
                    "refused partial of gateway %s for %s/%d: %s",
                    peer.name, job_id, round_number, exc,
                )  # fmt: skip
                raise
            check_weights(rt.privacy_plan is not None, partial.total_weight, partial.num_accepted)
            check_evaluation_allowed(
                partial.evaluation, rt.device_privacy().mode, live.secure is not None
            )
            if rt.privacy_plan is not None and rt.privacy_plan.mode == "central":
                check_clipped(partial.sums, partial.num_accepted, rt.privacy_plan.clip_norm)
            if not self.store.record_partial(
                job_id,
                round_number,
                peer.name,
                str(peer.site),
                partial.nonce,
                partial.num_accepted,
                partial.total_weight,
                partial.contributors,
                self.clock(),
            ):
                return m.Receipt(accepted=True, duplicate=True, reason="already counted")
            if partial.num_accepted:  # an empty partial only says "my site is done"
                ok = live.acc.add_partial(
                    peer.name,
                    partial.sums,
                    partial.total_weight,
                    partial.num_accepted,
                    partial.contributors,
                )
                assert ok, live.acc.rejected[-1]  # every condition was checked above
            if partial.evaluation is not None:  # its devices' federated evaluation
                live.evaluation += partial.evaluation
            self.driver.record_traffic(
                job_id, round_number, peer.name, "partial", len(payload), partial.num_accepted,
                rt.param_spec.size,
            )  # fmt: skip
            live.machine.mark_reported(peer.name)
            self.store.update_round(
                job_id,
                round_number,
                participants=live.acc.num_accepted,
                gateways_reported=len(live.machine.reported),
            )
        return m.Receipt(accepted=True)

    def _accepting(self, job_id: str, round_number: int) -> LiveRound:
        live = self.driver.live.get(job_id)
        if live is None or live.number != round_number or not live.machine.accepting:
            current = f"round {live.number} ({live.machine.state})" if live else "no open round"
            raise ProtocolError(
                f"round {round_number} of job {job_id!r} is not accepting contributions (the job "
                f"has {current}): stale round, refused"
            )
        return live

    def register_devices(
        self, peer: Identity, request: m.DeviceCertificates
    ) -> m.DeviceRegistration:
        """Learn the sites of a gateway's devices from their certificates (CA and CRL checked).

        A partial may name only devices whose site the coordinator knows; a device certified
        for another site, by another CA, expired, revoked or not a device is refused here.
        """
        authorize(peer, roles={Role.GATEWAY})
        authority = self.driver.secagg
        if authority is None:
            raise ValidationError(
                "this coordinator was started without the fleet CA, so it cannot check device "
                "certificates; start it with its PKI files"
            )
        sites, certified, refused = certify_devices(
            request.certificates, peer, authority.ca, authority.revocation
        )
        if sites:
            self.store.register_devices(sites, peer.name, self.clock())
            self.driver.audit.record_contacts(certified, via=peer.name)  # enrolments
        if refused:
            log.warning(
                "gateway %s: refused %d device certificate(s): %s",
                peer.name, len(refused), "; ".join(f"{k}: {v}" for k, v in list(refused.items())[:5]),
            )  # fmt: skip
        return m.DeviceRegistration(registered=sorted(sites), refused=refused)

    # -- devices connected directly -----------------------------------------------------------
    def checkin(self, peer: Identity, request: m.CheckInRequest) -> m.TaskAssignment | m.Wait:
        """A directly connected device asks for work: a task within the direct quota, or wait."""
        self._admit_direct(peer, request)
        self.driver.audit.record_contact(peer)  # enrolment, at its first check-in
        now = self.clock()
        self.store.touch_device(peer.name, peer.site, None, now, labels=request.labels)
        wait = m.Wait(retry_after_s=self.settings.poll_interval_s, reason="no round needs you now")
        if request.eligibility.num_examples == 0:
            return wait.model_copy(update={"reason": "no local examples to train on"})
        return offer_task(self.driver, peer.name, request) or wait

    def recheck(self, peer: Identity, request: m.CheckInRequest) -> m.TaskAssignment | None:
        """Look again for a task for a check-in held by long poll (``checkin`` admitted it)."""
        self._admit_direct(peer, request)  # it may have been revoked while held
        return offer_task(self.driver, peer.name, request)

    def _admit_direct(self, peer: Identity, request: m.CheckInRequest) -> None:
        authorize(peer, roles={Role.DEVICE}, name=request.device_id)
        row = self.store.get_device(peer.name)
        if row is not None and row.revoked:
            raise AuthorizationError(f"device {peer.name!r} is revoked; it may not take part")

    def submit_update(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> m.Receipt:
        """A direct device's update: checked, then summed like a gateway would."""
        authorize(peer, roles={Role.DEVICE})
        rt = self.driver.runtime(job_id)
        update = decode_update(
            payload, rt.param_spec, job_id=job_id, round_number=round_number, peer=peer
        )
        with self.driver.lock:
            live = self.driver.live.get(job_id)
            if (
                live is not None
                and live.number == round_number
                and peer.name in live.direct_submitted
            ):
                return m.Receipt(accepted=True, duplicate=True, reason="already counted")
            live = self._accepting(job_id, round_number)
            if peer.name not in live.direct_assigned:
                raise AuthorizationError(
                    f"device {peer.name!r} was not assigned round {round_number}; check in first"
                )
            if rt.privacy_plan is not None and rt.privacy_plan.mode == "central":
                check_clipped(update.delta, 1, rt.privacy_plan.clip_norm)
            check_evaluation_allowed(update.evaluation, rt.device_privacy().mode, secure=False)
            if not self.store.record_update(
                job_id, round_number, peer.name, peer.site, update.nonce, self.clock()
            ):
                return m.Receipt(accepted=True, duplicate=True, reason="already counted")
            weight = rt.update_weight(update.num_examples)
            if not live.direct.add(Update(peer.name, update.delta, weight)):
                raise ValidationError(live.direct.rejected[-1][1])
            live.direct_submitted.add(peer.name)
            if update.evaluation is not None:
                live.evaluation += update.evaluation
            self.driver.record_traffic(job_id, round_number, peer.name, "update", len(payload), 1)
        # a direct device's plain update: the coordinator holds it anyway
        plan = rt.privacy_plan
        clip = plan.clip_norm if plan and plan.mode == "central" else None
        record_update_norm(update.delta, clip, job_id, round_number)
        return m.Receipt(accepted=True)
