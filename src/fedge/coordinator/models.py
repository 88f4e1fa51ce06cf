"""Admin operations on the model registry: list, show, promote, reject, roll back, diff.

A version's view carries its centralised metrics (``metrics``) and, once the devices of a round
that started from it have evaluated it on their own data, its federated evaluation
(``federated``); a diff compares both (``federated_accuracy``, ``federated_loss``). It also
carries its size in bytes, the ε its job had spent when it was published (``epsilon``, with
differential privacy; also in ``metrics``) and the refusals of it that devices and gateways
reported (``refusals``, :mod:`fedge.coordinator.rollouts`).

The rules (which status moves are allowed, the release gate) live in
:mod:`fedge.coordinator.registry`; this module applies them to the store and builds the views the
admin API returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fedge.coordinator.registry import federated_sums
from fedge.core.serde import decode_params
from fedge.transport import messages as m
from fedge.transport.releases import version_id

if TYPE_CHECKING:
    from fedge.coordinator.artifacts import ArtifactStore
    from fedge.coordinator.schema import ModelRefusalRow, ModelVersionRow
    from fedge.coordinator.store import Store

__all__ = [
    "diff_versions",
    "federated_view",
    "refusal_view",
    "version_metrics",
    "version_view",
    "version_views",
]


def version_view(
    store: Store,
    row: ModelVersionRow,
    rollout: m.RolloutView | None = None,
    refusals: list[ModelRefusalRow] | None = None,
) -> m.ModelVersionView:
    """One registry entry as the admin API shows it (with its staged rollout, if given, and the
    refusals devices and gateways reported; read from the store unless given)."""
    job = store.get_job(row.job_id)
    if refusals is None:
        refusals = store.list_refusals([row.sha256])[row.sha256]
    epsilon = (row.metrics or {}).get("epsilon")
    return m.ModelVersionView(
        sha256=row.sha256,
        version=version_id(row.job_id, row.round),
        job_id=row.job_id,
        round=row.round,
        parent_sha256=row.parent_sha256,
        size=row.size,
        metrics=dict(row.metrics or {}),
        status=cast(Any, row.status or "candidate"),
        status_reason=row.status_reason or "",
        signed=store.get_release(row.sha256) is not None,
        task_name=str(job.spec.get("task", "")),
        created_at=row.created_at,
        rollout=rollout,
        federated=federated_view(row),
        epsilon=float(epsilon) if epsilon is not None else None,
        refusals=[refusal_view(r) for r in refusals],
    )


def refusal_view(row: ModelRefusalRow) -> m.RefusalView:
    """A recorded refusal as the admin API shows it."""
    return m.RefusalView(
        reporter=row.reporter,
        tier=cast(Any, row.tier),
        via=row.via,
        check=row.check,
        reason=row.reason or "",
        sequence=row.sequence,
        count=row.count,
        first_at=row.first_at,
        last_at=row.last_at,
    )


def federated_view(row: ModelVersionRow) -> m.FederatedEvaluationView | None:
    """The devices' federated evaluation of a version, if it has one."""
    sums = federated_sums(row)
    if sums.accuracy is None or sums.loss is None or not sums.devices:
        return None
    return m.FederatedEvaluationView(
        accuracy=min(1.0, max(0.0, sums.accuracy)),
        loss=max(0.0, sums.loss),
        examples=sums.examples,
        devices=sums.devices,
    )


def version_metrics(view: m.ModelVersionView) -> dict[str, float]:
    """A version's centralised metrics plus its federated ones (federated_accuracy, _loss)."""
    out = dict(view.metrics)
    if view.federated is not None:
        out["federated_accuracy"] = view.federated.accuracy
        out["federated_loss"] = view.federated.loss
    return out


def version_views(
    store: Store,
    job_id: str,
    rollout_of: Callable[[str], m.RolloutView | None] | None = None,
) -> list[m.ModelVersionView]:
    """Every version of a job, oldest first (with each one's rollout, given ``rollout_of``)."""
    store.get_job(job_id)  # UnknownNameError for an unknown job
    rows = store.list_model_versions(job_id)
    refusals = store.list_refusals(r.sha256 for r in rows)
    return [
        version_view(store, r, rollout_of(r.sha256) if rollout_of else None, refusals[r.sha256])
        for r in rows
    ]


def diff_versions(
    store: Store, artifacts: ArtifactStore, a: ModelVersionRow, b: ModelVersionRow
) -> m.ModelDiff:
    """Metric changes (b − a) and the L2 / max-abs distance between the two weight trees."""
    va, vb = version_view(store, a), version_view(store, b)
    ma, mb = version_metrics(va), version_metrics(vb)
    deltas = {k: mb[k] - ma[k] for k in sorted(ma.keys() & mb.keys())}
    pa, _ = decode_params(artifacts.get(a.sha256))
    pb, _ = decode_params(artifacts.get(b.sha256))
    l2: float | None = None
    max_abs: float | None = None
    if pa.keys() == pb.keys() and all(pa[k].shape == pb[k].shape for k in pa):
        diffs = [(pb[k].astype(np.float64) - pa[k]).ravel() for k in sorted(pa)]
        flat = np.concatenate(diffs) if diffs else np.zeros(0)
        l2 = float(np.linalg.norm(flat))
        max_abs = float(np.abs(flat).max()) if flat.size else 0.0
    return m.ModelDiff(a=va, b=vb, metric_deltas=deltas, l2_distance=l2, max_abs_difference=max_abs)
