"""Device agents for the network load test: many devices on one asyncio loop, no training.

Run by ``bench_network_load.py`` as ``python benchmarks/_agents.py SPEC.json``; writes its
results to the JSON file the spec names. Each device is one identity (its own client certificate
and :class:`~fedge.transport.aclient.AsyncFedgeClient`, one kept-alive connection) and does what
:class:`fedge.device.DeviceAgent` does on the wire, with training replaced by a precomputed
update:

1. check in (``Eligibility(num_examples)``, offering to wait ``long_poll_s``: the gateway holds
   the request until a task is there) -- a held ``Wait`` that ran out (``retry_after_s = 0``) →
   check in again within a second; another ``Wait`` or an error → sleep with the device's
   backoff (exponential, full jitter, never below the server's ``retry_after_s``);
2. on a task: download the model from the gateway and refuse it unless its SHA-256 is the
   task's;
3. encode the precomputed delta (float32, the model's names and shapes) with its binding
   metadata (``UPDATE_KEYS``: job, round, device, a fresh nonce, ...) and upload it.

Bytes are counted per request by httpx event hooks: the HTTP/1.1 request line, headers and body
as sent, and the status line, headers and ``Content-Length`` body of the answer (TLS record
overhead and handshakes are not in these numbers; new connections are counted separately, from
the response's network stream). ``inflight`` caps this process's requests in flight; a held
check-in does not take one of those slots (it costs the process nothing while it waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedge.core.params import Params
from fedge.core.serde import decode_params, encode_params
from fedge.device.backoff import Backoff
from fedge.errors import FedgeError, UnavailableError
from fedge.transport.aclient import AsyncFedgeClient
from fedge.transport.messages import CheckInRequest, Eligibility, TaskAssignment, Wait, new_nonce

_STATUS_LINE = len(b"HTTP/1.1 200 OK\r\n")


@dataclass
class Wire:
    """Byte and connection counters of one device's client (one request at a time)."""

    out: int = 0
    into: int = 0
    connections: int = 0  # TLS handshakes completed (httpcore's trace events)
    handshake_s: float = 0.0
    last_done: float | None = None  # when the previous answer arrived
    reconnect_gaps: list[float] = field(default_factory=list)  # idle time before a new connection
    _tls_started: float = 0.0

    async def on_request(self, request: Any) -> None:
        request.extensions["trace"] = self._trace
        target = request.url.raw_path
        size = len(request.method) + 1 + len(target) + len(b" HTTP/1.1\r\n") + 2
        size += sum(len(k) + 2 + len(v) + 2 for k, v in request.headers.raw)
        self.out += size + len(request.content)

    async def on_response(self, response: Any) -> None:
        size = _STATUS_LINE + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in response.headers.raw)
        self.into += size + int(response.headers.get("content-length", 0))
        self.last_done = time.perf_counter()

    async def _trace(self, name: str, info: Any) -> None:
        if name == "connection.start_tls.started":
            self._tls_started = time.perf_counter()
            if self.last_done is not None:
                self.reconnect_gaps.append(round(self._tls_started - self.last_done, 3))
        elif name == "connection.start_tls.complete":
            self.connections += 1
            self.handshake_s += time.perf_counter() - self._tls_started


@dataclass
class Shared:
    """What all devices of this process share: limits, the precomputed delta, the records."""

    spec: dict[str, Any]
    inflight: asyncio.Semaphore
    deadline: float
    records: list[list[Any]] = field(default_factory=list)  # t_end kind out in s conns queued_s
    errors: dict[str, int] = field(default_factory=dict)
    models: dict[str, Params] = field(default_factory=dict)  # verified model → delta
    devices: list[dict[str, Any]] = field(default_factory=list)

    def error(self, what: str, exc: BaseException) -> None:
        key = f"{what}: {type(exc).__name__}: {str(exc)[:160]}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def delta_for(self, payload: bytes, sha256: str) -> Params:
        delta = self.models.get(sha256)
        if delta is None:
            params, _ = decode_params(payload)
            rng = np.random.default_rng(int(self.spec["seed"]))
            delta = {
                k: (0.01 * rng.standard_normal(v.shape)).astype(np.float32)
                for k, v in params.items()
            }
            self.models[sha256] = delta
        return delta


async def _call(
    shared: Shared, wire: Wire, kind: str, coro_fn: Any, *, limited: bool = True
) -> Any:
    queued = time.perf_counter()
    async with shared.inflight if limited else contextlib.nullcontext():
        out, into, conns = wire.out, wire.into, wire.connections
        start = time.perf_counter()
        try:
            return await coro_fn()
        finally:
            shared.records.append(
                [
                    time.time(),
                    kind,
                    wire.out - out,
                    wire.into - into,
                    round(time.perf_counter() - start, 6),
                    wire.connections - conns,
                    round(start - queued, 6),
                ]
            )


