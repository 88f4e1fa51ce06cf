"""Request body size limits, enforced before a body is read.

:class:`BodyLimitMiddleware` is plain ASGI and sits in front of the routes. A request whose
``Content-Length`` exceeds its route's limit is answered ``413`` at once, without reading a byte
of the body (and without sending ``100 Continue``). A body without a length (chunked) is counted
as it streams in; the moment it passes the limit the application's work is abandoned, whatever
it was about to answer is dropped, and the peer gets ``413`` with ``Connection: close``. Either
way the service behind the route is never called.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedge.transport.messages import ErrorBody

__all__ = ["BodyLimitMiddleware", "BodyLimits"]

log = logging.getLogger(__name__)

_MiB = 1024 * 1024
_UPDATES = re.compile(r"^/v1/jobs/[^/]+/rounds/[^/]+/updates/?$")
_PARTIALS = re.compile(r"^/v1/jobs/[^/]+/rounds/[^/]+/partials/?$")
_SECAGG = re.compile(r"^/v1/(gateway/)?jobs/[^/]+/rounds/[^/]+/secagg/?$")  # masked vectors

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


@dataclass(frozen=True)
class BodyLimits:
    """The largest request body each kind of route accepts, in bytes."""

    json: int = 256 * 1024  # check-ins and admin requests
    update: int = 64 * _MiB  # a device's update payload (float32 deltas)
    partial: int = 256 * _MiB  # a gateway's partial sum (float64 sums)

    def for_path(self, path: str) -> int:
        """The limit for a request to ``path``."""
        if _UPDATES.match(path) or _SECAGG.match(path):
            return self.update
        if _PARTIALS.match(path):
            return self.partial
        return self.json


class _TooLargeError(Exception):
    """Raised into the application when a streamed body passes its limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit_for(path)`` bytes with 413, before the route runs."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            log.info(
                "refused %s %s: Content-Length %d over the limit of %d bytes",
                scope["method"], scope["path"], declared, limit,
            )  # fmt: skip
            await _send_413(send, limit)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the application's answer to a cut-off body is not the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            log.info(
                "refused %s %s: streamed body passed the limit of %d bytes",
                scope["method"], scope["path"], limit,
            )  # fmt: skip
            if not started:
                await _send_413(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = ErrorBody(
        error="payload_too_large",
        detail=f"request body is over this route's limit of {limit} bytes; send less",
    ).model_dump_json()
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
