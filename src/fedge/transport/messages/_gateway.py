"""Wire protocol v1, gateway ⇄ coordinator: check-in, round assignments, device registration."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from fedge.transport.messages._base import Name, Nonce, Sha256, TraceParent, _Msg
from fedge.transport.messages._device import PrivacyPlan, TrainingPlan
from fedge.transport.messages._secagg import SecAggPlan

PARTIAL_KEYS = (
    "kind", "job", "round", "gateway", "site", "nonce",
    "total_weight", "num_accepted", "contributors", "rejected",
)  # fmt: skip


# A device's labels as a gateway forwards them (jobs' selectors match them): at most MAX_LABELS
# keys of 1..64 printable characters, values of up to 128.
MAX_LABELS = 32
LabelKey = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,64}$")]
LabelValue = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{0,128}$")]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
MAX_LABELLED_DEVICES = 500  # devices whose labels one GatewayCheckIn forwards
MAX_REVOKED_DEVICES = 100_000  # revoked device ids one GatewayAssignments carries


class GatewayCheckIn(_Msg):
    gateway_id: Name
    site: Name
    nonce: Nonce
    online_devices: int = Field(ge=0)
    eligible_devices: int = Field(ge=0)
    # optional (older gateways omit it): the labels of devices online and eligible at the site,
    # those new or changed since the gateway last sent them and, now and then, the others again,
    # so that the coordinator counts the devices matching a job's selector per gateway
    device_labels: dict[Name, Labels] = Field(default_factory=dict, max_length=MAX_LABELLED_DEVICES)


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
    # optional (older coordinators omit it): every device revoked through the admin API
    # (``fedge devices revoke``) that may reach this gateway -- its site's, and those whose site
    # is not known yet. The whole list each time: the gateway refuses exactly these devices.
    revoked_devices: list[Name] = Field(default_factory=list, max_length=MAX_REVOKED_DEVICES)


class DeviceCertificates(_Msg):
    """``POST /v1/gateway/devices``: certificates of devices a gateway admitted (base64 DER), so
    the coordinator learns each device's site from the fleet CA before a partial names it."""

    certificates: list[Annotated[str, Field(max_length=4096)]] = Field(max_length=256)


class DeviceRegistration(_Msg):
    """The answer: devices whose certificate proved they belong to the gateway's site, and the
    refused ones with why (another site, another CA, expired, revoked, not a device)."""

    registered: list[str] = Field(default_factory=list)
    refused: dict[str, str] = Field(default_factory=dict)
