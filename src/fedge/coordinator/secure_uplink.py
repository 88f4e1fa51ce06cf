"""Secure aggregation's routes at the coordinator, relayed by gateways (one :class:`SecAggUplink`).

It implements :class:`~fedge.transport.services.SecAggUplinkService`: a gateway forwards its
devices' joins and control messages (one by one or in a batch), delivers its site's relay sum
and reads the coordinator's messages for its devices; each call is checked against the round's
:class:`~fedge.coordinator.secure.SecureRound` (open, and the gateway holds a quota in it). A
complete join phase or a finished session ticks the coordinator at once, not at the next tick.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedge.coordinator.secure import SecureRound
from fedge.errors import AuthorizationError, FedgeError, ProtocolError
from fedge.identity import Identity, Role, authorize
from fedge.transport import messages as m
from fedge.transport.errors import status_for

if TYPE_CHECKING:
    from fedge.coordinator.driver import RoundDriver

__all__ = ["SecAggUplink"]


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""  # refused by the secagg decoder as the item's own error


def _item(accept: Callable[[], m.Receipt]) -> m.SecAggItemResult:
    """One batch item's outcome: its receipt, or the refusal a request of its own would get."""
    try:
        receipt = accept()
    except FedgeError as exc:
        status, code = status_for(exc)
        return m.SecAggItemResult(accepted=False, status=status, error=code, reason=str(exc))
    return m.SecAggItemResult(
        accepted=receipt.accepted, duplicate=receipt.duplicate, reason=receipt.reason
    )


class SecAggUplink:
    """The gateways' side of every round's secure aggregation (thread-safe)."""

    def __init__(self, driver: RoundDriver, tick: Callable[[], None]) -> None:
        self.driver, self.tick = driver, tick  # tick: the coordinator's (rounds and rollouts)
        self.store, self.settings, self.clock = driver.store, driver.settings, driver.clock

    # -- secure aggregation, relayed by gateways ------------------------------------------------
    def _secure(self, peer: Identity, job_id: str, round_number: int) -> SecureRound:
        authorize(peer, roles={Role.GATEWAY})
        with self.driver.lock:
            self.driver.runtime(job_id)
            live = self.driver.live.get(job_id)
            if live is None or live.number != round_number or live.secure is None:
                current = f"round {live.number}" if live else "no open round"
                raise ProtocolError(
                    f"round {round_number} of job {job_id!r} has no secure-aggregation session "
                    f"open (the job has {current}): stale round, refused"
                )
            if live.machine.quotas.get(peer.name, 0) == 0:
                raise AuthorizationError(
                    f"gateway {peer.name!r} has no quota in round {round_number} of {job_id!r}"
                )
            return live.secure

    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: m.SecAggJoin
    ) -> m.Receipt:
        """A device's key binding, relayed by its site's gateway."""
        secure = self._secure(peer, job_id, round_number)
        receipt = secure.join(peer, join)
        if len(secure.joined) >= secure.expected:
            self.tick()  # everyone is in: start the session now, not at the next tick
        return receipt

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> m.Receipt:
        """A device's secagg message or the gateway's relay sum."""
        secure = self._secure(peer, job_id, round_number)
        summed_before = peer.name in secure.relay_contributors
        receipt = secure.receive(peer, payload, self.clock())
        summed = secure.relay_contributors.get(peer.name)
        if not receipt.duplicate:  # a relay sum folds in its devices' masked inputs
            folded = len(summed) if summed and not summed_before else 0
            self.driver.record_traffic(
                job_id, round_number, peer.name, "secagg", len(payload), folded
            )
        if summed and not receipt.duplicate:
            # who took part, for the audit trail; a site's weight stays secret (recorded as 0)
            with self.driver.lock:
                if not self.store.has_partial(job_id, round_number, peer.name):
                    self.store.record_partial(
                        job_id, round_number, peer.name, str(peer.site), m.new_nonce(),
                        len(summed), 0.0, summed, self.clock(),
                    )  # fmt: skip
        if secure.result is not None:
            self.tick()  # unmasked (or abandoned): commit now
        return receipt

    def secagg_inbox(
        self, peer: Identity, job_id: str, round_number: int, device_id: str, after: int
    ) -> m.SecAggInbox:
        """The messages waiting for one of the gateway's devices (long poll)."""
        secure = self._secure(peer, job_id, round_number)
        return secure.inbox(peer, device_id, after, wait_s=self.settings.poll_interval_s)

    def secagg_batch(
        self, peer: Identity, job_id: str, round_number: int, batch: m.SecAggBatch
    ) -> m.SecAggBatchReceipt:
        """Many of a gateway's devices' joins and control messages; each item checked alone."""
        secure = self._secure(peer, job_id, round_number)
        joins = [_item(functools.partial(secure.join, peer, j)) for j in batch.joins]
        if batch.joins and len(secure.joined) >= secure.expected:
            self.tick()  # everyone is in: start the session now, not at the next tick
        results, nbytes = [], 0
        for item in batch.messages:
            data = _b64(item.message)
            nbytes += len(data)
            results.append(
                _item(functools.partial(secure.receive, peer, data, self.clock(), item.device_id))
            )
        if nbytes:
            self.driver.record_traffic(job_id, round_number, peer.name, "secagg", nbytes, 0)
        if secure.result is not None:
            self.tick()
        return m.SecAggBatchReceipt(joins=joins, messages=results)

    def secagg_site_inbox(
        self, peer: Identity, job_id: str, round_number: int, after: int
    ) -> m.SecAggSiteInbox:
        """The messages waiting for all of the gateway's devices (long poll)."""
        secure = self._secure(peer, job_id, round_number)
        return secure.site_inbox(peer, after, wait_s=self.settings.poll_interval_s)
