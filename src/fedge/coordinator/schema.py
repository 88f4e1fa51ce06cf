"""The coordinator's tables (SQLAlchemy 2.0 typed ORM); the same schema on SQLite and PostgreSQL.

Times are unix seconds (float). Round numbers count attempts: a round abandoned and re-run gets
a new number, so every (job, round) names exactly one attempt; ``jobs.committed_rounds`` counts
the model updates that made it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEntryRow",
    "AuditHeadRow",
    "Base",
    "CheckpointRow",
    "DeviceRow",
    "GatewayRow",
    "JobRow",
    "ModelRefusalRow",
    "ModelVersionRow",
    "PartialReceiptRow",
    "ParticipantRow",
    "ReleaseManifestRow",
    "ReleaseRow",
    "RolloutHealthRow",
    "RolloutRow",
    "RoundRow",
    "RoundTraceRow",
    "RoundTrafficRow",
    "SecAggOutcomeRow",
]

_ID = 64
_SHA = 64


class Base(DeclarativeBase):
    """Declarative base of the coordinator schema."""


class JobRow(Base):
    """A training job: its spec (JobSpec JSON), state and progress."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # running | paused | completed | failed
    committed_rounds: Mapped[int] = mapped_column(Integer, default=0)
    model_sha256: Mapped[str | None] = mapped_column(String(_SHA))  # current global model
    fleet_size: Mapped[int] = mapped_column(Integer, default=0)  # N for privacy accounting
    created_at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")


class RoundRow(Base):
    """One round attempt of a job."""

    __tablename__ = "rounds"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    base_sha256: Mapped[str] = mapped_column(String(_SHA))  # the model devices train from
    model_sha256: Mapped[str | None] = mapped_column(String(_SHA))  # what it published
    quotas: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    participants: Mapped[int] = mapped_column(Integer, default=0)
    gateways_reported: Mapped[int] = mapped_column(Integer, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    epsilon: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float | None] = mapped_column(Float)
    training_deadline: Mapped[float | None] = mapped_column(Float)
    report_deadline: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class ParticipantRow(Base):
    """A device counted in a round, and through which gateway (None: directly)."""

    __tablename__ = "participants"
    job_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    gateway_id: Mapped[str | None] = mapped_column(String(_ID))
    nonce: Mapped[str | None] = mapped_column(String(32), unique=True)  # direct updates only
    received_at: Mapped[float] = mapped_column(Float)


class GatewayRow(Base):
    """An edge gateway, as of its last check-in."""

    __tablename__ = "gateways"
    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    site: Mapped[str] = mapped_column(String(_ID))
    last_seen: Mapped[float] = mapped_column(Float)
    online_devices: Mapped[int] = mapped_column(Integer, default=0)
    eligible_devices: Mapped[int] = mapped_column(Integer, default=0)


class DeviceRow(Base):
    """A device the coordinator has heard of (checked in directly or counted in a partial)."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    site: Mapped[str | None] = mapped_column(String(_ID))
    gateway_id: Mapped[str | None] = mapped_column(String(_ID))  # None: talks to us directly
    last_seen: Mapped[float | None] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class ModelVersionRow(Base):
    """A published (or initial) model: its content hash and where it came from."""

    __tablename__ = "model_versions"
    sha256: Mapped[str] = mapped_column(String(_SHA), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    round: Mapped[int | None] = mapped_column(Integer)  # None: the initial model
    parent_sha256: Mapped[str | None] = mapped_column(String(_SHA))
    size: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    # registry status (fedge.coordinator.registry): candidate, production, retired, rejected,
    # rolled_back; and why it last changed (e.g. the release gate's reason)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # when the status last changed (a rollback restores the version that left production last);
    # None: not since the column was added
    status_at: Mapped[float | None] = mapped_column(Float)
    # federated evaluation (fedge.aggregation.evaluation): this version on the devices' own
    # data, before they trained on it (in the rounds that started from it); None: not yet
    federated_accuracy: Mapped[float | None] = mapped_column(Float)
    federated_loss: Mapped[float | None] = mapped_column(Float)
    federated_examples: Mapped[int | None] = mapped_column(Integer)
    federated_devices: Mapped[int | None] = mapped_column(Integer)


class ReleaseRow(Base):
    """A model version's release signature (see :mod:`fedge.transport.releases`)."""

    __tablename__ = "releases"
    sha256: Mapped[str] = mapped_column(ForeignKey("model_versions.sha256"), primary_key=True)
    release_metadata: Mapped[dict[str, str]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(128))  # base64 of the Ed25519 signature
    created_at: Mapped[float] = mapped_column(Float)


class ReleaseManifestRow(Base):
    """A signed release manifest (:mod:`fedge.transport.manifests`): whom to serve which version.

    ``sequence`` grows by one per job with every manifest; ``audience`` is "all" (every gateway)
    or "canary" (the canary gateways of the job's rollout in progress).
    """

    __tablename__ = "release_manifests"
    job_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(ForeignKey("model_versions.sha256"))
    audience: Mapped[str] = mapped_column(String(16))  # all | canary
    release_metadata: Mapped[dict[str, str]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(128))  # base64; "" when unsigned
    issued_at: Mapped[float] = mapped_column(Float)


