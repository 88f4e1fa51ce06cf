"""The coordinator's clock-driven side: open rounds, close them, aggregate, commit or abandon.

:class:`RoundDriver` owns the live state of every job (a :class:`~fedge.coordinator.jobs.JobRuntime`
and at most one :class:`~fedge.coordinator.live.LiveRound`) and one lock that the request handlers share. ``tick(now)``
is the only thing that moves rounds forward in time; the service calls it from a background
thread, tests call it with an injected clock.

A live round keeps two O(model) float64 sums, never one per device: ``acc`` (gateways' partials,
folded in as they arrive) and ``direct`` (updates of devices connected to us directly — the
coordinator acts as their site's gateway with the same accumulator). At aggregation ``direct``
joins ``acc`` as the partial of the :data:`~fedge.coordinator.selection.DIRECT` pseudo-site.

**Restart.** Committed rounds are checkpointed (params + optimizer state as artifacts, one DB
transaction for version, checkpoint, round and job rows: :mod:`fedge.coordinator.publish`).
:meth:`RoundDriver.recover` rebuilds every running/paused job from its latest checkpoint and
marks any round that was in flight *abandoned* ("coordinator restarted"); the next tick plans a
new attempt with the next round number. Partials of the abandoned attempt are refused as stale
(or acknowledged as duplicates if already recorded), so nothing is counted twice and no
committed round is lost or repeated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from fedge.aggregation import WeightedMeanAccumulator
from fedge.coordinator.artifacts import ArtifactStore
from fedge.coordinator.audit import AuditLog
from fedge.coordinator.dropouts import round_dropouts
from fedge.coordinator.jobs import JobRuntime
from fedge.coordinator.live import LiveRound
from fedge.coordinator.publish import publish_round
from fedge.coordinator.rounds import Round, RoundState
from fedge.coordinator.roundstats import RoundStats, direct_equivalent
from fedge.coordinator.secure import SecureRound
from fedge.coordinator.secure_setup import SecAggAuthority
from fedge.coordinator.selection import DIRECT, plan_quotas
from fedge.coordinator.settings import CoordinatorSettings
from fedge.coordinator.store import Store
from fedge.coordinator.traces import RoundTraces, begin_round_trace
from fedge.core.params import ParamSpec
from fedge.errors import FedgeError, UnknownNameError
from fedge.identity.signing import ReleaseSigningKey
from fedge.telemetry.logs import round_context
from fedge.telemetry.metrics import record_round_dropouts
from fedge.telemetry.round_trace import record_restart
from fedge.transport import messages as m

__all__ = ["RoundDriver"]

log = logging.getLogger(__name__)


class RoundDriver:
    """Live jobs and rounds, their lock, and the deadline-driven transitions."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: CoordinatorSettings,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.artifacts, self.settings, self.clock = store, artifacts, settings, clock
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRuntime] = {}
        self.live: dict[str, LiveRound] = {}
        self.secagg: SecAggAuthority | None = None  # set when the coordinator can run SecAgg+
        self.release_key: ReleaseSigningKey | None = None  # set: every version is signed
        self.on_open: Callable[[], None] = lambda: None  # a round opened (wakes held check-ins)
        # called with the job id after the release gate promoted a version (its rollout starts)
        self.on_promoted: Callable[[str], None] | None = None
        self.stats = RoundStats(store.engine)  # traffic and secure-sum outcomes, per round
        self.audit = AuditLog(store.engine, clock)  # who took part, releases, admin actions
        self.traces = RoundTraces(store.engine)  # each round's traceparent, across restarts

    def runtime(self, job_id: str) -> JobRuntime:
        """The live job ``job_id``; UnknownNameError when it is not running or paused."""
        rt = self.jobs.get(job_id)
        if rt is None:
            self.store.get_job(job_id)  # UnknownNameError when there is no such job at all
            raise UnknownNameError(f"job {job_id!r} is finished; it takes no more contributions")
        return rt

    def record_traffic(
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
        self.stats.record_traffic(
            job_id, number, sender, kind, nbytes, devices, direct, self.clock()
        )

    # -- restart ------------------------------------------------------------------------------
    def recover(self, now: float) -> None:
        """Load running/paused jobs from their checkpoints; abandon rounds left in flight."""
        with self.lock:
            for row in self.store.list_jobs():
                if row.state not in ("running", "paused"):
                    continue
                ckpt = self.store.latest_checkpoint(row.id)
                if ckpt is None:
                    log.error("job %s has no checkpoint; marking it failed", row.id)
                    self.store.update_job(row.id, state="failed", reason="no checkpoint found")
                    continue
                spec = m.JobSpec.model_validate(row.spec)
                rt = JobRuntime.restore(
                    spec,
                    self.artifacts,
                    ckpt.params_sha256,
                    ckpt.opt_state_sha256,
                    ckpt.step,
                    row.fleet_size,
                )
                rt.job_state = row.state
                self.jobs[row.id] = rt
                for rnd in self.store.list_rounds(row.id):
                    if rnd.state not in ("committed", "abandoned"):
                        reason = (
                            f"coordinator restarted while round {rnd.number} was {rnd.state}; "
                            "re-run as a new round attempt"
                        )
                        self.store.update_round(
                            row.id, rnd.number, state="abandoned", reason=reason, ended_at=now
                        )
                        log.warning("job %s: %s", row.id, reason)
                        self.audit.record_round(
                            row.id, rnd.number, "abandoned", model_sha256=None, reason=reason
                        )
                        record_restart(
                            self.traces.get(row.id, rnd.number), row.id, rnd.number, reason
                        )

    # -- time ---------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Advance every job's round as far as ``now`` allows (open, close, commit, next)."""
        t = self.clock() if now is None else now
        with self.lock:
            for rt in list(self.jobs.values()):
                for _ in range(3):  # a commit can open the next round within the same tick
                    live = self.live.get(rt.id)
                    trace = live.trace if live is not None else None
                    with trace.active() if trace is not None else round_context(rt.id):
                        if not self._advance(rt, t):
                            break

    def _advance(self, rt: JobRuntime, now: float) -> bool:
        live = self.live.get(rt.id)
        if live is None:
            return self._plan_next(rt, now)
        rnd = live.machine
        if rnd.state == RoundState.PLANNED:
            if rt.job_state != "running":
                return False
            if self._open(rt, live, now):
                return True
            if now >= live.planned_deadline:
                self._close(rt, live, now, self._why_unopened(rt, now))
                return True
            return False
        if live.secure is not None:
            return self._advance_secure(rt, live, now)
        why = rnd.due(now, also_done=[DIRECT] if live.direct_done(now) else [])
        if why == "unclaimed":
            self._close(rt, live, now, "no gateway or device took the round before its deadline")
            return True
        if why is not None:
            self._aggregate(rt, live, now)
            return True
        return False

    def _why_unopened(self, rt: JobRuntime, now: float) -> str:
        eligible = sum(self.eligible(rt, now).values())
        selector = rt.spec.selector
        matching = (
            " matching the selector " + ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
            if selector
            else ""
        )
        return (
            f"never opened: {eligible} eligible device(s){matching} within "
            f"{rt.spec.training_deadline_s + rt.spec.report_deadline_s:g} s, the job needs "
            f"min_devices = {rt.spec.min_devices}"
        )

    def _plan_next(self, rt: JobRuntime, now: float) -> bool:
        if rt.job_state != "running":
            return False
        if rt.committed >= rt.spec.rounds:
            return self._finish_job(rt, "completed", f"all {rt.spec.rounds} rounds committed")
        if rt.consecutive_abandoned >= self.settings.max_consecutive_abandoned:
            return self._finish_job(
                rt, "failed", f"{rt.consecutive_abandoned} rounds in a row were abandoned"
            )
        budget = rt.budget_left()
        if budget is not None:
            return self._finish_job(rt, "completed", budget)
        rounds = self.store.list_rounds(rt.id)
        number = rounds[-1].number + 1 if rounds else 1
        self.store.add_round(rt.id, number, rt.model_sha256, RoundState.PLANNED.value)
        spec = rt.param_spec
        self.live[rt.id] = LiveRound(
            Round(rt.id, number),
            rt.model_sha256,
            WeightedMeanAccumulator(spec),
            WeightedMeanAccumulator(spec),
            # a round that cannot open within a whole round's time is abandoned (and counts
            # toward max_consecutive_abandoned), so a job short of devices ends instead of
            # waiting in "planned" forever
            planned_deadline=now + rt.spec.training_deadline_s + rt.spec.report_deadline_s,
            trace=begin_round_trace(rt, number),
        )
        self.traces.save(rt.id, number, self.live[rt.id].traceparent)
        return True

    def _finish_job(self, rt: JobRuntime, state: str, reason: str) -> bool:
        self.store.update_job(rt.id, state=state, reason=reason)
        rt.job_state = state
        del self.jobs[rt.id]
        log.info("job %s %s: %s", rt.id, state, reason)
        return False

    def eligible(self, rt: JobRuntime, now: float) -> dict[str, int]:
        """Eligible devices per site key (gateway id, or DIRECT) for ``rt``'s selector.

        Without a selector a gateway's count is the one it reports. With one, it is the
        gateway's devices whose labels match, as the gateway forwarded them
        (``GatewayCheckIn.device_labels``, refreshed while they are online), seen within
        ``device_ttl_s``, and never more than the eligible devices it reports. Counted by the
        database (:meth:`Store.count_eligible_devices`): called at every tick while a round is
        planned, it must not load the fleet's device rows."""
        selector = rt.spec.selector
        gateways = self.store.list_gateways(seen_since=now - self.settings.gateway_ttl_s)
        per_gateway, direct = self.store.count_eligible_devices(
            selector, seen_since=now - self.settings.device_ttl_s
        )
        counts: dict[str, int] = {}
        for g in gateways:
            matching = min(per_gateway.get(g.id, 0), g.eligible_devices)
            counts[g.id] = matching if selector else g.eligible_devices
        counts[DIRECT] = direct
        return counts

    def _open(self, rt: JobRuntime, live: LiveRound, now: float) -> bool:
        eligible = self.eligible(rt, now)
        if sum(eligible.values()) < rt.spec.min_devices:
            return False
        quotas = plan_quotas(rt.spec.devices_per_round, rt.spec.over_selection, eligible)
        quotas = {k: q for k, q in quotas.items() if q > 0}
        if rt.spec.secure_aggregation is not None:
            quotas.pop(DIRECT, None)  # SecAgg+ needs a relay: devices come through gateways
            if not quotas:
                return False
        training = now + rt.spec.training_deadline_s
        report = training + rt.spec.report_deadline_s
        live.machine.open(quotas, training, report)
        if live.trace is not None:
            live.trace.phase(
                "configuring", {"fedge.quotas": [f"{k}={q}" for k, q in quotas.items()]}
            )
        if rt.spec.secure_aggregation is not None:
            assert self.secagg is not None  # create_job refuses secure jobs otherwise
            live.secure = SecureRound(
                rt.id,
                live.number,
                rt.secure_settings(),
                rt.param_spec.size,
                self.secagg,
                expected=sum(quotas.values()),
                join_deadline=training,
            )
            live.secure.traceparent = live.traceparent  # its phases are spans of the round
        self.store.update_round(
            rt.id,
            live.number,
            state=live.machine.state.value,
            quotas=quotas,
            started_at=now,
            training_deadline=training,
            report_deadline=report,
        )
        log.info("job %s round %d open: quotas %s", rt.id, live.number, quotas)
        self.on_open()
        return True

    def start_training(self, rt: JobRuntime, live: LiveRound) -> None:
        """configuring → training on the first hand-out (caller holds the lock)."""
        if live.machine.state == RoundState.CONFIGURING:
            live.machine.start_training()
            if live.trace is not None:
                live.trace.phase("training")
            self.store.update_round(rt.id, live.number, state=live.machine.state.value)

    def _advance_secure(self, rt: JobRuntime, live: LiveRound, now: float) -> bool:
        """Drive the round's SecAgg+ session; on its outcome, commit or abandon the round."""
        secure, rnd = live.secure, live.machine
        assert secure is not None
        secure.tick(now)
        result = secure.result
        if result is None:
            return False
        self.stats.record_secagg(
            rt.id,
            live.number,
            expected=secure.expected,
            joined=len(secure.joined),
            survivors=len(result.survivors),
            reason=result.reason if result.abandoned else "",
            now=now,
        )
        if result.abandoned or result.sums is None:
            self._close(rt, live, now, f"secure aggregation abandoned: {result.reason}")
            return True
        for gateway in result.gateways:
            if gateway in rnd.assigned:
                rnd.mark_reported(gateway)
        spec = ParamSpec.of(dict(sorted(rt.state.params.items())))  # devices flatten sorted
        sums = {k: np.array(v, dtype=np.float64) for k, v in spec.unflatten(result.sums).items()}
        if not live.acc.add_partial(
            "secagg", sums, result.total_weight, len(result.survivors), result.survivors
        ):
            self._close(rt, live, now, f"secure sum refused: {live.acc.rejected[-1][1]}")
            return True
        self._aggregate(rt, live, now)
        return True

    def _aggregate(self, rt: JobRuntime, live: LiveRound, now: float) -> None:
        rnd = live.machine
        rnd.begin_aggregation()
        if live.trace is not None:
            live.trace.phase("aggregating")
        self.store.update_round(rt.id, live.number, state=rnd.state.value)
        if live.direct.num_accepted:
            d = live.direct
            live.acc.add_partial(
                DIRECT,
                d.weighted_sum,
                d.total_weight,
                d.num_accepted,
                sorted(live.direct_submitted),
            )
        n = live.acc.num_accepted
        if n < rt.spec.min_devices:
            self._close(
                rt,
                live,
                now,
                f"only {n} device(s) reported; the job needs min_devices = {rt.spec.min_devices}",
            )
            return
        try:
            publish_round(self, rt, live, now)
        except FedgeError as exc:
            log.exception("job %s round %d could not be committed", rt.id, live.number)
            self._close(rt, live, now, f"aggregation failed: {exc}")

    def _close(self, rt: JobRuntime, live: LiveRound, now: float, reason: str) -> None:
        if live.secure is not None:
            live.secure.abandon(reason)
        live.machine.abandon(reason)
        self.store.update_round(
            rt.id,
            live.number,
            state=live.machine.state.value,
            reason=reason,
            participants=live.acc.num_accepted,
            gateways_reported=len(live.machine.reported),
            ended_at=now,
        )
        rt.consecutive_abandoned += 1
        if live.trace is not None:
            live.trace.end("abandoned", reason, {"fedge.participants": live.acc.num_accepted})
        record_round_dropouts(round_dropouts(live))  # handed a task, never reported
        del self.live[rt.id]
        self.audit.record_round(rt.id, live.number, "abandoned", model_sha256=None, reason=reason)
        log.warning("job %s round %d abandoned: %s", rt.id, live.number, reason)
