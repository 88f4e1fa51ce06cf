"""The model registry's rows: versions and their status, releases, checkpoints, commits, and
the refusals of versions that devices and gateways report."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from fedge.aggregation.evaluation import EvaluationSums
from fedge.coordinator.registry import check_transition, record_evaluation
from fedge.coordinator.schema import (
    CheckpointRow,
    JobRow,
    ModelRefusalRow,
    ModelVersionRow,
    ReleaseRow,
    RoundRow,
)
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
            row.status, row.status_reason, row.status_at = status, reason, time.time()
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
        now = time.time()
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
                old.status_at = now  # when it left production: what a rollback goes by
            row.status, row.status_reason, row.status_at = "production", reason, now
            return row

    def rollback_job(self, job_id: str, reason: str) -> tuple[ModelVersionRow, ModelVersionRow]:
        """Mark the job's production version rolled back and restore the most recently retired
        one: the version that left production last (``status_at``), whatever its age -- after a
        manual re-promotion of an older version, that is not the newest retired by creation.
        Versions retired before ``status_at`` existed count as retired earlier, by creation.

        Returns (rolled back, restored); ProtocolError when there is nothing to roll back to.
        """
        now = time.time()
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
            current[0].status_at = now
            restored = max(
                retired, key=lambda r: (r.status_at is not None, r.status_at or 0.0, r.created_at)
            )
            restored.status, restored.status_reason = "production", f"restored: {reason}"
            restored.status_at = now
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

    # -- refusals reported by devices and gateways ---------------------------------------------
    def record_refusal(
        self,
        *,
        job_id: str,
        sha256: str,
        reporter: str,
        tier: str,
        via: str | None,
        check: str,
        reason: str,
        sequence: int | None,
        now: float,
    ) -> tuple[ModelRefusalRow, bool]:
        """Record one refusal report; returns (its row, True when it is new: not reported by
        this reporter for this version and check before -- a repeat only counts)."""
        try:
            return self._record_refusal(
                job_id, sha256, reporter, tier, via, check, reason, sequence, now
            )
        except IntegrityError:  # the same refusal inserted at the same moment: count it
            return self._record_refusal(
                job_id, sha256, reporter, tier, via, check, reason, sequence, now
            )

    def _record_refusal(
        self,
        job_id: str,
        sha256: str,
        reporter: str,
        tier: str,
        via: str | None,
        check: str,
        reason: str,
        sequence: int | None,
        now: float,
    ) -> tuple[ModelRefusalRow, bool]:
        with self._tx() as s:
            row = s.scalars(
                select(ModelRefusalRow).where(
                    ModelRefusalRow.sha256 == sha256,
                    ModelRefusalRow.reporter == reporter,
                    ModelRefusalRow.check == check,
                )
            ).first()
            if row is not None:
                row.count += 1
                row.last_at, row.reason, row.via = now, reason, via
                row.sequence = sequence if sequence is not None else row.sequence
                return row, False
            row = ModelRefusalRow(
                job_id=job_id,
                sha256=sha256,
                reporter=reporter,
                tier=tier,
                via=via,
                check=check,
                reason=reason,
                sequence=sequence,
                count=1,
                first_at=now,
                last_at=now,
            )
            s.add(row)
            return row, True

    def list_refusals(self, sha256s: Iterable[str]) -> dict[str, list[ModelRefusalRow]]:
        """The refusals recorded of each version, first reported first."""
        wanted = list(sha256s)
        out: dict[str, list[ModelRefusalRow]] = {sha: [] for sha in wanted}
        if not wanted:
            return out
        with self._tx() as s:
            q = select(ModelRefusalRow).where(ModelRefusalRow.sha256.in_(wanted))
            for row in s.scalars(q.order_by(ModelRefusalRow.first_at, ModelRefusalRow.id)):
                out[row.sha256].append(row)
        return out

    def refusal_counts(self) -> list[tuple[str, str, str, int]]:
        """(job, check, tier, versions refused) over every refusal recorded."""
        with self._tx() as s:
            q = select(
                ModelRefusalRow.job_id,
                ModelRefusalRow.check,
                ModelRefusalRow.tier,
                func.count(func.distinct(ModelRefusalRow.sha256)),
            ).group_by(ModelRefusalRow.job_id, ModelRefusalRow.check, ModelRefusalRow.tier)
            return [(str(j), str(c), str(t), int(n)) for j, c, t, n in s.execute(q)]
