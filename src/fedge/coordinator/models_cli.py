"""``fedge models list|show|promote|reject|rollback|diff|export``: the model registry over the admin API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fedge.coordinator.cli import _client_options, _num, _when, _with_client
from fedge.coordinator.models import version_metrics
from fedge.errors import ValidationError
from fedge.transport import messages as m
from fedge.transport.client import FedgeClient

__all__ = ["models_group"]


def _versions_table(versions: list[m.ModelVersionView]) -> Table:
    table = Table(title="model versions")
    cols = (
        *("version", "sha256", "parent", "status", "rollout"),
        *("accuracy", "federated", "signed", "created"),
    )
    for col in (*cols, "reason"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            v.version,
            v.sha256[:12],
            (v.parent_sha256 or "–")[:12],
            v.status,
            _rollout(v.rollout),
            _num(v.metrics.get("accuracy")),
            _federated(v.federated),
            "yes" if v.signed else "no",
            _when(v.created_at),
            v.status_reason,
        )
    return table


def _federated(view: m.FederatedEvaluationView | None) -> str:
    """The devices' evaluation in a few words: accuracy, over how many devices and examples."""
    if view is None:
        return "–"
    return f"{view.accuracy:.4f} ({view.devices} dev, {view.examples} ex)"


def _rollout(view: m.RolloutView | None) -> str:
    """A rollout in a few words: its stage, the canaries and their health reports."""
    if view is None:
        return "–"
    if view.stage == "canary":
        return (
            f"canary on {', '.join(view.canary_gateways)}:"
            f" {view.healthy}/{view.min_healthy} healthy, {view.failed} failed"
        )
    return view.stage


@click.group("models")
def models_group() -> None:
    """The model registry: versions, statuses, the release gate, export."""


@models_group.command("list")
@click.argument("job_id")
@_client_options
@_with_client
def models_list(client: FedgeClient, job_id: str) -> None:
    """List a job's model versions with lineage and status."""
    Console(width=180).print(_versions_table(client.list_models(job_id)))


@models_group.command("show")
@click.argument("sha256")
@_client_options
@_with_client
def models_show(client: FedgeClient, sha256: str) -> None:
    """Show one version (JSON): lineage, metrics, federated evaluation ("federated": accuracy,
    loss, examples, devices) and staged rollout ("rollout": stage, canaries, reports)."""
    click.echo(client.get_model(sha256).model_dump_json(indent=2))


@models_group.command("promote")
@click.argument("sha256")
@_client_options
@_with_client
def models_promote(client: FedgeClient, sha256: str) -> None:
    """Make a candidate production (the current production version is retired)."""
    v = client.promote_model(sha256)
    click.echo(f"{v.version} ({v.sha256[:12]}) is now {v.status}")


@models_group.command("reject")
@click.argument("sha256")
@_client_options
@_with_client
def models_reject(client: FedgeClient, sha256: str) -> None:
    """Reject a candidate for good."""
    v = client.reject_model(sha256)
    click.echo(f"{v.version} ({v.sha256[:12]}) is now {v.status}")


@models_group.command("rollback")
@click.argument("job_id")
@_client_options
@_with_client
def models_rollback(client: FedgeClient, job_id: str) -> None:
    """Roll a job's production version back to the previous one."""
    v = client.rollback_model(job_id)
    click.echo(f"rolled back: {v.version} ({v.sha256[:12]}) is production again")


@models_group.command("diff")
@click.argument("a")
@click.argument("b")
@_client_options
@_with_client
def models_diff(client: FedgeClient, a: str, b: str) -> None:
    """Metric changes (centralised and federated) and weight distance from version A to B."""
    d = client.diff_models(a, b)
    click.echo(f"{d.a.version} → {d.b.version}")
    ma, mb = version_metrics(d.a), version_metrics(d.b)
    for k, v in d.metric_deltas.items():
        click.echo(f"  {k}: {ma[k]:.4f} → {mb[k]:.4f} ({v:+.4f})")
    for name, view in (("A", d.a), ("B", d.b)):
        if view.federated is None:
            click.echo(f"  {name} ({view.version}) has no federated evaluation yet")
    if d.l2_distance is None:
        click.echo("  weights: different names or shapes")
    else:
        click.echo(
            f"  weights: L2 distance {d.l2_distance:.6g}, max |Δ| {d.max_abs_difference:.6g}"
        )


@models_group.command("export")
@click.argument("sha256")
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Directory to write into."
)
@click.option("--onnx/--no-onnx", default=False, help="Also write model.onnx (onnxruntime).")
@_client_options
@_with_client
def models_export(client: FedgeClient, sha256: str, out: str, onnx: bool) -> None:
    """Write model.safetensors (weights + task name), model.json and optionally model.onnx."""
    from fedge.core.serde import decode_params
    from fedge.tasks import get_task
    from fedge.tasks.export import export_onnx, export_weights

    view = client.get_model(sha256)
    payload = client.export_model(sha256)
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ValidationError(f"the coordinator sent weights that do not hash to {sha256}")
    params, _ = decode_params(payload)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"version": view.version, "sha256": sha256, "job": view.job_id}
    (directory / "model.safetensors").write_bytes(export_weights(view.task_name, params, meta))
    (directory / "model.json").write_text(view.model_dump_json(indent=2))
    written = ["model.safetensors", "model.json"]
    if onnx:
        (directory / "model.onnx").write_bytes(export_onnx(get_task(view.task_name), params))
        written.append("model.onnx")
    click.echo(json.dumps({"out": str(directory), "files": written, "task": view.task_name}))
