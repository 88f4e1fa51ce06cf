"""The model registry's rows: versions and their status, releases, checkpoints, commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from fedge.aggregation.evaluation import EvaluationSums
from fedge.coordinator.registry import check_transition, record_evaluation
from fedge.coordinator.schema import CheckpointRow, JobRow, ModelVersionRow, ReleaseRow, RoundRow
from fedge.coordinator.store_base import StoreBase
from fedge.errors import ProtocolError, UnknownNameError

__all__ = ["RegistryStore"]


class RegistryStore(StoreBase):
    """Model versions (lineage, status), release signatures, checkpoints, and round commits."""

    # -- models and checkpoints ---------------------------------------------------------------
    def add_model_version(self, row: ModelVersionRow) -> ModelVersionRow:
        """Register a model version (idempotent on the hash)."""
        with self._tx() as s:
            if s.get(ModelVersionRow, row.sha256) is None:
                s.add(row)
        return row

    def get_model_version(self, sha256: str) -> ModelVersionRow | None:
        """One model version, or None."""
        with self._tx() as s:
            return s.get(ModelVersionRow, sha256)

    def list_model_versions(self, job_id: str) -> list[ModelVersionRow]:
        """A job's model versions, oldest first."""
        with self._tx() as s:
            q = select(ModelVersionRow).where(ModelVersionRow.job_id == job_id)
            return list(s.scalars(q.order_by(ModelVersionRow.created_at)))

    def latest_checkpoint(self, job_id: str) -> CheckpointRow | None:
        """The checkpoint with the most committed rounds, or None."""
        with self._tx() as s:
            q = select(CheckpointRow).where(CheckpointRow.job_id == job_id)
            return s.scalar(q.order_by(CheckpointRow.step.desc()).limit(1))

    def commit_round(
        self,
        job_id: str,
        number: int,
        version: ModelVersionRow,
        checkpoint: CheckpointRow,
        *,
        release: ReleaseRow | None = None,
        evaluated: tuple[str, EvaluationSums] | None = None,
        **round_fields: Any,
    ) -> None:
        """Publish a round in one transaction: version, release, checkpoint, round and job rows.

        ``evaluated``: (sha256, sums) of the devices' federated evaluation of the round's
        starting model, recorded on that version."""
        with self._tx() as s:
            rnd = s.get(RoundRow, (job_id, number))
            job = s.get(JobRow, job_id)
            if rnd is None or job is None:
                raise UnknownNameError(f"no round {number} of job {job_id!r}")
            if rnd.state == "committed" or job.committed_rounds >= checkpoint.step:
                raise ProtocolError(
                    f"round {number} of job {job_id!r} is already committed (job at step "
                    f"{job.committed_rounds}); a round is published once"
                )
            if s.get(ModelVersionRow, version.sha256) is None:
                s.add(version)
                s.flush()
            if release is not None and s.get(ReleaseRow, release.sha256) is None:
                s.add(release)
            s.add(checkpoint)
            rnd.state, rnd.model_sha256 = "committed", version.sha256
            for key, value in round_fields.items():
                setattr(rnd, key, value)
            job.committed_rounds = checkpoint.step
            job.model_sha256 = version.sha256
            if evaluated is not None and (base := s.get(ModelVersionRow, evaluated[0])):
                record_evaluation(base, evaluated[1])

    def set_version_status(self, sha256: str, status: str, reason: str) -> ModelVersionRow:
        """Move one version to ``status`` (ProtocolError when the registry forbids the move)."""
        with self._tx() as s:
            row = s.get(ModelVersionRow, sha256)
            if row is None:
                raise UnknownNameError(f"no model version {sha256}")
            check_transition(row.status, status)
            row.status, row.status_reason = status, reason
            return row

    def note_version(self, sha256: str, reason: str) -> None:
        """Record why a version keeps its status (e.g. the release gate held a candidate)."""
        with self._tx() as s:
            row = s.get(ModelVersionRow, sha256)
            if row is None:
                raise UnknownNameError(f"no model version {sha256}")
            row.status_reason = reason

    def promote_version(self, sha256: str, reason: str) -> ModelVersionRow:
        """Make a version its job's production version; the previous one becomes retired."""
        with self._tx() as s:
            row = s.get(ModelVersionRow, sha256)
            if row is None:
                raise UnknownNameError(f"no model version {sha256}")
            check_transition(row.status, "production")
            q = select(ModelVersionRow).where(
                ModelVersionRow.job_id == row.job_id, ModelVersionRow.status == "production"
            )
            for old in s.scalars(q):
                old.status, old.status_reason = "retired", f"superseded by {sha256[:12]}"
            row.status, row.status_reason = "production", reason
            return row

    def rollback_job(self, job_id: str, reason: str) -> tuple[ModelVersionRow, ModelVersionRow]:
        """Mark the job's production version rolled back and restore the last retired one.

        Returns (rolled back, restored); ProtocolError when there is nothing to roll back to.
        """
        with self._tx() as s:
            q = select(ModelVersionRow).where(ModelVersionRow.job_id == job_id)
            rows = list(s.scalars(q.order_by(ModelVersionRow.created_at)))
            current = [r for r in rows if r.status == "production"]
            retired = [r for r in rows if r.status == "retired"]
            if not current:
                raise ProtocolError(f"job {job_id!r} has no production model version")
            if not retired:
                raise ProtocolError(
                    f"job {job_id!r} has no earlier production version to roll back to"
                )
            check_transition(current[0].status, "rolled_back")
            current[0].status, current[0].status_reason = "rolled_back", reason
            restored = retired[-1]
            restored.status, restored.status_reason = "production", f"restored: {reason}"
            return current[0], restored

    def production_version(self, job_id: str) -> ModelVersionRow | None:
        """The job's production version, or None."""
        with self._tx() as s:
            q = select(ModelVersionRow).where(
                ModelVersionRow.job_id == job_id, ModelVersionRow.status == "production"
            )
            return s.scalars(q).first()

    def add_release(self, row: ReleaseRow) -> None:
        """Record a model version's release signature (once; a second one is ignored)."""
        with self._tx() as s:
            if s.get(ReleaseRow, row.sha256) is None:
                s.add(row)

    def get_release(self, sha256: str) -> ReleaseRow | None:
        """The release signature of a model version, or None when it is unsigned."""
        with self._tx() as s:
            return s.get(ReleaseRow, sha256)

    def add_checkpoint(self, row: CheckpointRow) -> None:
        """Insert a checkpoint (the initial one; later ones come with :meth:`commit_round`)."""
        with self._tx() as s:
            s.add(row)
