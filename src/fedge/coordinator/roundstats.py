"""What the coordinator records about each round for its operators: traffic and secure-sum outcomes.

Two append-only tables beside the :class:`~fedge.coordinator.store.Store`'s (same database, same
engine): ``round_traffic`` holds the size of every payload received for a round and how many
device vectors it folds in; ``secagg_outcomes`` how each secure-aggregation session ended.

From the first follows what the gateway tier saves. The coordinator records, for each payload,
what a device-direct design would have received for the same contents (``direct_bytes``):

- a device's own update, or a message every design sends once (a key share, an unmask answer):
  its own size;
- a gateway's secure-aggregation relay sum over n devices: n times its size (a device's masked
  input is a vector of the same length and modulus);
- a gateway's plain partial over n devices: n device updates, each the partial's size with its
  float64 sums as float32 (``size - 4 · parameters``; header differences are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from fedge.coordinator.schema import RoundTrafficRow, SecAggOutcomeRow

__all__ = ["RoundStats", "RoundTraffic", "direct_equivalent"]


def direct_equivalent(kind: str, nbytes: int, devices: int, parameters: int) -> int:
    """Bytes a device-direct design would have received for one payload (see the module doc)."""
    if devices <= 1:
        return nbytes
    if kind == "partial":
        return devices * max(nbytes - 4 * parameters, 0)
    return devices * nbytes


@dataclass(frozen=True)
class RoundTraffic:
    """One round's coordinator ingress and what a design without gateways would have had."""

    round: int
    received_bytes: int
    device_direct_bytes: int
    payloads: int

    @property
    def saved_bytes(self) -> int:
        """Bytes the gateway tier kept off the coordinator's link."""
        return self.device_direct_bytes - self.received_bytes


class RoundStats:
    """Record and read per-round traffic and secure-aggregation outcomes (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def record_traffic(
        self,
        job_id: str,
        round_number: int,
        sender: str,
        kind: str,
        nbytes: int,
        devices: int,
        direct_bytes: int,
        now: float,
    ) -> None:
        """One payload received: ``devices`` device vectors folded in (0: a control message)."""
        with self._sessions.begin() as s:
            s.add(
                RoundTrafficRow(
                    job_id=job_id,
                    round=round_number,
                    sender=sender,
                    kind=kind,
                    bytes=nbytes,
                    devices=devices,
                    direct_bytes=direct_bytes,
                    received_at=now,
                )
            )

    def traffic(self, job_id: str) -> list[RoundTraffic]:
        """Per round of ``job_id`` (in order): bytes received and the device-direct equivalent."""
        q = (
            select(
                RoundTrafficRow.round,
                func.sum(RoundTrafficRow.bytes),
                func.sum(RoundTrafficRow.direct_bytes),
                func.count(),
            )
            .where(RoundTrafficRow.job_id == job_id)
            .group_by(RoundTrafficRow.round)
            .order_by(RoundTrafficRow.round)
        )
        with self._sessions.begin() as s:
            return [
                RoundTraffic(int(r), int(received), int(dd), int(n))
                for r, received, dd, n in s.execute(q)
            ]

    def record_secagg(
        self,
        job_id: str,
        round_number: int,
        *,
        expected: int,
        joined: int,
        survivors: int,
        reason: str,
        now: float,
    ) -> None:
        """How the round's secure sum ended (kept once: a second record of a round is ignored)."""
        with self._sessions.begin() as s:
            if s.get(SecAggOutcomeRow, (job_id, round_number)) is not None:
                return
            s.add(
                SecAggOutcomeRow(
                    job_id=job_id,
                    round=round_number,
                    expected=expected,
                    joined=joined,
                    survivors=survivors,
                    abandoned=bool(reason),
                    reason=reason,
                    ended_at=now,
                )
            )

    def secagg_outcomes(self, job_id: str) -> list[SecAggOutcomeRow]:
        """The secure-aggregation outcomes of ``job_id``'s rounds, in round order."""
        q = (
            select(SecAggOutcomeRow)
            .where(SecAggOutcomeRow.job_id == job_id)
            .order_by(SecAggOutcomeRow.round)
        )
        with self._sessions.begin() as s:
            return list(s.scalars(q))
