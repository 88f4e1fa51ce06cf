"""``CoordinatorService``: the coordinator's logic behind the HTTP layer, testable without it.

It implements :class:`~fedge.transport.services.UplinkService` (gateways),
:class:`~fedge.transport.services.DeviceService` (devices connected directly: the coordinator is
their site's gateway) and :class:`~fedge.transport.services.AdminService`. Time moves only in
:meth:`CoordinatorService.tick` (see :mod:`fedge.coordinator.driver`).

A partial aggregate is checked (:mod:`fedge.coordinator.payloads`) and then, under the lock: a
partial this gateway already delivered for this round is acknowledged as a duplicate and not
counted again (also after a restart: receipts are in the database); otherwise the round must be
the job's current one and still accepting, the gateway must hold a quota in it, its contributors
must belong to its site (a device's site is known from its certificate, which the gateway sends
before it names the device: :meth:`CoordinatorService.register_devices`; without a fleet CA an
unseen device is bound to the first site that reports it), be unrevoked and number no more than
its quota, the nonce must be new,
and under central DP the sum must respect the clipping bound. Only then is the receipt recorded
(exactly once: a unique constraint) and the partial folded into the round's running sum.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable

from fedge.aggregation import Update
from fedge.aggregation.evaluation import check_evaluation_allowed
from fedge.coordinator import admin, models
from fedge.coordinator.artifacts import ArtifactStore
from fedge.coordinator.driver import LiveRound, RoundDriver
from fedge.coordinator.payloads import (
    check_clipped,
    decode_partial,
    decode_update,
    partial_limit,
)
from fedge.coordinator.releases import release_view
from fedge.coordinator.revocations import CrlAudit
from fedge.coordinator.rollouts import Rollouts
from fedge.coordinator.roundstats import direct_equivalent
from fedge.coordinator.schema import ModelVersionRow
from fedge.coordinator.secure import SecAggAuthority, SecureRound
from fedge.coordinator.selection import DIRECT, matches_selector
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store
from fedge.errors import (
    AuthorizationError,
    FedgeError,
    ProtocolError,
    UnknownNameError,
    ValidationError,
)
from fedge.identity import Identity, RevocationChecker, Role, authorize, verify_peer
from fedge.identity.signing import ReleaseSigningKey
from fedge.telemetry.metrics import record_model_served, record_update_norm
from fedge.transport import messages as m
from fedge.transport.errors import status_for
from fedge.transport.longpoll import LongPoll

__all__ = ["CoordinatorService"]


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""  # refused by the secagg decoder as the item's own error


def _item(accept: Callable[[], m.Receipt]) -> m.SecAggItemResult:
    """One batch item's outcome: its receipt, or the refusal a request of its own would get."""
    try:
        receipt = accept()
    except FedgeError as exc:
        status, code = status_for(exc)
        return m.SecAggItemResult(accepted=False, status=status, error=code, reason=str(exc))
    return m.SecAggItemResult(
        accepted=receipt.accepted, duplicate=receipt.duplicate, reason=receipt.reason
    )


_FLEET = (Role.DEVICE, Role.GATEWAY, Role.COORDINATOR, Role.ADMIN)

log = logging.getLogger(__name__)


