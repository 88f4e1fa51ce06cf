"""The ops listener over real TLS on loopback: who gets in (admin cert, token, cookie) and who not."""

from __future__ import annotations

import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends

from fedge.errors import ConfigError
from fedge.identity import Identity, PeerVerifier, PkiPaths, init_pki, issue, revoke
from fedge.transport.ops import (
    COOKIE_NAME,
    OpsAccess,
    build_ops_app,
    load_or_create_token,
    require_ops_access,
    start_ops_server,
)
from fedge.transport.server import RunningServer, ServerTls

pytestmark = pytest.mark.integration


@dataclass
class Ops:
    pki: PkiPaths
    other: PkiPaths
    server: RunningServer
    token: str

    def client(self, cert: str | None = None, *, pki: PkiPaths | None = None) -> httpx.Client:
        """An HTTPS client trusting the fleet CA, presenting ``cert`` (a holder name) if given."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        if cert is not None:
            paths = pki or self.pki
            context.load_cert_chain(paths.cert_for(cert), paths.key_for(cert))
        return httpx.Client(base_url=self.server.url, verify=context, timeout=10.0)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    root: Path = tmp_path_factory.mktemp("ops")
    pki = init_pki(root / "pki", "acme", validity_days=30)
    other = init_pki(root / "other", "acme", validity_days=30)
    issue(pki.directory, "coordinator", "coord")
    issue(pki.directory, "admin", "alice")
    issue(pki.directory, "admin", "mallory")
    issue(pki.directory, "device", "dev-1", site="a")
    issue(other.directory, "admin", "alice")
    revoke(pki.directory, "mallory")
    token = load_or_create_token(root / "ops.token")
    app = build_ops_app(
        title="test",
        verifier=PeerVerifier(pki.ca_cert, pki.crl),
        token=token,
        routers=[_who_router()],
    )
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)
    server = start_ops_server(app, "127.0.0.1", 0, tls)
    try:
        yield Ops(pki, other, server, token)
    finally:
        server.stop()


def _who_router() -> APIRouter:
    """A contributed router whose handler reports who got in."""
    router = APIRouter()

    @router.get("/who")
    def who(caller: Annotated[OpsAccess, Depends(require_ops_access)]) -> dict[str, str]:
        if isinstance(caller, Identity):
            return {"who": f"{caller.role}:{caller.name}"}
        return {"who": caller}

    @router.get("/open-looking")
    def open_looking() -> dict[str, str]:
        return {"secret": "guarded by the ops app, not by this handler"}

    return router


def test_admin_certificate_gets_in(ops: Ops) -> None:
    with ops.client("alice") as client:
        response = client.get("/who")
    assert response.status_code == 200
    assert response.json() == {"who": "admin:alice"}


def test_bearer_token_gets_in(ops: Ops) -> None:
    with ops.client() as client:
        response = client.get("/who", headers={"Authorization": f"Bearer {ops.token}"})
    assert response.status_code == 200
    assert response.json() == {"who": "token"}


def test_cookie_login_gets_in_and_cookie_is_not_the_token(ops: Ops) -> None:
    with ops.client() as client:
        login = client.get("/login", params={"token": ops.token, "next": "/who"})
        assert login.status_code == 303
        assert login.headers["location"] == "/who"
        cookie = client.cookies.get(COOKIE_NAME)
        assert cookie and ops.token not in cookie
        set_cookie = login.headers["set-cookie"].lower()
        assert (
            "httponly" in set_cookie and "secure" in set_cookie and "samesite=strict" in set_cookie
        )
        response = client.get("/who")
    assert response.status_code == 200
    assert response.json() == {"who": "token"}


def test_no_credentials_is_401_on_every_contributed_route(ops: Ops) -> None:
    with ops.client() as client:
        for path in ("/who", "/open-looking", "/"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert "ops token" in response.json()["detail"]


def test_device_certificate_is_403(ops: Ops) -> None:
    with ops.client("dev-1") as client:
        response = client.get("/who")
    assert response.status_code == 403
    assert "no ops access" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
        {"Cookie": f"{COOKIE_NAME}=forged"},
    ],
)
def test_wrong_token_is_401(ops: Ops, headers: dict[str, str]) -> None:
    with ops.client() as client:
        response = client.get("/who", headers=headers)
    assert response.status_code == 401


def test_wrong_token_login_sets_no_cookie(ops: Ops) -> None:
    with ops.client() as client:
        response = client.get("/login", params={"token": "x" * 43})
        assert response.status_code == 401
        assert COOKIE_NAME not in client.cookies


def test_login_refuses_an_offsite_redirect(ops: Ops) -> None:
    with ops.client() as client:
        response = client.get("/login", params={"token": ops.token, "next": "//evil.example/"})
    assert response.status_code == 422


def test_revoked_admin_and_foreign_ca_are_refused(ops: Ops) -> None:
    # the handshake itself refuses a certificate revoked before the server started
    with ops.client("mallory") as client, pytest.raises(httpx.TransportError):
        client.get("/who")
    with ops.client("alice", pki=ops.other) as client, pytest.raises(httpx.TransportError):
        client.get("/who")


def test_healthz_is_open_and_index_lists_routes(ops: Ops) -> None:
    with ops.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    with ops.client("alice") as client:
        index = client.get("/")
    assert index.status_code == 200
    assert 'href="/who"' in index.text and "admin 'alice'" in index.text


def test_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "ops.token"
    token = load_or_create_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token


def test_short_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ops.token"
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="too short"):
        load_or_create_token(path)
