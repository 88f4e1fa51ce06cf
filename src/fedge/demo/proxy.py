"""A TCP forwarder on loopback whose link can be cut and restored (for uplink-failure tests).

``cut()`` closes every open connection and refuses new ones; ``restore()`` accepts again. It
forwards bytes untouched (TLS passes straight through), so the peers cannot tell it is there.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", listen_port))
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.bytes_forwarded = 0
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def url_authority(self) -> str:
        """``127.0.0.1:PORT`` to give the client instead of the target."""
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until :meth:`restore`."""
        self._up.clear()
        with self._lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def restore(self) -> None:
        """Forward again."""
        self._up.set()

    @property
    def is_up(self) -> bool:
        """True while forwarding."""
        return self._up.is_set()

    def close(self) -> None:
        """Stop forwarding for good."""
        self._stop.set()
        self.cut()
        self._server.close()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def forward(self, client: socket.socket, data: bytes, from_client: bool) -> bool:
        """Called with each chunk before it is forwarded; False drops it and the connection.
        Subclasses inject failures here (e.g. cut the link at a large upload)."""
        return True

    def _pump(self, a: socket.socket, b: socket.socket) -> None:  # a: client, b: upstream
        pair = {a: b, b: a}
        try:
            while self._up.is_set() and not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data or not self.forward(a, data, s is a):
                        return
                    pair[s].sendall(data)
                    self.bytes_forwarded += len(data)
        except OSError:
            return
        finally:
            with self._lock:
                for s in (a, b):
                    self._conns.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()
