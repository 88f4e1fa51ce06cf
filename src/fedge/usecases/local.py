"""Train on your own copy of a public data set: the loaders as ``fedge simulate`` tasks.

A ``[data]`` section in a simulation config names a loader and a local path; the task is built
from what the loader reads (nothing is downloaded)::

    [data]
    loader = "uci_har"                 # uci_har | uci_har_inertial | cwru | cmapss | telemetry_csv
    path = "data/UCI HAR Dataset"      # relative paths: relative to the config file
    test_fraction = 0.25               # the share of devices held out for the test set
    # the loader's own options, e.g. split = "all" (see LOADERS below)

Every loader keys its rows by the device that recorded them — the subject (UCI HAR), the
recording (CWRU: one ``.mat`` file is one machine run), the engine (C-MAPSS), the vehicle
(telemetry CSV) — and the data is split like the generated fleets' (:func:`split_fleet`): about
``test_fraction`` of the devices are held out whole (per class for CWRU, whose recordings each
have one class; per region for telemetry), the features are standardised with the training
set's statistics, and ``partition.name = "natural"`` makes one virtual device per key. The model
is the fleet tasks' MLP (features → 64 → 32 → classes) and the simulator reports per-class
recall. ``fedge simulate`` fills ``partition.devices`` (the number of training devices) and a
``simulation.devices_per_round`` of at most 10 when the config leaves them out.

The task is registered under a name made of the loader, the data's folder or file name and a
digest of the whole section (``uci_har:UCI_HAR_Dataset:1a2b3c``): the same section, the same
task, and its data is read once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.data.datasets import ArrayDataset
from fedge.errors import ConfigError, DataError
from fedge.usecases.fleet import Fleet, split_fleet

if TYPE_CHECKING:
    from fedge.tasks.base import Task

__all__ = [
    "LOADERS",
    "DataSource",
    "LoaderInfo",
    "data_task_name",
    "register_data_task",
    "training_devices",
]


@dataclass(frozen=True)
class LoaderInfo:
    """A loader usable in ``[data]``: what ``path`` points at and the options it takes."""

    read: Callable[[Path, dict[str, Any]], Fleet]
    path: str  # what ``path`` must point at
    options: dict[str, str]  # option → what it does (its default)
    features: int  # columns of every row it returns
    classes: tuple[str, ...]  # its labels, in order


def _fleet(
    data: ArrayDataset,
    features: tuple[str, ...],
    classes: tuple[str, ...],
    group: np.ndarray | None = None,
) -> Fleet:
    assert data.keys is not None
    n = len(data.y)
    if data.y.size and (data.y.min() < 0 or data.y.max() >= len(classes)):
        raise DataError(f"labels must be 0..{len(classes) - 1} ({', '.join(classes)})")
    return Fleet(
        x=np.ascontiguousarray(data.x, dtype=np.float32),
        y=data.y.astype(np.int64),
        device=data.keys.astype(np.int64),
        group=np.zeros(n, np.int64) if group is None else group.astype(np.int64),
        raw_bytes=np.zeros(n, np.int64),
        feature_names=features,
        class_names=classes,
    )


def _uci_splits(root: Path, split: str) -> list[str]:
    if split not in ("all", "train", "test"):
        raise ConfigError(f"data.split must be 'all', 'train' or 'test', got {split!r}")
    if split != "all":
        return [split]
    found = [s for s in ("train", "test") if (root / s).is_dir()]
    if not found:
        raise DataError(
            f"{root}: neither train/ nor test/ found; point at the unpacked 'UCI HAR Dataset' folder"
        )
    return found


def _read_uci_har(path: Path, options: dict[str, Any], *, inertial: bool) -> Fleet:
    from fedge.usecases.uci_har import UCI_HAR_ACTIVITIES, load_uci_har, load_uci_har_inertial

    load = load_uci_har_inertial if inertial else load_uci_har
    parts = [load(path, s) for s in _uci_splits(path, str(options.get("split", "all")))]
    keys = np.concatenate([p.keys for p in parts if p.keys is not None])
    data = ArrayDataset(
        np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]), keys
    )
    if inertial:
        from fedge.usecases.wearables import wearable_features

        _, names = wearable_features(np.zeros((1, 128, 3)), np.zeros((1, 128, 3)), None)
    else:
        names = tuple(f"uci_{i + 1}" for i in range(data.x.shape[1]))
    return _fleet(data, names, UCI_HAR_ACTIVITIES)


def _class_index(value: object, where: str) -> int:
    from fedge.usecases.maintenance import FAULTS

    if isinstance(value, str) and value in FAULTS:
        return FAULTS.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(FAULTS):
        return value
    raise ConfigError(f"{where}: {value!r} is not a class of {FAULTS} (name or index)")


def _read_cwru(path: Path, options: dict[str, Any]) -> Fleet:
    from fedge.usecases.cwru import CWRU_12K_DRIVE_END, cwru_windows
    from fedge.usecases.maintenance import FAULTS, MAINTENANCE_FEATURES

    files = sorted(path.glob("*.mat")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .mat files; point at a folder of CWRU files")
    given = options.get("labels")
    if given is not None and not isinstance(given, Mapping):
        raise ConfigError("data.labels must be a table: file name = class (e.g. '105.mat' = 'inner_race')")  # fmt: skip
    labels: dict[str | Path, int] = {}
    unknown = []
    for f in files:
        if given is not None:
            value = given.get(f.name, given.get(f.stem))
            if value is not None:
                labels[f] = _class_index(value, f"data.labels[{f.name!r}]")
            continue  # with a table, only the files it names are read
        match = re.match(r"(\d+)", f.stem)
        number = int(match.group(1)) if match else None
        if number in CWRU_12K_DRIVE_END:
            labels[f] = CWRU_12K_DRIVE_END[number]
        else:
            unknown.append(f.name)
    if unknown:
        raise DataError(
            f"{path}: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''} not in the "
            "12 kHz drive-end table (fedge.usecases.cwru.CWRU_12K_DRIVE_END); name each file's "
            "class in a [data.labels] table ('105.mat' = 'inner_race'), which reads only those"
        )
    if not labels:
        raise DataError(f"{path}: none of the files is named in data.labels")
    rpm = options.get("rpm")
    data = cwru_windows(
        labels,
        fs=float(options.get("fs", 12_000.0)),
        samples=int(options.get("samples", 4_096)),
        max_windows=None if options.get("max_windows") is None else int(options["max_windows"]),
        rpm=None if rpm is None else float(rpm),
    )
    # every recording has one class: hold out recordings of each class
    return _fleet(data, MAINTENANCE_FEATURES, FAULTS, group=data.y)


def _read_cmapss(path: Path, options: dict[str, Any]) -> Fleet:
    from fedge.usecases.cmapss import CMAPSS_COLUMNS, load_cmapss
    from fedge.usecases.maintenance import WARNING_CLASSES

    data = load_cmapss(path, horizon=int(options.get("horizon", 30)))
    return _fleet(data, CMAPSS_COLUMNS[2:], WARNING_CLASSES)


_WINDOW_OPTIONS = (
    "history_s",
    "stride_s",
    "horizon_s",
    "harsh_mps2",
    "unsafe_headway_s",
    "min_speed_mps",
)


def _read_telemetry(path: Path, options: dict[str, Any]) -> Fleet:
    from fedge.usecases.telemetry import WindowSpec, read_telemetry_csv, telemetry_fleet

    spec = WindowSpec(**{k: float(v) for k, v in options.items() if k in _WINDOW_OPTIONS})
    logs = read_telemetry_csv(path)
    fleet = telemetry_fleet(logs, spec)
    if len(fleet.y) == 0:
        raise DataError(
            f"{path}: no vehicle's log is long enough for one window "
            f"({spec.history_s:g} s of history + {spec.horizon_s:g} s ahead)"
        )
    return fleet


def _loaders() -> dict[str, LoaderInfo]:
    from fedge.usecases.cmapss import CMAPSS_COLUMNS
    from fedge.usecases.maintenance import FAULTS, MAINTENANCE_FEATURES, WARNING_CLASSES
    from fedge.usecases.telemetry import EVENT_CLASSES, TELEMETRY_FEATURES
    from fedge.usecases.uci_har import UCI_HAR_ACTIVITIES

    return {
        "uci_har": LoaderInfo(
            functools.partial(_read_uci_har, inertial=False),
            "the unpacked 'UCI HAR Dataset' folder (train/, test/)",
            {"split": "'all' (train and test, the subjects are disjoint), 'train' or 'test'"},
            561,
            UCI_HAR_ACTIVITIES,
        ),
        "uci_har_inertial": LoaderInfo(
            functools.partial(_read_uci_har, inertial=True),
            "the unpacked 'UCI HAR Dataset' folder (its Inertial Signals)",
            {"split": "'all', 'train' or 'test'"},
            21,
            UCI_HAR_ACTIVITIES,
        ),
        "cwru": LoaderInfo(
            _read_cwru,
            "a folder of CWRU .mat files (or one file)",
            {
                "labels": "table file name = class (default: the 12 kHz drive-end table)",
                "rpm": "motor speed for files without an RPM entry",
                "samples": "samples per window (4096)",
                "fs": "sample rate, Hz (12000)",
                "max_windows": "at most this many windows per file",
            },
            len(MAINTENANCE_FEATURES),
            FAULTS,
        ),
        "cmapss": LoaderInfo(
            _read_cmapss,
            "a C-MAPSS training file, e.g. train_FD001.txt",
            {"horizon": "the warning label: remaining useful life <= horizon cycles (30)"},
            len(CMAPSS_COLUMNS) - 2,
            WARNING_CLASSES,
        ),
        "telemetry_csv": LoaderInfo(
            _read_telemetry,
            "a CSV file in the telemetry layout (fedge.usecases.telemetry)",
            {k: "window setting (fedge.usecases.telemetry.WindowSpec)" for k in _WINDOW_OPTIONS},
            len(TELEMETRY_FEATURES),
            EVENT_CLASSES,
        ),
    }


LOADERS: dict[str, LoaderInfo] = _loaders()


@dataclass(frozen=True)
class DataSource:
    """A ``[data]`` section: which loader reads which local path, and how devices are held out."""

    loader: str
    path: Path
    options: Mapping[str, Any]
    test_fraction: float = 0.25
    split_seed: int = 0

    def __post_init__(self) -> None:
        info = LOADERS.get(self.loader)
        if info is None:
            raise ConfigError(
                f"unknown data loader {self.loader!r}; use one of {', '.join(sorted(LOADERS))}"
            )
        unknown = sorted(set(self.options) - set(info.options))
        if unknown:
            valid = ", ".join(sorted(info.options)) or "(none)"
            raise ConfigError(
                f"unknown option(s) {unknown} for data loader {self.loader!r}; valid: {valid}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")

    def read(self) -> Fleet:
        """The loader's rows, keyed by device (raises DataError naming what is wrong)."""
        if not self.path.exists():
            raise DataError(f"{self.path} not found: data.path must point at {self.info.path}")
        return self.info.read(self.path, dict(self.options))

    @property
    def info(self) -> LoaderInfo:
        """The loader's description."""
        return LOADERS[self.loader]


