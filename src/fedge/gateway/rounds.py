"""The rounds a gateway serves: the coordinator's assignments and who got which round.

A :class:`RoundBook` keeps the :class:`~fedge.transport.messages.RoundAssignment` objects the
uplink fetched and, per round, the devices the gateway handed it to. It decides what a checking-in
device gets: the first open round whose label selector the device matches, within the round's
quota -- a device that already holds a round is handed the same round again (its earlier answer may
have been lost), so retries never use up quota. It is pure bookkeeping: no I/O, the clock is passed
in, and the caller (:class:`~fedge.gateway.service.GatewayService`) holds the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fedge.transport.messages import RoundAssignment

__all__ = ["RoundBook", "RoundKey", "RoundState"]

RoundKey = tuple[str, int]  # (job id, round number)

log = logging.getLogger(__name__)


@dataclass
class RoundState:
    """One round at this gateway: the coordinator's assignment and the devices that hold it."""

    assignment: RoundAssignment
    handed: set[str] = field(default_factory=set)  # devices the round was handed to
    reported: set[str] = field(default_factory=set)  # devices whose update was taken or refused
    closed: bool = False  # a partial was formed: nothing more is handed out or accepted
    over_budget: set[str] = field(default_factory=set)  # devices whose ε limit the round passes

    @property
    def key(self) -> RoundKey:
        """(job id, round number)."""
        return (self.assignment.job_id, self.assignment.round)

    @property
    def close_at(self) -> float:
        """When the gateway stops waiting: updates are due, or its own report is."""
        a = self.assignment
        return min(a.training_deadline, a.report_deadline)

    def complete(self) -> bool:
        """Every slot of the quota was handed out and every holder has reported."""
        return len(self.handed) >= self.assignment.quota and self.handed <= self.reported

    def open_at(self, now: float) -> bool:
        """Still accepting devices and updates at ``now``."""
        return not self.closed and now < self.close_at


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when the device's labels carry every ``key=value`` the job's selector requires."""
    return all(labels.get(k) == v for k, v in selector.items())


class RoundBook:
    """Open rounds and the devices that hold them (not thread-safe: the service locks)."""

    def __init__(self) -> None:
        self._rounds: dict[RoundKey, RoundState] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._rounds

    def get(self, key: RoundKey) -> RoundState | None:
        """The round's state, or None if the gateway never had it (or forgot it)."""
        return self._rounds.get(key)

    def states(self) -> list[RoundState]:
        """Every round still held, oldest first."""
        return list(self._rounds.values())

    def update(
        self, assignments: Iterable[RoundAssignment], closed: Iterable[RoundKey]
    ) -> list[RoundState]:
        """Merge a fresh set of assignments; returns the rounds that are new to this gateway.

        A known round keeps its bookkeeping (a later quota from the coordinator replaces the
        earlier one). ``closed`` names rounds already reported (e.g. before a restart): they are
        recorded closed so they are never handed out or reported again.
        """
        done = set(closed)
        new: list[RoundState] = []
        for a in assignments:
            key = (a.job_id, a.round)
            state = self._rounds.get(key)
            if state is None:
                state = RoundState(a, closed=key in done)
                self._rounds[key] = state
                new.append(state)
            else:
                state.assignment = a
        return new

    def assign(
        self,
        device: str,
        labels: Mapping[str, str],
        now: float,
        privacy_remaining: float | None,
        ready: Callable[[RoundAssignment], bool] = lambda _a: True,
    ) -> RoundState | None:
        """The round to hand ``device`` now (recording it), or None when nothing fits.

        ``ready`` filters rounds the gateway can serve (e.g. whose model it has cached).
        """
        candidates = [s for s in self._rounds.values() if s.open_at(now) and ready(s.assignment)]
        for state in candidates:  # a round it already holds comes first: idempotent retries
            if device in state.handed and device not in state.reported:
                return state
        for state in candidates:
            a = state.assignment
            if device in state.handed or len(state.handed) >= a.quota:
                continue
            if not selector_matches(a.selector, labels):
                continue
            if privacy_remaining is not None and a.privacy.epsilon_cost > privacy_remaining:
                if device not in state.over_budget:  # said once per device and round
                    state.over_budget.add(device)
                    log.warning(
                        "device %s is not handed %s/%d: the round costs ε %.4g and its owner's "
                        "privacy limit leaves %.4g; the device owner can raise the limit, the job "
                        "can add noise or run fewer rounds",
                        device, a.job_id, a.round, a.privacy.epsilon_cost, privacy_remaining,
                    )  # fmt: skip
                continue
            state.handed.add(device)
            return state
        return None

    def due(self, now: float) -> list[RoundState]:
        """Open rounds that should be reported now: complete, or out of time."""
        return [
            s for s in self._rounds.values() if not s.closed and (s.complete() or now >= s.close_at)
        ]

    def forget_before(self, now: float, keep_s: float) -> list[RoundKey]:
        """Drop closed rounds whose report deadline passed more than ``keep_s`` ago."""
        old = [
            k
            for k, s in self._rounds.items()
            if s.closed and now > s.assignment.report_deadline + keep_s
        ]
        for k in old:
            del self._rounds[k]
        return old
