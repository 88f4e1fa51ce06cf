"""Jobs, their round attempts and the contributions counted in them (partials, updates)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedge.coordinator.schema import JobRow, PartialReceiptRow, ParticipantRow, RoundRow
from fedge.coordinator.store_base import StoreBase
from fedge.coordinator.store_fleet import _bind_devices, _touch_device
from fedge.errors import ProtocolError, UnknownNameError

__all__ = ["RoundStore"]


class RoundStore(StoreBase):
    """Jobs, rounds, participants and partial receipts (exactly once: unique constraints)."""

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
        self._refuse_replay(nonce)
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

    def _refuse_replay(self, nonce: str) -> None:
        if self.nonce_seen(nonce):
            raise ProtocolError(f"nonce {nonce} was used before: replayed message refused")

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
        self._refuse_replay(nonce)
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
