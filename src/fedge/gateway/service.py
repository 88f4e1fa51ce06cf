"""The gateway's device API: :class:`GatewayService` implements ``DeviceService`` for one site.

It admits only devices certified for its own site, acting as the subject of their certificate,
and refuses (403) those the coordinator says were revoked through its admin API (the list comes
with every check-in answer, :meth:`GatewayService.apply_revocations`); tells the coordinator in
its check-ins which devices are online and eligible and their labels, so it can count devices
matching a job's selector (:class:`~fedge.gateway.roster.SiteRoster`);
hands out the rounds the coordinator assigned (within quota and label selector, else ``Wait``);
serves models from the site's :class:`~fedge.gateway.cache.ModelCache`; and streams each
accepted update into the round's :class:`~fedge.gateway.cohort.Cohort`. When a round's cohort is
complete or its time is up, :meth:`GatewayService.close_due_rounds` forms ONE partial payload and
puts it in the durable outbox, keyed ``partial/<job>/<round>``: a round already in the outbox
(say, before a restart) is never reported twice. The uplink and sender loops
(:mod:`fedge.gateway.uplink`) drive the upstream side; everything here is synchronous and
thread-safe (FastAPI calls it from its thread pool), and the clock is injectable for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

from opentelemetry.trace import Span

from fedge.core.params import ParamSpec
from fedge.core.serde import decode_params
from fedge.errors import (
    AuthorizationError,
    ProtocolError,
    SignatureError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
)
from fedge.gateway.cache import ModelCache
from fedge.gateway.cohort import Cohort, decode_update, encode_partial
from fedge.gateway.roster import SiteRoster
from fedge.gateway.rounds import RoundBook, RoundKey, RoundState
from fedge.identity import Identity, Role, authorize
from fedge.storage.outbox import Outbox
from fedge.telemetry.logs import round_context
from fedge.telemetry.metrics import (
    record_dropouts,
    record_model_served,
    record_round_closed,
    record_update_norm,
)
from fedge.telemetry.tracing import activate, round_span, start_span, traceparent_of
from fedge.transport.longpoll import LongPoll
from fedge.transport.manifests import ManifestGuard
from fedge.transport.messages import (
    CheckInRequest,
    GatewayAssignments,
    GatewayCheckIn,
    HealthReport,
    ModelRelease,
    Receipt,
    RoundAssignment,
    TaskAssignment,
    Wait,
    new_nonce,
)
from fedge.transport.replay import ReplayGuard

__all__ = ["PARTIAL_RETENTION_S", "GatewayService", "partial_key"]

log = logging.getLogger(__name__)

PARTIAL_RETENTION_S = 7 * 24 * 3600.0  # a partial is retried this long; the coordinator dedups


def partial_key(job_id: str, round_number: int) -> str:
    """The outbox key of a round's partial: one per (job, round) at this gateway."""
    return f"partial/{job_id}/{round_number}"


