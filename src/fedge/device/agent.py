"""The device agent: check in when eligible, train on a task, deliver the update durably.

One :meth:`DeviceAgent.step` is one pass of the loop; :meth:`DeviceAgent.run` repeats it until
stopped, sleeping what each step returns:

1. deliver what the outbox still holds (after a restart or a lost link), until each round's deadline;
2. ask the eligibility policy; not eligible → look again after ``idle_poll_s``;
3. check in (a long poll: the server holds the request up to ``long_poll_s`` until a task is
   there); an error, or a ``Wait`` from a server that does not hold → exponential backoff with
   full jitter (never sooner than the server's ``retry_after_s``); a held ``Wait`` that ran out
   (``retry_after_s = 0``) → ask again within a second;
4. on a task: decline it if the privacy ledger's limit would be passed or the privacy mode is not
   supported; download the model and refuse it unless its SHA-256 is the task's (and, with a
   release key, its release verifies) -- a refused model is reported to the gateway
   (``reports``, :mod:`fedge.transport.reports`), which forwards it to the coordinator; in a plain
   round without DP, evaluate it on the local data first (federated evaluation: the sums go in
   the update's metadata, :mod:`fedge.aggregation.evaluation`); train on the
   local store with the same trainer as the simulator; clip / noise; record the ε in the ledger;
   put the encoded update in the outbox; deliver it. With secure aggregation the update is not
   uploaded: the device takes part in the round's SecAgg+ session (:mod:`fedge.device.secure`)
   and leaves a delivered tombstone in the outbox so the round is never run twice.

The gateway is reached through a :class:`GatewayLink` (:class:`~fedge.transport.client.FedgeClient`
in production, an in-process service in tests). Only encoded updates travel through it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from opentelemetry import trace

from fedge.aggregation.evaluation import EvaluationSums, eval_meta, reports_evaluation
from fedge.core.params import Params
from fedge.core.serde import decode_params
from fedge.device.backoff import Backoff
from fedge.device.eligibility import EligibilityPolicy
from fedge.device.evaluation import evaluate_locally
from fedge.device.secure import SecAggCredentials, run_secure_round, secure_vector
from fedge.device.store import LocalStore
from fedge.device.work import check_privacy_plan, load_model, make_update
from fedge.errors import (
    FedgeError,
    PrivacyError,
    SignatureError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
)
from fedge.identity.signing import ReleaseVerifyKey
from fedge.privacy import PrivacyLedger, secure_generator
from fedge.storage.outbox import Outbox
from fedge.tasks import get_task
from fedge.telemetry.tracing import round_span, span, traceparent_of
from fedge.transport.client import retry_with_backoff
from fedge.transport.messages import (
    CheckInRequest,
    ModelRelease,
    Receipt,
    TaskAssignment,
    Wait,
    new_nonce,
)
from fedge.transport.releases import check_release
from fedge.transport.reports import ReportQueue, refusal_check, refusal_report

__all__ = ["AgentStats", "DeviceAgent", "GatewayLink", "update_key"]

log = logging.getLogger(__name__)


class GatewayLink(Protocol):
    """The device API as the device sees it (the client side of ``DeviceService``)."""

    def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        """Ask for work."""
        ...

    def model(self, sha256: str) -> bytes:
        """Download a model payload."""
        ...

    def release(self, sha256: str) -> ModelRelease:
        """The model's release signature (UnknownNameError: unsigned)."""
        ...

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """Upload an update payload."""
        ...


def update_key(job_id: str, round_number: int) -> str:
    """The outbox key of this device's update for a round (one per round)."""
    return f"update/{job_id}/{round_number}"


@dataclass
class AgentStats:
    """Counters for logs, tests and the demo's progress display."""

    checkins: int = 0
    tasks: int = 0
    declined: int = 0
    refused_models: int = 0
    delivered: int = 0
    expired: int = 0
    errors: int = 0
    last_reason: str = ""


