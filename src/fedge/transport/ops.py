"""The ops listener: a second HTTPS port for operators (``/metrics``, ``/healthz``, dashboards).

Beside its mutual-TLS API, the coordinator and each gateway serve this listener with their own
server certificate; a client certificate is **optional** (verified against the fleet CA and
CRL when one is presented), so Prometheus and browsers can reach it. A request gets in with

- a client certificate with role ``admin`` (verified per request, so revocation is immediate), or
- the ops token: ``Authorization: Bearer <token>``, or the cookie that ``GET /login?token=…``
  sets for browsers (an HMAC of the token, never the token itself).

Nothing else does: no credentials or a wrong token is 401, a valid non-admin certificate 403.
``/healthz`` alone is open (it says only "ok", for liveness probes). Other packages contribute
routers (``/metrics`` from :mod:`fedge.telemetry.metrics`, the dashboard); every route of a
contributed router requires access, and handlers that want to know who asked depend on
:func:`require_ops_access` (FastAPI runs it once per request).

The token lives in ``[ops] token_file`` (default ``ops.token`` beside the config), created 0600
with :func:`secrets.token_urlsafe` at first start (:func:`load_or_create_token`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from fedge.errors import AuthorizationError, CertificateError, ConfigError
from fedge.identity import Identity, PeerVerifier, Role
from fedge.transport.errors import install_error_handlers
from fedge.transport.server import RunningServer, ServerTls, peer_cert_der, start_server

__all__ = [
    "COOKIE_NAME",
    "OpsAccess",
    "OpsSection",
    "build_ops_app",
    "load_or_create_token",
    "ops_ssl_context",
    "require_ops_access",
    "start_ops",
    "start_ops_server",
]

log = logging.getLogger(__name__)

COOKIE_NAME = "fedge_ops"
_TOKEN_HELP = (
    "present an admin client certificate, or the ops token as `Authorization: Bearer <token>`"
    " (browsers: open /login?token=<token> once); the token is in the [ops] token_file"
)

OpsAccess = Identity | Literal["token"]
"""Who got in: the admin's verified identity, or ``"token"`` for the ops token."""


class OpsSection(BaseModel):
    """``[ops]`` of coordinator.toml and gateway.toml: the operators' listener."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)  # 0: any free port (printed at start)
    token_file: Path = Path("ops.token")  # relative: beside the config file

    def token_path(self, base: Path) -> Path:
        """The token file, absolute (relative paths start at ``base``)."""
        return (base / self.token_file).resolve()


def load_or_create_token(path: Path) -> str:
    """The ops token in ``path``; a new one (0600, 256 random bits) if the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the ops token file {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        log.info("created the ops token in %s (0600)", path)
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the ops token file {path}: {exc}") from None
    if len(token) < 16:
        raise ConfigError(
            f"the ops token in {path} is too short ({len(token)} characters; 16 at least):"
            " delete the file to have a new one made"
        )
    return token


def ops_ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """The role's server context with the client certificate optional (still CA/CRL-checked)."""
    context = tls.ssl_context()
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"fedge ops session", hashlib.sha256).hexdigest()


def _presented_token(request: Request) -> tuple[str, str] | None:
    """(how, value) of the credential a request carries besides its certificate, if any."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise CertificateError(f"unsupported Authorization header: {_TOKEN_HELP}")
        return "bearer", value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return ("cookie", cookie) if cookie else None


def require_ops_access(request: Request) -> OpsAccess:
    """A dependency: the admin identity or ``"token"``; 401 without valid credentials, 403 for a
    valid certificate of another role."""
    verifier: PeerVerifier = request.app.state.verifier
    token: str = request.app.state.ops_token
    der = peer_cert_der(request.scope)
    identity = verifier.verify(der) if der is not None else None  # 401 if revoked or foreign
    if identity is not None and identity.role is Role.ADMIN:
        return identity
    presented = _presented_token(request)
    if presented is not None:
        how, value = presented
        expected = token if how == "bearer" else _cookie_value(token)
        if hmac.compare_digest(value.encode(), expected.encode()):
            return "token"
        raise CertificateError(f"wrong ops token ({how}): {_TOKEN_HELP}")
    if identity is not None:
        raise AuthorizationError(
            f"a {identity.role} certificate ({identity.name!r}) has no ops access: {_TOKEN_HELP}"
        )
    raise CertificateError(f"no credentials: {_TOKEN_HELP}")


OpsCaller = Annotated[OpsAccess, Depends(require_ops_access)]


def _describe(who: OpsAccess) -> str:
    return "the ops token" if who == "token" else f"admin {who.name!r}"


def build_ops_app(
    *,
    title: str,
    verifier: PeerVerifier,
    token: str,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The ops app: ``/healthz`` (open), ``/login``, ``/`` and ``routers`` (access required)."""
    if len(token) < 16:
        raise ConfigError("the ops token must have 16 characters at least")
    app = FastAPI(title=f"{title} (ops)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.verifier = verifier
    app.state.ops_token = token
    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process serves requests (open to all; says nothing else)."""
        return {"status": "ok"}

    @app.get("/login", tags=["ops"], response_class=RedirectResponse)
    def login(
        request: Request,
        token: Annotated[str, Query(min_length=1, max_length=512)],
        next: Annotated[str, Query(pattern=r"^/([^/\\\s]\S*)?$", max_length=512)] = "/",
    ) -> RedirectResponse:
        """Check the ops token and set the session cookie, then go to ``next`` (a local path)."""
        if not hmac.compare_digest(token.encode(), app.state.ops_token.encode()):
            client = request.client.host if request.client else "?"
            log.warning("refused an ops login from %s: wrong token", client)
            raise CertificateError(f"wrong ops token: {_TOKEN_HELP}")
        response = RedirectResponse(next, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            _cookie_value(app.state.ops_token),
            httponly=True,
            secure=True,
            samesite="strict",
        )
        return response

    guarded = [Depends(require_ops_access)]
    for router in routers:
        app.include_router(router, dependencies=guarded)

    @app.get("/", tags=["ops"], response_class=HTMLResponse)
    def index(who: OpsCaller) -> HTMLResponse:
        """A page of links to the routes this listener serves."""
        contributed = {
            path
            for router in routers
            for route in router.routes
            if "{" not in (path := getattr(route, "path", "{"))
            and "GET" in (getattr(route, "methods", None) or ())
        }
        paths = ["/healthz", *sorted(contributed)]
        links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in paths)
        return HTMLResponse(
            f"<!doctype html><title>{title} ops</title><h1>{title}</h1>"
            f"<p>Signed in with {_describe(who)}.</p><ul>{links}</ul>"
        )

    return app


def start_ops_server(
    app: FastAPI, host: str, port: int, tls: ServerTls, *, access_log: bool = False
) -> RunningServer:
    """Serve the ops app in a background thread (client certificate optional)."""
    return start_server(app, host, port, ops_ssl_context(tls), access_log=access_log)


def start_ops(
    section: OpsSection,
    token_file: Path,
    *,
    title: str,
    verifier: PeerVerifier,
    tls: ServerTls,
    routers: Sequence[APIRouter] = (),
) -> RunningServer | None:
    """A role's ops listener as ``[ops]`` says (None when disabled), its traffic counted."""
    from fedge.telemetry.traffic import TrafficMetricsMiddleware

    if not section.enabled:
        return None
    token = load_or_create_token(token_file)
    app = build_ops_app(title=title, verifier=verifier, token=token, routers=routers)
    app.add_middleware(TrafficMetricsMiddleware, group="ops")
    return start_ops_server(app, section.host, section.port, tls)
