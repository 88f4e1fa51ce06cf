"""An ASGI middleware that counts each request's body bytes in and out, and refusals, by route.

Added outermost to a role's API app (and its ops app), it sees every request, including those
refused before a route runs (413 from the body limit, 401/403 from authentication, 422 from
validation), and reports to :mod:`fedge.telemetry.metrics`: bytes received and sent by route
group (``fedge_http_received_bytes_total``, ``fedge_http_sent_bytes_total``) and refusals by
reason (``fedge_requests_refused_total``). The reason is the application's when the API's error
handler named it (:func:`note_refusal`: stale round, replay, wrong site, ...), else the 4xx
status's. Only body bytes are counted (not headers, not TLS records). Pure ASGI: it wraps
``receive`` and ``send`` and never buffers a body. (Model payloads served are counted by the
services, which know what the version is: :func:`fedge.telemetry.metrics.record_model_served`.)
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fedge.telemetry.metrics import reason_for_status, record_refused, record_traffic, route_group

__all__ = ["REFUSAL_KEY", "TrafficMetricsMiddleware", "note_refusal"]

REFUSAL_KEY = "fedge_refusal"  # in the request's scope["state"]: why the app refused it


def note_refusal(state: MutableMapping[str, Any], reason: str) -> None:
    """Name why a request is refused (``state``: its ``scope["state"]``), for the middleware."""
    state[REFUSAL_KEY] = reason


Scope = dict[str, Any]
Message = dict[str, Any]


class TrafficMetricsMiddleware:
    """Count body bytes and refusals per request (``group``: one fixed route group for all)."""

    def __init__(self, app: Any, group: str | None = None) -> None:
        self.app = app
        self.group = group

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Pass the request through, counting what crosses ``receive`` and ``send``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = sent = status = 0
        state = scope.setdefault("state", {})  # shared with the app's Request.state

        async def counting_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            group = self.group or route_group(scope.get("path", ""))
            record_traffic(group, received, sent)
            reason = reason_for_status(status)
            if reason is not None:
                named = state.get(REFUSAL_KEY) if isinstance(state, dict) else None
                record_refused(named if isinstance(named, str) else reason)
