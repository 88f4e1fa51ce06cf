"""Authorization by role, site and name, applied after :func:`verify_peer` on every request.

Rules (ARCHITECTURE.md §5): a device talks only to its own site's gateway; a gateway reports only
for its own site; admin operations need an admin certificate; a device may act only as itself.
Site checks apply to site-bound roles (gateway, device); coordinator and admin are fleet-wide, so a
``site`` constraint does not exclude them when their role is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedge.errors import AuthorizationError
from fedge.identity.certificates import Identity, Role

__all__ = ["authorize"]


def authorize(
    identity: Identity,
    *,
    roles: Iterable[Role | str],
    site: str | None = None,
    name: str | None = None,
) -> Identity:
    """Return ``identity`` if its role is in ``roles``, its site is ``site`` and its name is
    ``name`` (each when given); else raise :class:`AuthorizationError` saying why."""
    allowed = {Role(r) for r in roles}
    if identity.role not in allowed:
        wanted = ", ".join(sorted(r.value for r in allowed)) or "nobody"
        raise AuthorizationError(
            f"{identity.role} {identity.name!r} may not do this: it needs a certificate with role"
            f" {wanted}"
        )
    if site is not None and identity.role.has_site and identity.site != site:
        raise AuthorizationError(
            f"{identity.role} {identity.name!r} belongs to site {identity.site!r}, not {site!r};"
            " connect to your own site's gateway"
        )
    if name is not None and identity.name != name:
        raise AuthorizationError(
            f"{identity.role} {identity.name!r} may not act as {name!r}: a certificate speaks only"
            " for its own subject"
        )
    return identity
