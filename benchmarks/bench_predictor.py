"""On-device predictor latency (issue 6 Figures): torch against onnxruntime, HTTP, hot swap.

1. In-process ``Predictor.predict`` p50/p99 at batch 1 and batch 64 for the MNIST 2NN and the
   use-case models (maintenance, wearables, mobility), with the torch runner and the
   onnxruntime runner in the same run (goal: p50 under 1 ms at batch 1). One intra-op thread,
   as a device shares its cores with training.
2. ``POST /predict`` p50/p99 over loopback HTTP (uvicorn, one keep-alive connection; goal: p99
   under 10 ms) for the MNIST 2NN at batch 1.
3. Failed requests during hot swaps under load: 8 client threads predict in process while the
   version is swapped every 20 ms for 3 s; and 4 HTTP clients on loopback during swaps
   (goal: 0 failed requests, every answer from one complete version).

    python benchmarks/bench_predictor.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, table

from fedge.core.params import from_module
from fedge.device.predictor import Predictor
from fedge.device.serving import start_endpoint
from fedge.tasks import get_task
from fedge.tasks.export import onnx_make_runner

TASKS = ["mnist_2nn", "maintenance", "wearables", "mobility"]


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def in_process(task_name: str, runtime: str, batch: int, n: int) -> dict[str, Any]:
    """p50/p99 of Predictor.predict for one task, runtime and batch size."""
    import torch

    torch.set_num_threads(1)
    task = get_task(task_name)
    torch.manual_seed(0)
    params = from_module(task.build_model())
    make = onnx_make_runner if runtime == "onnxruntime" else None
    predictor = Predictor(task_name, make_runner=make) if make else Predictor(task_name)
    predictor.load("v1", params)
    x = np.random.default_rng(0).normal(size=(batch, task.num_features)).astype(np.float32)
    for _ in range(50):
        predictor.predict(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        predictor.predict(x)
        times.append(time.perf_counter() - t0)
    p50, p99 = percentiles(times)
    return {"task": task_name, "runtime": runtime, "batch": batch, "p50_ms": p50, "p99_ms": p99}


def http_latency(n: int) -> dict[str, Any]:
    """POST /predict p50/p99 over loopback (MNIST 2NN, batch 1, one keep-alive connection)."""
    import httpx

    predictor = Predictor("mnist_2nn")
    predictor.load("v1", from_module(get_task("mnist_2nn").build_model()))
    body = {"inputs": [np.random.default_rng(1).normal(size=784).round(4).tolist()]}
    with start_endpoint(predictor) as endpoint, httpx.Client(base_url=endpoint.url) as client:
        for _ in range(50):
            client.post("/predict", json=body).raise_for_status()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.post("/predict", json=body).raise_for_status()
            times.append(time.perf_counter() - t0)
    p50, p99 = percentiles(times)
    return {"path": "HTTP loopback", "batch": 1, "p50_ms": p50, "p99_ms": p99}


def swap_under_load(seconds: float, http: bool) -> dict[str, Any]:
    """Requests answered and failed while versions swap every 20 ms (in process or over HTTP)."""
    import httpx

    task = get_task("digits_mlp")
    base = from_module(task.build_model())
    last = list(base)[-1]

    def version(k: int) -> dict[str, np.ndarray]:  # version k predicts class k % 10 everywhere
        p = {n: np.zeros_like(v) for n, v in base.items()}
        p[last][k % 10] = 10.0
        return p

    weights = [version(k) for k in range(10)]
    predictor = Predictor("digits_mlp", keep=2)
    predictor.load("v0", weights[0])
    stop = threading.Event()
    ok, failed, mixed = [0], [0], [0]
    lock = threading.Lock()
    x = np.random.default_rng(2).normal(size=(8, 64)).astype(np.float32)
    endpoint = start_endpoint(predictor) if http else None

    def client_loop() -> None:
        session = httpx.Client(base_url=endpoint.url) if endpoint else None
        while not stop.is_set():
            try:
                if session is not None:
                    answer = session.post("/predict", json={"inputs": x.tolist()}, timeout=5)
                    answer.raise_for_status()
                    preds, ver = answer.json()["predictions"], answer.json()["version"]
                else:
                    result = predictor.predict(x)
                    preds, ver = result.predictions.tolist(), result.version
                good = preds == [int(ver[1:]) % 10] * len(x)
                with lock:
                    ok[0] += 1
                    mixed[0] += 0 if good else 1
            except Exception:
                with lock:
                    failed[0] += 1
        if session is not None:
            session.close()

    threads = [threading.Thread(target=client_loop) for _ in range(4 if http else 8)]
    for t in threads:
        t.start()
    swaps, k, deadline = 0, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        k += 1
        predictor.load(f"v{k}", weights[k % 10])
        swaps += 1
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    if endpoint is not None:
        endpoint.stop()
    return {
        "where": "HTTP loopback" if http else "in process",
        "swaps": swaps,
        "requests": ok[0] + failed[0],
        "failed": failed[0],
        "mixed_version_answers": mixed[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    rows = [
        in_process(t, rt, b, n) for t in TASKS for b in (1, 64) for rt in ("torch", "onnxruntime")
    ]
    print(table(["task", "runtime", "batch", "p50 ms", "p99 ms"],
                [[r["task"], r["runtime"], str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}"]
                 for r in rows]))  # fmt: skip
    http = http_latency(n)
    print(f"\nHTTP POST /predict (mnist_2nn, batch 1): p50 {http['p50_ms']:.2f} ms,"
          f" p99 {http['p99_ms']:.2f} ms")  # fmt: skip
    swaps = [swap_under_load(2.0 if args.quick else 3.0, http=h) for h in (False, True)]
    for s in swaps:
        print(f"swap under load ({s['where']}): {s['swaps']} swaps, {s['requests']} requests,"
              f" {s['failed']} failed, {s['mixed_version_answers']} mixed-version answers")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "predictor.json"
    out.write_text(json.dumps({"in_process": rows, "http": http, "swap": swaps}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
