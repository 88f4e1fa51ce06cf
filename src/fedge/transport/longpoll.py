"""Long-poll check-in: hold a device's request until a task may be there for it, or a time bound.

A device that asks with ``CheckInRequest.wait_s > 0`` and finds no task is not told to come back
later at once: the server keeps the request open, without a thread (the route awaits an asyncio
future on the event loop), for at most ``min(wait_s, limit_s)`` seconds. Whoever opens work — the
gateway's uplink when a round's model is in the site cache, the coordinator's driver when a round
opens — calls :meth:`LongPoll.notify` from its own thread; every held request then asks its
service again (``recheck``) and answers with the task if one is there now. ``max_held`` bounds the
requests held at once; past it a device is answered ``Wait`` at once, as without long poll.

A held request that ends without a task is answered ``Wait(retry_after_s=0)``: the device may
ask again at once (with a little jitter). Errors keep their exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fedge.errors import ConfigError

__all__ = ["LongPoll", "Waiter"]


@dataclass
class Waiter:
    """One held request's wake-up: armed before each look, so no notification is missed."""

    poll: LongPoll
    loop: asyncio.AbstractEventLoop
    deadline: float
    future: asyncio.Future[None] | None = field(default=None, init=False)

    def arm(self) -> None:
        """Listen for the next notification (call before looking for a task)."""
        self.disarm()
        self.future = self.loop.create_future()
        self.poll._listen(self.loop, self.future, add=True)
        if self.poll.closed:  # closed meanwhile: do not wait for a wake-up that has passed
            self.future.set_result(None)

    def disarm(self) -> None:
        """Stop listening."""
        if self.future is not None:
            self.poll._listen(self.loop, self.future, add=False)
            self.future = None

    async def woken(self) -> bool:
        """Wait for the armed notification; False when the time bound passed first."""
        assert self.future is not None, "arm() before waiting"
        remaining = self.deadline - self.loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self.future, remaining)
        except TimeoutError:
            return False
        return not self.poll.closed


class LongPoll:
    """Held check-ins of one server and their wake-ups (thread-safe ``notify``)."""

    def __init__(self, limit_s: float = 0.0, max_held: int = 10_000) -> None:
        if limit_s < 0 or max_held < 0:
            raise ConfigError(
                f"long poll: limit_s ({limit_s}) and max_held ({max_held}) must be >= 0"
            )
        self.limit_s = limit_s
        self.max_held = max_held
        self.held = 0  # requests held now
        self.peak_held = 0  # most held at once (for tests and benchmarks)
        self.refused = 0  # requests answered at once because max_held were held
        self.closed = False  # the server is stopping: nothing is held any more
        self._lock = threading.Lock()
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def hold_for(self, wait_s: float) -> float:
        """How long a request that offers to wait ``wait_s`` may be held here."""
        return 0.0 if self.closed else max(0.0, min(wait_s, self.limit_s))

    def close(self) -> None:
        """The server is stopping: answer every held request now and hold no more."""
        self.closed = True
        self.notify()

    def _listen(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], *, add: bool
    ) -> None:
        with self._lock:
            if add:
                self._futures.add((loop, future))
            else:
                self._futures.discard((loop, future))

    def notify(self) -> None:
        """Work may be available: wake every held request (from any thread)."""
        with self._lock:
            woken, self._futures = self._futures, set()
        for loop, future in woken:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
                loop.call_soon_threadsafe(_resolve, future)

    @asynccontextmanager
    async def holding(self, seconds: float) -> AsyncIterator[Waiter | None]:
        """A waiter for ``seconds`` (None when the request may not be held: no time, or full)."""
        with self._lock:
            admitted = seconds > 0 and self.held < self.max_held
            if admitted:
                self.held += 1
                self.peak_held = max(self.peak_held, self.held)
            elif seconds > 0:
                self.refused += 1
        if not admitted:
            yield None
            return
        loop = asyncio.get_running_loop()
        waiter = Waiter(self, loop, loop.time() + seconds)
        try:
            yield waiter
        finally:
            waiter.disarm()
            with self._lock:
                self.held -= 1


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
