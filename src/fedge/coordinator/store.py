"""The coordinator's database: one :class:`Store` over any SQLAlchemy URL.

``Store("sqlite:///coordinator.db")`` by default; ``Store("postgresql+psycopg://…")`` in larger
deployments — the same contract tests run against both. Every method is one transaction; rows
come back detached (``expire_on_commit=False``), to be read, not modified. A duplicate partial
or update is detected by the database's unique constraints, so exactly-once holds even when two
requests race. SQLAlchemy errors are mapped to :class:`~fedge.errors.ConfigError` (cannot
connect) at construction; :class:`~fedge.errors.ProtocolError` marks a conflicting insert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fedge.aggregation.evaluation import EvaluationSums
from fedge.coordinator.migrations import migrate, missing_columns
from fedge.coordinator.registry import check_transition, record_evaluation
from fedge.coordinator.schema import (
    Base,
    CheckpointRow,
    DeviceRow,
    GatewayRow,
    JobRow,
    ModelVersionRow,
    PartialReceiptRow,
    ParticipantRow,
    ReleaseRow,
    RoundRow,
)
from fedge.errors import ConfigError, ProtocolError, UnknownNameError

__all__ = ["Store"]


class Store:
    """Jobs, rounds, participants, gateways, devices, model versions, checkpoints, receipts."""

    def __init__(self, url: str, *, engine_options: Mapping[str, Any] | None = None) -> None:
        options = dict(engine_options or {})
        if url.startswith("sqlite"):
            options.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        self.url = url
        self.engine: Engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ConfigError(f"cannot open the coordinator database {url!r}: {exc}") from None
        migrate(self.engine)  # columns added since the database was made (migrations.py)
        missing = missing_columns(self.engine)
        if missing:
            raise ConfigError(
                f"the coordinator database {url!r} lacks {', '.join(missing)}: schema.py declares"
                " them but no step in fedge.coordinator.migrations adds them"
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- jobs ---------------------------------------------------------------------------------
    def add_job(
        self, job_id: str, spec: Mapping[str, Any], now: float, fleet_size: int = 0
    ) -> JobRow:
        """Insert a running job; ProtocolError if the id is taken."""
        row = JobRow(
            id=job_id,
            spec=dict(spec),
            state="running",
            committed_rounds=0,
            fleet_size=fleet_size,
            created_at=now,
            reason="",
        )
        try:
            with self._tx() as s:
                s.add(row)
        except IntegrityError:
            raise ProtocolError(
                f"a job named {job_id!r} already exists; pick another name"
            ) from None
        return row

    def get_job(self, job_id: str) -> JobRow:
        """The job ``job_id``; UnknownNameError if there is none."""
        with self._tx() as s:
            row = s.get(JobRow, job_id)
        if row is None:
            raise UnknownNameError(f"no job {job_id!r}; `fedge jobs list` shows the jobs")
        return row

    def list_jobs(self) -> list[JobRow]:
        """Every job, oldest first."""
        with self._tx() as s:
            return list(s.scalars(select(JobRow).order_by(JobRow.created_at, JobRow.id)))

    def update_job(self, job_id: str, **fields: Any) -> JobRow:
        """Set columns of a job."""
        with self._tx() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise UnknownNameError(f"no job {job_id!r}")
            for key, value in fields.items():
                setattr(row, key, value)
        return row

    # -- rounds -------------------------------------------------------------------------------
    def add_round(self, job_id: str, number: int, base_sha256: str, state: str) -> RoundRow:
        """Insert a round attempt; ProtocolError if (job, number) exists."""
        row = RoundRow(
            job_id=job_id,
            number=number,
            base_sha256=base_sha256,
            state=state,
            quotas={},
            participants=0,
            gateways_reported=0,
            reason="",
        )
        try:
            with self._tx() as s:
                s.add(row)
        except IntegrityError:
            raise ProtocolError(f"round {number} of job {job_id!r} already exists") from None
        return row

    def update_round(self, job_id: str, number: int, **fields: Any) -> RoundRow:
        """Set columns of a round."""
        with self._tx() as s:
            row = s.get(RoundRow, (job_id, number))
            if row is None:
                raise UnknownNameError(f"no round {number} of job {job_id!r}")
            for key, value in fields.items():
                setattr(row, key, value)
        return row

    def get_round(self, job_id: str, number: int) -> RoundRow | None:
        """One round attempt, or None."""
        with self._tx() as s:
            return s.get(RoundRow, (job_id, number))

    def list_rounds(self, job_id: str) -> list[RoundRow]:
        """A job's round attempts in order."""
        with self._tx() as s:
            q = select(RoundRow).where(RoundRow.job_id == job_id).order_by(RoundRow.number)
            return list(s.scalars(q))

    # -- contributions ------------------------------------------------------------------------
    def record_partial(
        self,
        job_id: str,
        number: int,
        gateway_id: str,
        site: str,
        nonce: str,
        num_accepted: int,
        total_weight: float,
        contributors: Sequence[str],
        now: float,
    ) -> bool:
        """Record a gateway's partial and its contributors at once; False if already recorded.

        A nonce used before (by any partial) raises ProtocolError: a replay.
        """
        if self.nonce_seen(nonce):
            raise ProtocolError(f"nonce {nonce} was used before: replayed message refused")
        try:
            with self._tx() as s:
                s.add(
                    PartialReceiptRow(
                        job_id=job_id,
                        round=number,
                        gateway_id=gateway_id,
                        site=site,
                        nonce=nonce,
                        num_accepted=num_accepted,
                        total_weight=total_weight,
                        received_at=now,
                    )
                )
                s.flush()
                s.add_all(
                    ParticipantRow(
                        job_id=job_id,
                        round=number,
                        device_id=device,
                        gateway_id=gateway_id,
                        received_at=now,
                    )
                    for device in contributors
                )
                _bind_devices(s, dict.fromkeys(contributors, site), gateway_id, now)
        except IntegrityError:
            if self.has_partial(job_id, number, gateway_id):
                return False
            raise ProtocolError(
                f"partial of {gateway_id!r} conflicts with what round {number} already holds "
                "(a contributor counted twice, or a reused nonce)"
            ) from None
        return True

    def has_partial(self, job_id: str, number: int, gateway_id: str) -> bool:
        """True when this gateway's partial for this round is recorded."""
        with self._tx() as s:
            q = select(PartialReceiptRow.id).where(
                PartialReceiptRow.job_id == job_id,
                PartialReceiptRow.round == number,
                PartialReceiptRow.gateway_id == gateway_id,
            )
            return s.scalar(q) is not None

    def nonce_seen(self, nonce: str) -> bool:
        """True when a partial or a direct update already used ``nonce``."""
        with self._tx() as s:
            partial = s.scalar(select(PartialReceiptRow.id).where(PartialReceiptRow.nonce == nonce))
            update = s.scalar(select(ParticipantRow.device_id).where(ParticipantRow.nonce == nonce))
            return partial is not None or update is not None

    def record_update(
        self, job_id: str, number: int, device_id: str, site: str | None, nonce: str, now: float
    ) -> bool:
        """Record a directly connected device's update; False if it already contributed."""
        if self.nonce_seen(nonce):
            raise ProtocolError(f"nonce {nonce} was used before: replayed message refused")
        try:
            with self._tx() as s:
                s.add(
                    ParticipantRow(
                        job_id=job_id,
                        round=number,
                        device_id=device_id,
                        gateway_id=None,
                        nonce=nonce,
                        received_at=now,
                    )
                )
                _touch_device(s, device_id, site, None, now)
        except IntegrityError:
            return False
        return True

    def participants(self, job_id: str, number: int) -> list[ParticipantRow]:
        """The devices counted in a round."""
        with self._tx() as s:
            q = select(ParticipantRow).where(
                ParticipantRow.job_id == job_id, ParticipantRow.round == number
            )
            return list(s.scalars(q.order_by(ParticipantRow.device_id)))

    def receipts(self, job_id: str, number: int) -> list[PartialReceiptRow]:
        """The partials recorded for a round, in arrival order."""
        with self._tx() as s:
            q = select(PartialReceiptRow).where(
                PartialReceiptRow.job_id == job_id, PartialReceiptRow.round == number
            )
            return list(s.scalars(q.order_by(PartialReceiptRow.id)))

    # -- fleet --------------------------------------------------------------------------------
    def upsert_gateway(
        self, gateway_id: str, site: str, online: int, eligible: int, now: float
    ) -> GatewayRow:
        """Record a gateway check-in."""
        with self._tx() as s:
            row = s.get(GatewayRow, gateway_id) or GatewayRow(id=gateway_id)
            row.site, row.last_seen = site, now
            row.online_devices, row.eligible_devices = online, eligible
            s.add(row)
        return row

    def list_gateways(self, seen_since: float | None = None) -> list[GatewayRow]:
        """Gateways (seen at or after ``seen_since`` when given), by id."""
        with self._tx() as s:
            q = select(GatewayRow).order_by(GatewayRow.id)
            if seen_since is not None:
                q = q.where(GatewayRow.last_seen >= seen_since)
            return list(s.scalars(q))

    def touch_device(
        self,
        device_id: str,
        site: str | None,
        gateway_id: str | None,
        now: float,
        labels: Mapping[str, str] | None = None,
    ) -> DeviceRow:
        """Record that a device was seen (creating it on first sight)."""
        with self._tx() as s:
            return _touch_device(s, device_id, site, gateway_id, now, labels)

    def get_device(self, device_id: str) -> DeviceRow | None:
        """One device, or None."""
        with self._tx() as s:
            return s.get(DeviceRow, device_id)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRow]:
        """The known devices among ``device_ids``, by id (one query)."""
        with self._tx() as s:
            return _devices(s, device_ids)

    def register_devices(
        self, sites: Mapping[str, str], gateway_id: str, now: float
    ) -> list[DeviceRow]:
        """Record each device's site as its certificate proved it (creating unknown ids)."""
        with self._tx() as s:
            return _bind_devices(s, sites, gateway_id, now)

    def list_devices(self) -> list[DeviceRow]:
        """Every known device, by id."""
        with self._tx() as s:
            return list(s.scalars(select(DeviceRow).order_by(DeviceRow.id)))

    def count_eligible_devices(
        self, selector: Mapping[str, str], direct_seen_since: float
    ) -> tuple[dict[str, int], int]:
        """Unrevoked devices whose labels hold every ``key = value`` of ``selector``: per site
        for those behind a gateway, and the number of directly connected ones seen since
        ``direct_seen_since``. Counted in the database (two aggregate queries, no device row)."""
        matches = [DeviceRow.labels[k].as_string() == v for k, v in selector.items()]
        unrevoked = func.coalesce(DeviceRow.revoked, False).is_(False)
        with self._tx() as s:
            per_site = s.execute(
                select(DeviceRow.site, func.count())
                .where(unrevoked, DeviceRow.gateway_id.is_not(None), *matches)
                .group_by(DeviceRow.site)
            ).all()
            direct = s.scalar(
                select(func.count())
                .select_from(DeviceRow)
                .where(
                    unrevoked,
                    DeviceRow.gateway_id.is_(None),
                    func.coalesce(DeviceRow.last_seen, 0.0) >= direct_seen_since,
                    *matches,
                )
            )
        return {str(site): int(n) for site, n in per_site if site is not None}, int(direct or 0)

    def set_revoked(self, device_id: str, revoked: bool = True) -> DeviceRow:
        """Mark a device revoked (it is refused from now on); creates unknown ids."""
        with self._tx() as s:
            row = s.get(DeviceRow, device_id) or DeviceRow(id=device_id, labels={})
            row.revoked = revoked
            s.add(row)
        return row

    def participation_counts(self, device_ids: Iterable[str] | None = None) -> dict[str, int]:
        """How many rounds each device was counted in."""
        with self._tx() as s:
            q = select(ParticipantRow.device_id, func.count()).group_by(ParticipantRow.device_id)
            if device_ids is not None:
                q = q.where(ParticipantRow.device_id.in_(list(device_ids)))
            return {d: int(n) for d, n in s.execute(q)}

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


