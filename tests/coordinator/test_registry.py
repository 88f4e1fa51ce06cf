"""The model registry: status transitions, the release gate, lineage, admin operations."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from fedge.coordinator import CoordinatorService
from fedge.coordinator.publish import gate_release
from fedge.coordinator.registry import STATUSES, ReleaseGate, check_transition
from fedge.coordinator.releases import sign_version
from fedge.coordinator.schema import ModelVersionRow
from fedge.core.serde import encode_params
from fedge.errors import AuthorizationError, ProtocolError

from .helpers import ADMIN, GW_A, Clock, model_params
from .test_releases import commit_one_round, signed_service

ALLOWED = {
    ("candidate", "production"),
    ("candidate", "rejected"),
    ("production", "retired"),
    ("production", "rolled_back"),
    ("retired", "production"),
}


@pytest.mark.parametrize("move", list(itertools.product(STATUSES, STATUSES)))
def test_every_transition_is_allowed_or_refused(move: tuple[str, str]) -> None:
    if move in ALLOWED:
        check_transition(*move)
    else:
        with pytest.raises(ProtocolError):
            check_transition(*move)


def test_release_gate_accepts_and_rejects() -> None:
    gate = ReleaseGate(margin=0.02)
    assert gate.decide({"accuracy": 0.5}, None).promote  # no production yet
    assert gate.decide({"accuracy": 0.90}, {"accuracy": 0.91}).promote  # within the margin
    assert gate.decide({"accuracy": 0.95}, {"accuracy": 0.91}).promote  # better
    held = gate.decide({"accuracy": 0.85}, {"accuracy": 0.91})
    assert not held.promote and "over the margin" in held.reason
    assert not gate.decide({}, {"accuracy": 0.9}).promote  # not evaluated
    loss_gate = ReleaseGate(margin=0.1, metric="loss", higher_is_better=False)
    assert loss_gate.decide({"loss": 0.55}, {"loss": 0.5}).promote
    assert not loss_gate.decide({"loss": 0.7}, {"loss": 0.5}).promote


def add_version(
    svc: CoordinatorService,
    parent: str,
    rnd: int,
    accuracy: float,
    scale: float,
    created_at: float | None = None,
) -> str:
    """A version of job ``digits`` (weights: the parent's times ``scale``), as a round makes one."""
    params = {k: (v * scale).astype(np.float32) for k, v in model_params(svc, parent).items()}
    payload = encode_params(params, {"kind": "model"})
    sha = svc.artifacts.put(payload)
    row = svc.store.add_model_version(
        ModelVersionRow(
            sha256=sha,
            job_id="digits",
            round=rnd,
            parent_sha256=parent,
            size=len(payload),
            metrics={"accuracy": accuracy},
            created_at=float(rnd) if created_at is None else created_at,
        )
    )
    release = sign_version(svc.driver.release_key, row, "digits_mlp", float(rnd))
    if release is not None:
        svc.store.add_release(release)
    gate_release(svc.driver, "digits", sha, {"accuracy": accuracy})  # what a committed round runs
    return sha


def test_committed_round_passes_the_gate_with_lineage(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    initial, v1 = commit_one_round(svc)
    views = {v.sha256: v for v in svc.admin.list_models(ADMIN, "digits")}
    assert views[initial].status == "candidate" and views[initial].round is None
    assert views[v1].status == "production" and views[v1].parent_sha256 == initial
    assert views[v1].status_reason.startswith("release gate: no production version yet")
    assert views[v1].signed and views[v1].version == "digits/r1"
    assert views[v1].task_name == "digits_mlp" and "accuracy" in views[v1].metrics


def test_gate_holds_a_worse_candidate_and_admin_operations(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    acc1 = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    v2 = add_version(svc, v1, 2, acc1 + 0.01, 1.01)  # better: promoted, v1 retired
    assert svc.admin.get_model(ADMIN, v2).status == "production"
    assert svc.admin.get_model(ADMIN, v1).status == "retired"
    v3 = add_version(svc, v2, 3, acc1 - 0.30, 1.02)  # much worse: held as a candidate
    held = svc.admin.get_model(ADMIN, v3)
    assert held.status == "candidate" and "over the margin" in held.status_reason

    # rollback: v2 → rolled_back, v1 back to production
    restored = svc.admin.rollback_model(ADMIN, "digits")
    assert restored.sha256 == v1 and restored.status == "production"
    assert svc.admin.get_model(ADMIN, v2).status == "rolled_back"
    with pytest.raises(ProtocolError):
        svc.admin.promote_model(ADMIN, v2)  # rolled back is final
    with pytest.raises(ProtocolError, match="no earlier production"):
        svc.admin.rollback_model(ADMIN, "digits")  # nothing retired left

    # an admin promotes the held candidate by hand; then rejects are refused on production
    assert svc.admin.promote_model(ADMIN, v3).status == "production"
    assert svc.admin.get_model(ADMIN, v1).status == "retired"
    with pytest.raises(ProtocolError):
        svc.admin.reject_model(ADMIN, v3)
    v4 = add_version(svc, v3, 4, acc1 - 0.9, 1.03)  # held by the gate
    assert svc.admin.reject_model(ADMIN, v4).status == "rejected"
    with pytest.raises(ProtocolError):
        svc.admin.promote_model(ADMIN, v4)
    assert [v.status for v in svc.admin.list_models(ADMIN, "digits")].count("production") == 1

    diff = svc.admin.diff_models(ADMIN, v1, v2)
    assert diff.metric_deltas["accuracy"] == pytest.approx(0.01)
    expected = np.sqrt(
        sum(
            float(((0.01 * p.astype(np.float64)) ** 2).sum())
            for p in model_params(svc, v1).values()
        )
    )
    assert diff.l2_distance == pytest.approx(expected, rel=1e-3)

    with pytest.raises(AuthorizationError):
        svc.admin.promote_model(GW_A, v1)


def test_no_automatic_promotion_when_the_gate_is_off(tmp_path: Path) -> None:
    from fedge.coordinator import ArtifactStore, CoordinatorSettings, Store

    svc = CoordinatorService(
        Store(f"sqlite:///{tmp_path / 'c.db'}"),
        ArtifactStore(tmp_path / "artifacts"),
        CoordinatorSettings(poll_interval_s=1.0, release_margin=None),
        Clock(),
    )
    _, v1 = commit_one_round(svc)
    assert svc.admin.get_model(ADMIN, v1).status == "candidate"


def test_rollback_restores_the_version_that_left_production_last(tmp_path: Path) -> None:
    """Not the newest retired one by creation: after a manual re-promotion the two differ."""
    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    acc1 = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    now = svc.admin.get_model(ADMIN, v1).created_at
    v2 = add_version(svc, v1, 2, acc1 + 0.01, 1.01, now + 2)  # the gate promotes it: v1 retired
    assert svc.admin.promote_model(ADMIN, v1).status == "production"  # by hand: v2 retired
    v3 = add_version(svc, v1, 3, acc1 + 0.02, 1.02, now + 3)  # promoted: v1 retired after v2
    retired = [v for v in svc.admin.list_models(ADMIN, "digits") if v.status == "retired"]
    assert [v.sha256 for v in retired] == [v1, v2]  # by creation, v2 is the newer one
    restored = svc.admin.rollback_model(ADMIN, "digits")
    assert restored.sha256 == v1  # it was production until v3 came; v2 left before that
    assert svc.admin.get_model(ADMIN, v3).status == "rolled_back"
    assert svc.admin.get_model(ADMIN, v2).status == "retired"
    again = svc.admin.rollback_model(ADMIN, "digits")  # then the one before it
    assert again.sha256 == v2


def test_versions_without_a_retirement_time_count_as_retired_earlier(tmp_path: Path) -> None:
    """A database upgraded from before ``status_at``: its retired versions have none."""
    from sqlalchemy import update

    from fedge.coordinator.schema import ModelVersionRow as Row

    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    acc1 = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    v2 = add_version(svc, v1, 2, acc1 + 0.01, 1.01)
    v3 = add_version(svc, v2, 3, acc1 + 0.02, 1.02)  # v1 and v2 retired
    with svc.store.engine.begin() as conn:
        conn.execute(update(Row).where(Row.sha256 == v2).values(status_at=None))
    assert svc.admin.rollback_model(ADMIN, "digits").sha256 == v1  # timed beats untimed
    assert svc.admin.get_model(ADMIN, v3).status == "rolled_back"
