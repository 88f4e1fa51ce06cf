"""Admin operations on the model registry: list, show, promote, reject, roll back, diff.

The rules (which status moves are allowed, the release gate) live in
:mod:`fedge.coordinator.registry`; this module applies them to the store and builds the views the
admin API returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fedge.core.serde import decode_params
from fedge.transport import messages as m
from fedge.transport.releases import version_id

if TYPE_CHECKING:
    from fedge.coordinator.artifacts import ArtifactStore
    from fedge.coordinator.schema import ModelVersionRow
    from fedge.coordinator.store import Store

__all__ = ["diff_versions", "version_view", "version_views"]


def version_view(
    store: Store, row: ModelVersionRow, rollout: m.RolloutView | None = None
) -> m.ModelVersionView:
    """One registry entry as the admin API shows it (with its staged rollout, if given)."""
    job = store.get_job(row.job_id)
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
    )


def version_views(
    store: Store,
    job_id: str,
    rollout_of: Callable[[str], m.RolloutView | None] | None = None,
) -> list[m.ModelVersionView]:
    """Every version of a job, oldest first (with each one's rollout, given ``rollout_of``)."""
    store.get_job(job_id)  # UnknownNameError for an unknown job
    return [
        version_view(store, r, rollout_of(r.sha256) if rollout_of else None)
        for r in store.list_model_versions(job_id)
    ]


def diff_versions(
    store: Store, artifacts: ArtifactStore, a: ModelVersionRow, b: ModelVersionRow
) -> m.ModelDiff:
    """Metric changes (b − a) and the L2 / max-abs distance between the two weight trees."""
    va, vb = version_view(store, a), version_view(store, b)
    deltas = {k: vb.metrics[k] - va.metrics[k] for k in sorted(va.metrics.keys() & vb.metrics)}
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
