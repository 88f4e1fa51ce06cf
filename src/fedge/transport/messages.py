"""Wire protocol v1: the JSON control messages, validated by pydantic.

Tensors never travel as JSON: they travel as the no-pickle payload of :mod:`fedge.core.serde`
with the binding fields below in its string metadata. Every message a device or gateway sends
is bound to (job, round, sender) and carries a fresh ``nonce``; the sender's id must equal the
subject of its TLS client certificate; receivers refuse replays (a nonce seen before), stale
rounds and senders not allowed for the round.

Endpoints (all under ``/v1``; devices cannot tell a gateway from a coordinator):

========================================  ===========  ===========================================
``POST /v1/checkin``                       device       CheckInRequest → CheckInResponse
``GET  /v1/models/{sha256}``              device, gw   model payload (``application/octet-stream``)
``GET  /v1/models/{sha256}/release``      device, gw   → ModelRelease (signed metadata; 404 unsigned)
``GET  /v1/jobs/{job}/production``        device, gw   → ModelRelease: the signed release manifest
``POST /v1/jobs/{job}/health``            device, gw   HealthReport → Receipt (canary rollouts)
``POST /v1/jobs/{job}/rounds/{r}/updates``  device       update payload → Receipt
``POST /v1/gateway/checkin``              gateway      GatewayCheckIn → GatewayAssignments
``POST /v1/jobs/{job}/rounds/{r}/partials`` gateway      partial-sum payload → Receipt
``POST /v1/jobs/{job}/rounds/{r}/secagg/join``   device  SecAggJoin → Receipt
``POST /v1/jobs/{job}/rounds/{r}/secagg``         device  secagg wire message → Receipt
``GET  /v1/jobs/{job}/rounds/{r}/secagg/inbox``   device  ?after=N → SecAggInbox (long poll)
``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg/join``  gw  SecAggJoin (forwarded) → Receipt
``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg``       gw  secagg message or RelaySum → Receipt
``GET  /v1/gateway/jobs/{job}/rounds/{r}/secagg/inbox/{device}``  gw  → SecAggInbox
``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg/batch``  gw  SecAggBatch → SecAggBatchReceipt
``GET  /v1/gateway/jobs/{job}/rounds/{r}/secagg/inbox``  gw  ?after=N → SecAggSiteInbox (site)
``POST /v1/admin/jobs``                    admin        JobSpec → JobView (201)
``GET  /v1/admin/jobs``                    admin        → list[JobView]
``GET  /v1/admin/jobs/{job}``              admin        → JobView
``POST /v1/admin/jobs/{job}/pause``        admin        → JobView
``POST /v1/admin/jobs/{job}/resume``       admin        → JobView
``GET  /v1/admin/devices``                 admin        → list[DeviceView]
``GET  /v1/admin/jobs/{job}/models``       admin        → list[ModelVersionView]
``GET  /v1/admin/models/{sha256}``         admin        → ModelVersionView
``GET  /v1/admin/models/{sha256}/payload`` admin        model payload (export)
``POST /v1/admin/models/{sha256}/promote`` admin        → ModelVersionView
``POST /v1/admin/models/{sha256}/reject``  admin        → ModelVersionView
``POST /v1/admin/jobs/{job}/rollback``     admin        → ModelVersionView (the restored one)
``GET  /v1/admin/models/{a}/diff/{b}``     admin        → ModelDiff
``POST /v1/admin/devices/{device}/revoke`` admin        → DeviceView
``GET  /v1/health``                        any (mTLS)   → Health
========================================  ===========  ===========================================

Every refusal is an :class:`ErrorBody` with the status of :mod:`fedge.transport.errors`.

Update payload metadata (``UPDATE_KEYS``): kind="update", job, round, device, nonce,
num_examples, train_loss; optionally the federated evaluation of the round's model on the
device's data before training (all or none: eval_examples, eval_correct, eval_loss_sum; see
:mod:`fedge.aggregation.evaluation`); arrays: the model's parameter names, float32 deltas
(local − global).
Partial payload metadata (``PARTIAL_KEYS``): kind="partial", job, round, gateway, site, nonce,
total_weight, num_accepted, contributors (JSON list of device ids), rejected (JSON list of
[device, reason]); optionally the sums of its devices' federated evaluations (all or none:
eval_examples, eval_correct, eval_loss_sum, eval_devices); arrays: the model's parameter names,
weighted sums (float32 from current gateways, float64 accepted).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PARTIAL_KEYS",
    "PROTOCOL_VERSION",
    "UPDATE_KEYS",
    "CheckInRequest",
    "CheckInResponse",
    "DeviceCertificates",
    "DeviceRegistration",
    "DeviceView",
    "Eligibility",
    "ErrorBody",
    "FederatedEvaluationView",
    "GatewayAssignments",
    "GatewayCheckIn",
    "Health",
    "HealthReport",
    "JobSpec",
    "JobView",
    "KeyBinding",
    "ModelDiff",
    "ModelRelease",
    "ModelVersionView",
    "PrivacyPlan",
    "Receipt",
    "RolloutView",
    "RoundAssignment",
    "RoundView",
    "SecAggBatch",
    "SecAggBatchReceipt",
    "SecAggInbox",
    "SecAggItemResult",
    "SecAggJoin",
    "SecAggPlan",
    "SecAggRelayed",
    "SecAggSiteInbox",
    "SecAggSiteMessage",
    "StrategySpec",
    "TaskAssignment",
    "TrainingPlan",
    "Wait",
    "new_nonce",
]

PROTOCOL_VERSION = 1
UPDATE_KEYS = ("kind", "job", "round", "device", "nonce", "num_examples", "train_loss")
PARTIAL_KEYS = (
    "kind", "job", "round", "gateway", "site", "nonce",
    "total_weight", "num_accepted", "contributors", "rejected",
)  # fmt: skip

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Nonce = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# a round's W3C trace context (fedge.telemetry.tracing): later work is parented to the round
TraceParent = Annotated[str, Field(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


def new_nonce() -> str:
    """A fresh 128-bit nonce, hex."""
    return secrets.token_hex(16)


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(_Msg):
    """Every refusal: a stable machine code and a sentence that says what to do."""

    error: str  # e.g. "replayed_nonce", "stale_round", "wrong_site", "payload_too_large"
    detail: str


class Health(_Msg):
    """``GET /v1/health``: the server is up and speaks this protocol version."""

    status: Literal["ok"] = "ok"
    protocol: int = PROTOCOL_VERSION


# -- device ⇄ gateway/coordinator -----------------------------------------------------------
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


class SecAggPlan(_Msg):
    """Secure aggregation is on for the round: how the device builds its vector and waits.

    ``session`` names the round ("job/round"); the cryptographic session id and the exact
    :class:`~fedge.secagg.SessionParams` come later, in the coordinator's signed round setup.
    ``params`` holds ``weighting`` ("examples" or "uniform"), ``max_examples`` (the weight cap
    for "examples") and ``phase_timeout_s`` (the coordinator's per-phase deadline).
    """

    session: str
    params: dict[str, float | int | str | bool]


B64Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}=$")]  # 32 bytes, base64


class KeyBinding(_Msg):
    """A per-round Ed25519 identity key, proven by the holder's fleet certificate.

    ``proof`` is the ECDSA signature, with the certificate's key, over
    :func:`fedge.identity.binding.binding_message` (role, name, job, round, key).
    """

    role: Literal["device", "coordinator"]
    name: Name
    identity_key: B64Key
    certificate: str = Field(max_length=16_384)  # PEM
    proof: str = Field(max_length=256)  # base64 DER ECDSA signature


class SecAggJoin(_Msg):
    """Device → gateway → coordinator: "I trained; count me in the secure sum of this round"."""

    job_id: Name
    round: int = Field(ge=1)
    device_id: Name
    nonce: Nonce
    binding: KeyBinding


class SecAggInbox(_Msg):
    """The secagg messages waiting for one device, from position ``after`` on.

    ``messages`` are base64 :func:`fedge.secagg.messages.to_wire` payloads; ``next`` is the
    cursor to ask from next time. ``bindings`` are the proven keys of the coordinator and the
    device's neighbours (present once the session started). ``state`` is "joining" until the
    coordinator starts the session, "running", then "done" or "abandoned" (with ``reason``).
    """

    state: Literal["joining", "running", "done", "abandoned"]
    messages: list[str] = Field(default_factory=list, max_length=64)
    next: int = Field(0, ge=0)
    bindings: list[KeyBinding] = Field(default_factory=list)
    phase: str = ""
    phase_deadline: float | None = None  # when the coordinator closes the current phase
    relay_deadline: float | None = None  # when a gateway must forward its masked sum
    reason: str = ""


MAX_BATCH_ITEMS = 256  # items of one SecAggBatch (the gateway splits larger batches)
MAX_SITE_MESSAGES = 512  # messages of one SecAggSiteInbox page
B64Message = Annotated[str, Field(max_length=256 * 1024, pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


class SecAggRelayed(_Msg):
    """One device's secagg control message (base64 wire), relayed in a batch by its gateway."""

    device_id: Name  # must be the message's sender, and have joined through this gateway
    message: B64Message


class SecAggBatch(_Msg):
    """Gateway → coordinator: many of its devices' joins and control messages in one request.

    Each item is checked on its own, as if it had come alone (the join's key binding against
    the fleet CA and the gateway's site; a message against the device's join through this
    gateway); a refused item does not refuse the others. Masked inputs never travel here:
    the gateway sums them (one RelaySum, ``POST .../secagg``).
    """

    joins: list[SecAggJoin] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)
    messages: list[SecAggRelayed] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)


