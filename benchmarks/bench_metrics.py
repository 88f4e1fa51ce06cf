"""What metrics cost: a request over mutual TLS on loopback without and with the traffic counter.

One process serves the API app (fedge.transport.api) twice on 127.0.0.1: as it is (the
baseline) and with :class:`~fedge.telemetry.traffic.TrafficMetricsMiddleware` while metrics are
on (:func:`~fedge.telemetry.metrics.setup_metrics`: OpenTelemetry SDK, Prometheus reader). A
device client calls ``GET /v1/health`` on each over a kept-alive connection, in alternating
blocks so both see the same machine load. It also times the bare recording calls and one
Prometheus rendering of the process's metrics. Prints a table with ratios to the baseline;
writes benchmarks/results/metrics.json and .txt.

    .venv/bin/python benchmarks/bench_metrics.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from _common import RESULTS, table

from fedge.identity import PeerVerifier, init_pki, issue
from fedge.telemetry.metrics import (
    record_round_transition,
    record_traffic,
    setup_metrics,
    shutdown_metrics,
)
from fedge.telemetry.traffic import TrafficMetricsMiddleware
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.server import ServerTls, start_server

BLOCKS = 10  # alternating blocks per mode


def _per_call_ns(call: Callable[[], Any], n: int = 20_000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t) / n * 1e9


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fedge-bench-metrics-"))
    pki = init_pki(tmp / "pki", "bench")
    issue(pki.directory, "coordinator", "coord")
    issue(pki.directory, "device", "dev-1", site="a")
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)

    def app() -> Any:
        verifier = PeerVerifier(pki.ca_cert, pki.crl)
        return build_app(device=None, uplink=None, admin=cast(Any, object()), verifier=verifier)

    counted = app()
    counted.add_middleware(TrafficMetricsMiddleware)
    metrics = setup_metrics("coordinator", "bench", environ={})
    latencies: dict[str, list[float]] = {"baseline": [], "traffic counted": []}
    with (
        start_server(app(), "127.0.0.1", 0, tls) as plain,
        start_server(counted, "127.0.0.1", 0, tls) as instrumented,
    ):
        clients = {
            label: FedgeClient(
                server.url, ca=pki.ca_cert, cert=pki.cert_for("dev-1"), key=pki.key_for("dev-1")
            )
            for label, server in (("baseline", plain), ("traffic counted", instrumented))
        }
        for client in clients.values():
            for _ in range(200):  # warm up: connection, code paths
                client.health()
        for _ in range(BLOCKS):
            for label, client in clients.items():
                for _ in range(args.requests // BLOCKS):
                    t = time.perf_counter()
                    client.health()
                    latencies[label].append(time.perf_counter() - t)
        for client in clients.values():
            client.close()
    rows = {}
    for label, lat in latencies.items():
        qs = statistics.quantiles(lat, n=100)
        rows[label] = {"p50_ms": qs[49] * 1e3, "p99_ms": qs[98] * 1e3}
    calls = {
        "record_traffic": _per_call_ns(lambda: record_traffic("updates", 1000, 100)),
        "round transition": _per_call_ns(
            lambda: record_round_transition("job", 1, "training", "aggregating")
        ),
    }
    start = time.perf_counter()
    text_bytes = len(metrics.render())
    render_ms = (time.perf_counter() - start) * 1e3
    shutdown_metrics()

    base = rows["baseline"]["p50_ms"]
    lines = [
        f"GET /v1/health over mutual TLS on loopback, {args.requests} requests per mode",
        table(
            ["mode", "p50 ms", "p99 ms", "p50 / baseline"],
            [
                [k, f"{v['p50_ms']:.3f}", f"{v['p99_ms']:.3f}", f"{v['p50_ms'] / base:.2f}x"]
                for k, v in rows.items()
            ],
        ),
        "",
        "recording calls (metrics on), per call",
        table(["call", "ns"], [[k, f"{v:.0f}"] for k, v in calls.items()]),
        "",
        f"one Prometheus rendering: {render_ms:.2f} ms, {text_bytes} bytes",
    ]
    text = "\n".join(lines)
    print(text)
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.txt").write_text(text + "\n")
    result = {
        "requests": args.requests,
        "http": rows,
        "calls_ns": calls,
        "render_ms": render_ms,
        "render_bytes": text_bytes,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