class CoordinatorService:
    """Jobs, rounds, streaming aggregation and the admin API of one coordinator."""

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
        """A canary device's health report, forwarded by its gateway; may widen or halt."""
        authorize(peer, roles={Role.GATEWAY, Role.DEVICE})
        if peer.role is not Role.GATEWAY:
            raise ProtocolError(
                "devices connected directly are never canaries; health reports come from the"
                " canary gateways' devices"
            )
        return self.rollouts.report(peer.name, job_id, report, self.clock())

    # -- gateways -----------------------------------------------------------------------------
    def gateway_checkin(self, peer: Identity, request: m.GatewayCheckIn) -> m.GatewayAssignments:
        """Record the gateway; hand it the quotas it holds in the rounds now open."""
        authorize(peer, roles={Role.GATEWAY}, site=request.site, name=request.gateway_id)
        self.driver.audit.record_contact(peer)  # enrolment, at its first check-in
        now = self.clock()
        self.store.upsert_gateway(
            peer.name, request.site, request.online_devices, request.eligible_devices, now
        )
        out: list[m.RoundAssignment] = []
        with self.driver.lock:
            for job_id, live in list(self.driver.live.items()):
                rt = self.driver.jobs[job_id]
                rnd = live.machine
                quota = rnd.quotas.get(peer.name, 0)
                if not rnd.accepting or quota == 0 or peer.name in rnd.reported:
                    continue
                if rt.job_state != "running" and peer.name not in live.handed:
                    continue  # paused: no new hand-outs; work already handed out goes on
                self.driver.start_training(rt, live)
                live.handed.add(peer.name)
                assert rnd.training_deadline is not None and rnd.report_deadline is not None
                out.append(
                    m.RoundAssignment(
                        job_id=job_id,
                        round=rnd.number,
                        task_name=rt.task.name,
                        model_sha256=live.base_sha256,
                        quota=quota,
                        training_deadline=rnd.training_deadline,
                        report_deadline=rnd.report_deadline,
                        plan=rt.training_plan(),
                        privacy=rt.device_privacy(),
                        secagg=live.secure.plan if live.secure is not None else None,
                        selector=rt.spec.selector,
                        traceparent=live.traceparent,
                    )
                )
        return m.GatewayAssignments(assignments=out, retry_after_s=self.settings.poll_interval_s)

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
            self._check_contributors(peer, partial.contributors)
            self._check_weights(
                rt.privacy_plan is not None, partial.total_weight, partial.num_accepted
            )
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
            self._record_traffic(
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

    def _record_traffic(
        self,
        job_id: str,
        number: int,
        sender: str,
        kind: str,
        nbytes: int,
        devices: int,
        parameters: int = 0,
    ) -> None:
        """Note a received payload and its device-direct equivalent (the dashboard's savings)."""
        direct = direct_equivalent(kind, nbytes, devices, parameters)
        self.driver.stats.record_traffic(
            job_id, number, sender, kind, nbytes, devices, direct, self.clock()
        )

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
        sites: dict[str, str] = {}
        certified: list[Identity] = []
        refused: dict[str, str] = {}
        for i, text in enumerate(request.certificates):
            try:
                who = verify_peer(base64.b64decode(text), authority.ca, authority.revocation)
            except (FedgeError, ValueError) as exc:
                refused[f"#{i}"] = str(exc)
                continue
            if who.role is not Role.DEVICE or who.site != peer.site:
                refused[who.name] = (
                    f"{who.role} of site {who.site!r}: gateway {peer.name!r} registers only "
                    f"devices of site {peer.site!r}"
                )
                continue
            sites[who.name] = str(who.site)
            certified.append(who)
        if sites:
            self.store.register_devices(sites, peer.name, self.clock())
            self.driver.audit.record_contacts(certified, via=peer.name)  # enrolments
        if refused:
            log.warning(
                "gateway %s: refused %d device certificate(s): %s",
                peer.name, len(refused), "; ".join(f"{k}: {v}" for k, v in list(refused.items())[:5]),
            )  # fmt: skip
        return m.DeviceRegistration(registered=sorted(sites), refused=refused)

    def _check_contributors(self, peer: Identity, contributors: tuple[str, ...]) -> None:
        known = self.store.get_devices(contributors)  # one query, under the lock
        for device_id in contributors:
            row = known.get(device_id)
            if row is None or row.site is None:
                if self.driver.secagg is None:
                    continue  # no fleet CA to check against: the partial binds it to this site
                raise AuthorizationError(
                    f"device {device_id!r} is not registered with the coordinator, so its site "
                    f"cannot be checked: gateway {peer.name!r} must send its devices' "
                    "certificates (POST /v1/gateway/devices) before a partial names them"
                )
            if row.revoked:
                raise AuthorizationError(
                    f"device {device_id!r} is revoked; the gateway must refuse its updates"
                )
            if row.site is not None and row.site != peer.site:
                raise AuthorizationError(
                    f"device {device_id!r} belongs to site {row.site!r}, not {peer.site!r}: a "
                    "gateway reports only for its own site's devices"
                )

    @staticmethod
    def _check_weights(dp: bool, total_weight: float, count: int) -> None:
        if dp and abs(total_weight - count) > 1e-6 * count:
            raise ValidationError(
                f"total_weight {total_weight:g} must equal the {count} contributors: under "
                "differential privacy every update weighs 1 (never its example count)"
            )
        if not dp and total_weight < count:
            raise ValidationError(
                f"total_weight {total_weight:g} is below the {count} contributors: each update "
                "weighs its number of examples (>= 1)"
            )

    # -- secure aggregation, relayed by gateways ------------------------------------------------
    def _secure(self, peer: Identity, job_id: str, round_number: int) -> SecureRound:
        authorize(peer, roles={Role.GATEWAY})
        with self.driver.lock:
            self.driver.runtime(job_id)
            live = self.driver.live.get(job_id)
            if live is None or live.number != round_number or live.secure is None:
                current = f"round {live.number}" if live else "no open round"
                raise ProtocolError(
                    f"round {round_number} of job {job_id!r} has no secure-aggregation session "
                    f"open (the job has {current}): stale round, refused"
                )
            if live.machine.quotas.get(peer.name, 0) == 0:
                raise AuthorizationError(
                    f"gateway {peer.name!r} has no quota in round {round_number} of {job_id!r}"
                )
            return live.secure

    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: m.SecAggJoin
    ) -> m.Receipt:
        """A device's key binding, relayed by its site's gateway."""
        secure = self._secure(peer, job_id, round_number)
        receipt = secure.join(peer, join)
        if len(secure.joined) >= secure.expected:
            self.tick()  # everyone is in: start the session now, not at the next tick
        return receipt

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> m.Receipt:
        """A device's secagg message or the gateway's relay sum."""
        secure = self._secure(peer, job_id, round_number)
        summed_before = peer.name in secure.relay_contributors
        receipt = secure.receive(peer, payload, self.clock())
        summed = secure.relay_contributors.get(peer.name)
        if not receipt.duplicate:  # a relay sum folds in its devices' masked inputs
            folded = len(summed) if summed and not summed_before else 0
            self._record_traffic(job_id, round_number, peer.name, "secagg", len(payload), folded)
        if summed and not receipt.duplicate:
            # who took part, for the audit trail; a site's weight stays secret (recorded as 0)
            with self.driver.lock:
                if not self.store.has_partial(job_id, round_number, peer.name):
                    self.store.record_partial(
                        job_id, round_number, peer.name, str(peer.site), m.new_nonce(),
                        len(summed), 0.0, summed, self.clock(),
                    )  # fmt: skip
        if secure.result is not None:
            self.tick()  # unmasked (or abandoned): commit now
        return receipt

    def secagg_inbox(
        self, peer: Identity, job_id: str, round_number: int, device_id: str, after: int
    ) -> m.SecAggInbox:
        """The messages waiting for one of the gateway's devices (long poll)."""
        secure = self._secure(peer, job_id, round_number)
        return secure.inbox(peer, device_id, after, wait_s=self.settings.poll_interval_s)

    def secagg_batch(
        self, peer: Identity, job_id: str, round_number: int, batch: m.SecAggBatch
    ) -> m.SecAggBatchReceipt:
        """Many of a gateway's devices' joins and control messages; each item checked alone."""
        secure = self._secure(peer, job_id, round_number)
        joins = [_item(functools.partial(secure.join, peer, j)) for j in batch.joins]
        if batch.joins and len(secure.joined) >= secure.expected:
            self.tick()  # everyone is in: start the session now, not at the next tick
        results, nbytes = [], 0
        for item in batch.messages:
            data = _b64(item.message)
            nbytes += len(data)
            results.append(
                _item(functools.partial(secure.receive, peer, data, self.clock(), item.device_id))
            )
        if nbytes:
            self._record_traffic(job_id, round_number, peer.name, "secagg", nbytes, 0)
        if secure.result is not None:
            self.tick()
        return m.SecAggBatchReceipt(joins=joins, messages=results)

    def secagg_site_inbox(
        self, peer: Identity, job_id: str, round_number: int, after: int
    ) -> m.SecAggSiteInbox:
        """The messages waiting for all of the gateway's devices (long poll)."""
        secure = self._secure(peer, job_id, round_number)
        return secure.site_inbox(peer, after, wait_s=self.settings.poll_interval_s)

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
        return self._offer(peer, request) or wait

    def recheck(self, peer: Identity, request: m.CheckInRequest) -> m.TaskAssignment | None:
        """Look again for a task for a check-in held by long poll (``checkin`` admitted it)."""
        self._admit_direct(peer, request)  # it may have been revoked while held
        return self._offer(peer, request)

    def _admit_direct(self, peer: Identity, request: m.CheckInRequest) -> None:
        authorize(peer, roles={Role.DEVICE}, name=request.device_id)
        row = self.store.get_device(peer.name)
        if row is not None and row.revoked:
            raise AuthorizationError(f"device {peer.name!r} is revoked; it may not take part")

    def _offer(self, peer: Identity, request: m.CheckInRequest) -> m.TaskAssignment | None:
        with self.driver.lock:
            for job_id, live in self.driver.live.items():
                rt = self.driver.jobs[job_id]
                rnd = live.machine
                fresh = peer.name not in live.direct_assigned
                if not rnd.accepting or peer.name in live.direct_submitted:
                    continue
                if fresh and (
                    rt.job_state != "running"
                    or len(live.direct_assigned) >= rnd.quotas.get(DIRECT, 0)
                    or not matches_selector(request.labels, rt.spec.selector)
                ):
                    continue
                self.driver.start_training(rt, live)
                live.direct_assigned.add(peer.name)
                assert rnd.training_deadline is not None
                return m.TaskAssignment(
                    job_id=job_id,
                    round=rnd.number,
                    task_name=rt.task.name,
                    model_sha256=live.base_sha256,
                    deadline=rnd.training_deadline,
                    plan=rt.training_plan(),
                    privacy=rt.device_privacy(),
                    nonce=request.nonce,
                    traceparent=live.traceparent,
                )
        return None

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
            self._record_traffic(job_id, round_number, peer.name, "update", len(payload), 1)
        # a direct device's plain update: the coordinator holds it anyway
        plan = rt.privacy_plan
        record_update_norm(
            update.delta, plan.clip_norm if plan and plan.mode == "central" else None
        )
        return m.Receipt(accepted=True)

    # -- admin --------------------------------------------------------------------------------
    def create_job(self, peer: Identity, spec: m.JobSpec) -> m.JobView:
        """Validate and start a job; its first round opens at the next tick."""
        authorize(peer, roles={Role.ADMIN})
        if spec.secure_aggregation is not None and self.driver.secagg is None:
            raise ValidationError(
                f"job {spec.name!r}: this coordinator was started without the PKI files secure "
                "aggregation needs (CA, its certificate and key); remove secure_aggregation"
            )
        view = admin.create_job(self.driver, spec, self.clock())
        audit = self.driver.audit
        audit.record_admin(peer, "job.create", spec.name, {"spec": spec.model_dump(mode="json")})
        initial = self.store.list_model_versions(spec.name)[0]
        audit.record_release(initial, signed=self.driver.release_key is not None)
        return view

    def list_jobs(self, peer: Identity) -> list[m.JobView]:
        """Every job with its rounds."""
        authorize(peer, roles={Role.ADMIN})
        return [admin.job_view(self.store, j.id) for j in self.store.list_jobs()]

    def get_job(self, peer: Identity, job_id: str) -> m.JobView:
        """One job with its rounds."""
        authorize(peer, roles={Role.ADMIN})
        return admin.job_view(self.store, job_id)

    def pause_job(self, peer: Identity, job_id: str) -> m.JobView:
        """Stop handing out work (rounds already training finish); no new round opens."""
        authorize(peer, roles={Role.ADMIN})
        view = admin.set_job_state(self.driver, job_id, "running", "paused")
        self.driver.audit.record_admin(peer, "job.pause", job_id)
        return view

    def resume_job(self, peer: Identity, job_id: str) -> m.JobView:
        """Let a paused job go on."""
        authorize(peer, roles={Role.ADMIN})
        view = admin.set_job_state(self.driver, job_id, "paused", "running")
        self.driver.audit.record_admin(peer, "job.resume", job_id)
        return view

    def list_devices(self, peer: Identity) -> list[m.DeviceView]:
        """Every device the coordinator has heard of."""
        authorize(peer, roles={Role.ADMIN})
        return admin.device_views(self.store)

    def revoke_device(self, peer: Identity, device_id: str) -> m.DeviceView:
        """Refuse a device from now on (direct check-ins, and partials that count it)."""
        authorize(peer, roles={Role.ADMIN})
        self.store.set_revoked(device_id)
        self.driver.audit.record_admin(peer, "revocation", device_id)
        return admin.device_views(self.store, device_id)[0]

    # -- model registry -----------------------------------------------------------------------
    def _version(self, sha256: str) -> ModelVersionRow:
        row = self.store.get_model_version(sha256)
        if row is None:
            raise UnknownNameError(f"no model version {sha256}")
        return row

    def list_models(self, peer: Identity, job_id: str) -> list[m.ModelVersionView]:
        """Every version of a job with its lineage, metrics and status."""
        authorize(peer, roles={Role.ADMIN})
        return models.version_views(self.store, job_id, self.rollouts.view)

    def get_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """One version."""
        authorize(peer, roles={Role.ADMIN})
        return models.version_view(self.store, self._version(sha256), self.rollouts.view(sha256))

    def promote_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """Make a candidate (or retired) version production; the current one is retired."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            row = self.store.promote_version(sha256, f"promoted by {peer.name}")
            self.rollouts.sync(row.job_id, self.clock())  # its manifest (or canary stage)
        self.driver.audit.record_admin(peer, "promotion", sha256, {"job": row.job_id})
        return models.version_view(self.store, row)

    def reject_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """Reject a candidate for good."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            row = self.store.set_version_status(sha256, "rejected", f"rejected by {peer.name}")
        self.driver.audit.record_admin(peer, "rejection", sha256, {"job": row.job_id})
        return models.version_view(self.store, row)

    def rollback_model(self, peer: Identity, job_id: str) -> m.ModelVersionView:
        """Roll the job's production version back to the previous one; returns the restored one."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            old, restored = self.store.rollback_job(job_id, f"rolled back by {peer.name}")
            self.rollouts.sync(job_id, self.clock())  # a new manifest names the restored one
        moved = {"rolled_back": old.sha256, "restored": restored.sha256}
        self.driver.audit.record_admin(peer, "rollback", job_id, moved)
        return models.version_view(self.store, restored)

    def diff_models(self, peer: Identity, a: str, b: str) -> m.ModelDiff:
        """Metric changes and weight distance from version ``a`` to ``b``."""
        authorize(peer, roles={Role.ADMIN})
        return models.diff_versions(self.store, self.artifacts, self._version(a), self._version(b))
