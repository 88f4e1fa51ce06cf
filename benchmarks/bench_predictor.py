"""On-device predictor latency (issue 6 Figures): torch against onnxruntime, HTTP, hot swap.

Both runtimes of ``[serving] runtime`` in the same run, for the MNIST 2NN and every use-case model
(maintenance and maintenance_warning, wearables and wearables_anomaly, mobility, basic_motions;
the ``*_large`` tasks share their twin's model and are not repeated):

1. In-process ``Predictor.predict`` p50/p99 at batch 1 and batch 64 (goal: p50 under 1 ms at
   batch 1), and what loading one version costs (build the runner + health check), which is
   the work a hot swap does off to the side. One intra-op thread, as a device shares its cores
   with training.
2. ``POST /predict`` p50/p99 over loopback HTTP (uvicorn, one keep-alive connection, batch 1;
   goal: p99 under 10 ms) for every model and runtime.
3. Failed requests during hot swaps under load, per runtime: 8 client threads predict in
   process, and 4 HTTP clients on loopback, while the version is swapped every 20 ms (goal: 0
   failed requests, every answer from one complete version).

    python benchmarks/bench_predictor.py [--quick]

Writes benchmarks/results/predictor.json with the machine's load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table

from fedge.core.params import Params, from_module
from fedge.device.predictor import RUNTIMES, Predictor
from fedge.device.serving import start_endpoint
from fedge.tasks import get_task

TASKS = [
    "mnist_2nn",
    "maintenance",
    "maintenance_warning",
    "wearables",
    "wearables_anomaly",
    "mobility",
    "basic_motions",
]


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def model_of(task_name: str) -> tuple[Params, str]:
    """Seeded initial weights of the task's model and its layer sizes, e.g. "57-64-32-5"."""
    import torch

    torch.manual_seed(0)
    params = from_module(get_task(task_name).build_model())
    weights = [v for k, v in params.items() if k.endswith("weight")]  # the MLPs' Linear layers
    return params, "-".join(str(n) for n in [weights[0].shape[1], *(w.shape[0] for w in weights)])


def in_process(task_name: str, runtime: str, n: int) -> list[dict[str, Any]]:
    """p50/p99 of Predictor.predict at batch 1 and 64, and the load time, for one runtime."""
    task = get_task(task_name)
    params, shape = model_of(task_name)
    loads = []
    for k in range(5):
        predictor = Predictor(task_name, runtime=runtime)
        t0 = time.perf_counter()
        predictor.load(f"v{k}", params)
        loads.append(time.perf_counter() - t0)
    load_ms = float(np.median(loads[1:]) * 1e3)  # the first one also imports the runtime
    rows = []
    for batch in (1, 64):
        x = np.random.default_rng(0).normal(size=(batch, task.num_features)).astype(np.float32)
        for _ in range(50):
            predictor.predict(x)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            predictor.predict(x)
            times.append(time.perf_counter() - t0)
        p50, p99 = percentiles(times)
        rows.append(
            {"task": task_name, "model": shape, "runtime": runtime, "batch": batch,
             "p50_ms": p50, "p99_ms": p99, "load_ms": load_ms}
        )  # fmt: skip
    return rows


def http_latency(task_name: str, runtime: str, n: int) -> dict[str, Any]:
    """POST /predict p50/p99 over loopback (batch 1, one keep-alive connection)."""
    import httpx

    task = get_task(task_name)
    predictor = Predictor(task_name, runtime=runtime)
    predictor.load("v1", model_of(task_name)[0])
    row = np.random.default_rng(1).normal(size=task.num_features).round(4).tolist()
    body = {"inputs": [row]}
    with start_endpoint(predictor) as endpoint, httpx.Client(base_url=endpoint.url) as client:
        for _ in range(50):
            client.post("/predict", json=body).raise_for_status()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.post("/predict", json=body).raise_for_status()
            times.append(time.perf_counter() - t0)
    p50, p99 = percentiles(times)
    return {"task": task_name, "runtime": runtime, "batch": 1, "p50_ms": p50, "p99_ms": p99}


def swap_under_load(seconds: float, http: bool, runtime: str) -> dict[str, Any]:
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
    predictor = Predictor("digits_mlp", keep=2, runtime=runtime)
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
        "runtime": runtime,
        "swaps": swaps,
        "requests": ok[0] + failed[0],
        "failed": failed[0],
        "mixed_version_answers": mixed[0],
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter swaps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 300 if args.quick else 2000
    load_before = os.getloadavg()
    rows = [r for t in TASKS for rt in RUNTIMES for r in in_process(t, rt, n)]
    print(table(["task", "model", "runtime", "batch", "p50 ms", "p99 ms", "load ms"],
                [[r["task"], r["model"], r["runtime"], str(r["batch"]), f"{r['p50_ms']:.3f}",
                  f"{r['p99_ms']:.3f}", f"{r['load_ms']:.1f}"] for r in rows]))  # fmt: skip
    http = [http_latency(t, rt, n) for t in TASKS for rt in RUNTIMES]
    print("\nHTTP POST /predict on loopback, batch 1")
    print(table(["task", "runtime", "p50 ms", "p99 ms"],
                [[h["task"], h["runtime"], f"{h['p50_ms']:.2f}", f"{h['p99_ms']:.2f}"]
                 for h in http]))  # fmt: skip
    seconds = 2.0 if args.quick else 3.0
    swaps = [swap_under_load(seconds, http=h, runtime=rt) for rt in RUNTIMES for h in (False, True)]
    print()
    for s in swaps:
        print(f"swap under load ({s['where']}, {s['runtime']}): {s['swaps']} swaps,"
              f" {s['requests']} requests, {s['failed']} failed,"
              f" {s['mixed_version_answers']} mixed-version answers")  # fmt: skip
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): {load_before} before, {load_after} after"
          f" on {os.cpu_count()} CPUs")  # fmt: skip
    out = RESULTS / "predictor.json"
    result = {
        "quick": args.quick,
        "samples": n,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "in_process": rows,
        "http": http,
        "swap": swaps,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