def data_task_name(source: DataSource) -> str:
    """The task name of a data section: loader, file or folder name, digest of the section."""
    described = json.dumps(
        {
            "loader": source.loader,
            "path": str(source.path),
            "options": dict(source.options),
            "test_fraction": source.test_fraction,
            "split_seed": source.split_seed,
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(described.encode()).hexdigest()[:6]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.path.name).strip("_") or "data"
    return f"{source.loader}:{stem}:{digest}"


_SOURCES: dict[str, DataSource] = {}


def register_data_task(source: DataSource) -> str:
    """Register the task of ``source`` (its data is read on first use) and return its name."""
    from fedge.tasks.base import TASKS

    name = data_task_name(source)
    if name not in _SOURCES:
        _SOURCES[name] = source
        TASKS.add(name, functools.partial(_build_task, name))
    return name


@functools.cache
def _split(name: str) -> tuple[Fleet, ArrayDataset, ArrayDataset]:
    """The data of a registered source and its (train, test) split; read once per process."""
    source = _SOURCES[name]
    fleet = source.read()
    info = source.info
    if fleet.x.shape[1] != info.features or fleet.class_names != info.classes:
        raise DataError(
            f"{source.path}: read {fleet.x.shape[1]} columns and classes {fleet.class_names}; "
            f"the {source.loader} task has {info.features} and {info.classes}"
        )
    train, test = split_fleet(fleet, source.test_fraction, np.random.default_rng(source.split_seed))
    return fleet, train, test


def training_devices(source: DataSource) -> int:
    """How many devices (subjects, recordings, engines, vehicles) the training set holds."""
    _, train, _ = _split(register_data_task(source))
    assert train.keys is not None
    return len(np.unique(train.keys))


def _build_task(name: str) -> Task:
    from fedge.tasks.base import Task
    from fedge.tasks.models import mlp
    from fedge.usecases.scores import logits_recall

    source = _SOURCES[name]
    info = source.info
    features, classes = info.features, len(info.classes)

    def load_data() -> tuple[ArrayDataset, ArrayDataset]:
        _, train, test = _split(name)  # read on first use, once per process
        return train, test

    return Task(  # nothing is read here: listing the tasks reads no files
        name=name,
        description=f"{source.loader} from {source.path} (local files, natural partition)",
        build_model=functools.partial(mlp, (features, 64, 32, classes)),
        load_data=load_data,
        num_features=features,
        num_classes=classes,
        class_recall=functools.partial(logits_recall, num_classes=classes),
        class_names=info.classes,
    )
