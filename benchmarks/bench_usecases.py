"""The value of federation for the three edge use cases (issue 8), on held-out devices.

For each use-case task (generated fleets, :mod:`fedge.tasks.usecases`), every method is scored on
the same test set: the windows of devices (machines, patients, cars) that none of the methods
trained on.

- **federated**: the simulator with the natural partition (one virtual device per machine /
  patient / car), FedAvg and FedAdam (Reddi et al. 2021), and FedAvg under central DP
  (DP-FedAvg through the ``[privacy]`` section, Poisson sampling, ε stated in the table);
- **local-only**: every training device trains alone (same optimiser, as many local epochs as a
  federated device gets in all rounds); its model is scored on the held-out devices and the
  scores are averaged over devices;
- **centralised**: all training windows pooled on one machine (what the privacy rules forbid):
  the upper bound.

Every device (and the pooled baseline) trains with the class-balanced loss
(``class_weighting = "balanced"``: each example weighs the inverse frequency of its class in that
device's own data), so rare faults and events are not drowned by the healthy majority.

Metrics: accuracy, balanced accuracy (mean per-class recall) and the recall of every class, so
rare faults and events show. Communication: the bytes each device uploaded (float32 model
update × rounds it took part in) against the raw sensor bytes it holds.

Run: ``python benchmarks/bench_usecases.py`` (about 5 minutes on 2 cores); writes
``benchmarks/results/usecases.json`` and ``usecases.md``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import table  # noqa: E402

from fedge.core.params import from_module, to_torch  # noqa: E402
from fedge.core.tree import tree_add  # noqa: E402
from fedge.simulation import Simulation, SimulationConfig  # noqa: E402
from fedge.simulation.vectorized import VectorizedTrainer  # noqa: E402
from fedge.tasks import Task, get_task  # noqa: E402
from fedge.tasks.usecases import usecase_fleet  # noqa: E402
from fedge.training import LocalTrainingConfig, device_rng, train_local  # noqa: E402
from fedge.usecases.scores import class_scores  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEED = 42
ROUNDS = 60
PER_ROUND = 20
EPOCHS = 5
BATCH = 16
LR = 0.1
WEIGHTING = "balanced"  # the class-balanced local loss
EPSILON = 8.0
CLIP = 1.0
TASKS = ("maintenance", "maintenance_warning", "wearables", "wearables_anomaly", "mobility")


def scores(
    task: Task, params: dict[str, np.ndarray], x: torch.Tensor, y: np.ndarray
) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall of ``params`` on (x, y)."""
    return class_scores(task, params, x.numpy(), y).as_dict()


def config(
    task: str, devices: int, strategy: dict[str, Any], privacy: dict[str, Any] | None
) -> SimulationConfig:
    """The simulator configuration: natural partition, one virtual device per real device."""
    data: dict[str, Any] = {
        "task": task,
        "rounds": ROUNDS,
        "seed": SEED,
        "partition": {"name": "natural", "devices": devices},
        "client": {
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "lr": LR,
            "class_weighting": WEIGHTING,
        },
        "strategy": strategy,
        "simulation": {
            "devices_per_round": PER_ROUND,
            "federated_eval": False,
            "eval_every": ROUNDS,
        },
    }
    if privacy is not None:
        data["privacy"] = privacy
    return SimulationConfig.model_validate(data)


def federated(
    task_name: str, strategy: dict[str, Any], privacy: dict[str, Any] | None
) -> tuple[dict[str, np.ndarray], Simulation, int]:
    """Run the simulator; returns the final model, the simulation and the rounds run."""
    train, _ = get_task(task_name).load_data()
    cfg = config(task_name, len(np.unique(train.keys)), strategy, privacy)
    sim = Simulation(cfg)
    history = sim.run()
    return sim.state.params, sim, len(history.records)


def local_only(
    task: Task,
    initial: dict[str, np.ndarray],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    parts: list[np.ndarray],
    rounds_each: int,
    test_x: torch.Tensor,
    test_y: np.ndarray,
) -> dict[str, Any]:
    """Every device alone; scores averaged over devices."""
    trainer = VectorizedTrainer(task)
    cfg = LocalTrainingConfig(
        epochs=max(1, EPOCHS * rounds_each), batch_size=BATCH, lr=LR, class_weighting=WEIGHTING
    )
    rngs = [device_rng(SEED, 0, d) for d in range(len(parts))]
    result = trainer.train(to_torch(initial), train_x, train_y, parts, cfg, rngs)
    per_device = []
    for d in range(len(parts)):
        delta = {k: v[d].numpy() for k, v in result.deltas.items()}
        per_device.append(scores(task, tree_add(initial, delta), test_x, test_y))
    recall = np.array([[np.nan if r is None else r for r in s["recall"]] for s in per_device])
    mean_recall = np.nanmean(recall, axis=0)
    return {
        "accuracy": float(np.mean([s["accuracy"] for s in per_device])),
        "balanced_accuracy": float(np.mean([s["balanced_accuracy"] for s in per_device])),
        "recall": [None if np.isnan(r) else float(r) for r in mean_recall],
        "accuracy_sd": float(np.std([s["accuracy"] for s in per_device])),
    }


