"""The ``fedge simulate`` configuration: a TOML file, typed and validated, plus overrides.

Example (``examples/mnist_fedavg.toml``)::

    task = "mnist_2nn"
    rounds = 20
    seed = 42

    [partition]           # how the task's training set is split over virtual devices
    name = "iid"          # iid | dirichlet | shards | quantity | natural
    devices = 100         # fleet size; extra keys (alpha, shards_per_device, sigma) are options

    [client]              # the client optimizer
    epochs = 1
    batch_size = 10
    lr = 0.1

    [strategy]            # the server side; extra keys are the strategy's options
    name = "fedavg"

    [simulation]
    devices_per_round = 10

    [privacy]             # optional: differential privacy (fedge.privacy.config.PrivacyConfig)
    mode = "central"      # none | central | local | distributed (needs sampling = "fixed")
    clip_norm = 1.0
    target_epsilon = 4.0

    [data]                # optional: train on local files instead of a built-in task's data
    loader = "uci_har"    # uci_har | uci_har_inertial | cwru | cmapss | telemetry_csv
    path = "UCI HAR Dataset"  # relative to this file; extra keys are the loader's options

Unknown keys are refused with the list of valid ones; overrides use dotted paths
(``client.lr=0.05``) and are validated like the file. With ``[data]`` the task is built from
the files (:mod:`fedge.usecases.local`): leave ``task`` out; the partition defaults to
``natural`` (one device per subject / recording / engine / vehicle), and :func:`load_config`
fills ``partition.devices`` with the training devices' count and caps the default
``devices_per_round`` at it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from fedge.errors import ConfigError
from fedge.privacy.config import PrivacyConfig
from fedge.training.plan import LocalTrainingConfig

__all__ = [
    "ClientSection",
    "DataSection",
    "PartitionSection",
    "SimulationConfig",
    "load_config",
]

OptionValue = float | int | str | bool


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _OpenSection(BaseModel):
    """A section whose unknown keys are passed on as options (validated by the component)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    @property
    def options(self) -> dict[str, OptionValue]:
        """The extra keys: options for the named partitioner or strategy."""
        return dict(self.model_extra or {})


class PartitionSection(_OpenSection):
    name: str = "iid"
    devices: PositiveInt = 100


class ClientSection(_Section):
    epochs: PositiveInt = 1
    batch_size: PositiveInt | None = 10
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    class_weighting: Literal["none", "balanced"] = "none"  # "balanced": rare classes count

    def training(self) -> LocalTrainingConfig:
        """The client optimizer as the trainers take it."""
        return LocalTrainingConfig(**self.model_dump())


class StrategySection(_OpenSection):
    name: str = "fedavg"


class SimulationSection(_Section):
    devices_per_round: PositiveInt = 10
    backend: Literal["vectorized", "loop"] = "vectorized"
    chunk_size: PositiveInt | Literal["auto"] = "auto"
    eval_every: PositiveInt = 1  # centralised evaluation every N rounds (and after the last)
    federated_eval: bool = True  # also evaluate the new model on the participants' local data
    target_accuracy: float | None = Field(None, gt=0, le=1)  # stop early once reached
    threads: PositiveInt | Literal["auto"] = (
        "auto"  # torch threads; auto: 1 unless the model is big
    )
    # How devices are chosen each round. fixed: exactly devices_per_round of the fleet, uniformly;
    # poisson: each device independently with probability devices_per_round / devices (what
    # DP-FedAvg's accounting assumes); auto: poisson when privacy is on, fixed otherwise.
    sampling: Literal["auto", "poisson", "fixed"] = "auto"


class SecureAggregationSection(_Section):
    """Run every round's sum through SecAgg+ (issue 3): real sessions, simulated gateways."""

    enabled: bool = False
    gateways: PositiveInt = 4  # devices are spread over this many simulated gateways
    clip: float = Field(0.5, gt=0)  # each delta coordinate is clipped to ±clip
    bits: int = Field(32, ge=8, le=64)  # the modulus 2^bits of the secure sum
    dropout_rate: float = Field(0.0, ge=0, lt=0.5)  # share of participants that vanish...
    dropout_phase: Literal["setup", "advertise_keys", "share_keys", "masked_input"] = (
        "masked_input"  # ...after this phase
    )
    neighbours: PositiveInt | None = None  # k; None: derived from n and the dropout rate
    threshold: PositiveInt | None = None  # t; give both or neither


