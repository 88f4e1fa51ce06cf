"""Per-request authentication (peer certificate → Identity) and role checks, as dependencies.

:func:`authenticate` runs :meth:`PeerVerifier.verify` on the connection's client certificate for
**every request** (so a revocation takes effect on the next request, even on a kept-alive
connection) and raises :class:`CertificateError` (401) when it is missing, foreign, expired or
revoked. :func:`require_roles` adds the role check (403). Refusals are logged with who and why;
certificates and keys are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from fastapi import Request

from fedge.errors import AuthorizationError, CertificateError
from fedge.identity import Identity, PeerVerifier, Role, authorize
from fedge.transport.server import peer_cert_der

__all__ = ["authenticate", "require_roles"]

log = logging.getLogger(__name__)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


def authenticate(request: Request) -> Identity:
    """The verified identity of the peer that sent ``request`` (401 if there is none)."""
    verifier: PeerVerifier = request.app.state.verifier
    der = peer_cert_der(request.scope)
    try:
        if der is None:
            raise CertificateError(
                "no client certificate on this connection; connect with mutual TLS using a"
                " certificate from `fedge pki issue`"
            )
        identity = verifier.verify(der)
    except CertificateError as exc:
        log.warning(
            "refused %s %s from %s: %s", request.method, request.url.path, _client(request), exc
        )
        raise
    request.state.peer = identity
    return identity


def require_roles(roles: Iterable[Role]) -> Callable[[Request], Identity]:
    """A dependency: the authenticated peer, if its role is one of ``roles`` (else 403)."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Identity:
        identity = authenticate(request)
        try:
            return authorize(identity, roles=allowed)
        except AuthorizationError as exc:
            log.warning(
                "refused %s %s from %s %r (site %s) at %s: %s",
                request.method, request.url.path, identity.role, identity.name,
                identity.site, _client(request), exc,
            )  # fmt: skip
            raise

    return dependency