@dataclass
class DeviceAgent:
    """A device's federated-learning loop over its local store."""

    device_id: str
    link: GatewayLink
    store: LocalStore
    policy: EligibilityPolicy
    ledger: PrivacyLedger
    outbox: Outbox
    labels: dict[str, str] = field(default_factory=dict)
    idle_poll_s: float = 5.0
    long_poll_s: float = 0.0  # offer to wait this long in each check-in (0: answered at once)
    polling: bool = field(default=False, init=False)  # True while a check-in is in flight
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.time
    train_rng: Callable[[], np.random.Generator] = lambda: np.random.default_rng(
        secrets.randbits(128)
    )
    noise_rng: Callable[[], np.random.Generator] = secure_generator
    stats: AgentStats = field(default_factory=AgentStats)
    secagg: SecAggCredentials | None = None  # certificate, key and CA: secure aggregation on
    release_key: ReleaseVerifyKey | None = None  # set: refuse models without a valid release
    # federated evaluation: report the received model's evaluation on local data (plain rounds
    # without DP only, fedge.aggregation.evaluation); ``holdout`` gives the local holdout to use
    # instead of the training examples, when the device keeps one
    federated_evaluation: bool = True
    holdout: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    # where the models it refuses are reported (its gateway, then the coordinator); None: nowhere
    reports: ReportQueue | None = None
    # each queued update's task span (traceparent): its delivery is a child of it
    _report_parents: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set."""
        while not stop.is_set():
            try:
                delay = self.step()
            except FedgeError as exc:  # a bug in one step must not end the device's loop
                self.stats.errors += 1
                log.error("device %s: step failed: %s", self.device_id, exc)
                delay = self.backoff.next_delay()
            stop.wait(delay)

    def step(self) -> float:
        """One pass of the loop; returns how long to sleep before the next."""
        self.deliver_pending()
        if self.reports is not None:
            self.reports.flush()  # refusals the gateway could not take before
        decision = self.policy.evaluate(self.store.training_count())  # holdout left out
        if not decision.eligible:
            self.stats.last_reason = "; ".join(decision.reasons)
            return self.idle_poll_s
        request = CheckInRequest(
            device_id=self.device_id,
            nonce=new_nonce(),
            eligibility=decision.report,
            labels=self.labels,
            privacy_remaining=self._privacy_remaining(),
            wait_s=self.long_poll_s,
        )
        self.stats.checkins += 1
        try:
            self.polling = True  # held by the server up to long_poll_s: a stop may cut it short
            try:
                answer = self.link.checkin(request)
            finally:
                self.polling = False
        except FedgeError as exc:
            self.stats.errors += 1
            self.stats.last_reason = str(exc)
            log.warning("device %s: check-in failed: %s", self.device_id, exc)
            return self.backoff.next_delay()
        if isinstance(answer, Wait):
            self.stats.last_reason = answer.reason
            if answer.retry_after_s == 0.0:  # a long poll ran out: ask again (spread a little)
                self.backoff.reset()
                return self.backoff.rng.uniform(0.0, min(1.0, self.idle_poll_s))
            return self.backoff.next_delay(at_least=answer.retry_after_s)
        self.backoff.reset()
        self.handle_task(answer)
        return 0.0 if self.deliver_pending() else self.backoff.next_delay()

    def verify_release(self, sha256: str, payload: bytes, deadline: float) -> None:
        """Raise :class:`SignatureError` unless the model's release verifies (when a key is set)."""
        if self.release_key is None:
            return
        release: ModelRelease | None
        try:
            release = retry_with_backoff(lambda: self.link.release(sha256), deadline=deadline)
        except UnknownNameError:
            release = None  # unsigned: check_release refuses it
        check_release(self.release_key, sha256, payload, release)

    def _privacy_remaining(self) -> float | None:
        if self.ledger.limit == float("inf"):
            return None
        return max(0.0, self.ledger.limit - self.ledger.total_spent())

    def handle_task(self, task: TaskAssignment) -> bool:
        """Train on ``task`` and queue the update; False when the task is declined or refused.

        It is the span ``fedge.device.task``, a child of the task's ``traceparent`` (the
        gateway's span of the round), and its log records carry job and round.
        """
        with round_span(
            "fedge.device.task",
            task.job_id,
            task.round,
            traceparent=task.traceparent,
            attributes={"fedge.device": self.device_id},
        ) as task_span:
            self._report_parents[update_key(task.job_id, task.round)] = traceparent_of(task_span)
            done = self._handle_task(task)
            task_span.set_attribute("fedge.done", done)
            return done

    def _handle_task(self, task: TaskAssignment) -> bool:
        self.stats.tasks += 1
        job, rnd = task.job_id, task.round
        key = update_key(job, rnd)
        if self.outbox.get(key) is not None or self.outbox.is_delivered(key):
            return True  # already trained for this round (the answer was repeated)
        epsilon_after = self.ledger.spent(job) + task.privacy.epsilon_cost
        try:
            self.ledger.require(job, epsilon_after)
            check_privacy_plan(task.privacy, secure=task.secagg is not None)
        except PrivacyError as exc:
            self.stats.declined += 1
            self.stats.last_reason = str(exc)
            log.warning("device %s declines %s/%d: %s", self.device_id, job, rnd, exc)
            return False
        if task.secagg is not None and (
            self.secagg is None or not hasattr(self.link, "secagg_join")
        ):
            self.stats.declined += 1
            self.stats.last_reason = "secure aggregation asked, but this device has no credentials"
            log.warning(
                "device %s declines %s/%d: %s", self.device_id, job, rnd, self.stats.last_reason
            )
            return False
        try:
            payload = retry_with_backoff(
                lambda: self.link.model(task.model_sha256), deadline=task.deadline
            )
            self.verify_release(task.model_sha256, payload, task.deadline)  # before decoding
            params = load_model(payload, task.model_sha256)
        except UnavailableError as exc:
            self.stats.errors += 1
            log.warning("device %s: no model for %s/%d: %s", self.device_id, job, rnd, exc)
            return False
        except (ValidationError, SignatureError) as exc:
            self.stats.refused_models += 1
            self.stats.last_reason = str(exc)
            log.error("device %s refuses model for %s/%d: %s", self.device_id, job, rnd, exc)
            if self.reports is not None:  # reported upstream, not only counted here
                why = f"round {rnd}: {exc}"
                report = refusal_report(task.model_sha256, refusal_check(exc), why)
                self.reports.put(job, report)
            return False
        x, y = self.store.examples()
        if len(y) == 0 or self.clock() >= task.deadline:
            return False
        trained = make_update(
            task,
            params,
            x,
            y,
            self.device_id,
            train_rng=self.train_rng(),
            noise_rng=self.noise_rng(),
            extra_meta=eval_meta(self._evaluate(task, params, x, y)),
        )
        del x, y
        trace.get_current_span().set_attributes(
            {"fedge.examples": trained.num_examples, "fedge.train_loss": trained.train_loss}
        )
        self.ledger.record(job, epsilon_after)
        destination = f"/v1/jobs/{job}/rounds/{rnd}/updates"
        if task.secagg is not None:
            return self._secure_round(task, trained.payload, trained.num_examples, key)
        self.outbox.put(key, destination, trained.payload, deadline=task.deadline)
        log.info(
            "device %s trained %s/%d on %d examples (loss %.4f)",
            self.device_id,
            job,
            rnd,
            trained.num_examples,
            trained.train_loss,
        )
        return True

    def _evaluate(
        self, task: TaskAssignment, params: Params, x: np.ndarray, y: np.ndarray
    ) -> EvaluationSums | None:
        """The received model's evaluation on local data, when this round may carry it."""
        if not self.federated_evaluation or not reports_evaluation(
            task.privacy.mode, task.secagg is not None
        ):
            return None
        if self.holdout is not None:
            hx, hy = self.holdout()
            if len(hy):
                x, y = hx, hy
        with span("fedge.device.evaluate"):
            return evaluate_locally(get_task(task.task_name), params, x, y)

    def _secure_round(self, task: TaskAssignment, payload: bytes, examples: int, key: str) -> bool:
        assert task.secagg is not None and self.secagg is not None
        delta, _ = decode_params(payload)
        vector = secure_vector(delta, examples, task.secagg, task.privacy, self.noise_rng())
        self.outbox.put(
            key, f"/v1/jobs/{task.job_id}/rounds/{task.round}/secagg", b"-", deadline=task.deadline
        )
        self.outbox.mark_delivered(key)  # a tombstone: this round's update never goes out in clear
        try:
            with span("fedge.device.report", attributes={"fedge.secure_aggregation": True}):
                state, reason = run_secure_round(
                    self.link,  # type: ignore[arg-type]
                    task,
                    self.device_id,
                    vector,
                    self.secagg,
                    clock=self.clock,
                )
        except FedgeError as exc:
            self.stats.errors += 1
            self.stats.last_reason = str(exc)
            log.warning(
                "device %s: secure round %s/%d failed: %s",
                self.device_id,
                task.job_id,
                task.round,
                exc,
            )
            return False
        log.info(
            "device %s: secure round %s/%d %s %s",
            self.device_id,
            task.job_id,
            task.round,
            state,
            reason,
        )
        if state == "done":
            self.stats.delivered += 1
        return state == "done"

    def deliver_pending(self) -> bool:
        """Try to deliver every due update (until its round's deadline); True when none is left."""
        now = self.clock()
        for item in self.outbox.expire(now):
            self.stats.expired += 1
            log.warning(
                "device %s: update %s missed its deadline; dropped", self.device_id, item.key
            )
        if self._report_parents:  # delivered, refused or expired: no report to come
            pending = {item.key for item in self.outbox.pending_items()}
            for key in set(self._report_parents) - pending:
                del self._report_parents[key]
        for item in self.outbox.due(now):
            _, job, rnd = item.key.split("/", 2)
            try:
                with round_span(
                    "fedge.device.report",
                    job,
                    int(rnd),
                    traceparent=self._report_parents.get(item.key),
                    attributes={"fedge.device": self.device_id},
                ):
                    receipt = self.link.submit_update(job, int(rnd), item.payload)
            except UnavailableError as exc:
                self.outbox.mark_failed(item.key, now + self.backoff.next_delay(), str(exc))
                log.info("device %s: gateway unavailable, will retry: %s", self.device_id, exc)
                continue
            except FedgeError as exc:  # refused for good (stale round, bad payload, ...)
                self.outbox.mark_delivered(item.key)  # a tombstone: never sent again
                self.stats.last_reason = str(exc)
                log.warning("device %s: update %s refused: %s", self.device_id, item.key, exc)
                continue
            self.outbox.mark_delivered(item.key)
            if receipt.accepted:
                self.stats.delivered += 1
            else:
                self.stats.last_reason = receipt.reason
        return self.outbox.pending() == 0
