"""Relay sums in the gateway's durable outbox (fedge.gateway.relaysums): queued once per
(job, round, gateway), kept through failures and restarts, delivered once."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from fedge.device.backoff import Backoff
from fedge.errors import ProtocolError, UnavailableError
from fedge.gateway.cache import ModelCache
from fedge.gateway.relaysums import RelaySums, relay_sum_key
from fedge.gateway.service import GatewayService
from fedge.secagg import RelaySum, from_wire
from fedge.storage.outbox import Outbox
from fedge.transport.messages import Receipt


class Coordinator:
    """The coordinator's POST .../secagg as the gateway sees it: down, refusing, or up."""

    def __init__(self) -> None:
        self.state = "up"
        self.received: list[tuple[str, int, bytes]] = []

    def submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        if self.state == "down":
            raise UnavailableError("connection refused")
        if self.state == "stale":
            raise ProtocolError("round 1 of job 'j' has no secure-aggregation session open")
        duplicate = any(p == payload for _, _, p in self.received)
        self.received.append((job_id, round_number, payload))
        return Receipt(accepted=True, duplicate=duplicate)


def gateway(root: Path, clock: list[float]) -> GatewayService:
    return GatewayService(
        gateway_id="gw-a",
        site="s1",
        cache=ModelCache(root / "models", {}.__getitem__),
        outbox=Outbox(root / "outbox.sqlite"),
        clock=lambda: clock[0],
    )


def a_sum(devices: tuple[str, ...] = ("d1", "d2")) -> RelaySum:
    return RelaySum(b"s" * 32, "gw-a", devices, np.arange(5, dtype=np.uint32))


def test_a_sum_is_queued_once_and_survives_a_restart(tmp_path: Path) -> None:
    clock, coordinator = [100.0], Coordinator()
    service = gateway(tmp_path, clock)
    sums = RelaySums(service, coordinator.submit, Backoff(base_s=10.0, rng=random.Random(1)))
    assert sums.put("j", 1, a_sum(), keep_until=130.0)
    assert not sums.put("j", 1, a_sum(("d1",)), keep_until=130.0)  # one per (job, round, gw)
    assert sums.known("j", 1) and sums.key("j", 1) == relay_sum_key("j", 1, "gw-a")
    coordinator.state = "down"
    assert sums.deliver_due() == 0
    item = service.outbox.get(sums.key("j", 1))
    assert item is not None and item.attempts == 1 and 100.0 < item.next_attempt < 110.0
    service.outbox.close()  # the gateway stops with the sum undelivered ...
    coordinator.state = "up"
    restarted = gateway(tmp_path, clock)  # ... and starts again on the same state directory
    again = RelaySums(restarted, coordinator.submit)
    assert again.deliver_due() == 0  # not due yet: it backs off
    clock[0] = 111.0
    assert again.deliver_due() == 1 and again.deliver_due() == 0
    ((job, rnd, payload),) = coordinator.received
    sent = from_wire(payload)
    assert (job, rnd) == ("j", 1) and isinstance(sent, RelaySum)
    assert sent.contributors == ("d1", "d2")  # the first sum, not the one put later
    assert restarted.outbox.is_delivered(sums.key("j", 1))
    assert not again.put("j", 1, a_sum(), keep_until=200.0)  # the tombstone stays
    restarted.outbox.close()


def test_a_refused_sum_is_dropped_and_an_expired_one_is_not_sent(tmp_path: Path) -> None:
    clock, coordinator = [100.0], Coordinator()
    service = gateway(tmp_path, clock)
    sums = RelaySums(service, coordinator.submit)
    sums.put("j", 1, a_sum(), keep_until=130.0)
    coordinator.state = "stale"  # the round is over: retrying cannot help
    assert sums.deliver_due() == 0 and service.outbox.pending() == 0
    sums.put("j", 2, a_sum(), keep_until=130.0)
    clock[0] = 131.0  # past the masked-input phase: the coordinator would refuse it
    coordinator.state = "up"
    assert sums.deliver_due() == 0 and coordinator.received == []
    service.outbox.close()
