"""An ASGI middleware that counts each request's body bytes in and out, and refusals, by route.

Added outermost to a role's API app (and its ops app), it sees every request, including those
refused before a route runs (413 from the body limit, 401/403 from authentication, 422 from
validation), and reports to :mod:`fedge.telemetry.metrics`: bytes received and sent by route
group (``fedge_http_received_bytes_total``, ``fedge_http_sent_bytes_total``), refusals by reason
(``fedge_requests_refused_total``) and model payloads served (``fedge_models_served_total``).
Only body bytes are counted (not headers, not TLS records). Pure ASGI: it wraps ``receive`` and
``send`` and never buffers a body.
"""

from __future__ import annotations

from typing import Any

from fedge.telemetry.metrics import (
    reason_for_status,
    record_model_served,
    record_refused,
    record_traffic,
    route_group,
)

__all__ = ["TrafficMetricsMiddleware"]

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
                record_refused(reason)
            elif status == 200 and group == "models" and scope.get("method") == "GET":
                record_model_served()
