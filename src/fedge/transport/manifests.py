"""Signed release manifests: which version a gateway or device must serve, and that it is current.

A model version's release (:mod:`fedge.transport.releases`) proves *what* a model is; it stays
valid forever, so on its own it cannot say which version is production *now* -- a gateway or
device handed an old version's release would serve it (a downgrade). A **release manifest** is a
release whose signed metadata also carries:

- ``kind`` = ``"manifest"``;
- ``status``: ``"production"`` (for every gateway) or ``"canary"`` (only for the canary
  gateways of a staged rollout, :mod:`fedge.coordinator.rollouts`);
- ``sequence``: per job, one more than the manifest issued before (decimal string);
- ``issued_at``: unix seconds (decimal string).

It travels as a :class:`~fedge.transport.messages.ModelRelease` (``GET /v1/jobs/{job}/production``)
and is signed like any release (the same canonical message, the same key), so its signature also
covers the content hash. Gateways and devices keep the highest sequence they accepted per job
(:class:`ManifestGuard`) and refuse a lower one with :class:`~fedge.errors.DowngradeError`, and a
second, different manifest under a sequence already accepted. A rollback is therefore a *new*
manifest, with a higher sequence, that names the older version.

Sequences live in the coordinator's database. A coordinator started on a new, empty database
begins again at 1, and the fleet refuses its manifests until each gateway's and device's
``<state_dir>/manifests.json`` is removed: restore the database from a backup instead.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from fedge.errors import DowngradeError, ValidationError
from fedge.identity._files import write_atomic
from fedge.identity.signing import ReleaseSigningKey, ReleaseVerifyKey
from fedge.transport.messages import ModelRelease
from fedge.transport.releases import make_release, verify_signature

__all__ = ["Manifest", "ManifestGuard", "ManifestStatus", "make_manifest", "read_manifest"]

log = logging.getLogger(__name__)

ManifestStatus = Literal["production", "canary"]
_KIND = "manifest"


@dataclass(frozen=True)
class Manifest:
    """A release manifest, its fields parsed (``release`` is what was signed and sent)."""

    job: str
    sha256: str
    version: str
    status: ManifestStatus
    sequence: int
    issued_at: float
    release: ModelRelease


def make_manifest(
    key: ReleaseSigningKey | None,
    sha256: str,
    version_metadata: dict[str, str],
    *,
    status: ManifestStatus,
    sequence: int,
    issued_at: float,
) -> ModelRelease:
    """The manifest naming ``sha256`` (its release metadata plus the manifest fields), signed.

    Without a key the signature is empty: gateways and devices holding the release public key
    refuse it, as they refuse unsigned models.
    """
    if sequence < 1:
        raise ValueError("manifest sequences start at 1")
    metadata = {
        **version_metadata,
        "kind": _KIND,
        "status": status,
        "sequence": str(sequence),
        "issued_at": repr(float(issued_at)),
    }
    if key is None:
        return ModelRelease(sha256=sha256, metadata=metadata, signature="")
    return make_release(key, sha256, metadata)


def read_manifest(release: ModelRelease, key: ReleaseVerifyKey | None) -> Manifest:
    """Parse a manifest and, given the release key, verify its signature.

    :class:`SignatureError` for a missing, malformed or wrong signature; :class:`ValidationError`
    for a release that is not a manifest (say, an older coordinator's bare production pointer).
    """
    md = release.metadata
    if key is not None:
        verify_signature(key, release)
    if md.get("kind") != _KIND:
        raise ValidationError(
            f"the production pointer for model {release.sha256} is not a release manifest"
            " (no sequence): upgrade the coordinator"
        )
    status = md.get("status")
    if status not in ("production", "canary"):
        raise ValidationError(f"manifest status {status!r} is neither production nor canary")
    try:
        sequence, issued_at = int(md["sequence"]), float(md["issued_at"])
    except (KeyError, ValueError):
        raise ValidationError("a manifest needs a whole sequence and an issued_at time") from None
    if sequence < 1 or not math.isfinite(issued_at):
        raise ValidationError(f"manifest sequence {sequence} / time {issued_at} out of range")
    return Manifest(
        job=md.get("job", ""),
        sha256=release.sha256,
        version=md.get("version") or release.sha256[:12],
        status=cast(ManifestStatus, status),
        sequence=sequence,
        issued_at=issued_at,
        release=release,
    )


class ManifestGuard:
    """The newest manifest accepted per job; refuses older ones (downgrade, replay).

    With ``path`` the high-water marks survive restarts (JSON, written atomically).
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._accepted: dict[str, ModelRelease] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                self._accepted = {j: ModelRelease.model_validate(r) for j, r in raw.items()}
            except (OSError, ValueError) as exc:
                raise ValidationError(
                    f"the accepted-manifest file {path} is unreadable ({exc}); move it away only"
                    " if you trust the next manifest the coordinator sends"
                ) from None

    def accepted(self, job: str, key: ReleaseVerifyKey | None = None) -> Manifest | None:
        """The newest manifest accepted for ``job``, or None."""
        with self._lock:
            release = self._accepted.get(job)
        return read_manifest(release, key) if release is not None else None

    def check(self, manifest: Manifest) -> bool:
        """True when ``manifest`` is newer than the one accepted, False when it is that one.

        :class:`DowngradeError` for a lower sequence, or another manifest under the same one.
        """
        with self._lock:
            held = self._accepted.get(manifest.job)
        if held is None:
            return True
        seq = int(held.metadata["sequence"])
        if manifest.sequence > seq:
            return True
        if manifest.sequence == seq and held == manifest.release:
            return False
        what = "an older" if manifest.sequence < seq else "a different"
        raise DowngradeError(
            f"{what} release manifest for job {manifest.job!r} (sequence {manifest.sequence},"
            f" {manifest.version}) than the one accepted (sequence {seq},"
            f" {held.metadata.get('version')}): a downgrade or replay; refused, keeping the"
            " accepted one (if the coordinator's database was replaced, remove this node's"
            " manifests.json)"
        )

    def status_of(self, sha256: str) -> str | None:
        """The status (production, canary) of an accepted manifest naming ``sha256``, or None."""
        with self._lock:
            for release in self._accepted.values():
                if release.sha256 == sha256:
                    return str(release.metadata.get("status"))
        return None

    def accept(self, manifest: Manifest) -> None:
        """Record ``manifest`` as the newest for its job (call after :meth:`check` passed)."""
        with self._lock:
            held = self._accepted.get(manifest.job)
            if held is not None and int(held.metadata["sequence"]) >= manifest.sequence:
                return
            self._accepted[manifest.job] = manifest.release
            if self._path is not None:
                data = {j: r.model_dump() for j, r in self._accepted.items()}
                write_atomic(self._path, json.dumps(data, sort_keys=True).encode())
        log.info(
            "accepted release manifest %d for %s: %s (%s)",
            manifest.sequence,
            manifest.job,
            manifest.version,
            manifest.status,
        )
