"""Handing out work in the rounds now open: a gateway's quotas, a direct device's task.

A hand-out moves its round from configuring to training. A paused job hands out nothing new
(work already handed out goes on); a direct device gets a task only within the round's
:data:`~fedge.coordinator.selection.DIRECT` quota and when its labels match the job's selector.
Both run under the driver's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedge.coordinator.selection import DIRECT, matches_selector
from fedge.transport import messages as m

if TYPE_CHECKING:
    from fedge.coordinator.driver import RoundDriver

__all__ = ["gateway_assignments", "offer_task"]


def gateway_assignments(driver: RoundDriver, gateway: str) -> list[m.RoundAssignment]:
    """The quotas ``gateway`` holds in the rounds now open that it has not reported yet."""
    out: list[m.RoundAssignment] = []
    with driver.lock:
        for job_id, live in list(driver.live.items()):
            rt = driver.jobs[job_id]
            rnd = live.machine
            quota = rnd.quotas.get(gateway, 0)
            if not rnd.accepting or quota == 0 or gateway in rnd.reported:
                continue
            if rt.job_state != "running" and gateway not in live.handed:
                continue  # paused: no new hand-outs; work already handed out goes on
            driver.start_training(rt, live)
            live.handed.add(gateway)
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
    return out


def offer_task(
    driver: RoundDriver, device: str, request: m.CheckInRequest
) -> m.TaskAssignment | None:
    """A task for a directly connected device in an open round, or None when none needs it."""
    with driver.lock:
        for job_id, live in driver.live.items():
            rt = driver.jobs[job_id]
            rnd = live.machine
            fresh = device not in live.direct_assigned
            if not rnd.accepting or device in live.direct_submitted:
                continue
            if fresh and (
                rt.job_state != "running"
                or len(live.direct_assigned) >= rnd.quotas.get(DIRECT, 0)
                or not matches_selector(request.labels, rt.spec.selector)
            ):
                continue
            driver.start_training(rt, live)
            live.direct_assigned.add(device)
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