class RolloutRow(Base):
    """A staged rollout of a production version (see :mod:`fedge.coordinator.canary`)."""

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(_ID), index=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("model_versions.sha256"))
    previous_sha256: Mapped[str | None] = mapped_column(String(_SHA))
    stage: Mapped[str] = mapped_column(String(16))  # canary | widened | halted | superseded
    canary_gateways: Mapped[list[str]] = mapped_column(JSON)
    min_healthy: Mapped[int] = mapped_column(Integer)
    max_failures: Mapped[int] = mapped_column(Integer)
    hold_until: Mapped[float] = mapped_column(Float)
    sequence: Mapped[int] = mapped_column(Integer)  # the canary manifest
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class RolloutHealthRow(Base):
    """A canary device's latest health report on a rollout's version."""

    __tablename__ = "rollout_health"
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(_ID))
    check: Mapped[str] = mapped_column(String(16))  # passed | release | load | smoke | accuracy
    holdout_accuracy: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    reported_at: Mapped[float] = mapped_column(Float)


class ModelRefusalRow(Base):
    """A model version refused by a device or a gateway (:mod:`fedge.transport.reports`): one row
    per version, reporter and failed check, counting how often it was reported.

    ``sha256`` is what the refusal named; it may be no version of the registry (a forged
    manifest's), so it is not a foreign key.
    """

    __tablename__ = "model_refusals"
    __table_args__ = (
        UniqueConstraint("sha256", "reporter", "check", name="uq_refusal_per_reporter"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(_ID), index=True)
    sha256: Mapped[str] = mapped_column(String(_SHA), index=True)
    reporter: Mapped[str] = mapped_column(String(_ID))  # the device or gateway that refused it
    tier: Mapped[str] = mapped_column(String(16))  # device | gateway
    via: Mapped[str | None] = mapped_column(String(_ID))  # the gateway that forwarded it
    check: Mapped[str] = mapped_column(String(16))  # release | load | smoke | accuracy
    reason: Mapped[str] = mapped_column(Text, default="")
    sequence: Mapped[int | None] = mapped_column(Integer)  # the manifest that named it, if any
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[float] = mapped_column(Float)
    last_at: Mapped[float] = mapped_column(Float)


class CheckpointRow(Base):
    """Server state after ``step`` committed rounds: params and optimizer state artifacts."""

    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)  # committed rounds so far
    round: Mapped[int | None] = mapped_column(Integer)  # the round attempt that produced it
    params_sha256: Mapped[str] = mapped_column(String(_SHA))
    opt_state_sha256: Mapped[str] = mapped_column(String(_SHA))
    created_at: Mapped[float] = mapped_column(Float)


class PartialReceiptRow(Base):
    """A gateway's partial aggregate, accepted once: (job, round, gateway) is unique."""

    __tablename__ = "partial_receipts"
    __table_args__ = (UniqueConstraint("job_id", "round", "gateway_id", name="uq_partial_once"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(_ID))
    round: Mapped[int] = mapped_column(Integer)
    gateway_id: Mapped[str] = mapped_column(String(_ID))
    site: Mapped[str] = mapped_column(String(_ID))
    nonce: Mapped[str] = mapped_column(String(32), unique=True)
    num_accepted: Mapped[int] = mapped_column(Integer)
    total_weight: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)


class RoundTrafficRow(Base):
    """A payload the coordinator received for a round, and what it stands for without gateways.

    ``devices``: the device vectors it folds in (0 for a message every design sends as it is,
    like a secure-aggregation key share; 1 for a device's own update; n for a gateway's sum).
    ``direct_bytes``: what a device-direct design would have received instead (n device vectors;
    see :mod:`fedge.coordinator.roundstats`).
    """

    __tablename__ = "round_traffic"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(_ID), index=True)
    round: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(_ID))  # gateway id, or the direct device's id
    kind: Mapped[str] = mapped_column(String(16))  # partial | update | secagg
    bytes: Mapped[int] = mapped_column(Integer)
    devices: Mapped[int] = mapped_column(Integer)
    direct_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[float] = mapped_column(Float)


class SecAggOutcomeRow(Base):
    """How a round's secure-aggregation session ended: tasks handed out, joins, survivors."""

    __tablename__ = "secagg_outcomes"
    job_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    expected: Mapped[int] = mapped_column(Integer)  # tasks handed out (the sum of the quotas)
    joined: Mapped[int] = mapped_column(Integer)  # devices whose key binding was accepted
    survivors: Mapped[int] = mapped_column(Integer)  # devices in the unmasked sum (0: abandoned)
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    ended_at: Mapped[float] = mapped_column(Float)


class AuditEntryRow(Base):
    """One entry of the hash-chained audit log (see :mod:`fedge.telemetry.audit`); append-only.

    ``prev_hash`` is unique: two entries can never follow the same one, so the chain cannot fork
    even if two writers raced past the lock on :class:`AuditHeadRow`.
    """

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(_ID))
    subject: Mapped[str] = mapped_column(String(160), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(_SHA), unique=True)
    hash: Mapped[str] = mapped_column(String(_SHA), unique=True)


class AuditHeadRow(Base):
    """The audit log's last entry as its writer recorded it (one row, id 1), and its append lock."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(_SHA))


class RoundTraceRow(Base):
    """The W3C ``traceparent`` of a round's root span (fedge.telemetry.round_trace): a restarted
    coordinator adds to the trace of a round it abandons, and operators find a round's trace."""

    __tablename__ = "round_traces"
    job_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    traceparent: Mapped[str] = mapped_column(String(55))
