"""The simulator end to end on the small digits task."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fedge.errors import ConfigError, PartitionError, UnknownNameError
from fedge.simulation import Simulation, load_config
from fedge.simulation.engine import auto_chunk_size

FAST: dict[str, Any] = {
    "task": "digits_mlp",
    "rounds": 4,
    "partition.devices": 30,
    "simulation.devices_per_round": 8,
    "client.batch_size": 10,
    "client.lr": 0.2,
}


def _run(**overrides: Any) -> list[dict[str, Any]]:
    sim = Simulation(load_config(None, {**FAST, **overrides}))
    return [r.to_dict() for r in sim.run().records]


def _numbers(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["accuracy"], r["loss"], r["train_loss"], r["participants"]) for r in history]


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    a, b = _run(), _run()
    assert _numbers(a) == _numbers(b)
    assert _numbers(_run(seed=7)) != _numbers(a)


def test_learning_happens() -> None:
    history = _run(rounds=8)
    assert history[-1]["accuracy"] > history[0]["accuracy"] + 0.2
    assert history[-1]["accuracy"] > 0.7
    assert all(r["participants"] == 8 and r["rejected"] == 0 for r in history)


def test_loop_backend_gives_the_same_model() -> None:
    vec = _run(rounds=2)
    loop = _run(rounds=2, **{"simulation.backend": "loop"})
    for v, lp in zip(vec, loop, strict=True):
        assert v["accuracy"] == pytest.approx(lp["accuracy"], abs=2e-3)
        assert v["loss"] == pytest.approx(lp["loss"], rel=1e-4)


def test_chunk_size_does_not_change_results() -> None:
    one = _run(rounds=2, **{"simulation.chunk_size": 3})
    many = _run(rounds=2, **{"simulation.chunk_size": 64})
    for a, b in zip(one, many, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("fedsgd", {"strategy.server_lr": 0.5}),
        ("fedavgm", {"strategy.server_lr": 0.5}),
        ("fedprox", {"strategy.proximal_mu": 0.1}),
        ("fedadam", {"strategy.server_lr": 0.02}),
        ("fedyogi", {"strategy.server_lr": 0.02}),
        ("fedadagrad", {"strategy.server_lr": 0.05}),
    ],
)
def test_every_strategy_trains(strategy: str, options: dict[str, Any]) -> None:
    history = _run(rounds=6, **{"strategy.name": strategy, **options})
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize(
    ("partition", "options"),
    [("dirichlet", {"partition.alpha": 0.3}), ("quantity", {"partition.sigma": 1.0})],
)
def test_non_iid_partitions_run(partition: str, options: dict[str, Any]) -> None:
    history = _run(rounds=2, **{"partition.name": partition, **options})
    assert len(history) == 2


def test_target_accuracy_stops_early() -> None:
    sim = Simulation(load_config(None, {**FAST, "rounds": 50, "simulation.target_accuracy": 0.5}))
    history = sim.run()
    assert len(history.records) < 50
    assert history.final.accuracy is not None and history.final.accuracy >= 0.5
    assert history.stopped_reason is not None and "target accuracy" in history.stopped_reason


def test_non_finite_update_is_rejected_not_averaged() -> None:
    sim = Simulation(load_config(None, {**FAST, "rounds": 1}))
    devices = sim.select(1)
    poisoned = sim.partition[int(devices[0])]
    sim.train_x[poisoned[0]] = float("nan")  # one device's local data is corrupt
    record = sim.run_round(1)
    assert record.rejected == 1
    assert record.participants == len(devices) - 1
    assert all(np.isfinite(v).all() for v in sim.state.params.values())


def test_bad_names_and_impossible_partitions_are_clear() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'fedavg'"):
        Simulation(load_config(None, {**FAST, "strategy.name": "fedavgg"}))
    with pytest.raises(UnknownNameError, match="unknown task"):
        Simulation(load_config(None, {**FAST, "task": "nope"}))
    with pytest.raises(PartitionError, match="devices"):
        Simulation(
            load_config(
                None, {**FAST, "partition.devices": 100000, "simulation.devices_per_round": 5}
            )
        )
    with pytest.raises(PartitionError, match="alpha"):
        Simulation(load_config(None, {**FAST, "partition.name": "dirichlet", "partition.alpha": 0}))
    with pytest.raises(ConfigError, match="server_lrr"):
        Simulation(load_config(None, {**FAST, "strategy.server_lrr": 1}))


def test_history_files(tmp_path: Any) -> None:
    sim = Simulation(load_config(None, {**FAST, "rounds": 2}))
    paths = sim.run().write(tmp_path)
    assert {p.name for p in paths} == {"history.json", "history.csv", "history.png"}
    rows = json.loads((tmp_path / "history.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert {"round", "accuracy", "loss", "seconds", "epsilon"} <= rows[0].keys()
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("round,accuracy,loss")


def test_auto_chunk_size_bounds_memory() -> None:
    small = auto_chunk_size(7850, 10, 784)
    big = auto_chunk_size(1_663_370, 10, 784)
    assert small > big >= 1
    assert small <= 512


def test_federated_eval_in_chunks_equals_all_at_once() -> None:
    import torch

    from fedge.core.params import to_torch
    from fedge.simulation.evaluate import evaluate

    sim = Simulation(load_config(None, {**FAST, "rounds": 1, "simulation.chunk_size": 3}))
    devices = sim.select(1)
    chunked = sim._evaluate_devices(devices)
    index = torch.from_numpy(np.concatenate([sim.partition[int(d)] for d in devices]))
    whole = evaluate(
        sim.task, sim.model, to_torch(sim.state.params), sim.train_x[index], sim.train_y[index]
    )
    assert chunked is not None
    assert chunked.num_examples == whole.num_examples
    assert chunked.accuracy == pytest.approx(whole.accuracy)
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-5)


def test_a_given_partition_must_have_enough_devices() -> None:
    from fedge.data.partition import Partition

    tiny = Partition.from_lists([np.arange(10), np.arange(10, 20)])
    with pytest.raises(ConfigError, match="partition has 2 devices"):
        Simulation(load_config(None, FAST), partition=tiny)
