"""The API app's side of trace context: a server span per request that arrives inside a trace.

:class:`TraceContextMiddleware` wraps the ASGI app of :func:`fedge.transport.api.build_app`.
For a request with a valid ``traceparent`` header, while this process traces, it runs the route
inside a ``SERVER`` span that is a child of the caller's span, named by the route template
(``POST /v1/jobs/{job_id}/rounds/{round_number}/partials``), with the method, path, route and
response status as attributes; requests made while handling it (a gateway relaying a device's
message to the coordinator) carry it on. While this process does not trace, the caller's context
is made current instead (no span): the route's log lines still carry the round's trace id, and
requests it makes pass the context on. Requests outside any trace (polls, admin calls) make no
span. For a path under ``/jobs/{job}/rounds/{r}/`` it also sets the log records' job and round
(:func:`fedge.telemetry.logs.round_context`), whether or not tracing is on.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedge.telemetry.logs import round_context
from fedge.telemetry.tracing import TRACEPARENT, context_of, start_span, tracing_enabled

__all__ = ["TraceContextMiddleware", "round_of_path"]

_ROUND_PATH = re.compile(r"/jobs/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/rounds/(\d{1,10})(?:/|$)")
_HEADER = TRACEPARENT.encode()


def round_of_path(path: str) -> tuple[str, int] | None:
    """(job, round) of a ``…/jobs/{job}/rounds/{r}/…`` path, else None."""
    match = _ROUND_PATH.search(path)
    return (match.group(1), int(match.group(2))) if match else None


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == _HEADER:
            return bytes(value).decode("latin-1")
    return None


class TraceContextMiddleware:
    """Continue the caller's trace in a server span; stamp logs with the path's job and round."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = round_of_path(scope["path"])
        with round_context(*where) if where else contextlib.nullcontext():
            header = _traceparent(scope)
            caller = context_of(header)
            if caller is None:
                await self.app(scope, receive, send)
            elif tracing_enabled():
                await self._traced(scope, receive, send, header)
            else:  # not tracing here: the caller's context only, for logs and onward requests
                token = otel_context.attach(caller)
                try:
                    await self.app(scope, receive, send)
                finally:
                    otel_context.detach(token)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, header: str | None) -> None:
        method, path = scope["method"], scope["path"]
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        s = start_span(
            f"{method} {path}",
            traceparent=header,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        with trace.use_span(s, end_on_exit=True, record_exception=True):
            await self.app(scope, receive, send_status)
            route: Any = scope.get("route")
            template = getattr(route, "path", None)
            if isinstance(template, str):
                s.update_name(f"{method} {template}")
                s.set_attribute("http.route", template)
            if status:
                s.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    s.set_status(Status(StatusCode.ERROR, f"HTTP {status[0]}"))
