"""The device's optional local prediction endpoint: plain HTTP on loopback only.

``POST /predict`` with ``{"inputs": [[...], ...]}`` (rows of the task's features) answers
``{"predictions": [...], "version": "<model version>"}``; ``GET /model`` describes the served
version (task, runtime, version, when it loaded, its holdout accuracy, a health check that was
skipped and why -- ``skipped_check``, e.g. too small a holdout --, the versions kept). The
endpoint is for applications on the same device, so it binds 127.0.0.1 (or ::1) and nothing
else; it adds no TLS. Errors: no model yet → 503, a malformed batch → 422.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from fedge.device.predictor import Predictor
from fedge.errors import ConfigError, UnavailableError, ValidationError

__all__ = ["LOOPBACK_HOSTS", "LocalEndpoint", "PredictRequest", "create_app", "start_endpoint"]

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class PredictRequest(BaseModel):
    """A batch of rows to predict."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[list[float]]


def create_app(predictor: Predictor) -> FastAPI:
    """The ASGI app serving ``predictor``."""
    app = FastAPI(title="fedge device predictor", docs_url=None, redoc_url=None)

    @app.exception_handler(UnavailableError)
    async def unavailable(_request: Any, exc: UnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ValidationError)
    async def invalid(_request: Any, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        if not request.inputs:
            raise ValidationError("inputs is empty: send at least one row")
        result = predictor.predict(np.asarray(request.inputs, dtype=np.float32))
        return {"predictions": result.predictions.tolist(), "version": result.version}

    @app.get("/model")
    def model() -> dict[str, Any]:
        served = predictor.current()
        return {
            "task": predictor.task.name,
            "runtime": predictor.runtime,
            "version": served.version,
            "loaded_at": served.loaded_at,
            "holdout_accuracy": served.holdout_accuracy,
            "skipped_check": served.skipped or None,  # a check that could not be made, and why
            "kept_versions": predictor.versions,
        }

    return app


class LocalEndpoint:
    """A running endpoint (background thread): ``.url``, ``.port``, ``.stop()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Finish requests in flight and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_endpoint(
    predictor: Predictor, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0
) -> LocalEndpoint:
    """Serve ``predictor`` on loopback ``host:port`` (0: any free port) in a background thread."""
    import socket

    if host not in LOOPBACK_HOSTS:
        raise ConfigError(f"the device endpoint listens on loopback only, not {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0): asyncio only turns Nagle off (TCP_NODELAY) on sockets that say
    # they are TCP; with proto 0 every response waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(predictor), lifespan="off", log_config=None, access_log=False, ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fedge-predict-{bound}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError(f"prediction endpoint on {host}:{bound} did not start; see the log")
        time.sleep(0.01)
    return LocalEndpoint(server, thread, host, bound)