class SecAggItemResult(_Msg):
    """The outcome of one batch item: accepted (maybe a duplicate), or refused with the status
    and detail a request of its own would have got (:mod:`fedge.transport.errors`)."""

    accepted: bool
    duplicate: bool = False
    status: int = Field(200, ge=200, le=599)
    error: str = ""  # the ErrorBody code when refused
    reason: str = ""


class SecAggBatchReceipt(_Msg):
    """One result per item of a :class:`SecAggBatch`, in order."""

    joins: list[SecAggItemResult] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)
    messages: list[SecAggItemResult] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)


class SecAggSiteMessage(_Msg):
    """A message for one of the gateway's devices (base64 wire)."""

    device_id: Name
    message: B64Message


class SecAggSiteInbox(_Msg):
    """The secagg messages for ALL of a gateway's devices, from site cursor ``after`` on.

    The gateway fans them out to its devices' own inboxes. ``bindings`` (in the page read from
    cursor 0 once the session started) are the proven keys of the coordinator (first) and of
    every neighbour of the site's devices; ``neighbours`` says whose keys each device gets.
    State, phase and deadlines as in :class:`SecAggInbox`.
    """

    state: Literal["joining", "running", "done", "abandoned"]
    messages: list[SecAggSiteMessage] = Field(default_factory=list, max_length=MAX_SITE_MESSAGES)
    next: int = Field(0, ge=0)
    bindings: list[KeyBinding] = Field(default_factory=list)
    neighbours: dict[str, list[str]] = Field(default_factory=dict)
    phase: str = ""
    phase_deadline: float | None = None
    relay_deadline: float | None = None
    reason: str = ""


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
    """A device's health check of a version a release manifest told it to serve (canary).

    Devices send it to their gateway, which fills in ``device_id`` (the certificate's subject)
    and forwards it to the coordinator. ``check``: "passed", or the check that failed --
    "release" (signature or hash), "load", "smoke" (prediction shape or finiteness) or
    "accuracy" (below the holdout floor).
    """

    sha256: Sha256
    sequence: int = Field(ge=1)  # the manifest that named the version
    check: Literal["passed", "release", "load", "smoke", "accuracy"]
    holdout_accuracy: float | None = Field(None, ge=0, le=1)
    reason: str = Field("", max_length=500)
    device_id: Name | None = None  # set by the gateway that forwards it


