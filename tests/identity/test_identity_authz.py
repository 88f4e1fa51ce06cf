"""Authorization by role, site and name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fedge.errors import AuthorizationError
from fedge.identity import Identity, Role, authorize


def _ident(role: Role, name: str, site: str | None = None) -> Identity:
    now = datetime.now(UTC)
    return Identity(role, name, site, 1, now, now + timedelta(days=1))


DEV_A = _ident(Role.DEVICE, "dev-1", "A")
GW_A = _ident(Role.GATEWAY, "gw-a", "A")
ADMIN = _ident(Role.ADMIN, "ops")
COORD = _ident(Role.COORDINATOR, "coord")


def test_device_at_its_own_gateway() -> None:
    assert authorize(DEV_A, roles={Role.DEVICE}, site="A", name="dev-1") is DEV_A


def test_device_at_another_sites_gateway() -> None:
    with pytest.raises(AuthorizationError, match="belongs to site 'A', not 'B'"):
        authorize(DEV_A, roles={Role.DEVICE}, site="B")


def test_device_calling_admin_endpoint() -> None:
    with pytest.raises(AuthorizationError, match="needs a certificate with role admin"):
        authorize(DEV_A, roles={"admin"})
    assert authorize(ADMIN, roles={"admin"}) is ADMIN


def test_device_claiming_another_id() -> None:
    with pytest.raises(AuthorizationError, match="may not act as 'dev-2'"):
        authorize(DEV_A, roles={Role.DEVICE}, site="A", name="dev-2")


def test_gateway_reports_only_for_its_site() -> None:
    authorize(GW_A, roles={Role.GATEWAY}, site="A")
    with pytest.raises(AuthorizationError, match="not 'B'"):
        authorize(GW_A, roles={Role.GATEWAY}, site="B")
    with pytest.raises(AuthorizationError):
        authorize(GW_A, roles={Role.DEVICE}, site="A")  # a gateway is not a device


def test_fleet_wide_roles_pass_site_checks_when_allowed() -> None:
    authorize(COORD, roles={Role.COORDINATOR, Role.DEVICE}, site="A")
    with pytest.raises(AuthorizationError):
        authorize(COORD, roles={Role.DEVICE}, site="A")


def test_empty_roles_allow_nobody() -> None:
    with pytest.raises(AuthorizationError, match="nobody"):
        authorize(ADMIN, roles=())
