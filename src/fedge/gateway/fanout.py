"""One round's secure-aggregation inbox at a gateway: the site's messages, fanned out per device.

The gateway reads its devices' messages from the coordinator in pages of ONE site-wide log
(:class:`~fedge.transport.messages.SecAggSiteInbox`, cursor ``next``) instead of one long poll
per device. :class:`SiteInbox` keeps what came in: each device's own box (in the order the
coordinator wrote it), the proven keys (the coordinator's, and the neighbours' of the site's
devices) and the session's state, phase and deadlines; :meth:`SiteInbox.view` answers a device
exactly as the coordinator's per-device inbox would (:class:`~fedge.transport.messages.SecAggInbox`).
No I/O and no clock: the relay (:mod:`fedge.gateway.secure`) fetches and locks.
"""

from __future__ import annotations

from typing import Literal

from fedge.errors import ValidationError
from fedge.transport.messages import KeyBinding, SecAggInbox, SecAggSiteInbox

__all__ = ["DEVICE_PAGE", "SiteInbox"]

DEVICE_PAGE = 64  # messages per device inbox answer (SecAggInbox.messages)
_FINAL = ("done", "abandoned")
State = Literal["joining", "running", "done", "abandoned"]


class SiteInbox:
    """What the coordinator sent for one round to the devices of this gateway."""

    def __init__(self) -> None:
        self.cursor = 0  # the site cursor to ask from next
        self.state: State = "joining"
        self.phase = "join"
        self.phase_deadline: float | None = None
        self.relay_deadline: float | None = None
        self.reason = ""
        self._boxes: dict[str, list[str]] = {}
        self._coordinator: KeyBinding | None = None
        self._bindings: dict[str, KeyBinding] = {}
        self._neighbours: dict[str, list[str]] = {}

    @property
    def final(self) -> bool:
        """The session is over (done or abandoned): nothing more will come."""
        return self.state in _FINAL

    def merge(self, page: SecAggSiteInbox, members: set[str]) -> list[tuple[str, str]]:
        """Take a page read from :attr:`cursor`; returns its (device, base64 message) pairs.

        ``members`` are the devices that joined through this gateway: a message for any other
        device is refused (the coordinator writes only theirs into this site's log).
        """
        if page.next != self.cursor + len(page.messages):
            raise ValidationError(
                f"site inbox page from {self.cursor} ends at {page.next}, not at "
                f"{self.cursor + len(page.messages)}: the coordinator's answer is inconsistent"
            )
        strangers = {m.device_id for m in page.messages} - members
        if strangers:
            raise ValidationError(
                f"site inbox holds messages for devices that did not join here: "
                f"{sorted(strangers)[:5]}"
            )
        if page.bindings and self._coordinator is None:
            first, *peers = page.bindings
            if first.role != "coordinator":
                raise ValidationError("site inbox bindings must start with the coordinator's")
            self._coordinator = first
            self._bindings = {b.name: b for b in peers}
            self._neighbours = {d: list(vs) for d, vs in page.neighbours.items()}
        for m in page.messages:
            self._boxes.setdefault(m.device_id, []).append(m.message)
        self.cursor = page.next
        self.state, self.phase, self.reason = page.state, page.phase, page.reason
        self.phase_deadline = page.phase_deadline
        if page.relay_deadline is not None:
            self.relay_deadline = page.relay_deadline  # kept once the masked-input phase ends
        return [(m.device_id, m.message) for m in page.messages]

    def has_news(self, device: str, after: int) -> bool:
        """True if ``device`` has messages past ``after``, or the session is over."""
        return len(self._boxes.get(device, ())) > after or self.final

    def view(self, device: str, after: int) -> SecAggInbox:
        """The device's inbox from position ``after``, as the coordinator would answer it."""
        box = self._boxes.get(device, [])
        if after > len(box):
            raise ValidationError(f"cursor {after} is past the {len(box)} messages sent")
        page = box[after : after + DEVICE_PAGE]
        bindings: list[KeyBinding] = []
        if after == 0 and self._coordinator is not None:
            peers = self._neighbours.get(device, [])
            bindings = [self._coordinator] + [
                self._bindings[v] for v in peers if v in self._bindings
            ]
        return SecAggInbox(
            state=self.state,
            messages=page,
            next=after + len(page),
            bindings=bindings,
            phase=self.phase,
            phase_deadline=self.phase_deadline,
            relay_deadline=self.relay_deadline,
            reason=self.reason,
        )
