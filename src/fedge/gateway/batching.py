"""One round's upstream secure-aggregation batch at a gateway: its devices' joins and messages.

Each protocol step asks every device of the session for one message (its join, key
advertisement, encrypted shares, unmask response), and they come in within moments of each other.
:class:`UpBatch` holds them until the site's step is complete (no device the gateway waits for
is missing) or the oldest has lingered ``linger_s`` (a device dropped out), then hands them over
as ONE :class:`~fedge.transport.messages.SecAggBatch` (at most ``MAX_BATCH_ITEMS`` items and
``max_bytes`` of JSON; the rest goes in the next). A resend of a queued or sent message is a
duplicate. Items the coordinator could not be reached for go back in front, and are dropped
after ``max_age_s`` (their phase is over by then). No I/O: time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from fedge.transport.messages import MAX_BATCH_ITEMS, SecAggBatch, SecAggJoin, SecAggRelayed

__all__ = ["Pending", "UpBatch"]

_ITEM_OVERHEAD = 64  # JSON punctuation and field names per item, bytes


@dataclass(frozen=True)
class Pending:
    """One queued item: a device's join, or its control message (base64 wire)."""

    device: str
    since: float
    size: int  # its JSON size, about
    join: SecAggJoin | None = None
    message: str = ""


class UpBatch:
    """The joins and control messages of one round's devices waiting to go up together."""

    def __init__(
        self, linger_s: float, *, max_bytes: int = 192 * 1024, max_age_s: float = 60.0
    ) -> None:
        self.linger_s = linger_s
        self.max_bytes = max_bytes  # the coordinator takes JSON bodies of up to 256 KiB
        self.max_age_s = max_age_s
        self.retry_at = 0.0  # after a failed send: not before then
        self._items: list[Pending] = []
        self._seen: set[bytes] = set()  # digests of every item ever queued (resends)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def devices(self) -> set[str]:
        """Devices with an item queued."""
        return {p.device for p in self._items}

    def add_join(self, join: SecAggJoin, now: float) -> bool:
        """Queue a device's join; False if this very join was queued before."""
        text = join.model_dump_json()
        return self._add(text.encode(), Pending(join.device_id, now, len(text), join=join))

    def add_message(self, device: str, data: bytes, now: float) -> bool:
        """Queue a device's control message; False if these very bytes were queued before."""
        text = base64.b64encode(data).decode()
        return self._add(data, Pending(device, now, len(text) + len(device), message=text))

    def _add(self, data: bytes, item: Pending) -> bool:
        digest = hashlib.sha256(data).digest()
        if digest in self._seen:
            return False
        self._seen.add(digest)
        self._items.append(item)
        return True

    def due(self, now: float, waiting_for: set[str]) -> bool:
        """Send now? Yes once nobody in ``waiting_for`` is missing, the oldest item lingered
        ``linger_s``, or a full batch is queued; never before :attr:`retry_at`."""
        if not self._items or now < self.retry_at:
            return False
        if not (waiting_for - self.devices) or now - self._items[0].since >= self.linger_s:
            return True
        full = len(self._items) >= MAX_BATCH_ITEMS
        return full or sum(p.size + _ITEM_OVERHEAD for p in self._items) >= self.max_bytes

    def take(self) -> tuple[SecAggBatch, list[Pending], list[Pending]]:
        """The next batch (oldest items first) and the join and message items it holds."""
        joins: list[Pending] = []
        messages: list[Pending] = []
        size = 0
        for item in self._items:
            if len(joins) + len(messages) >= MAX_BATCH_ITEMS:
                break
            if size and size + item.size + _ITEM_OVERHEAD > self.max_bytes:
                break
            size += item.size + _ITEM_OVERHEAD
            (joins if item.join is not None else messages).append(item)
        del self._items[: len(joins) + len(messages)]
        batch = SecAggBatch(
            joins=[p.join for p in joins if p.join is not None],
            messages=[SecAggRelayed(device_id=p.device, message=p.message) for p in messages],
        )
        return batch, joins, messages

    def put_back(self, items: list[Pending], now: float, retry_at: float) -> list[Pending]:
        """Requeue items whose batch could not be delivered; returns those dropped as too old."""
        keep = [p for p in items if now - p.since < self.max_age_s]
        self._items[:0] = sorted(keep, key=lambda p: p.since)
        self.retry_at = retry_at
        return [p for p in items if now - p.since >= self.max_age_s]
