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

The messages are written in one private module per conversation and imported from here, the
one public path: ``_base`` (the base class, names, nonces, errors, health), ``_device`` (device ⇄
gateway/coordinator), ``_gateway`` (gateway ⇄ coordinator), ``_secagg`` (secure aggregation,
relayed by gateways) and ``_admin`` (the admin API).
"""

from __future__ import annotations

from fedge.transport.messages._admin import (
    DeviceView,
    FederatedEvaluationView,
    JobSpec,
    JobView,
    ModelDiff,
    ModelVersionView,
    RefusalView,
    RolloutView,
    RoundView,
    StrategySpec,
)
from fedge.transport.messages._base import PROTOCOL_VERSION, ErrorBody, Health, new_nonce
from fedge.transport.messages._device import (
    UPDATE_KEYS,
    CheckInRequest,
    CheckInResponse,
    Eligibility,
    HealthReport,
    ModelRelease,
    PrivacyPlan,
    Receipt,
    TaskAssignment,
    TrainingPlan,
    Wait,
)
from fedge.transport.messages._gateway import (
    MAX_LABELLED_DEVICES,
    MAX_LABELS,
    MAX_REVOKED_DEVICES,
    PARTIAL_KEYS,
    DeviceCertificates,
    DeviceRegistration,
    GatewayAssignments,
    GatewayCheckIn,
    Labels,
    RoundAssignment,
)
from fedge.transport.messages._secagg import (
    MAX_BATCH_ITEMS,
    MAX_SITE_MESSAGES,
    KeyBinding,
    SecAggBatch,
    SecAggBatchReceipt,
    SecAggInbox,
    SecAggItemResult,
    SecAggJoin,
    SecAggPlan,
    SecAggRelayed,
    SecAggSiteInbox,
    SecAggSiteMessage,
)

__all__ = [
    "MAX_BATCH_ITEMS",
    "MAX_LABELLED_DEVICES",
    "MAX_LABELS",
    "MAX_REVOKED_DEVICES",
    "MAX_SITE_MESSAGES",
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
    "Labels",
    "ModelDiff",
    "ModelRelease",
    "ModelVersionView",
    "PrivacyPlan",
    "Receipt",
    "RefusalView",
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
