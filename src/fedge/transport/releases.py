"""Signed model releases as they travel: make one on the coordinator, check one before use.

The coordinator signs every model version it publishes with the fleet's release key
(:mod:`fedge.identity.signing`): the content's SHA-256 and the metadata below. Gateways and
devices call :func:`check_release` before they cache or load a model; it raises
:class:`~fedge.errors.SignatureError` for a tampered payload, a wrong signature, a signature by
another key, a release naming another model, and a missing (unsigned) release.

Metadata (all strings): ``job``, ``round`` ("0" for a job's initial model), ``task`` (the task
name the weights are for), ``version`` (``<job>/r<round>``, the id a device serves predictions
under) and ``parent`` (the sha256 it was trained from, "" for none).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from fedge.errors import SignatureError
from fedge.identity.signing import (
    ReleaseSigningKey,
    ReleaseVerifyKey,
    sign_release,
    verify_release_digest,
)
from fedge.transport.messages import ModelRelease

__all__ = [
    "check_release",
    "make_release",
    "release_metadata",
    "verify_signature",
    "version_id",
]


def version_id(job_id: str, round_number: int | None) -> str:
    """The human id of a model version: ``<job>/r<round>`` (``r0``: the initial model)."""
    return f"{job_id}/r{round_number or 0}"


def release_metadata(
    job_id: str, round_number: int | None, task_name: str, parent_sha256: str | None
) -> dict[str, str]:
    """The metadata a release signs, besides the content hash."""
    return {
        "job": job_id,
        "round": str(round_number or 0),
        "task": task_name,
        "version": version_id(job_id, round_number),
        "parent": parent_sha256 or "",
    }


def make_release(key: ReleaseSigningKey, sha256: str, metadata: dict[str, str]) -> ModelRelease:
    """Sign ``sha256`` and ``metadata`` with the release key."""
    signature = sign_release(key, sha256, metadata)
    return ModelRelease(
        sha256=sha256, metadata=metadata, signature=base64.b64encode(signature).decode("ascii")
    )


def check_release(
    key: ReleaseVerifyKey, sha256: str, payload: bytes, release: ModelRelease | None
) -> None:
    """Raise :class:`SignatureError` unless ``release`` is a valid signature of ``payload``."""
    if release is None:
        raise SignatureError(f"model {sha256} is unsigned (no release); refusing to use it")
    if release.sha256 != sha256:
        raise SignatureError(
            f"the release is for model {release.sha256}, not {sha256}; refusing to use it"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise SignatureError(
            f"model {sha256} was altered in transit or storage (it hashes to {digest});"
            " refusing to use it"
        )
    verify_signature(key, release)


def verify_signature(key: ReleaseVerifyKey, release: ModelRelease) -> None:
    """Raise :class:`SignatureError` unless ``release.signature`` covers its sha256 and metadata.

    It does not look at the content (see :func:`check_release` for that).
    """
    if not release.signature:
        raise SignatureError(f"model {release.sha256} is unsigned (no release); refusing it")
    try:
        signature = base64.b64decode(release.signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(
            f"the release signature of model {release.sha256} is not base64"
        ) from None
    verify_release_digest(key, release.sha256, release.metadata, signature)