def _devices(s: Session, device_ids: Sequence[str]) -> dict[str, DeviceRow]:
    out: dict[str, DeviceRow] = {}
    ids = list(dict.fromkeys(device_ids))
    for start in range(0, len(ids), 500):  # bounded IN lists (SQLite's variable limit)
        q = select(DeviceRow).where(DeviceRow.id.in_(ids[start : start + 500]))
        out.update((row.id, row) for row in s.scalars(q))
    return out


def _bind_devices(
    s: Session, sites: Mapping[str, str], gateway_id: str, now: float
) -> list[DeviceRow]:
    """Set each device's site and gateway (creating unknown ids), with one query for all."""
    known = _devices(s, list(sites))
    rows = []
    for device, site in sites.items():
        row = known.get(device)
        if row is None:
            row = DeviceRow(id=device, revoked=False, labels={})
            s.add(row)
        row.site, row.gateway_id, row.last_seen = site, gateway_id, now
        rows.append(row)
    return rows


def _touch_device(
    s: Session,
    device_id: str,
    site: str | None,
    gateway_id: str | None,
    now: float,
    labels: Mapping[str, str] | None = None,
) -> DeviceRow:
    row = s.get(DeviceRow, device_id)
    if row is None:
        row = DeviceRow(id=device_id, revoked=False, labels={})
        s.add(row)
    row.site = site if site is not None else row.site
    row.gateway_id = gateway_id
    row.last_seen = now
    if labels is not None:
        row.labels = dict(labels)
    return row


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