class GatewayService:
    """Serves a site's devices; sums their updates per round into one partial for the coordinator."""

    def __init__(
        self,
        *,
        gateway_id: str,
        site: str,
        cache: ModelCache,
        outbox: Outbox,
        replay: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        device_retry_s: float = 5.0,
        online_window_s: float = 120.0,
        long_poll: LongPoll | None = None,
        label_refresh_s: float = 60.0,
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.cache = cache
        self.outbox = outbox
        self.replay = replay if replay is not None else ReplayGuard()
        self.clock = clock
        self.device_retry_s = device_retry_s
        self._lock = threading.Lock()
        self._book = RoundBook()
        self._cohorts: dict[RoundKey, Cohort] = {}
        self._specs: dict[str, ParamSpec] = {}
        # the site's devices: online, eligible, their labels and certificates for the coordinator
        self.roster = SiteRoster(online_window_s=online_window_s, label_refresh_s=label_refresh_s)
        # devices revoked through the coordinator's admin API (each check-in's answer names them
        # all): refused at once, never counted eligible, never handed a task
        self._revoked: frozenset[str] = frozenset()
        self.refused_revoked = 0  # requests refused because their device is revoked
        # held check-ins (long poll): the uplink wakes them when a new round's model is cached
        self.long_poll = long_poll if long_poll is not None else LongPoll()
        # where the job's production version is looked up (the coordinator); None: not served
        self.production_source: Callable[[str], ModelRelease] | None = None
        # where devices' health reports on canary versions go (the coordinator); None: nowhere
        self.health_sink: Callable[[str, HealthReport], Receipt] | None = None
        # the newest release manifest accepted per job: older ones are refused (downgrades)
        self.manifests = ManifestGuard()
        # this gateway's span of each round, a child of the round's trace; kept after it ends
        # (until the round is forgotten): its context parents the devices' work and the upload
        self._spans: dict[RoundKey, Span] = {}

    # -- DeviceService ----------------------------------------------------------------------
    def _admit(self, peer: Identity) -> str:
        authorize(peer, roles={Role.DEVICE}, site=self.site)
        self._refuse_revoked(peer)
        return peer.name

    def _refuse_revoked(self, peer: Identity) -> None:
        """Refuse a device the coordinator says is revoked (403, counted as ``revoked``)."""
        if peer.role is not Role.DEVICE or peer.name not in self._revoked:
            return
        with self._lock:
            self.refused_revoked += 1
            first = self.refused_revoked == 1
        (log.warning if first else log.info)(
            "refused device %s: revoked through the coordinator's admin API", peer.name
        )
        raise AuthorizationError(
            f"device {peer.name!r} is revoked (fedge devices revoke): gateway "
            f"{self.gateway_id!r} refuses its requests and hands it no work; a device revoked "
            "by mistake must be re-enrolled under a new certificate"
        )

    def checkin(self, peer: Identity, request: CheckInRequest) -> TaskAssignment | Wait:
        """Hand the device an open round within quota and selector, or tell it when to return."""
        device = self._admit(peer)
        authorize(peer, roles={Role.DEVICE}, name=request.device_id)
        self.replay.check(device, request.nonce)
        now = self.clock()
        eligible = request.eligibility.num_examples > 0
        self.roster.saw(device, now, eligible=eligible, labels=request.labels, der=peer.der)
        if not eligible:
            return Wait(retry_after_s=self.device_retry_s, reason="no local examples yet")
        task = self._offer(device, request, now)
        if task is None:
            return Wait(retry_after_s=self.device_retry_s, reason="no task for this device now")
        return task

    def recheck(self, peer: Identity, request: CheckInRequest) -> TaskAssignment | None:
        """Look again for a task for a check-in held by long poll (``checkin`` admitted it)."""
        return self._offer(self._admit(peer), request, self.clock())

    def _offer(self, device: str, request: CheckInRequest, now: float) -> TaskAssignment | None:
        with self._lock:
            # only rounds whose model the site already holds: a device must never be sent to
            # fetch a model the gateway cannot serve while its uplink is down
            state = self._book.assign(
                device,
                request.labels,
                now,
                request.privacy_remaining,
                ready=lambda a: self.cache.has(a.model_sha256),
            )
        if state is None:
            return None
        a = state.assignment
        with self.in_round(a.job_id, a.round):
            log.info("handed %s round %d to %s", a.job_id, a.round, device)
        gateway_span = self._spans.get(state.key)
        if gateway_span is not None:
            gateway_span.add_event("task handed out", {"fedge.device": device})
        return TaskAssignment(
            job_id=a.job_id,
            round=a.round,
            task_name=a.task_name,
            model_sha256=a.model_sha256,
            deadline=a.training_deadline,
            plan=a.plan,
            privacy=a.privacy,
            secagg=a.secagg,
            nonce=request.nonce,
            traceparent=self.round_traceparent(a.job_id, a.round),
        )

    def model(self, peer: Identity, sha256: str) -> bytes:
        """A model version from the site cache (fetched once from the coordinator)."""
        payload, wanted = self._cached(peer, sha256)
        release = self.manifests.status_of(sha256)  # what it is, for fedge_models_served_total
        record_model_served(release or ("round" if wanted else "other"))
        return payload

    def _cached(self, peer: Identity, sha256: str) -> tuple[bytes, bool]:
        """The payload, and whether an open round trains from it."""
        authorize(peer, roles={Role.DEVICE, Role.GATEWAY}, site=self.site)
        self._refuse_revoked(peer)
        with self._lock:
            wanted = any(s.assignment.model_sha256 == sha256 for s in self._book.states())
        if not wanted and not self.cache.has(sha256):
            raise UnknownNameError(f"model {sha256} is not served by gateway {self.gateway_id!r}")
        return self.cache.get(sha256), wanted

    def production(self, peer: Identity, job_id: str) -> ModelRelease:
        """The job's release manifest, asked of the coordinator; the model is cached first.

        The manifest must verify (given the release key) and be no older than the one accepted
        before; otherwise -- and while the coordinator is unreachable -- the accepted one is
        served, and the refusal logged.
        """
        authorize(peer, roles={Role.DEVICE, Role.GATEWAY}, site=self.site)
        self._refuse_revoked(peer)
        if self.production_source is None:
            raise UnknownNameError(f"gateway {self.gateway_id!r} does not serve production models")
        held = self.manifests.accepted(job_id)
        try:
            pointer = self.production_source(job_id)
            manifest = self.cache.manifest(job_id, pointer)  # a refusal is reported upstream
            fresh = self.manifests.check(manifest)
            if fresh:
                self.cache.get(pointer.sha256, job_id=job_id)  # fetched, verified once for the site
        except (SignatureError, ValidationError, UnavailableError) as exc:
            if held is None:
                raise
            log.error("kept release manifest %d for %s: %s", held.sequence, job_id, exc)
            return held.release
        if fresh:
            self.manifests.accept(manifest)
        return pointer

    def report_health(self, peer: Identity, job_id: str, report: HealthReport) -> Receipt:
        """Forward a device's health report on the version this gateway serves it, or any
        refusal of a model by the device (fedge.transport.reports)."""
        device = self._admit(peer)
        if report.device_id not in (None, device):
            raise AuthorizationError(f"device {device!r} may not report for {report.device_id!r}")
        held = self.manifests.accepted(job_id)
        if report.check == "passed" and (
            held is None or (held.sha256, held.sequence) != (report.sha256, report.sequence)
        ):
            raise ProtocolError(
                f"this gateway does not serve model {report.sha256[:12]} under manifest"
                f" {report.sequence} for job {job_id!r}; the report is stale"
            )
        if self.health_sink is None:
            raise UnknownNameError(f"gateway {self.gateway_id!r} forwards no health reports")
        return self.health_sink(job_id, report.model_copy(update={"device_id": device}))

    def release(self, peer: Identity, sha256: str) -> ModelRelease:
        """The release signature of a model version served from the site cache."""
        self._cached(peer, sha256)  # authorises, and caches (and verifies) the version first
        release = self.cache.release(sha256)
        if release is None:
            raise UnknownNameError(f"model {sha256} has no release signature at this gateway")
        return release

    def submit_update(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """Check the update and fold it into the round's running sum (idempotent per device)."""
        device = self._admit(peer)
        key = (job_id, round_number)
        with self._lock:
            state = self._check_round(key, device)
        spec = self._spec(state.assignment.model_sha256)
        try:
            decoded = decode_update(
                payload, spec, job_id=job_id, round_number=round_number, device=device
            )
        except ValidationError as exc:
            with self._lock:
                self._cohort(key, spec, state).reject(device, str(exc))
            with self.in_round(job_id, round_number):
                log.warning("refused update of %s for %s/%d: %s", device, job_id, round_number, exc)
            raise
        with self._lock:
            state = self._check_round(key, device)
            cohort = self._cohort(key, spec, state)
            if cohort.nonce_of(device) == decoded.nonce:
                return Receipt(accepted=True, duplicate=True, reason="already received")
            if device in state.reported:
                raise ProtocolError(
                    f"device {device!r} already reported for {job_id}/{round_number}"
                )
            self.replay.check(device, decoded.nonce)
            if not cohort.add(decoded):
                raise ValidationError(f"update refused: {cohort.rejected()[-1][1]}")
            state.reported.add(device)
        # the gateway holds this plain update anyway: its norm adds nothing it did not know
        privacy = state.assignment.privacy  # clipped only: noise (local DP) moves the norm
        clip = privacy.clip_norm if privacy.mode == "central" else None
        record_update_norm(decoded.update.delta, clip, job_id, round_number)
        return Receipt(accepted=True)

    def _check_round(self, key: RoundKey, device: str) -> RoundState:
        state = self._book.get(key)
        if state is None:
            raise ProtocolError(
                f"round {key[0]}/{key[1]} is not open at this gateway (unknown or stale); "
                "check in for a current task"
            )
        if device not in state.handed:
            raise AuthorizationError(
                f"device {device!r} was not handed round {key[0]}/{key[1]}; check in first"
            )
        if not state.open_at(self.clock()):
            raise ProtocolError(f"round {key[0]}/{key[1]} is closed: its deadline has passed")
        return state

    def _cohort(self, key: RoundKey, spec: ParamSpec, state: RoundState) -> Cohort:
        cohort = self._cohorts.get(key)
        if cohort is None:
            uniform = state.assignment.privacy.mode != "none"
            cohort = self._cohorts[key] = Cohort(spec, uniform=uniform)
        return cohort

    def _spec(self, sha256: str) -> ParamSpec:
        spec = self._specs.get(sha256)
        if spec is None:
            params, _ = decode_params(self.cache.get(sha256))
            spec = self._specs[sha256] = ParamSpec.of(params)
        return spec

    # -- uplink side ------------------------------------------------------------------------
    def checkin_request(self) -> GatewayCheckIn:
        """What the uplink loop tells the coordinator about this site: devices online and
        eligible, and the labels of those whose labels the coordinator should hear (again)."""
        presence = self.roster.presence(self.clock())
        return GatewayCheckIn(
            gateway_id=self.gateway_id,
            site=self.site,
            nonce=new_nonce(),
            online_devices=presence.online,
            eligible_devices=presence.eligible,
            device_labels=presence.labels,
        )

    def labels_sent(self, request: GatewayCheckIn) -> None:
        """The coordinator took ``request``: its device labels need not go again for a while."""
        self.roster.labels_sent(request.device_labels, self.clock())

    def apply_assignments(self, answer: GatewayAssignments) -> list[RoundAssignment]:
        """Take the coordinator's current assignments and revocations; returns the rounds new
        to this gateway."""
        self.apply_revocations(answer.revoked_devices)
        closed = [
            (a.job_id, a.round)
            for a in answer.assignments
            if self._reported(partial_key(a.job_id, a.round))
        ]
        with self._lock:
            new = [s for s in self._book.update(answer.assignments, closed) if not s.closed]
            for state in new:
                a = state.assignment
                self._spans[state.key] = start_span(
                    "fedge.gateway.round",
                    traceparent=a.traceparent,
                    attributes={
                        "fedge.job": a.job_id,
                        "fedge.round": a.round,
                        "fedge.gateway": self.gateway_id,
                        "fedge.site": self.site,
                        "fedge.quota": a.quota,
                        "fedge.secure_aggregation": a.secagg is not None,
                    },
                )
        return [s.assignment for s in new]

    def apply_revocations(self, revoked: Iterable[str]) -> None:
        """Refuse exactly ``revoked`` from now on (the coordinator names them all each time).

        A newly revoked device is forgotten: not online, not eligible, not registered, its
        labels not forwarded; a round it was handed but has not reported for is open to another
        device. If its update is already in a round's sum, that sum cannot be taken apart: the
        site reports no update for that round (:meth:`_without_revoked`), and this is logged as
        an error now, with what to do.
        """
        new = frozenset(revoked)
        lost: list[tuple[RoundKey, str, int]] = []
        with self._lock:
            added = sorted(new - self._revoked)
            self._revoked = new
            for device in added:
                self.roster.forget(device)
                for state in self._book.states():
                    if state.closed or device not in state.handed:
                        continue
                    cohort = self._cohorts.get(state.key)
                    if cohort is not None and cohort.nonce_of(device) is not None:
                        lost.append((state.key, device, cohort.num_accepted))
                    elif device not in state.reported:
                        state.handed.discard(device)  # its slot of the quota goes to another
        for device in added:
            log.warning(
                "device %s was revoked through the coordinator's admin API: this gateway "
                "refuses it from now on", device,
            )  # fmt: skip
        for (job_id, number), device, accepted in lost:
            with self.in_round(job_id, number):
                log.error(
                    "round %s/%d: revoked device %s already has its update in this site's sum "
                    "of %d update(s); a sum cannot be taken apart, so this site reports no "
                    "update for the round and the other %d update(s) are lost for this round "
                    "only (later rounds go on without %s). To lose nothing, revoke between "
                    "rounds: fedge jobs pause, let the round end, revoke, resume",
                    job_id, number, device, accepted, accepted - 1, device,
                )  # fmt: skip

    def round_traceparent(self, job_id: str, round_number: int) -> str | None:
        """The context of this gateway's span of a round (work for it is parented to it)."""
        gateway_span = self._spans.get((job_id, round_number))
        return traceparent_of(gateway_span) if gateway_span is not None else None

    def in_round(self, job_id: str, round_number: int) -> AbstractContextManager[None]:
        """Log records of the block carry the round's job, round and this gateway's span ids."""
        gateway_span = self._spans.get((job_id, round_number))
        if gateway_span is None:
            return round_context(job_id, round_number)
        return activate(gateway_span, job_id, round_number)

    @contextmanager
    def upload_span(self, name: str, job_id: str, round_number: int) -> Iterator[Span]:
        """A span for sending a round's sum upstream, a child of this gateway's span of it."""
        with round_span(
            name,
            job_id,
            round_number,
            traceparent=self.round_traceparent(job_id, round_number),
            attributes={"fedge.gateway": self.gateway_id, "fedge.site": self.site},
        ) as s:
            yield s

    def _end_span(self, state: RoundState, cohort: Cohort | None) -> None:
        """End this gateway's span of a round it closes, with what it collected."""
        gateway_span = self._spans.get(state.key)
        if gateway_span is None:
            return
        gateway_span.set_attributes(
            {
                "fedge.handed": len(state.handed),
                "fedge.reported": len(state.reported),
                "fedge.accepted": cohort.num_accepted if cohort is not None else 0,
                "fedge.refused": len(cohort.rejected()) if cohort is not None else 0,
            }
        )
        gateway_span.end()

    def _reported(self, key: str) -> bool:
        return self.outbox.get(key) is not None or self.outbox.is_delivered(key)

    def next_close_at(self) -> float | None:
        """When the earliest open round must be reported (for the uplink loop's sleep)."""
        with self._lock:
            times = [s.close_at for s in self._book.states() if not s.closed]
        return min(times) if times else None

    def _without_revoked(self, state: RoundState, cohort: Cohort) -> Cohort:
        """``cohort``, or an empty one when a device revoked after its update was summed is in
        it: the coordinator would refuse that sum whole, while an empty partial at least tells
        it at once that this site is done (the loss is logged as an error, with what to do)."""
        revoked = [d for d in cohort.contributors() if d in self._revoked]
        if not revoked:
            return cohort
        empty = Cohort(cohort.spec, uniform=cohort.uniform)
        for device, why in cohort.rejected():
            empty.reject(device, why)
        for device in cohort.contributors():
            empty.reject(
                device,
                "revoked after its update was summed"
                if device in revoked
                else "summed with a revoked device's update; the sum was dropped",
            )
        a = state.assignment
        with self.in_round(a.job_id, a.round):
            log.error(
                "round %s/%d: this site reports no update (an empty partial: the coordinator "
                "need not wait for it): its sum held %d update(s), %d of them from device(s) "
                "revoked after they were summed (%s), and a sum cannot be taken apart. Only this "
                "round loses the site's work; the revoked devices are refused from now on. To "
                "lose nothing, revoke between rounds: fedge jobs pause, let the round end, "
                "revoke, resume",
                a.job_id, a.round, cohort.num_accepted, len(revoked), ", ".join(revoked),
            )  # fmt: skip
        return empty

    def close_due_rounds(self) -> list[str]:
        """Form the partial of every round that is complete or out of time; returns outbox keys."""
        now = self.clock()
        with self._lock:
            due = self._book.due(now)
            for state in due:
                state.closed = True
            closing = [(s, self._cohorts.pop(s.key, None)) for s in due]
            for forgotten in self._book.forget_before(now, keep_s=600.0):
                self._spans.pop(forgotten, None)
        for state, held in closing:
            self._end_span(state, held)
        keys = []
        for state, held in closing:
            a = state.assignment
            record_round_closed(a.job_id, a.round)  # its clipped fraction (plain updates)
            if a.secagg is not None:
                continue  # a secure round sends one masked sum instead (fedge.gateway.secure)
            record_dropouts("training", len(state.handed - state.reported))
            key = partial_key(a.job_id, a.round)
            cohort = self._without_revoked(state, held) if held is not None else None
            if cohort is None:
                try:
                    cohort = Cohort(self._spec(a.model_sha256), uniform=a.privacy.mode != "none")
                except (
                    Exception
                ) as exc:  # no model, no report: the coordinator's deadline covers it
                    with self.in_round(a.job_id, a.round):
                        log.warning("cannot report empty round %s: %s", key, exc)
                    continue
            payload = encode_partial(
                cohort,
                job_id=a.job_id,
                round_number=a.round,
                gateway=self.gateway_id,
                site=self.site,
                nonce=new_nonce(),
            )
            destination = f"/v1/jobs/{a.job_id}/rounds/{a.round}/partials"
            if self.outbox.put(key, destination, payload, deadline=now + PARTIAL_RETENTION_S):
                with self.in_round(a.job_id, a.round):
                    log.info(
                        "round %s/%d closed: %d accepted, weight %g, %d refused",
                        a.job_id,
                        a.round,
                        cohort.num_accepted,
                        cohort.total_weight,
                        len(cohort.rejected()),
                    )
                keys.append(key)
        return keys