class DataSection(_OpenSection):
    """Local files to train on (:mod:`fedge.usecases.local`); extra keys: the loader's options."""

    loader: str
    path: str
    test_fraction: float = Field(0.25, gt=0, lt=1)  # share of devices held out for testing
    split_seed: int = 0  # which devices are held out

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        self.source()  # an unknown loader or option is refused here, with the valid ones
        return self

    def source(self) -> Any:
        """The :class:`fedge.usecases.local.DataSource` (options checked; nothing read yet)."""
        from fedge.usecases.local import DataSource

        return DataSource(
            loader=self.loader,
            path=Path(self.path).expanduser().resolve(),
            options=self.options,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
        )


class SimulationConfig(_Section):
    task: str = "mnist_2nn"
    rounds: PositiveInt = 20
    seed: int = 42
    partition: PartitionSection = PartitionSection()
    client: ClientSection = ClientSection()
    strategy: StrategySection = StrategySection()
    simulation: SimulationSection = SimulationSection()
    privacy: PrivacyConfig = PrivacyConfig()  # mode "none": no clipping, no noise, no accounting
    secure_aggregation: SecureAggregationSection = SecureAggregationSection()
    data: DataSection | None = None  # local files: the task is built from them

    @model_validator(mode="before")
    @classmethod
    def _task_of_data(cls, data: Any) -> Any:
        """With ``[data]``: the task is the data's (registered here, read on first use) and
        the partition is natural unless the config names another."""
        if not isinstance(data, dict) or data.get("data") is None:
            return data
        section = data["data"]
        if isinstance(section, dict):
            try:
                section = DataSection.model_validate(section)
            except ValidationError:
                return data  # the field's own validation says what is wrong, and where
        if not isinstance(section, DataSection):
            return data
        from fedge.usecases.local import register_data_task

        name = register_data_task(section.source())
        given = data.get("task")
        if given is not None and given != name:
            raise ValueError(
                f"task = {given!r} and a [data] section: the task is built from the data "
                f"(it is {name!r}); remove task"
            )
        partition = dict(data.get("partition") or {})
        partition.setdefault("name", "natural")
        return {**data, "task": name, "partition": partition}

    @property
    def sampling(self) -> Literal["poisson", "fixed"]:
        """The device selection in force (``simulation.sampling`` with ``auto`` resolved)."""
        chosen = self.simulation.sampling
        if chosen == "auto":
            return "fixed" if self.privacy.mode == "none" else "poisson"
        return chosen

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.simulation.devices_per_round > self.partition.devices:
            raise ValueError(
                f"simulation.devices_per_round ({self.simulation.devices_per_round}) exceeds "
                f"partition.devices ({self.partition.devices}): lower it or add devices"
            )
        if self.secure_aggregation.enabled and self.privacy.mode in ("central", "local"):
            raise ValueError(
                "secure_aggregation with privacy.mode = "
                f"{self.privacy.mode!r} is not combined: use privacy.mode = 'distributed' "
                "(noise added on the devices, summed by secure aggregation)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (including section options), for history files and reproducibility."""
        return self.model_dump(mode="json")


def _coerce(text: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, quoted strings), else keep the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting; check the spelling (see `fedge simulate --help`)"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SimulationConfig:
    """Read a TOML file (or defaults), apply dotted ``overrides`` and validate everything."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    section = data.get("data")
    if path is not None and isinstance(section, dict) and isinstance(section.get("path"), str):
        local = Path(section["path"]).expanduser()  # relative to the config file
        data["data"] = {**section, "path": str(Path(path).resolve().parent / local)}
    for dotted, value in (overrides or {}).items():
        _apply_override(data, dotted, _coerce(value) if isinstance(value, str) else value)
    _fill_from_data(data)
    try:
        return SimulationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def _fill_from_data(data: dict[str, Any]) -> None:
    """With a valid ``[data]`` section and a natural partition: ``partition.devices`` from the
    data (its training devices) when the config leaves it out, and ``devices_per_round`` capped
    at it when that is left out too. Reads the files (once per process)."""
    section, partition = data.get("data"), data.get("partition") or {}
    if not isinstance(section, dict) or not isinstance(partition, dict):
        return
    if "devices" in partition or partition.get("name", "natural") != "natural":
        return
    try:
        source = DataSection.model_validate(section).source()
    except ValidationError:
        return  # validating the whole config reports it
    from fedge.usecases.local import training_devices

    count = training_devices(source)
    data["partition"] = {**partition, "devices": count}
    simulation = data.get("simulation") or {}
    if isinstance(simulation, dict) and "devices_per_round" not in simulation:
        default = SimulationSection.model_fields["devices_per_round"].default
        data["simulation"] = {**simulation, "devices_per_round": min(count, default)}
