"""Wire protocol v1, admin API: job specs and the views of jobs, rounds, devices and models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedge.transport.messages._base import Name, Sha256, _Msg
from fedge.transport.messages._device import TrainingPlan


class StrategySpec(_Msg):
    name: str = "fedavg"
    options: dict[str, float] = Field(default_factory=dict)


class JobSpec(_Msg):
    """What an admin asks for with ``fedge jobs create``."""

    name: Name
    task: str
    strategy: StrategySpec = StrategySpec()
    rounds: int = Field(ge=1, le=100_000)
    devices_per_round: int = Field(ge=1)
    over_selection: float = Field(1.3, ge=1.0, le=10.0)
    min_devices: int = Field(1, ge=1)  # fewer survivors than this: the round is abandoned
    training_deadline_s: float = Field(60.0, gt=0)
    report_deadline_s: float = Field(30.0, gt=0)
    plan: TrainingPlan = TrainingPlan()
    privacy: dict[str, float | int | str | None] = Field(default_factory=dict)  # PrivacyConfig
    secure_aggregation: dict[str, float | int | str | bool] | None = None
    selector: dict[str, str] = Field(default_factory=dict)
    seed: int | None = None  # model initialisation


class RoundView(_Msg):
    round: int
    state: Literal["planned", "configuring", "training", "aggregating", "committed", "abandoned"]
    participants: int
    gateways_reported: int
    accuracy: float | None = None
    loss: float | None = None
    epsilon: float | None = None
    model_sha256: str | None = None
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None


class JobView(_Msg):
    id: Name
    spec: JobSpec
    state: Literal["running", "paused", "completed", "failed"]
    current_round: int
    rounds: list[RoundView] = Field(default_factory=list)
    delta: float | None = None  # δ of the rounds' ε (None without differential privacy)


class DeviceView(_Msg):
    id: Name
    site: str | None
    gateway: str | None
    last_seen: float | None
    revoked: bool
    rounds_participated: int


class RolloutView(_Msg):
    """A version's staged rollout: on the canary gateways first, then widened or halted."""

    stage: Literal["canary", "widened", "halted", "superseded"]
    canary_gateways: list[str] = Field(default_factory=list)
    healthy: int = 0  # devices whose health report passed
    failed: int = 0  # devices whose health report failed
    min_healthy: int = 0  # healthy reports needed to widen
    max_failures: int = 0  # more failed reports than this halt the rollout
    hold_until: float | None = None  # no widening by then: halted
    sequence: int = 0  # the release manifest that put it on the canaries
    reason: str = ""
    started_at: float
    ended_at: float | None = None


class FederatedEvaluationView(_Msg):
    """A version evaluated by devices on their own data, before they trained on it."""

    accuracy: float = Field(ge=0, le=1)  # Σ correct / Σ examples
    loss: float = Field(ge=0)  # Σ loss / Σ examples
    examples: int = Field(ge=1)
    devices: int = Field(ge=1)


class RefusalView(_Msg):
    """A device or gateway refused a version (fedge.transport.reports): who, where, why."""

    reporter: str  # the device or gateway that refused it
    tier: Literal["device", "gateway"]
    via: str | None = None  # the gateway that forwarded a device's report (None: direct, own)
    check: str  # the check that failed: release, load, smoke, accuracy
    reason: str = ""
    sequence: int | None = None  # the manifest that named the version, if any
    count: int = 1  # how often it was reported
    first_at: float
    last_at: float


class ModelVersionView(_Msg):
    """A model version in the registry: lineage, metrics, status (fedge.coordinator.registry)."""

    sha256: Sha256
    version: str  # <job>/r<round>
    job_id: Name
    round: int | None
    parent_sha256: str | None
    size: int
    metrics: dict[str, float] = Field(default_factory=dict)
    status: Literal["candidate", "production", "retired", "rejected", "rolled_back"]
    status_reason: str = ""
    signed: bool = False
    task_name: str = ""
    created_at: float
    rollout: RolloutView | None = None  # its staged rollout, if it had one
    # the devices' evaluation of it (in the next round, before training); None: not yet
    federated: FederatedEvaluationView | None = None
    epsilon: float | None = None  # the job's ε spent when it was published (None: no DP)
    refusals: list[RefusalView] = Field(default_factory=list)  # by devices and gateways


class ModelDiff(_Msg):
    """Two versions side by side: metric changes (b − a) and how far apart their weights are."""

    a: ModelVersionView
    b: ModelVersionView
    # centralised metrics by name; the federated evaluation's as federated_accuracy/_loss
    metric_deltas: dict[str, float] = Field(default_factory=dict)
    l2_distance: float | None = None  # None: the tensors differ in names or shapes
    max_abs_difference: float | None = None
