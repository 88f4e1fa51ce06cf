"""Admin operations and the views they return (JobView, RoundView, DeviceView)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from fedge.coordinator.jobs import JobRuntime
from fedge.coordinator.releases import sign_version
from fedge.coordinator.schema import CheckpointRow, ModelVersionRow
from fedge.errors import ProtocolError
from fedge.transport import messages as m

if TYPE_CHECKING:
    from fedge.coordinator.driver import RoundDriver
    from fedge.coordinator.store import Store

__all__ = ["create_job", "device_views", "job_delta", "job_view", "set_job_state"]


def job_view(store: Store, job_id: str) -> m.JobView:
    """A job and its round attempts as the admin API shows them."""
    job = store.get_job(job_id)
    rounds = [
        m.RoundView(
            round=r.number,
            state=cast(Any, r.state),
            participants=r.participants,
            gateways_reported=r.gateways_reported,
            accuracy=r.accuracy,
            loss=r.loss,
            epsilon=r.epsilon,
            model_sha256=r.model_sha256,
            reason=r.reason,
            started_at=r.started_at,
            ended_at=r.ended_at,
        )
        for r in store.list_rounds(job_id)
    ]
    spec = m.JobSpec.model_validate(job.spec)
    return m.JobView(
        id=job.id,
        spec=spec,
        state=cast(Any, job.state),
        current_round=rounds[-1].round if rounds else 0,
        rounds=rounds,
        delta=job_delta(spec, job.fleet_size),
    )


def job_delta(spec: m.JobSpec, fleet_size: int) -> float | None:
    """δ of the job's (ε, δ) guarantee: the [privacy] table's, else 1/N^1.1 (None without DP)."""
    from fedge.privacy import default_delta, load_privacy_config

    privacy = load_privacy_config(spec.privacy)
    if privacy.mode == "none":
        return None
    if privacy.delta is not None:
        return privacy.delta
    return default_delta(max(fleet_size, spec.devices_per_round))  # the N the accountant uses


def create_job(driver: RoundDriver, spec: m.JobSpec, now: float) -> m.JobView:
    """Validate ``spec``, store the initial model and checkpoint 0, and make the job live."""
    store = driver.store
    fleet = max(len([d for d in store.list_devices() if not d.revoked]), spec.devices_per_round)
    rt, model, _ = JobRuntime.create(spec, driver.artifacts, fleet)
    with driver.lock:
        store.add_job(spec.name, spec.model_dump(mode="json"), now, fleet_size=fleet)
        initial = store.add_model_version(
            ModelVersionRow(
                sha256=rt.model_sha256,
                job_id=spec.name,
                round=None,
                parent_sha256=None,
                size=len(model),
                metrics={},
                created_at=now,
            )
        )
        release = sign_version(driver.release_key, initial, rt.task.name, now)
        if release is not None:
            store.add_release(release)
        from fedge.coordinator.jobs import encode_opt_state

        opt_sha = driver.artifacts.put(encode_opt_state(rt.state.opt_state))
        store.add_checkpoint(
            CheckpointRow(
                job_id=spec.name,
                step=0,
                round=None,
                params_sha256=rt.model_sha256,
                opt_state_sha256=opt_sha,
                created_at=now,
            )
        )
        store.update_job(spec.name, model_sha256=rt.model_sha256)
        driver.jobs[spec.name] = rt
    return job_view(store, spec.name)


def set_job_state(driver: RoundDriver, job_id: str, expect: str, new: str) -> m.JobView:
    """Move a job from ``expect`` to ``new`` (pause/resume); ProtocolError otherwise."""
    with driver.lock:
        job = driver.store.get_job(job_id)
        if job.state != expect:
            raise ProtocolError(
                f"job {job_id!r} is {job.state}; only a {expect} job can become {new}"
            )
        driver.store.update_job(job_id, state=new)
        rt = driver.jobs.get(job_id)
        if rt is not None:
            rt.job_state = new
    return job_view(driver.store, job_id)


def device_views(store: Store, device_id: str | None = None) -> list[m.DeviceView]:
    """Every device (or just ``device_id``) with how many rounds it was counted in."""
    rows = store.list_devices()
    if device_id is not None:
        rows = [d for d in rows if d.id == device_id]
    counts = store.participation_counts([d.id for d in rows])
    return [
        m.DeviceView(
            id=d.id,
            site=d.site,
            gateway=d.gateway_id,
            last_seen=d.last_seen,
            revoked=d.revoked,
            rounds_participated=counts.get(d.id, 0),
        )
        for d in rows
    ]
