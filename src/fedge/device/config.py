"""``device.toml``: one device's identity, gateway, data, eligibility and privacy limit.

Relative paths are resolved against the config file's directory. Example: ``examples/device.toml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedge.device.eligibility import ConditionsPolicy
from fedge.gateway.config import PkiFiles, read_toml
from fedge.telemetry.tracing import TelemetrySection

__all__ = [
    "DataConfig",
    "DeviceConfig",
    "EligibilityConfig",
    "ServingConfig",
    "load_device_config",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """The demo collector: this device plays back its slice of a partitioned task's data."""

    task: str = "digits_mlp"
    partitioner: str = "iid"
    num_devices: int = Field(8, ge=1)  # how many devices the data set is split over
    index: int = Field(0, ge=0)  # this device's slice
    seed: int = 0  # the partition's seed (the same on every device of a demo)
    rows_per_tick: int = Field(50, ge=1)  # rows appended per collector tick
    interval_s: float = Field(1.0, gt=0)  # seconds between ticks
    cycle: bool = False  # replay the slice forever (else each row once, resuming after a restart)
    retention_s: float = Field(3600.0, gt=0)  # rows older than this are dropped


class EligibilityConfig(_Section):
    """When the device may ask for work."""

    min_examples: int = Field(10, ge=1)
    require_charging: bool = True
    require_idle: bool = False
    require_unmetered: bool = True
    unmetered: bool = True  # is this device's network unmetered?
    max_load_per_cpu: float = Field(0.8, gt=0)
    power_supply_dir: str = "/sys/class/power_supply"

    def policy(self) -> ConditionsPolicy:
        """The eligibility policy these settings describe."""
        return ConditionsPolicy(
            min_examples=self.min_examples,
            require_charging=self.require_charging,
            require_idle=self.require_idle,
            require_unmetered=self.require_unmetered,
            unmetered=self.unmetered,
            max_load_per_cpu=self.max_load_per_cpu,
            power_supply_dir=self.power_supply_dir,
        )


class ServingConfig(_Section):
    """The optional local prediction endpoint, serving the job's production model version."""

    job: str = Field(pattern=_NAME)  # whose production version to serve
    task: str | None = None  # the job's task (default: data.task)
    host: str = "127.0.0.1"  # loopback only
    port: int = Field(0, ge=0, le=65535)  # 0: any free port (logged at start)
    poll_s: float = Field(5.0, gt=0)  # how often to ask for the production version
    min_accuracy: float | None = Field(None, ge=0, le=1)  # health-check floor on local holdout
    # share of the rows collected that is held out of training for the health check (evenly
    # spread and deterministic, fedge.device.store); 0: no holdout (no accuracy check)
    holdout_fraction: float = Field(0.1, ge=0, lt=1)
    holdout_rows: int = Field(200, ge=0)  # the newest holdout rows a health check uses, at most
    # fewer holdout rows than this: the accuracy check is skipped (and a warning says so)
    min_holdout_rows: int = Field(20, ge=1)
    # what runs the model: "torch", or "onnxruntime" (an ONNX graph of each version, written from
    # the weights for MLP tasks; lighter and faster at small batches, see README "Measured")
    runtime: Literal["torch", "onnxruntime"] = "torch"


class DeviceConfig(_Section):
    """One edge device."""

    id: str = Field(pattern=_NAME)  # its certificate's subject
    site: str = Field(pattern=_NAME)  # the site whose gateway it talks to
    gateway_url: str  # e.g. "https://127.0.0.1:8443"
    pki: PkiFiles
    state_dir: Path  # data.sqlite, outbox.sqlite and privacy.sqlite live here
    labels: dict[str, str] = Field(default_factory=dict)  # matched by jobs' selectors
    privacy_limit: float = Field(10.0, gt=0)  # the owner's ε limit over all jobs (inf: none)
    idle_poll_s: float = Field(5.0, gt=0)  # re-check eligibility this often when not eligible
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(60.0, gt=0)
    long_poll_s: float = Field(30.0, ge=0, le=600)  # offer to wait this long for a task
    torch_threads: int = Field(1, ge=1, le=256)  # intra-op threads for local training
    # federated evaluation: before training, evaluate the received model on the local data and
    # report the sums with the update (plain rounds without DP only; fedge.aggregation.evaluation)
    federated_evaluation: bool = True
    data: DataConfig = DataConfig()
    eligibility: EligibilityConfig = EligibilityConfig()
    serving: ServingConfig | None = None  # set: run the local prediction endpoint
    telemetry: TelemetrySection = TelemetrySection()  # where spans go (fedge.telemetry.tracing)

    @model_validator(mode="after")
    def _poll_within_timeout(self) -> DeviceConfig:
        if self.long_poll_s > 0 and self.long_poll_s + 5.0 > self.request_timeout_s:
            raise ValueError(
                f"long_poll_s = {self.long_poll_s:g} must be at least 5 s below request_timeout_s"
                f" = {self.request_timeout_s:g}: the check-in is held that long by the gateway"
            )
        return self

    def resolved(self, base: Path) -> DeviceConfig:
        """Relative paths taken from ``base`` (the config file's directory)."""
        return self.model_copy(
            update={
                "pki": self.pki.resolved(base),
                "state_dir": base / self.state_dir,
                "telemetry": self.telemetry.resolved(base),
            }
        )

    @property
    def has_privacy_limit(self) -> bool:
        """False when the owner set no limit (``inf``)."""
        return math.isfinite(self.privacy_limit)


def load_device_config(path: str | Path) -> DeviceConfig:
    """Read ``device.toml``; relative paths are taken from the file's directory."""
    config: DeviceConfig = read_toml(path, DeviceConfig)
    return config.resolved(Path(path).resolve().parent)
