"""The site's devices as the coordinator should hear of them: :class:`SiteRoster`.

The gateway remembers each device's last check-in (when, whether it had examples to train on,
its labels), and from that tells the coordinator, with every gateway check-in, how many of its
devices are online and eligible and the labels of those the coordinator should hear about
(again): labels go when they change and every ``label_refresh_s`` while the device is online, so
that the coordinator counts the devices matching a job's selector at this gateway, and only
those online. It also keeps the certificates (DER) of devices the coordinator has not confirmed
yet, so that the coordinator learns their sites before a partial names them
(:mod:`fedge.gateway.uplink` sends them). Thread-safe; the caller passes the time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import TypeAdapter

from fedge.transport.messages import MAX_LABELLED_DEVICES, Labels

__all__ = ["LABELS_BUDGET_BYTES", "Presence", "SiteRoster"]

log = logging.getLogger(__name__)

LABELS_BUDGET_BYTES = 128 * 1024  # device labels in one check-in (the coordinator takes 256 KiB)
_LABELS = TypeAdapter[dict[str, str]](Labels)


def _json_size(device: str, labels: dict[str, str]) -> int:
    """About how many bytes ``"device": {labels}`` takes in a check-in (UTF-8, quotes)."""
    return len(device) + 8 + sum(len(k.encode()) + len(v.encode()) + 6 for k, v in labels.items())


@dataclass
class _Seen:
    at: float
    eligible: bool
    labels: dict[str, str] | None = field(default_factory=dict)  # None: cannot be forwarded


@dataclass(frozen=True)
class Presence:
    """What a gateway check-in says about the site's devices."""

    online: int
    eligible: int
    labels: dict[str, dict[str, str]]  # the devices whose labels the coordinator should hear


class SiteRoster:
    """The site's devices: last check-ins, labels to forward, certificates to register."""

    def __init__(self, *, online_window_s: float = 120.0, label_refresh_s: float = 60.0) -> None:
        self.online_window_s = online_window_s
        self.label_refresh_s = label_refresh_s
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}
        self._unregistered: dict[str, bytes] = {}
        self._registered: set[str] = set()
        self._labels_sent: dict[str, tuple[float, dict[str, str]]] = {}  # (when, what)
        self._unforwardable: set[str] = set()  # devices whose labels cannot be forwarded (warned)

    def saw(
        self, device: str, at: float, *, eligible: bool, labels: dict[str, str], der: bytes | None
    ) -> None:
        """``device`` checked in at ``at`` (``der``: its certificate, if the peer sent one)."""
        forwardable = self._forwardable(device, labels)
        with self._lock:
            self._seen[device] = _Seen(at, eligible, forwardable)
            if device not in self._registered and der:
                self._unregistered[device] = der

    def _forwardable(self, device: str, labels: dict[str, str]) -> dict[str, str] | None:
        """The device's labels as the coordinator takes them, or None (warned once) when they
        are too many or too long to forward: jobs' selectors are then matched here only."""
        try:
            valid = _LABELS.validate_python(labels)
        except ValueError as exc:
            with self._lock:
                first = device not in self._unforwardable
                self._unforwardable.add(device)
            if first:
                log.warning(
                    "labels of device %s are not forwarded to the coordinator, so it is not "
                    "counted for jobs with a selector (at most 32 labels, keys of 1..64 and "
                    "values of up to 128 printable characters): %s",
                    device, str(exc).splitlines()[0],
                )  # fmt: skip
            return None
        with self._lock:
            self._unforwardable.discard(device)
        return valid

    def presence(self, now: float) -> Presence:
        """Devices online and eligible at ``now``, and the labels due to the coordinator (at most
        :data:`LABELS_BUDGET_BYTES` and ``MAX_LABELLED_DEVICES``; the rest go next time)."""
        with self._lock:
            online = {d: s for d, s in self._seen.items() if now - s.at <= self.online_window_s}
            due: dict[str, dict[str, str]] = {}
            budget = LABELS_BUDGET_BYTES
            for device, seen in online.items():
                if not seen.eligible or seen.labels is None:
                    continue
                sent_at, sent = self._labels_sent.get(device, (-float("inf"), None))
                if sent == seen.labels and now - sent_at < self.label_refresh_s:
                    continue  # the coordinator has them, and heard of the device lately
                size = _json_size(device, seen.labels)
                if size > budget or len(due) >= MAX_LABELLED_DEVICES:
                    break  # the rest go with the next check-ins
                budget -= size
                due[device] = seen.labels
        return Presence(len(online), sum(s.eligible for s in online.values()), due)

    def labels_sent(self, labels: dict[str, dict[str, str]], at: float) -> None:
        """The coordinator took these devices' labels at ``at``: not due again for a while."""
        with self._lock:
            for device, sent in labels.items():
                self._labels_sent[device] = (at, sent)

    def unregistered_certificates(self, limit: int = 200) -> dict[str, bytes]:
        """Up to ``limit`` devices' certificates (DER) the coordinator has not confirmed yet
        (200 base64 certificates, ~140 KB, fit the coordinator's 256 KiB JSON limit)."""
        with self._lock:
            return dict(list(self._unregistered.items())[:limit])

    def mark_registered(self, devices: Iterable[str]) -> None:
        """The coordinator answered for these devices (registered, or refused for good)."""
        with self._lock:
            for device in devices:
                self._unregistered.pop(device, None)
                self._registered.add(device)

    def forget(self, device: str) -> None:
        """``device`` is gone (revoked): not online, not eligible, not registered, no labels."""
        with self._lock:
            self._seen.pop(device, None)
            self._unregistered.pop(device, None)
            self._labels_sent.pop(device, None)
