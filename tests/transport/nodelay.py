"""Whether a running uvicorn server's open connections have Nagle's algorithm off.

With Nagle on, every answer on a kept-alive connection waited ~40 ms for the peer's delayed ACK
(asyncio sets TCP_NODELAY only on sockets created as IPPROTO_TCP). Reading the option on the
server's side of each connection tests that without timing anything.
"""

from __future__ import annotations

import socket
from typing import Any


def server_sockets_nodelay(server: Any) -> list[bool]:
    """TCP_NODELAY of the server's side of each open connection of a ``uvicorn.Server``."""
    out = []
    for protocol in list(server.server_state.connections):
        sock = protocol.transport.get_extra_info("socket")
        out.append(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    return out
