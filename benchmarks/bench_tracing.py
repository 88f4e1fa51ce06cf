"""What tracing costs: a request over mutual TLS on loopback, and the span helpers, off vs on.

One process serves the API app (fedge.transport.api, with its trace middleware) on 127.0.0.1 and
calls ``GET /v1/health`` with :class:`~fedge.transport.client.FedgeClient` over a kept-alive
connection, in four modes measured in the same run:

- **off**: no tracer provider (``[telemetry] traces = "off"``), the request made outside any
  round (a poll): the baseline;
- **off, in a round**: tracing still off, the request made inside a round's context (what every
  request of a round does now that a round always has a trace id): the client injects
  ``traceparent``, the server makes the caller's context current for the route (no span);
- **on, outside a trace**: spans exported to a JSON-lines file (the default, to the role's
  state directory), the request made outside any span (a poll): nothing is injected, the server
  makes no span;
- **on, in a trace**: the request made inside a span: the client injects ``traceparent``, the
  server continues it in a server span, both spans are exported to the file.

It also times the bare helpers with tracing off and on: ``span()``, ``trace_headers()`` outside
any span and inside a round, and a whole round's trace (:class:`RoundTrace`: root, four phases,
end), which with tracing off is what gives the round its trace id.
Prints a table with ratios to "off"; writes benchmarks/results/tracing.json and .txt.

    .venv/bin/python benchmarks/bench_tracing.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from _common import RESULTS, table

from fedge.identity import PeerVerifier, init_pki, issue
from fedge.telemetry.round_trace import RoundTrace
from fedge.telemetry.tracing import (
    TelemetrySection,
    setup_tracing,
    shutdown_tracing,
    span,
    trace_headers,
)
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.server import ServerTls, start_server


def _latencies(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def _per_call_ns(call: Callable[[], Any], n: int = 20_000) -> float:
    t = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t) / n * 1e9


def _empty_span() -> None:
    with span("x"):
        pass


def _round_trace() -> None:
    rt = RoundTrace("bench", 1)
    for phase in ("planned", "configuring", "training", "aggregating"):
        rt.phase(phase)
    rt.end("committed")


def main() -> None:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fedge-bench-tracing-"))
    pki = init_pki(tmp / "pki", "bench")
    issue(pki.directory, "coordinator", "coord")
    issue(pki.directory, "device", "dev-1", site="a")
    app = build_app(
        device=None,
        uplink=None,
        admin=cast(Any, object()),
        verifier=PeerVerifier(pki.ca_cert, pki.crl),
    )
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)
    off, on = TelemetrySection(traces="off"), TelemetrySection(traces_file=tmp / "spans.jsonl")
    modes = {  # label: (section, request inside a span)
        "off": (off, False),
        "off, in a round": (off, True),
        "on, outside a trace": (on, False),
        "on, in a trace": (on, True),
    }
    lat: dict[str, list[float]] = {k: [] for k in modes}
    helpers_measured = ("span_ns", "headers_ns", "headers_in_round_ns", "round_trace_ns")
    helper_ns: dict[str, dict[str, list[float]]] = {
        k: {h: [] for h in helpers_measured} for k in ("off", "on")
    }
    blocks = 20  # modes take turns (in shuffled order), so the machine's load hits them alike
    with start_server(app, "127.0.0.1", 0, tls) as server:
        client = FedgeClient(
            server.url, ca=pki.ca_cert, cert=pki.cert_for("dev-1"), key=pki.key_for("dev-1")
        )

        rounds: list[RoundTrace] = []  # the round the block's requests belong to

        def in_span() -> None:  # a round's request: inside its trace (on) or context (off)
            with rounds[-1].active(), span("caller"):
                client.health()

        _latencies(client.health, 200)  # warm up: connection, code paths
        order = random.Random(0)
        for _ in range(blocks):
            for label in order.sample(list(modes), len(modes)):  # no mode always goes first
                section, inside = modes[label]
                setup_tracing("device", "bench", section, environ={})
                rounds.append(RoundTrace("bench", len(rounds) + 1))
                lat[label] += _latencies(
                    in_span if inside else client.health, args.requests // blocks
                )
                rounds[-1].end("committed")
            for label, section in (("off", off), ("on", on)):
                setup_tracing("device", "bench", section, environ={})
                measured = helper_ns[label]
                measured["span_ns"].append(_per_call_ns(_empty_span, 2000))
                measured["headers_ns"].append(_per_call_ns(trace_headers, 2000))
                rt = RoundTrace("bench", 1)
                with rt.active():
                    measured["headers_in_round_ns"].append(_per_call_ns(trace_headers, 2000))
                rt.end("committed")
                measured["round_trace_ns"].append(_per_call_ns(_round_trace, 500))
        shutdown_tracing()
        client.close()
    rows = {}
    for label, values in lat.items():
        qs = statistics.quantiles(values, n=100)
        rows[label] = {"p50_ms": qs[49] * 1e3, "p99_ms": qs[98] * 1e3}
    helpers = {k: {m: statistics.median(v) for m, v in per.items()} for k, per in helper_ns.items()}
    base = rows["off"]["p50_ms"]
    lines = [
        f"GET /v1/health over mutual TLS on loopback, {args.requests} requests per mode "
        f"in {blocks} interleaved blocks",
        table(
            ["mode", "p50 ms", "p99 ms", "p50 / off"],
            [
                [k, f"{v['p50_ms']:.3f}", f"{v['p99_ms']:.3f}", f"{v['p50_ms'] / base:.2f}x"]
                for k, v in rows.items()
            ],
        ),
        "",
        "span helpers, per call (median of the blocks)",
        table(
            [
                "tracing",
                "span() ns",
                "trace_headers() ns",
                "trace_headers() in a round ns",
                "a round's trace ns",
            ],
            [[k, *(f"{v[h]:.0f}" for h in helpers_measured)] for k, v in helpers.items()],
        ),
    ]
    text = "\n".join(lines)
    print(text)
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracing.txt").write_text(text + "\n")
    (out / "tracing.json").write_text(
        json.dumps({"requests": args.requests, "http": rows, "helpers": helpers}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
