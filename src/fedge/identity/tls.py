"""Mutual-TLS contexts for every fedge link: TLS 1.2 or newer, peer certificate required,
the fleet CA as the only trust anchor (no system CAs).

Servers (coordinator, gateway) still call :class:`~fedge.identity.revocation.PeerVerifier` on
every request: the handshake proves possession of a CA-signed key, the verifier adds the live
revocation list and returns the :class:`~fedge.identity.certificates.Identity` to authorize.
Passing ``crl`` here additionally makes OpenSSL refuse certificates revoked when the context was
built (defence in depth; it does not see later revocations).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from fedge.errors import PkiError

__all__ = ["client_ssl_context", "server_ssl_context"]


def _base(purpose: int, ca_cert: str | Path, cert: str | Path, key: str | Path) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_verify_locations(cafile=str(ca_cert))
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        # Name the files, never their content.
        raise PkiError(
            f"cannot load TLS files (ca={ca_cert}, cert={cert}, key={key}): {exc}"
        ) from None
    return context


def server_ssl_context(
    ca_cert: str | Path,
    cert: str | Path,
    key: str | Path,
    *,
    crl: str | Path | None = None,
) -> ssl.SSLContext:
    """A server context that demands a client certificate signed by the fleet CA."""
    context = _base(ssl.PROTOCOL_TLS_SERVER, ca_cert, cert, key)
    if crl is not None:
        try:
            context.load_verify_locations(cafile=str(crl))
        except (OSError, ssl.SSLError) as exc:
            raise PkiError(f"cannot load revocation list {crl}: {exc}") from None
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_ssl_context(
    ca_cert: str | Path,
    cert: str | Path,
    key: str | Path,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context presenting ``cert`` and trusting only servers signed by the fleet CA.

    ``check_hostname`` matches the server's SAN against the host dialled (``localhost`` and
    ``127.0.0.1`` are in every server certificate by default).
    """
    context = _base(ssl.PROTOCOL_TLS_CLIENT, ca_cert, cert, key)
    context.check_hostname = check_hostname
    return context