def run_task(name: str) -> dict[str, Any]:
    start = time.perf_counter()
    task = get_task(name)
    train, test = task.load_data()
    test_x = torch.from_numpy(test.x)
    out: dict[str, Any] = {"task": name, "description": task.description}
    fleet = usecase_fleet(name)
    out["classes"] = list(fleet.class_names)
    out["train_devices"] = len(np.unique(train.keys))
    out["test_devices"] = len(np.unique(test.keys))
    out["test_windows"] = len(test.y)

    params, sim, rounds = federated(name, {"name": "fedavg"}, None)
    out["fedavg"] = scores(task, params, test_x, test.y)
    # Communication: each participation uploads one float32 update of the model's size.
    model_bytes = sim.spec.size * 4
    counts = np.zeros(sim.partition.num_devices, np.int64)
    for r in range(1, rounds + 1):
        counts[sim.select(r)] += 1
    raw = fleet.raw_bytes_per_device()
    device_ids = np.unique(train.keys)
    raw_bytes = np.array([raw[int(d)] for d in device_ids], np.float64)
    out["bytes"] = {
        "model_bytes": model_bytes,
        "mean_rounds_participated": float(counts.mean()),
        "mean_uploaded": float((counts * model_bytes).mean()),
        "mean_raw": float(raw_bytes.mean()),
        "uploaded_over_raw": float(((counts * model_bytes) / raw_bytes).mean()),
    }
    params, _, _ = federated(name, {"name": "fedadam", "server_lr": 0.01}, None)
    out["fedadam"] = scores(task, params, test_x, test.y)
    dp = {"mode": "central", "clip_norm": CLIP, "target_epsilon": EPSILON, "max_epsilon": EPSILON}
    params, _, rounds_dp = federated(name, {"name": "fedavg"}, dp)
    out["fedavg_dp"] = scores(task, params, test_x, test.y)
    out["fedavg_dp"]["epsilon"] = EPSILON
    out["fedavg_dp"]["rounds"] = rounds_dp

    torch.manual_seed(SEED)
    initial = from_module(task.build_model())
    parts = [sim.partition[d] for d in range(sim.partition.num_devices)]
    rounds_each = max(1, round(rounds * PER_ROUND / len(parts)))
    out["local_only"] = local_only(
        task, initial, sim.train_x, sim.train_y, parts, rounds_each, test_x, test.y
    )
    cfg = LocalTrainingConfig(
        epochs=max(1, EPOCHS * rounds_each), batch_size=BATCH, lr=LR, class_weighting=WEIGHTING
    )
    pooled = train_local(task, initial, train.x, train.y, cfg, np.random.default_rng(SEED))
    out["centralised"] = scores(task, tree_add(initial, pooled.delta), test_x, test.y)
    out["seconds"] = time.perf_counter() - start
    return out


METHODS = (
    ("local_only", "local-only (mean over devices)"),
    ("fedavg", "federated FedAvg"),
    ("fedadam", "federated FedAdam"),
    ("fedavg_dp", f"FedAvg + central DP (ε={EPSILON:g})"),
    ("centralised", "centralised (pooled, upper bound)"),
)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Edge use cases: federated vs local-only vs centralised (held-out devices)",
        "",
        f"{ROUNDS} rounds, {PER_ROUND} devices per round, E={EPOCHS}, B={BATCH}, lr={LR}, "
        f"class-balanced local loss; "
        f"DP: clip {CLIP}, ε={EPSILON:g} (δ = 1/N^1.1), Poisson sampling. "
        "Recall per class in the order of the class list.",
        "",
    ]
    for r in results:
        lines += [f"## {r['task']}: {r['description']}", ""]
        lines.append(
            f"{r['train_devices']} training devices, {r['test_devices']} held-out devices "
            f"({r['test_windows']} windows); classes: {', '.join(r['classes'])}"
        )
        lines.append("")
        rows = []
        for key, label in METHODS:
            s = r[key]
            rec = " / ".join("–" if v is None else f"{v:.2f}" for v in s["recall"])
            rows.append([label, f"{s['accuracy']:.3f}", f"{s['balanced_accuracy']:.3f}", rec])
        lines += [
            "```",
            table(["method", "accuracy", "balanced acc", "recall per class"], rows),
            "```",
            "",
        ]
        b = r["bytes"]
        lines.append(
            f"Bytes per device: model update {b['model_bytes'] / 1024:.1f} KiB × "
            f"{b['mean_rounds_participated']:.1f} rounds = {b['mean_uploaded'] / 1024:.0f} KiB "
            f"uploaded, against {b['mean_raw'] / 1024:.0f} KiB of raw sensor data "
            f"(ratio {b['uploaded_over_raw']:.3f}); the raw data never leaves the device."
        )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's RDP-order notes
    logging.getLogger("fedge.simulation.privacy").setLevel(logging.ERROR)  # "seeded noise"
    torch.set_num_threads(1)
    names = sys.argv[1:] or list(TASKS)
    results = []
    for name in names:
        res = run_task(name)
        results.append(res)
        print(f"{name}: {res['seconds']:.0f} s", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not sys.argv[1:]:
        (RESULTS / "usecases.json").write_text(
            json.dumps(results, indent=2) + "\n", encoding="utf-8"
        )
        (RESULTS / "usecases.md").write_text(markdown(results) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
