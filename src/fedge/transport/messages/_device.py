"""Wire protocol v1, device ⇄ gateway/coordinator: check-in, tasks, releases, health, receipts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fedge.transport.messages._base import Name, Nonce, Sha256, TraceParent, _Msg
from fedge.transport.messages._secagg import SecAggPlan

UPDATE_KEYS = ("kind", "job", "round", "device", "nonce", "num_examples", "train_loss")


class Eligibility(_Msg):
    """What the device's eligibility policy saw when it decided to ask for work."""

    charging: bool | None = None
    idle: bool | None = None
    unmetered: bool | None = None
    num_examples: int = Field(ge=0)


class CheckInRequest(_Msg):
    device_id: Name
    nonce: Nonce
    eligibility: Eligibility
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    privacy_remaining: float | None = Field(None, ge=0)  # ε the device's ledger still allows
    # long poll (optional: older devices omit it and are answered at once): the device waits up
    # to this long for a task; the server holds the request up to its own long_poll_s bound
    wait_s: float = Field(0.0, ge=0, le=600)


class TrainingPlan(_Msg):
    """The client optimizer (mirrors fedge.training.LocalTrainingConfig)."""

    epochs: int = Field(1, ge=1, le=100)
    batch_size: int | None = Field(10, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    proximal_mu: float = Field(0.0, ge=0)
    # "balanced": the device weighs its examples by the inverse frequency of their class in its
    # own data, so rare classes count (optional: older peers omit it)
    class_weighting: Literal["none", "balanced"] = "none"


class PrivacyPlan(_Msg):
    """What the device must do to its update before it leaves, and what it costs its ledger."""

    mode: Literal["none", "central", "local", "distributed"] = "none"
    clip_norm: float | None = Field(None, gt=0)
    local_noise_multiplier: float | None = Field(None, ge=0)
    epsilon_cost: float = Field(0.0, ge=0)  # ε this round adds to the device's ledger
    # distributed DP (optional: older peers omit them): the integer grid step γ, each device's
    # discrete Gaussian σ in grid steps, and the L2 bound Δ₂ its rounded update must stay within
    granularity: float | None = Field(None, gt=0)
    noise_stddev: float | None = Field(None, ge=0)
    rounding_bound: float | None = Field(None, gt=0)


class TaskAssignment(_Msg):
    kind: Literal["task"] = "task"
    job_id: Name
    round: int = Field(ge=1)
    task_name: str
    model_sha256: Sha256
    deadline: float  # unix seconds; the update must arrive before it
    plan: TrainingPlan
    privacy: PrivacyPlan = PrivacyPlan()
    secagg: SecAggPlan | None = None
    nonce: Nonce  # echo: binds the assignment to the check-in that asked for it
    traceparent: TraceParent | None = None  # the device's work is a span of the round's trace


class Wait(_Msg):
    kind: Literal["wait"] = "wait"
    retry_after_s: float = Field(ge=0)
    reason: str


CheckInResponse = Annotated[TaskAssignment | Wait, Field(discriminator="kind")]


class ModelRelease(_Msg):
    """A model version's release signature: Ed25519 over its sha256 and ``metadata``
    (:func:`fedge.identity.signing.canonical_release_message`), base64 in ``signature``."""

    sha256: Sha256
    metadata: dict[str, str] = Field(max_length=32)  # job, round, task, version, parent
    signature: str = Field(max_length=128)  # base64 of the 64-byte signature


class HealthReport(_Msg):
    """A device's health check of a version a release manifest told it to serve (canary), or a
    refusal of a model by a device or a gateway (any time, canary or not).

    Devices send it to their gateway, which fills in ``device_id`` (the certificate's subject)
    and forwards it to the coordinator; a gateway sends its own refusals without ``device_id``.
    ``check``: "passed" (canary versions only), or the check that failed -- "release" (signature
    or hash), "load", "smoke" (prediction shape or finiteness) or "accuracy" (below the holdout
    floor). See :mod:`fedge.transport.reports`.
    """

    sha256: Sha256
    # the manifest that named the version; None: no manifest did (a round's model, refused)
    sequence: int | None = Field(None, ge=1)
    check: Literal["passed", "release", "load", "smoke", "accuracy"]
    holdout_accuracy: float | None = Field(None, ge=0, le=1)
    reason: str = Field("", max_length=500)
    device_id: Name | None = None  # set by the gateway that forwards it


class Receipt(_Msg):
    """Answer to an uploaded update or partial sum. ``duplicate``: already had it (idempotent)."""

    accepted: bool
    duplicate: bool = False
    reason: str = ""
