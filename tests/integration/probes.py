"""A hostile (or broken) peer for the security tests: raw mTLS requests and crafted payloads.

:class:`Peer` speaks HTTP over mutual TLS with any certificate, including ones the server must
refuse, and returns the raw response, so a test can check the exact status and
:class:`~fedge.transport.messages.ErrorBody`. The payload builders make update and partial
payloads the way devices and gateways do (:mod:`fedge.core.serde`), then break them one way at
a time.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from fedge.core.serde import encode_arrays
from fedge.identity import client_ssl_context
from fedge.transport.messages import new_nonce

OCTET = {"content-type": "application/octet-stream"}
Shapes = dict[str, tuple[int, ...]]


class Peer:
    """An mTLS client holding ``cert``/``key`` (or none), trusting the fleet CA ``ca``."""

    def __init__(
        self, base_url: str, ca: Path, cert: Path | None = None, key: Path | None = None
    ) -> None:
        if cert is None:
            context = ssl.create_default_context(cafile=str(ca))  # no client certificate
        else:
            assert key is not None
            context = client_ssl_context(ca, cert, key)
        self.context = context
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, verify=context, timeout=30.0)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def get(self, path: str) -> httpx.Response:
        """GET ``path``."""
        return self.http.get(path)

    def post_json(self, path: str, body: Any = None) -> httpx.Response:
        """POST ``body`` as JSON."""
        return self.http.post(path, json=body)

    def post_payload(self, path: str, payload: bytes) -> httpx.Response:
        """POST a tensor payload."""
        return self.http.post(path, content=payload, headers=OCTET)

    def declare_huge_body(self, path: str, length: int) -> tuple[int, dict[str, Any]]:
        """Send only the headers of a POST whose ``Content-Length`` is ``length``; the answer.

        The server must answer (413) without waiting for, or reading, a byte of the body.
        """
        parts = urlsplit(self.base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 443
        with (
            socket.create_connection((host, port), timeout=30) as raw,
            self.context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            )
            tls.sendall(head.encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return int(status_line.split()[1]), json.loads(body)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, ErrorBody.error, ErrorBody.detail) of a refusal."""
    body = response.json()
    return response.status_code, body.get("error", ""), body.get("detail", "")


def arrays_like(shapes: Shapes, dtype: Any = np.float32, fill: float = 0.0) -> dict[str, Any]:
    """One array per model tensor, every value ``fill``."""
    return {name: np.full(shape, fill, dtype=dtype) for name, shape in shapes.items()}


def update_payload(
    shapes: Shapes,
    *,
    job: str,
    round_number: int,
    device: str,
    nonce: str | None = None,
    arrays: dict[str, Any] | None = None,
    **meta: str,
) -> bytes:
    """A device update (``UPDATE_KEYS``) of zero deltas unless ``arrays`` says otherwise."""
    fields = {
        "kind": "update",
        "job": job,
        "round": str(round_number),
        "device": device,
        "nonce": nonce or new_nonce(),
        "num_examples": "1",
        "train_loss": "0.5",
        **meta,
    }
    return encode_arrays(arrays if arrays is not None else arrays_like(shapes), fields)


def partial_payload(
    shapes: Shapes,
    *,
    job: str,
    round_number: int,
    gateway: str,
    site: str,
    contributors: list[str],
    arrays: dict[str, Any] | None = None,
    **meta: str,
) -> bytes:
    """A gateway's partial (``PARTIAL_KEYS``) of float64 zero sums unless ``arrays`` says so."""
    fields = {
        "kind": "partial",
        "job": job,
        "round": str(round_number),
        "gateway": gateway,
        "site": site,
        "nonce": new_nonce(),
        "total_weight": repr(float(10 * len(contributors))),
        "num_accepted": str(len(contributors)),
        "contributors": json.dumps(contributors),
        "rejected": "[]",
        **meta,
    }
    return encode_arrays(arrays if arrays is not None else arrays_like(shapes, np.float64), fields)


def broken_arrays(shapes: Shapes, how: str, dtype: Any = np.float32) -> dict[str, Any]:
    """The model's arrays broken one way: "shape", "dtype", "nan", "inf" or "missing"."""
    arrays = arrays_like(shapes, dtype)
    first = next(iter(shapes))
    if how == "shape":
        arrays[first] = np.zeros((*shapes[first], 2), dtype=dtype)
    elif how == "dtype":
        arrays = arrays_like(shapes, np.int32)
    elif how == "nan":
        arrays[first].flat[0] = np.nan
    elif how == "inf":
        arrays[first].flat[-1] = np.inf
    elif how == "missing":
        del arrays[first]
    else:
        raise ValueError(how)
    return arrays
