"""Wire protocol v1, gateway ⇄ coordinator: check-in, round assignments, device registration."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fedge.transport.messages._base import Name, Nonce, Sha256, TraceParent, _Msg
from fedge.transport.messages._device import PrivacyPlan, TrainingPlan
from fedge.transport.messages._secagg import SecAggPlan

PARTIAL_KEYS = (
    "kind", "job", "round", "gateway", "site", "nonce",
    "total_weight", "num_accepted", "contributors", "rejected",
)  # fmt: skip


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
