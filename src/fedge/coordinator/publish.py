"""Publishing a committed round: the new model version, its checkpoint and release, the gate.

:func:`publish_round` is the last step of :class:`~fedge.coordinator.driver.RoundDriver`'s
aggregation: one database transaction publishes the version, its release signature, the
checkpoint (params + optimizer state as artifacts) and the round and job rows; then the audit
log records the round and the release, and :func:`gate_release` promotes the new version or
records why it stays a candidate.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fedge.aggregation import Aggregate
from fedge.coordinator.dropouts import round_dropouts
from fedge.coordinator.jobs import JobRuntime, encode_opt_state
from fedge.coordinator.registry import ReleaseGate
from fedge.coordinator.releases import sign_version
from fedge.coordinator.schema import CheckpointRow, ModelVersionRow
from fedge.coordinator.traces import metrics_attributes
from fedge.errors import ProtocolError
from fedge.telemetry.metrics import record_round_dropouts

if TYPE_CHECKING:
    from fedge.coordinator.driver import RoundDriver
    from fedge.coordinator.live import LiveRound

__all__ = ["gate_release", "publish_round"]

log = logging.getLogger("fedge.coordinator.driver")  # a round's story stays in the driver's log


def publish_round(driver: RoundDriver, rt: JobRuntime, live: LiveRound, now: float) -> None:
    """Commit an aggregated round: step the strategy, store the new version, its checkpoint and
    release in one transaction, audit it and run the release gate (caller holds the lock)."""
    acc = live.acc
    aggregate = Aggregate(rt.mean_delta(acc), acc.total_weight, acc.num_accepted, acc.rejected)
    state = rt.strategy.step(rt.state, aggregate)
    evaluation = rt.evaluate(state.params)
    epsilon = rt.spend_privacy()
    payload = rt.model_payload(state.params)
    sha = driver.artifacts.put(payload)
    opt_sha = driver.artifacts.put(encode_opt_state(state.opt_state))
    metrics = {"accuracy": evaluation.accuracy, "loss": evaluation.loss}
    if epsilon is not None:
        metrics["epsilon"] = epsilon
    version = ModelVersionRow(
        sha256=sha,
        job_id=rt.id,
        round=live.number,
        parent_sha256=live.base_sha256,
        size=len(payload),
        metrics=metrics,
        created_at=now,
    )
    ckpt = CheckpointRow(
        job_id=rt.id,
        step=state.round,
        round=live.number,
        params_sha256=sha,
        opt_state_sha256=opt_sha,
        created_at=now,
    )
    live.machine.commit()
    driver.store.commit_round(
        rt.id,
        live.number,
        version,
        ckpt,
        release=sign_version(driver.release_key, version, rt.task.name, now),
        participants=acc.num_accepted,
        gateways_reported=len(live.machine.reported),
        accuracy=evaluation.accuracy,
        loss=evaluation.loss,
        epsilon=epsilon,
        ended_at=now,
        evaluated=(live.base_sha256, live.evaluation) if live.evaluation.devices else None,
    )
    rt.state, rt.model_sha256, rt.consecutive_abandoned = state, sha, 0
    if live.trace is not None:
        live.trace.end(
            "committed",
            attributes={"fedge.model": sha, **metrics_attributes(acc.num_accepted, metrics)},
        )
    driver.audit.record_round(rt.id, live.number, "committed", model_sha256=sha)
    driver.audit.record_release(version, signed=driver.release_key is not None)
    gate_release(driver, rt.id, sha, metrics)
    record_round_dropouts(round_dropouts(live))  # handed a task, never reported
    del driver.live[rt.id]
    log.info(
        "job %s round %d committed: %d devices, accuracy %.4f, model %s",
        rt.id,
        live.number,
        acc.num_accepted,
        evaluation.accuracy,
        sha[:12],
    )


def gate_release(driver: RoundDriver, job_id: str, sha: str, metrics: dict[str, float]) -> None:
    """The release gate: promote the new version, or record why it stays a candidate."""
    if driver.settings.release_margin is None:
        return
    production = driver.store.production_version(job_id)
    if production is not None and production.sha256 == sha:
        return  # the same weights again (a round that changed nothing)
    gate = ReleaseGate(margin=driver.settings.release_margin)
    decision = gate.decide(metrics, production.metrics if production else None)
    try:
        if decision.promote:
            driver.store.promote_version(sha, f"release gate: {decision.reason}")
            driver.audit.record(
                "promotion", "release-gate", sha, {"job": job_id, "reason": decision.reason}
            )
            if driver.on_promoted is not None:
                driver.on_promoted(job_id)
        else:
            driver.store.note_version(sha, f"release gate held it: {decision.reason}")
    except ProtocolError as exc:  # e.g. these weights were rejected before: leave them be
        log.warning("job %s model %s: release gate: %s", job_id, sha[:12], exc)
        return
    log.info("job %s model %s: %s", job_id, sha[:12], decision.reason)
