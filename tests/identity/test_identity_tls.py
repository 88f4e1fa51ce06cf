"""Real mutual TLS on loopback with the fleet's certificates (threads, sockets, OpenSSL)."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedge.errors import RevokedError
from fedge.identity import (
    IssuedCertificate,
    PeerVerifier,
    PkiPaths,
    Role,
    authorize,
    client_ssl_context,
    issue,
    revoke,
    server_ssl_context,
)

pytestmark = pytest.mark.integration


@dataclass
class Outcome:
    """What each side of one handshake saw."""

    server_peer: bytes | None = None
    server_error: BaseException | None = None
    client_reply: bytes | None = None
    client_error: BaseException | None = None
    server_version: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    *,
    server_hostname: str = "localhost",
) -> Outcome:
    """One connection: the server sends b'ok' after the handshake; both sides record errors."""
    outcome = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome.server_peer = tls.getpeercert(binary_form=True)
                outcome.server_version = tls.version()
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            outcome.server_error = exc
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            outcome.client_reply = tls.recv(2) or None
    except (OSError, ssl.SSLError) as exc:
        outcome.client_error = exc
    thread.join(10)
    assert not thread.is_alive()
    return outcome


def _server(pki: PkiPaths, issued: IssuedCertificate, *, crl: Path | None = None) -> ssl.SSLContext:
    return server_ssl_context(pki.ca_cert, issued.cert_path, issued.key_path, crl=crl)


def _client(pki: PkiPaths, issued: IssuedCertificate) -> ssl.SSLContext:
    return client_ssl_context(pki.ca_cert, issued.cert_path, issued.key_path)


@pytest.fixture
def gateway(pki: PkiPaths) -> IssuedCertificate:
    return issue(pki.directory, "gateway", "gw-a", site="A")


@pytest.fixture
def device(pki: PkiPaths) -> IssuedCertificate:
    return issue(pki.directory, "device", "dev-1", site="A")


def test_mutual_tls_succeeds_and_server_learns_identity(
    pki: PkiPaths, gateway: IssuedCertificate, device: IssuedCertificate
) -> None:
    out = handshake(_server(pki, gateway), _client(pki, device))
    assert out.server_error is None and out.client_error is None
    assert out.client_reply == b"ok"
    assert out.server_version in ("TLSv1.2", "TLSv1.3")
    assert out.server_peer is not None
    ident = PeerVerifier(pki.ca_cert, pki.crl).verify(out.server_peer)
    assert (ident.role, ident.name, ident.site) == (Role.DEVICE, "dev-1", "A")
    authorize(ident, roles={Role.DEVICE}, site="A")


def test_no_client_certificate_refused(pki: PkiPaths, gateway: IssuedCertificate) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cafile=str(pki.ca_cert))
    out = handshake(_server(pki, gateway), anonymous)
    assert isinstance(out.server_error, ssl.SSLError)
    assert "certificate" in str(out.server_error).lower()
    assert out.client_reply is None


def test_client_certificate_from_another_ca_refused(
    pki: PkiPaths, other_pki: PkiPaths, gateway: IssuedCertificate
) -> None:
    foreign = issue(other_pki.directory, "device", "dev-1", site="A")
    # The intruder trusts our CA (it can see the server) but holds a foreign certificate.
    intruder = client_ssl_context(pki.ca_cert, foreign.cert_path, foreign.key_path)
    out = handshake(_server(pki, gateway), intruder)
    assert isinstance(out.server_error, ssl.SSLError)
    assert out.client_reply is None


def test_server_from_another_ca_refused_by_client(
    pki: PkiPaths, other_pki: PkiPaths, device: IssuedCertificate
) -> None:
    impostor = issue(other_pki.directory, "gateway", "gw-a", site="A")
    server = server_ssl_context(other_pki.ca_cert, impostor.cert_path, impostor.key_path)
    out = handshake(server, _client(pki, device))
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.server_peer is None


def test_device_certificate_cannot_serve(pki: PkiPaths, device: IssuedCertificate) -> None:
    # No serverAuth usage: a stolen device key cannot impersonate a gateway.
    other_device = issue(pki.directory, "device", "dev-2", site="A")
    out = handshake(_server(pki, device), _client(pki, other_device))
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)


def test_hostname_is_checked(
    pki: PkiPaths, gateway: IssuedCertificate, device: IssuedCertificate
) -> None:
    out = handshake(_server(pki, gateway), _client(pki, device), server_hostname="evil.example")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)


def test_expired_client_certificate_refused(pki: PkiPaths, gateway: IssuedCertificate) -> None:
    old = issue(
        pki.directory, "device", "old", site="A", not_after=datetime.now(UTC) - timedelta(hours=1)
    )
    out = handshake(_server(pki, gateway), _client(pki, old))
    assert isinstance(out.server_error, ssl.SSLError)
    assert "expired" in str(out.server_error).lower()


def test_revoked_after_start_refused_on_next_request(
    pki: PkiPaths, gateway: IssuedCertificate, device: IssuedCertificate
) -> None:
    server = _server(pki, gateway)  # built once, like a long-running gateway
    verifier = PeerVerifier(pki.ca_cert, pki.crl)
    first = handshake(server, _client(pki, device))
    assert first.server_peer is not None
    verifier.verify(first.server_peer)
    revoke(pki.directory, "dev-1", "key_compromise")
    second = handshake(server, _client(pki, device))
    assert second.server_peer is not None  # the handshake alone cannot know...
    with pytest.raises(RevokedError):
        verifier.verify(second.server_peer)  # ...the per-request check does


def test_crl_in_context_refuses_at_handshake(
    pki: PkiPaths, gateway: IssuedCertificate, device: IssuedCertificate
) -> None:
    revoke(pki.directory, "dev-1")
    out = handshake(_server(pki, gateway, crl=pki.crl), _client(pki, device))
    assert isinstance(out.server_error, ssl.SSLError)
    assert "revoked" in str(out.server_error).lower()
    fine = issue(pki.directory, "device", "dev-2", site="A")
    assert handshake(_server(pki, gateway, crl=pki.crl), _client(pki, fine)).client_reply == b"ok"


def test_contexts_enforce_policy(pki: PkiPaths, gateway: IssuedCertificate) -> None:
    for ctx in (_server(pki, gateway), _client(pki, gateway)):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert len(ctx.get_ca_certs()) == 1  # our CA only, no system roots
