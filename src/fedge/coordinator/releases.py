"""The coordinator's side of signed releases: sign each model version it publishes.

With a release key configured (``release_key`` in ``coordinator.toml``; ``fedge pki init``
creates ``pki/release.key``), every model version -- a job's initial model and each committed
round's -- gets a :class:`~fedge.coordinator.schema.ReleaseRow`, served at
``GET /v1/models/{sha256}/release``. Without one, versions are unsigned, and gateways and devices
that hold the release public key refuse them.
"""

from __future__ import annotations

from fedge.coordinator.schema import ModelVersionRow, ReleaseRow
from fedge.identity.signing import ReleaseSigningKey
from fedge.transport import messages as m
from fedge.transport.releases import make_release, release_metadata

__all__ = ["release_view", "sign_version"]


def sign_version(
    key: ReleaseSigningKey | None, version: ModelVersionRow, task_name: str, now: float
) -> ReleaseRow | None:
    """The release row signing ``version`` (None when the coordinator has no release key)."""
    if key is None:
        return None
    metadata = release_metadata(version.job_id, version.round, task_name, version.parent_sha256)
    release = make_release(key, version.sha256, metadata)
    return ReleaseRow(
        sha256=version.sha256,
        release_metadata=release.metadata,
        signature=release.signature,
        created_at=now,
    )


def release_view(row: ReleaseRow) -> m.ModelRelease:
    """The wire form of a stored release."""
    return m.ModelRelease(
        sha256=row.sha256, metadata=dict(row.release_metadata), signature=row.signature
    )
