"""Local durable storage for gateways and devices (SQLite files): the outbox."""

from __future__ import annotations

from fedge.storage.outbox import Outbox, OutboxItem

__all__ = ["Outbox", "OutboxItem"]
