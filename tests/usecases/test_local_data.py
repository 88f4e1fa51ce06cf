"""`fedge simulate` trains on a user's own copy of a public data set: a ``[data]`` section names
the loader and a local path, and the devices are the data's subjects / recordings / engines /
vehicles (natural partition). Each run here is a short simulation on a fixture in the published
format (tests/usecases/local_data.py), read through the config file as a user would write it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedge.cli import cli
from fedge.errors import ConfigError, DataError
from fedge.simulation import Simulation, load_config
from fedge.tasks import get_task

from .local_data import (
    TELEMETRY_COLUMNS,
    telemetry_rows,
    write_cmapss,
    write_csv,
    write_cwru,
    write_uci_har,
)

RUN = """
rounds = 3
seed = 1

[client]
epochs = 2
batch_size = 8
lr = 0.1
class_weighting = "balanced"
"""


def _config(folder: Path, data: str) -> Path:
    path = folder / "job.toml"
    path.write_text(RUN + "\n[data]\n" + data, encoding="utf-8")
    return path


def _simulate(config: Path, rounds: int = 3) -> list[dict[str, object]]:
    argv = ["simulate", str(config), "--rounds", str(rounds), "--quiet", "--json"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    records: list[dict[str, object]] = json.loads(result.output)
    assert len(records) == rounds
    return records


def _keys_per_device(sim: Simulation) -> list[set[int]]:
    train, _ = sim.task.load_data()
    assert train.keys is not None
    return [set(train.keys[sim.partition[d]].tolist()) for d in range(sim.partition.num_devices)]


def test_uci_har_subjects_are_the_devices(tmp_path: Path) -> None:
    root = tmp_path / "UCI HAR Dataset"
    rng = np.random.default_rng(0)
    write_uci_har(root, "train", 80, rng, subjects=(1, 3, 5, 6, 7, 8))
    write_uci_har(root, "test", 30, rng, subjects=(2, 4))
    # relative to the config file, as a user keeps data next to their configs
    config = _config(tmp_path, 'loader = "uci_har"\npath = "UCI HAR Dataset"\n')
    cfg = load_config(config)
    assert cfg.task.startswith("uci_har:UCI_HAR_Dataset:")
    assert cfg.partition.name == "natural"
    assert cfg.partition.devices == 6  # 8 subjects, 2 of them held out
    assert cfg.simulation.devices_per_round == 6  # the default 10, capped at the fleet
    sim = Simulation(cfg)
    per_device = _keys_per_device(sim)
    assert all(len(keys) == 1 for keys in per_device)  # one subject per device
    _, test = sim.task.load_data()
    assert test.keys is not None and len(set(test.keys.tolist())) == 2
    assert not set(test.keys.tolist()) & set().union(*per_device)  # held out whole
    assert sim.task.class_names[0] == "walking" and sim.task.num_features == 561
    records = _simulate(config)
    assert records[-1]["recall"] is not None  # per-class recall of the 6 activities
    # the inertial signals through fedge's wearable features, one published split only
    inertial = _config(tmp_path, 'loader = "uci_har_inertial"\npath = "UCI HAR Dataset"\nsplit = "train"\n')  # fmt: skip
    cfg = load_config(inertial)
    assert get_task(cfg.task).num_features == 21 and cfg.partition.devices == 4  # 6 − 2 held out
    _simulate(inertial)


def test_cwru_recordings_are_the_devices_and_the_faults_are_learnt(tmp_path: Path) -> None:
    files = {97: "healthy", 98: "healthy", 99: "healthy", 100: "healthy"}
    files |= {105: "inner", 106: "inner", 107: "inner", 130: "outer", 131: "outer", 132: "outer"}
    write_cwru(tmp_path / "cwru", files, np.random.default_rng(1), samples=8 * 4096)
    config = _config(tmp_path, f'loader = "cwru"\npath = "{tmp_path / "cwru"}"\n')
    cfg = load_config(config)
    task = get_task(cfg.task)
    train, test = task.load_data()
    assert train.keys is not None and test.keys is not None
    # a recording per device; each class keeps recordings on both sides (held out per class)
    assert cfg.partition.devices == len(set(train.keys.tolist())) == 7
    assert set(test.y.tolist()) == set(train.y.tolist()) == {0, 3, 4}
    assert task.class_names == ("healthy", "imbalance", "misalignment", "outer_race", "inner_race")
    recall = _simulate(config, rounds=20)[-1]["recall"]
    assert isinstance(recall, list)
    assert min(recall[c] for c in (0, 3, 4)) > 0.9  # healthy, outer and inner race told apart
    # files outside the 12 kHz drive-end table: refused unless a labels table names them
    write_cwru(tmp_path / "other", {3001: "outer", 3002: "healthy"}, np.random.default_rng(2))
    other = _config(tmp_path, f'loader = "cwru"\npath = "{tmp_path / "other"}"\n')
    with pytest.raises(DataError, match=r"3001\.mat, 3002\.mat not in the 12 kHz drive-end table"):
        load_config(other)
    labelled = _config(
        tmp_path,
        f'loader = "cwru"\npath = "{tmp_path / "other"}"\ntest_fraction = 0.5\n'
        '[data.labels]\n"3001.mat" = "outer_race"\n"3002.mat" = 0\n',
    )
    with pytest.raises(DataError, match="cannot hold out"):  # one recording per class
        load_config(labelled)


def test_cmapss_engines_are_the_devices(tmp_path: Path) -> None:
    lives = {unit: 60 + 7 * unit for unit in range(1, 11)}
    write_cmapss(tmp_path / "train_FD001.txt", lives, np.random.default_rng(3))
    config = _config(tmp_path, 'loader = "cmapss"\npath = "train_FD001.txt"\nhorizon = 20\n')
    cfg = load_config(config)
    assert cfg.partition.devices == 8 and cfg.simulation.devices_per_round == 8
    train, test = get_task(cfg.task).load_data()
    assert train.keys is not None and set(train.keys.tolist()) <= set(lives)
    assert int(train.y.sum() + test.y.sum()) == 10 * 21  # RUL 0..20 of every engine
    assert get_task(cfg.task).class_names == ("normal", "fails_soon")
    _simulate(config)


def test_telemetry_csv_vehicles_are_the_devices(tmp_path: Path) -> None:
    rows = []
    for v in range(8):  # 20 s each: windows end at 5, 7, …, 15 s
        rows += telemetry_rows(f"van-{v}", 200, brake_at=120 if v % 2 else None)
    write_csv(tmp_path / "fleet.csv", TELEMETRY_COLUMNS, rows)
    config = _config(tmp_path, 'loader = "telemetry_csv"\npath = "fleet.csv"\nhorizon_s = 4.0\n')
    cfg = load_config(config)
    assert cfg.partition.devices == 6
    train, test = get_task(cfg.task).load_data()
    assert int(train.y.sum() + test.y.sum()) > 0  # the vans that brake hard
    assert get_task(cfg.task).num_features == 29
    _simulate(config)


def test_data_section_mistakes_are_refused_clearly(tmp_path: Path) -> None:
    write_cmapss(tmp_path / "train_FD001.txt", {1: 50, 2: 60, 3: 70}, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown data loader 'uci'; use one of cmapss, cwru"):
        load_config(_config(tmp_path, 'loader = "uci"\npath = "x"\n'))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['horizn'\] .* valid: horizon"):
        load_config(_config(tmp_path, 'loader = "cmapss"\npath = "train_FD001.txt"\nhorizn = 3\n'))  # fmt: skip
    with pytest.raises(ConfigError, match="data.path: Field required"):
        load_config(_config(tmp_path, 'loader = "cmapss"\n'))
    with pytest.raises(DataError, match="not found: data.path must point at a C-MAPSS"):
        load_config(_config(tmp_path, 'loader = "cmapss"\npath = "missing.txt"\n'))
    config = _config(tmp_path, 'loader = "cmapss"\npath = "train_FD001.txt"\n')
    with pytest.raises(ConfigError, match="the task is built from the data"):
        load_config(config, {"task": "mnist_2nn"})
    # devices given by hand must match the data, and the partitioner says how many there are
    cfg = load_config(config, {"partition.devices": 5, "simulation.devices_per_round": 2})
    with pytest.raises(DataError, match="there are 2 keys but num_devices=5"):
        Simulation(cfg)
    # the history's configuration reads back to the same task
    again = load_config(None, cfg.to_dict())
    assert again.task == cfg.task and again.data == cfg.data
