"""``fedge models list|show|promote|reject|rollback|diff|export``: the model registry over the admin API.

A VERSION argument is a full SHA-256, a version name as ``fedge models list`` prints it
(``<job>/r<round>``, e.g. ``demo/r3``; ``<job>/production`` for the job's production version),
or a unique prefix of at least 6 hex digits of a SHA-256 (the list shows 12).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fedge.coordinator.cli import _client_options, _num, _when, _with_client
from fedge.coordinator.models import version_metrics
from fedge.errors import UnknownNameError, ValidationError
from fedge.transport import messages as m
from fedge.transport.client import FedgeClient

__all__ = ["models_group", "resolve_version"]


_SHA = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{6,63}$")
_NAME = re.compile(r"^(?P<job>[^/]+)/(?P<which>r\d+|production)$")


def resolve_version(client: FedgeClient, ref: str) -> str:
    """The SHA-256 a VERSION argument names: a SHA-256, ``<job>/r<round>``,
    ``<job>/production`` or a unique hex prefix (UnknownNameError otherwise)."""
    ref = ref.strip()
    if _SHA.match(ref):
        return ref
    named = _NAME.match(ref)
    if named is not None:
        versions = client.list_models(named["job"])
        if named["which"] == "production":
            found = [v for v in versions if v.status == "production"]
        else:
            found = [v for v in versions if v.version == ref]
        if not found:
            known = ", ".join(v.version for v in sorted(versions, key=lambda v: v.round or 0))
            raise UnknownNameError(
                f"job {named['job']!r} has no version {ref} (it has: {known or 'none'})"
            )
        return found[-1].sha256
    if _PREFIX.match(ref.lower()):
        prefix = ref.lower()
        matches = {
            v.sha256
            for job in client.list_jobs()
            for v in client.list_models(job.id)
            if v.sha256.startswith(prefix)
        }
        if len(matches) == 1:
            return matches.pop()
        if matches:
            raise UnknownNameError(
                f"{ref} is the start of {len(matches)} versions' SHA-256; give more digits"
            )
        raise UnknownNameError(f"no model version's SHA-256 starts with {ref}")
    raise UnknownNameError(
        f"{ref!r} names no model version: give its SHA-256 (or a prefix of 6+ hex digits), or"
        " <job>/r<round> as `fedge models list JOB` prints it, or <job>/production"
    )


def _size(n: int) -> str:
    """Bytes in a few characters (1.2 KiB, 34.5 MiB)."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def _epsilon(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _refused(v: m.ModelVersionView) -> str:
    """Refusals in a few words: how many devices and gateways, and the checks that failed."""
    if not v.refusals:
        return "–"
    checks = sorted({r.check for r in v.refusals})
    return f"{len(v.refusals)} ({', '.join(checks)})"


def _versions_table(versions: list[m.ModelVersionView]) -> Table:
    table = Table(title="model versions")
    cols = (
        *("version", "sha256", "parent", "status", "rollout"),
        *("accuracy", "federated", "ε", "size", "signed", "refused", "created"),
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
            _epsilon(v.epsilon),
            _size(v.size),
            "yes" if v.signed else "no",
            _refused(v),
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
    """List a job's model versions: lineage, status, rollout, accuracy, federated evaluation,
    ε spent, size, signature and refusals."""
    Console(width=220).print(_versions_table(client.list_models(job_id)))


@models_group.command("show")
@click.argument("version")
@_client_options
@_with_client
def models_show(client: FedgeClient, version: str) -> None:
    """Show one VERSION (JSON): lineage, size, metrics, ε ("epsilon"), federated evaluation
    ("federated": accuracy, loss, examples, devices), staged rollout ("rollout": stage,
    canaries, reports) and refusals by devices and gateways ("refusals").

    VERSION: a SHA-256 (or a prefix of 6+ hex digits), JOB/rN, or JOB/production."""
    click.echo(client.get_model(resolve_version(client, version)).model_dump_json(indent=2))


@models_group.command("promote")
@click.argument("version")
@_client_options
@_with_client
def models_promote(client: FedgeClient, version: str) -> None:
    """Make a candidate (or retired) VERSION production; the current one is retired."""
    v = client.promote_model(resolve_version(client, version))
    click.echo(f"{v.version} ({v.sha256[:12]}) is now {v.status}")


@models_group.command("reject")
@click.argument("version")
@_client_options
@_with_client
def models_reject(client: FedgeClient, version: str) -> None:
    """Reject a candidate VERSION for good."""
    v = client.reject_model(resolve_version(client, version))
    click.echo(f"{v.version} ({v.sha256[:12]}) is now {v.status}")


@models_group.command("rollback")
@click.argument("job_id")
@_client_options
@_with_client
def models_rollback(client: FedgeClient, job_id: str) -> None:
    """Roll a job's production version back: it is marked rolled_back, and the version that
    left production most recently is production again."""
    v = client.rollback_model(job_id)
    click.echo(f"rolled back: {v.version} ({v.sha256[:12]}) is production again")


@models_group.command("diff")
@click.argument("a")
@click.argument("b")
@_client_options
@_with_client
def models_diff(client: FedgeClient, a: str, b: str) -> None:
    """Metric changes (centralised and federated) and weight distance from VERSION A to B."""
    d = client.diff_models(resolve_version(client, a), resolve_version(client, b))
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
@click.argument("version")
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Directory to write into."
)
@click.option("--onnx/--no-onnx", default=False, help="Also write model.onnx (onnxruntime).")
@_client_options
@_with_client
def models_export(client: FedgeClient, version: str, out: str, onnx: bool) -> None:
    """Write VERSION's model.safetensors (weights + task name), model.json and optionally
    model.onnx. VERSION: a SHA-256 (or a prefix), JOB/rN, or JOB/production."""
    from fedge.core.serde import decode_params
    from fedge.tasks import get_task
    from fedge.tasks.export import export_onnx, export_weights

    sha256 = resolve_version(client, version)
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
