"""Config files, overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.errors import ConfigError
from fedge.simulation import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_defaults_are_the_mnist_fedavg_setting() -> None:
    cfg = load_config()
    assert (cfg.task, cfg.rounds, cfg.seed) == ("mnist_2nn", 20, 42)
    assert (cfg.partition.name, cfg.partition.devices) == ("iid", 100)
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.lr) == (1, 10, 0.1)
    assert cfg.simulation.devices_per_round == 10
    assert cfg.strategy.name == "fedavg"


def test_every_example_config_loads() -> None:
    """Each example is valid for what reads it: a role process, a job spec or the simulator."""
    import tomllib

    from fedge.coordinator.config import load_coordinator_config
    from fedge.device.config import load_device_config
    from fedge.gateway.config import load_gateway_config
    from fedge.transport.messages import JobSpec

    readers = {
        "coordinator.toml": load_coordinator_config,
        "gateway.toml": load_gateway_config,
        "device.toml": load_device_config,
    }
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) > 8, "examples/ should hold TOML configs"
    for path in files:
        role = path.name.split("_", 1)[0].removesuffix(".toml") + ".toml"
        if role in readers:  # device.toml, and the use cases' device_<usecase>.toml
            readers[role](path)
        elif path.name.startswith("job_"):
            JobSpec.model_validate(tomllib.loads(path.read_text()))
        else:
            load_config(path)


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'task = "digits_mlp"\nrounds = 3\n[partition]\nname = "dirichlet"\nalpha = 0.5\n'
    )
    cfg = load_config(path, {"rounds": "7", "partition.alpha": "0.1", "strategy.name": '"fedadam"'})
    assert cfg.rounds == 7 and cfg.task == "digits_mlp"
    assert cfg.partition.options == {"alpha": 0.1}
    assert cfg.strategy.name == "fedadam"


def test_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"client\.lrr: unknown setting"):
        load_config(None, {"client.lrr": "0.1"})
    with pytest.raises(ConfigError, match=r"client\.lr"):
        load_config(None, {"client.lr": "-1"})
    with pytest.raises(ConfigError, match="devices_per_round .* exceeds"):
        load_config(None, {"simulation.devices_per_round": "500"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, {"rounds": "3", "rounds.x": "1"})


@pytest.mark.parametrize("usecase", ["maintenance", "wearables", "mobility"])
def test_usecase_job_and_device_examples_fit_together(usecase: str) -> None:
    """examples/job_<usecase>.toml and device_<usecase>.toml: one networked use case."""
    import tomllib

    from fedge.device.collector import device_share
    from fedge.device.config import load_device_config
    from fedge.tasks import get_task
    from fedge.transport.messages import JobSpec

    job = JobSpec.model_validate(tomllib.loads((EXAMPLES / f"job_{usecase}.toml").read_text()))
    device = load_device_config(EXAMPLES / f"device_{usecase}.toml")
    assert job.task == device.data.task == usecase and get_task(job.task).class_recall is not None
    assert device.serving is not None and device.serving.job == job.name
    assert device.data.partitioner == "natural" and job.plan.class_weighting == "balanced"
    assert job.min_devices <= job.devices_per_round <= device.data.num_devices
    # the collector finds this device's machines / patients / cars in the task's training fleet
    x, y = device_share(
        device.data.task,
        device.data.num_devices,
        device.data.index,
        partitioner=device.data.partitioner,
        seed=device.data.seed,
    )
    train, _ = get_task(job.task).load_data()
    assert len(y) > 0 and x.shape[1] == train.x.shape[1]
