"""Balanced accuracy and per-class recall in the simulator's records, history and summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fedge.cli.simulate import recall_line, simulate_command
from fedge.core.params import from_module, to_torch
from fedge.simulation import Simulation, load_config
from fedge.simulation.evaluate import evaluate
from fedge.simulation.history import RoundRecord
from fedge.tasks import get_task
from fedge.usecases.scores import class_scores

MAINTENANCE: dict[str, Any] = {
    "task": "maintenance",
    "rounds": 3,
    "partition.name": "natural",
    "partition.devices": 72,
    "simulation.devices_per_round": 10,
    "simulation.federated_eval": False,
    "client.epochs": 2,
    "client.batch_size": 16,
    "client.class_weighting": "balanced",
}


def test_records_carry_the_recall_of_every_class() -> None:
    sim = Simulation(load_config(None, {**MAINTENANCE, "simulation.eval_every": 2}))
    records = sim.run().records
    assert [r.recall is not None for r in records] == [False, True, True]  # rounds 2 and 3
    final = records[-1]
    assert final.recall is not None and len(final.recall) == 5
    # the reference: the final model's arg-max scored directly on the held-out devices
    _, test = sim.task.load_data()
    reference = class_scores(sim.task, sim.state.params, test.x, test.y)
    np.testing.assert_allclose(np.array(final.recall, dtype=float), reference.recall)
    assert final.balanced_accuracy == pytest.approx(reference.macro_recall)
    assert final.accuracy == pytest.approx(reference.accuracy)


def test_tasks_without_the_hook_report_none() -> None:
    overrides = {"task": "digits_mlp", "rounds": 1, "partition.devices": 10}
    record = Simulation(load_config(None, overrides)).run().records[-1]
    assert record.accuracy is not None
    assert record.balanced_accuracy is None and record.recall is None
    assert recall_line(record, ()) is None


def test_recall_from_batches_equals_all_at_once() -> None:
    task = get_task("maintenance")
    _, test = task.load_data()
    torch.manual_seed(3)
    model = task.build_model()
    params = to_torch(from_module(model))
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    whole = evaluate(task, model, params, x, y)
    batched = evaluate(task, model, params, x, y, batch_size=97)
    assert whole.recall is not None and batched.recall is not None
    np.testing.assert_array_equal(whole.recall, batched.recall)
    assert whole.balanced_accuracy == pytest.approx(float(np.nanmean(whole.recall)))


def test_history_files_hold_the_recall(tmp_path: Path) -> None:
    history = Simulation(load_config(None, {**MAINTENANCE, "rounds": 2})).run()
    history.write(tmp_path, plot=False)
    rows = json.loads((tmp_path / "history.json").read_text())
    assert [len(r["recall"]) for r in rows] == [5, 5]
    assert rows[-1]["balanced_accuracy"] == pytest.approx(np.mean(rows[-1]["recall"]))
    with (tmp_path / "history.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert "recall" not in table[0] and "balanced_accuracy" in table[0]
    for c in range(5):
        assert float(table[-1][f"recall_{c}"]) == pytest.approx(rows[-1]["recall"][c])


def test_recall_line_names_the_classes() -> None:
    record = RoundRecord(
        round=1,
        accuracy=0.9,
        loss=0.3,
        federated_accuracy=None,
        federated_loss=None,
        train_loss=0.4,
        participants=3,
        rejected=0,
        seconds=0.1,
        balanced_accuracy=0.5,
        recall=[1.0, 0.0, None],
    )
    line = recall_line(record, ("healthy", "fault", "absent"))
    assert line == (
        "recall per class (test set) healthy 1.000 · fault 0.000 · absent – · "
        "balanced accuracy 0.5000"
    )
    assert recall_line(record, ()) is not None and "class 1 0.000" in str(recall_line(record, ()))


def test_simulate_prints_balanced_accuracy_and_recall(tmp_path: Path) -> None:
    args = [f"--set={k}={v}" for k, v in MAINTENANCE.items() if k != "task"]
    result = CliRunner().invoke(
        simulate_command,
        ["--task", "maintenance", "--rounds", "2", *args, "--out", str(tmp_path), "-q"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "history.json").read_text())[-1]["recall"] is not None
    result = CliRunner().invoke(simulate_command, ["--task", "maintenance", *args])
    assert result.exit_code == 0, result.output
    assert "bal." in result.output  # the summary table's column (wrapped on a narrow terminal)
    assert "recall per class (test set) healthy" in result.output.replace("\n", " ")
    assert "balanced accuracy" in result.output