class Receipt(_Msg):
    """Answer to an uploaded update or partial sum. ``duplicate``: already had it (idempotent)."""

    accepted: bool
    duplicate: bool = False
    reason: str = ""


# -- gateway ⇄ coordinator ------------------------------------------------------------------
class GatewayCheckIn(_Msg):
    gateway_id: Name
    site: Name
    nonce: Nonce
    online_devices: int = Field(ge=0)
    eligible_devices: int = Field(ge=0)


class RoundAssignment(_Msg):
    """A round's quota for one gateway's site."""

    job_id: Name
    round: int = Field(ge=1)
    task_name: str
    model_sha256: Sha256
    quota: int = Field(ge=0)  # devices the gateway may hand this round out to
    training_deadline: float  # devices' updates due (unix seconds)
    report_deadline: float  # the gateway's partial sum due
    plan: TrainingPlan
    privacy: PrivacyPlan = PrivacyPlan()
    secagg: SecAggPlan | None = None
    selector: dict[str, str] = Field(default_factory=dict)  # device labels required
    traceparent: TraceParent | None = None  # the gateway's share is a span of the round's trace


class GatewayAssignments(_Msg):
    assignments: list[RoundAssignment]
    retry_after_s: float = Field(ge=0)


class DeviceCertificates(_Msg):
    """``POST /v1/gateway/devices``: certificates of devices a gateway admitted (base64 DER), so
    the coordinator learns each device's site from the fleet CA before a partial names it."""

    certificates: list[Annotated[str, Field(max_length=4096)]] = Field(max_length=256)


class DeviceRegistration(_Msg):
    """The answer: devices whose certificate proved they belong to the gateway's site, and the
    refused ones with why (another site, another CA, expired, revoked, not a device)."""

    registered: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)


# -- admin ------------------------------------------------------------------------------------
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


class ModelDiff(_Msg):
    """Two versions side by side: metric changes (b − a) and how far apart their weights are."""

    a: ModelVersionView
    b: ModelVersionView
    # centralised metrics by name; the federated evaluation's as federated_accuracy/_loss
    metric_deltas: dict[str, float] = Field(default_factory=dict)
    l2_distance: float | None = None  # None: the tensors differ in names or shapes
    max_abs_difference: float | None = None