async def _retrying(shared: Shared, wire: Wire, kind: str, coro_fn: Any, backoff: Backoff) -> Any:
    """Retry on UnavailableError (as the device's outbox would) until the run's deadline."""
    while True:
        try:
            return await _call(shared, wire, kind, coro_fn)
        except UnavailableError as exc:
            shared.error(kind, exc)
            delay = backoff.next_delay()
            if time.time() + delay > shared.deadline:
                raise
            await asyncio.sleep(delay)


async def run_device(shared: Shared, device: dict[str, Any], rng: random.Random) -> None:
    spec = shared.spec
    wire = Wire()
    record: dict[str, Any] = {"name": device["name"], "outcome": "timeout"}
    shared.devices.append(record)
    await asyncio.sleep(rng.uniform(0.0, float(spec["ramp_s"])))
    client = AsyncFedgeClient(
        device["url"],
        ca=spec["ca"],
        cert=device["cert"],
        key=device["key"],
        timeout=float(spec["request_timeout_s"]),
        max_connections=1,
        keepalive_expiry=float(spec["client_keep_alive_s"]),
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    )
    backoff = Backoff(base_s=float(spec["poll_base_s"]), cap_s=float(spec["poll_cap_s"]), rng=rng)
    long_poll = float(spec.get("long_poll_s", 0.0))
    try:
        task: TaskAssignment | None = None
        checkins = 0
        while time.time() < shared.deadline:
            request = CheckInRequest(
                device_id=device["name"],
                nonce=new_nonce(),
                eligibility=Eligibility(num_examples=int(spec["num_examples"])),
                wait_s=long_poll,
            )
            checkins += 1
            try:
                answer = await _call(
                    shared, wire, "checkin", lambda r=request: client.checkin(r),
                    limited=long_poll == 0,  # a check-in that may be held takes no slot
                )  # fmt: skip
            except FedgeError as exc:
                shared.error("checkin", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            if isinstance(answer, Wait):
                record.setdefault("registered_at", time.time())
                if answer.retry_after_s == 0.0:  # a held check-in ran out: ask again soon
                    backoff.reset()
                    await asyncio.sleep(rng.uniform(0.0, 1.0))
                    continue
                await asyncio.sleep(backoff.next_delay(at_least=answer.retry_after_s))
                continue
            task = answer
            break
        record["checkins"] = checkins
        if task is None:
            return
        record["task_at"] = time.time()
        backoff.reset()
        sha = task.model_sha256
        payload = await _retrying(shared, wire, "model", lambda: client.model(sha), backoff)
        if hashlib.sha256(payload).hexdigest() != sha:
            record["outcome"] = "bad model"
            return
        delta = shared.delta_for(payload, sha)
        del payload
        meta = {
            "kind": "update",
            "job": task.job_id,
            "round": str(task.round),
            "device": device["name"],
            "nonce": new_nonce(),
            "num_examples": str(spec["num_examples"]),
            "train_loss": "1.0",
        }
        update = encode_params(delta, meta)
        receipt = await _retrying(
            shared,
            wire,
            "update",
            lambda: client.submit_update(task.job_id, task.round, update),
            backoff,
        )
        record["done_at"] = time.time()
        record["outcome"] = "accepted" if receipt.accepted else f"declined: {receipt.reason}"
    except FedgeError as exc:
        shared.error("device", exc)
        record["outcome"] = f"error: {type(exc).__name__}"
    finally:
        record["bytes_out"], record["bytes_in"] = wire.out, wire.into
        record["connections"] = wire.connections
        record["handshake_s"] = round(wire.handshake_s, 4)
        record["reconnect_gaps"] = wire.reconnect_gaps
        await client.aclose()


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    shared = Shared(
        spec=spec,
        inflight=asyncio.Semaphore(int(spec["inflight"])),
        deadline=float(spec["deadline"]),
    )
    rng = random.Random(int(spec["seed"]))
    started = time.time()
    await asyncio.gather(
        *(run_device(shared, d, random.Random(rng.getrandbits(64))) for d in spec["devices"])
    )
    return {
        "started": started,
        "ended": time.time(),
        "records": shared.records,
        "errors": shared.errors,
        "devices": shared.devices,
    }


if __name__ == "__main__":
    spec_in = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(main(spec_in))
    Path(spec_in["result"]).write_text(json.dumps(result))
    print(f"agents: {len(spec_in['devices'])} devices done", flush=True)
