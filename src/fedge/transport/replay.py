"""Replay protection: every (sender, nonce) pair is accepted once within a time window.

Services call :meth:`ReplayGuard.check` with the sender's certificate name and the message's
nonce before acting on a message. Memory is bounded: entries expire after ``ttl_s`` and at most
``max_entries`` are kept (the oldest are forgotten first, with a warning). A nonce older than the
window is not remembered, which is why messages are also bound to a (job, round) that the
services refuse once stale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fedge.errors import ProtocolError

__all__ = ["ReplayGuard"]

log = logging.getLogger(__name__)


class ReplayGuard:
    """Remembers (sender, nonce) pairs for ``ttl_s`` seconds; thread-safe."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        max_entries: int = 1_000_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be positive and max_entries at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # → expiry, oldest first
        self._warned = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def check(self, sender: str, nonce: str) -> None:
        """Record ``nonce`` from ``sender``; raise :class:`ProtocolError` if seen within the TTL."""
        now = self._clock()
        key = (sender, nonce)
        with self._lock:
            self._evict_expired(now)
            if key in self._seen:
                raise ProtocolError(
                    f"replayed nonce {nonce} from {sender!r}: every message needs a fresh nonce"
                )
            if len(self._seen) >= self.max_entries:
                self._seen.popitem(last=False)
                if not self._warned:
                    log.warning(
                        "replay guard full (%d entries): forgetting nonces before their TTL",
                        self.max_entries,
                    )
                    self._warned = True
            self._seen[key] = now + self.ttl_s

    def _evict_expired(self, now: float) -> None:
        # Insertion order is expiry order (constant TTL, monotonic clock).
        while self._seen:
            key, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[key]
