"""Serve an ASGI app under uvicorn with mutual TLS, exposing each peer's certificate to the app.

uvicorn does not hand the client certificate to the application, so :class:`PeerCertH11Protocol`
reads it from the TLS connection once, when the connection is made, and adds it to every
request's scope in the spirit of the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_der": b"...", "client_cert_chain": ["-----BEGIN..."],
                                  "tls_version": 0x0304, "cipher_suite": None}

:func:`peer_cert_der` reads it back. The handshake itself (fleet CA only, client certificate
required, TLS ≥ 1.2) is :func:`fedge.identity.server_ssl_context`; authentication of each request
is :mod:`fedge.transport.auth`. A handshake the server refuses (no client certificate, another
CA, expired, revoked at start-up) never reaches the application, and asyncio does not log it, so
:class:`LoggedHandshakeSSLObject` logs each refusal with OpenSSL's reason.

Role processes call :func:`run_server` (blocks; SIGTERM/SIGINT stop it gracefully and it
returns); tests and the demo call :func:`start_server` (a background thread; ``.stop()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fedge.errors import ConfigError
from fedge.identity import server_ssl_context
from fedge.telemetry.metrics import record_refused

__all__ = [
    "LoggedHandshakeSSLObject",
    "PeerCertH11Protocol",
    "RunningServer",
    "ServerTls",
    "peer_cert_der",
    "run_server",
    "start_server",
]

KEEP_ALIVE_S = 75  # idle seconds a server keeps a client connection (clients use 60)

log = logging.getLogger(__name__)

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass(frozen=True)
class ServerTls:
    """The PKI files a server needs: fleet CA, its own certificate and key, optionally the CRL.

    With ``crl`` the handshake also refuses certificates revoked when the server started
    (defence in depth); later revocations are caught per request by the ``PeerVerifier``.
    """

    ca_cert: Path
    cert: Path
    key: Path
    crl: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A server context: fleet CA only, client certificate required, TLS ≥ 1.2."""
        return server_ssl_context(self.ca_cert, self.cert, self.key, crl=self.crl)


def peer_cert_der(scope: dict[str, Any] | Any) -> bytes | None:
    """The DER client certificate of the connection a request came on, or ``None``."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) else None


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    cipher = sslobj.cipher()
    return {
        "client_cert_der": der,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(sslobj.version() or ""),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,
    }


class LoggedHandshakeSSLObject(ssl.SSLObject):
    """An ``SSLObject`` that logs why a TLS handshake was refused (the peer gets only an alert)."""

    def do_handshake(self) -> None:
        """The handshake step; a failure other than "need more data" is logged, then re-raised."""
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLCertVerificationError as exc:
            log.warning("refused a TLS client: certificate rejected: %s", exc.verify_message)
            record_refused("tls_certificate")
            raise
        except ssl.SSLError as exc:
            log.warning("refused a TLS client: handshake failed: %s", exc.reason or exc)
            record_refused("tls_handshake")
            raise


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the peer certificate to each request's scope."""

    log_access = True  # uvicorn's access log for this server (the logger is process-wide)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = self.access_log and self.log_access

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        extension = _tls_extension(transport)
        if extension is None:
            return
        inner = self.app

        async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = extension
            await inner(scope, receive, send)

        self.app = app_with_tls


class QuietPeerCertH11Protocol(PeerCertH11Protocol):
    """The same protocol without access-log lines (e.g. the ops listener's scrapes)."""

    log_access = False


class _Server(uvicorn.Server):
    """A uvicorn server whose signal handling stops it and then simply returns (no re-raise).

    ``on_exit`` runs when it is asked to stop, before requests in flight are waited for (e.g.
    held long-poll check-ins are answered then, not at the graceful-shutdown timeout).
    """

    on_exit: Callable[[], None] | None = None

    def ask_exit(self) -> None:
        """Stop accepting connections and finish what is in flight."""
        self.should_exit = True
        if self.on_exit is not None:
            self.on_exit()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(sig: int, frame: FrameType | None) -> None:
            log.info("received %s: shutting down", signal.Signals(sig).name)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.ask_exit()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # they are TCP; with proto 0 each answer on a kept-alive connection waited ~40 ms for the
    # peer's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _make_server(
    app: Any, tls: ServerTls | ssl.SSLContext, access_log: bool, graceful_s: float
) -> _Server:
    context = tls if isinstance(tls, ssl.SSLContext) else tls.ssl_context()
    context.sslobject_class = LoggedHandshakeSSLObject
    config = uvicorn.Config(
        app,
        http=PeerCertH11Protocol if access_log else QuietPeerCertH11Protocol,
        ssl_context_factory=lambda _config, _default: context,
        lifespan="off",
        log_config=None,
        # uvicorn's access_log=False would stop the process-wide "uvicorn.access" logger, and so
        # silence every other server of the process too (the coordinator's API beside its ops
        # listener): each server's protocol decides instead
        access_log=True,
        timeout_graceful_shutdown=max(1, round(graceful_s)),
        # devices and gateways poll every few seconds: keep their mutual-TLS connection open
        # longer than that, or each poll pays a new handshake (measured: 4x the handshakes)
        timeout_keep_alive=KEEP_ALIVE_S,
        ws="none",
    )
    return _Server(config)


class RunningServer:
    """A server running in a background thread (tests, the demo): ``.url``, ``.port``, ``.stop()``."""

    def __init__(self, server: _Server, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.url = _url(host, port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting connections, finish requests in flight, and join the thread."""
        self._server.ask_exit()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ServerTls | ssl.SSLContext | None = None,
    *,
    access_log: bool = False,
    graceful_s: float = 5.0,
    startup_timeout_s: float = 10.0,
    on_shutdown: Callable[[], None] | None = None,
) -> RunningServer:
    """Serve ``app`` with mutual TLS on ``host:port`` (0: any free port) in a background thread.

    ``on_shutdown`` is called when the server is asked to stop (see :class:`_Server`).
    """
    if tls is None:
        raise ConfigError("start_server needs tls: fedge serves mutual TLS only")
    server = _make_server(app, tls, access_log, graceful_s)
    server.on_exit = on_shutdown
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"fedge-server-{bound_port}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"server on {host}:{bound_port} did not start; see the log")
        time.sleep(0.01)
    log.info("serving %s", _url(host, bound_port))
    return RunningServer(server, thread, host, bound_port)


def run_server(
    app: Any,
    host: str,
    port: int,
    tls: ServerTls | ssl.SSLContext,
    *,
    access_log: bool = True,
    graceful_s: float = 10.0,
    on_started: Callable[[int], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` with mutual TLS until SIGTERM/SIGINT, then finish requests and return.

    ``on_started(port)`` is called once the socket is listening (useful with ``port=0``);
    ``on_shutdown()`` when a signal asks it to stop, before requests in flight are waited for.
    """
    server = _make_server(app, tls, access_log, graceful_s)
    server.on_exit = on_shutdown
    sock = _bind(host, port)
    bound_port = int(sock.getsockname()[1])
    if on_started is not None:
        on_started(bound_port)
    log.info("serving %s", _url(host, bound_port))
    server.run(sockets=[sock])
