"""Records what a ``fedge device`` process sends, in that process (tests/integration/test_wire.py).

Python imports ``sitecustomize`` at start-up from the path; a test puts this directory on the
device processes' ``PYTHONPATH`` and names a directory in ``FEDGE_WIRE_RECORD``. Then, in a
process whose command line is ``fedge ... device ...``, two recorders wrap the real code (nothing
is replaced, every call goes through):

- ``httpx.HTTPTransport.handle_request`` -- the transport under the device's FedgeClient: each
  request's method, URL, headers and body (base64), and the answer's status, one JSON line per
  request in ``<pid>.requests.jsonl``;
- ``ssl.SSLSocket.send`` -- every byte the process hands to TLS (what the wire carries, before
  encryption: request lines, headers and bodies of every connection), appended to ``<pid>.tls``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any


def _install(directory: Path) -> None:
    import ssl

    import httpx

    directory.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    requests = (directory / f"{os.getpid()}.requests.jsonl").open("a", encoding="utf-8")
    tls = (directory / f"{os.getpid()}.tls").open("ab")
    real_send = ssl.SSLSocket.send
    real_handle = httpx.HTTPTransport.handle_request

    def send(self: ssl.SSLSocket, data: Any, flags: int = 0) -> int:
        sent = real_send(self, data, flags)
        with lock:
            tls.write(bytes(memoryview(data).cast("B")[:sent]))
            tls.flush()
        return sent

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        body = request.read()
        response = real_handle(self, request)
        record = {
            "method": request.method,
            "url": str(request.url),
            "headers": [[k, v] for k, v in request.headers.multi_items()],
            "body": base64.b64encode(body).decode(),
            "status": response.status_code,
        }
        with lock:
            requests.write(json.dumps(record) + "\n")
            requests.flush()
        return response

    ssl.SSLSocket.send = send  # type: ignore[method-assign]
    httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]


_where = os.environ.get("FEDGE_WIRE_RECORD")
if _where and "device" in sys.argv[1:]:
    _install(Path(_where))
