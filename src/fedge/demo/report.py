"""What ``fedge demo`` prints about its job: the privacy line, the round table and the summary.

:func:`round_table` is the job's rounds as a table; :func:`show_recall` scores the final model
on the use case's held-out devices against always answering the majority class;
:func:`show_serving` shows one prediction from a device's local endpoint, then a rollback
reaching it. They read the federation through its admin client and the devices' endpoints only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from fedge.demo.federation import LocalFederation

__all__ = ["privacy_line", "round_table", "show_recall", "show_serving"]


def privacy_line(privacy: dict[str, Any], secagg: bool, delta: float | None) -> str:
    """The demo's DP settings in one line: clip, noise and who adds the noise."""
    how = (
        "each device adds its share of discrete Gaussian noise before masking (distributed DP)"
        if secagg
        else "the coordinator adds Gaussian noise to the sum (central DP)"
    )
    return (
        f"privacy      clip {privacy['clip_norm']:g}, noise multiplier "
        f"{privacy['noise_multiplier']:g}: {how}; ε per round at δ = {delta or 0:.3g}"
    )


def round_table(view: Any) -> Table:
    """The rounds of a job (a :class:`~fedge.transport.messages.JobView`) as a table."""
    table = Table(
        title=f"job {view.id} · {view.spec.task} · {view.spec.strategy.name}", title_justify="left"
    )
    for name in ("round", "state", "devices", "gateways", "accuracy", "loss", "ε", "seconds"):
        table.add_column(name, justify="right")
    table.add_column("model", justify="right")
    for r in view.rounds:
        secs = (
            "–"
            if r.started_at is None or r.ended_at is None
            else f"{r.ended_at - r.started_at:.1f}"
        )
        table.add_row(
            str(r.round),
            r.state,
            str(r.participants),
            str(r.gateways_reported),
            "–" if r.accuracy is None else f"{r.accuracy:.4f}",
            "–" if r.loss is None else f"{r.loss:.4f}",
            "–" if r.epsilon is None else f"{r.epsilon:.3f}",
            secs,
            (r.model_sha256 or "–")[:12],
        )
    return table


def show_recall(fed: LocalFederation, console: Console, task_name: str, sha256: str) -> None:
    """Per-class recall of the final model on the held-out devices, against always-majority."""
    import numpy as np

    from fedge.device.work import load_model
    from fedge.tasks import get_task
    from fedge.tasks.usecases import usecase_fleet
    from fedge.usecases.scores import class_scores, majority_scores

    task = get_task(task_name)
    _, test = task.load_data()
    with fed.admin_client() as admin:
        params = load_model(admin.export_model(sha256), sha256)  # checks the hash
    names = usecase_fleet(task_name).class_names
    console.print(f"recall       {class_scores(task, params, test.x, test.y).describe(names)}")
    baseline = majority_scores(test.y, task.num_classes)
    console.print(
        f"baseline     always '{names[int(np.bincount(test.y).argmax())]}': accuracy "
        f"{baseline.accuracy:.3f}, macro recall {baseline.macro_recall:.3f} (held-out devices)"
    )


def show_serving(fed: LocalFederation, console: Console, job_id: str, site: str, task: str) -> None:
    """One prediction from a device's local endpoint, then a rollback taking effect on it."""
    import httpx

    from fedge.demo.federation import device_name
    from fedge.errors import FedgeError
    from fedge.tasks import get_task

    device = device_name(site, 0)
    try:
        url = fed.prediction_endpoint(site, 0)

        def serving() -> str | None:
            answer = httpx.get(f"{url}/model", timeout=5)
            return str(answer.json()["version"]) if answer.status_code == 200 else None

        def predict(row: list[float]) -> dict[str, Any]:
            answer = httpx.post(f"{url}/predict", json={"inputs": [row]}, timeout=5)
            answer.raise_for_status()
            result: dict[str, Any] = answer.json()
            return result

        with fed.admin_client() as admin:
            production = [v for v in admin.list_models(job_id) if v.status == "production"]
            if not production:
                console.print("serving      no production version: the release gate held them")
                return
            want = production[0].version
            fed.supervisor.wait_until(
                lambda: serving() == want, timeout=60, what=f"{device} to serve {want}"
            )
            _, test = get_task(task).load_data()
            row, label = test.x[0].tolist(), int(test.y[0])
            answer = predict(row)
            console.print(
                f"prediction   {device} POST {url}/predict → class {answer['predictions'][0]}"
                f" (label {label}), answered by model version {answer['version']}"
            )
            versions = admin.list_models(job_id)
            if not any(v.status == "retired" for v in versions):
                # the release gate held every later version (DP noise can make each look worse
                # than the first): promote the newest by hand, so there is something to roll
                # back from -- what an operator does to overrule the gate
                held = [v for v in versions if v.status == "candidate"]
                if held:
                    newest = max(held, key=lambda v: v.created_at)
                    admin.promote_model(newest.sha256)
                    console.print(
                        f"promote      fedge models promote {newest.version}: the release gate "
                        f"held it ({newest.status_reason or 'worse than production'})"
                    )
                    want = newest.version
                    fed.supervisor.wait_until(
                        lambda: serving() == want, timeout=60, what=f"{device} to serve {want}"
                    )
            try:
                restored = admin.rollback_model(job_id)
            except FedgeError as exc:
                console.print(f"rollback     not shown: {exc}")
                return
            fed.supervisor.wait_until(
                lambda: serving() == restored.version, timeout=60, what="the rollback on the device"
            )
            console.print(
                f"rollback     fedge models rollback {job_id}: {want} → {restored.version};"
                f" {device} now answers with {predict(row)['version']}"
            )
    except (FedgeError, httpx.HTTPError) as exc:
        console.print(f"serving      could not be shown: {exc}")
