"""Keep the device's predictor on its job's production model version.

:meth:`ProductionFollower.sync` asks the gateway which version to serve
(``GET /v1/jobs/{job}/production``): a signed release manifest (:mod:`fedge.transport.manifests`),
refused when its signature fails or its sequence is lower than one accepted before (a downgrade
or replay). A new version is downloaded, its release checked with the
release public key (a tampered, wrongly signed, foreign or unsigned model is refused), decoded,
health-checked and hot-swapped into the :class:`~fedge.device.predictor.Predictor`. When the
coordinator rolls back, production names a version the predictor still keeps, and the predictor
rolls back to it without a download. A refused version leaves the version being served in place.

**Refusals are remembered by manifest**, not by model hash: the manifest refused (or the one
that named the model refused) is not acted on again, so a forged manifest naming a model does
not stop the device from loading that model when a genuine manifest names it later.

**Reports** go to the gateway (``POST /v1/jobs/{job}/health``, :mod:`fedge.transport.reports`),
which forwards them to the coordinator: every refusal, whatever the manifest's status, and for a
version on the canary gateways (manifest status ``canary``) the passed health check too. A
report the gateway cannot take now is sent again at the next sync.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fedge.device.predictor import Predictor
from fedge.device.work import load_model
from fedge.errors import (
    DowngradeError,
    FedgeError,
    SignatureError,
    UnknownNameError,
    ValidationError,
)
from fedge.identity.signing import ReleaseVerifyKey
from fedge.transport.manifests import ManifestGuard, read_manifest
from fedge.transport.messages import HealthReport, ModelRelease, Receipt
from fedge.transport.releases import check_release
from fedge.transport.reports import ReportQueue, refusal_check, refusal_report

__all__ = ["ProductionFollower", "ProductionLink", "manifest_key"]

log = logging.getLogger(__name__)


def manifest_key(pointer: ModelRelease) -> str:
    """What identifies one manifest: the SHA-256 of its hash, metadata and signature."""
    blob = json.dumps(
        [pointer.sha256, dict(sorted(pointer.metadata.items())), pointer.signature],
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _sequence(pointer: ModelRelease) -> int | None:
    """The sequence a manifest claims (unverified), or None."""
    try:
        return int(pointer.metadata.get("sequence", ""))
    except ValueError:
        return None


class ProductionLink(Protocol):
    """What the follower needs from the gateway (a FedgeClient has both)."""

    def production(self, job_id: str) -> ModelRelease:
        """The job's production version (UnknownNameError: none yet)."""
        ...

    def model(self, sha256: str) -> bytes:
        """A model payload."""
        ...


@dataclass
class ProductionFollower:
    """Swaps ``predictor`` to the version the job's release manifest names; rolls back with it."""

    link: ProductionLink
    predictor: Predictor
    job_id: str
    release_key: ReleaseVerifyKey | None = None  # set: refuse models without a valid release
    # manifest key (manifest_key) -> why it was refused: that manifest is not acted on again
    refused: dict[str, str] = field(default_factory=dict)
    # the newest manifest accepted: an older one (a downgrade or replay) is refused
    guard: ManifestGuard = field(default_factory=ManifestGuard)
    # where refusals and canary health reports go (the gateway); None: not reported
    health_sink: Callable[[str, HealthReport], Receipt] | None = None
    downgrades_refused: int = 0
    reports: ReportQueue | None = None  # default: a queue to health_sink

    def __post_init__(self) -> None:
        if self.reports is None:
            self.reports = ReportQueue(self.health_sink)

    def sync(self) -> str | None:
        """Serve the version the manifest names; returns the version served (None: nothing yet)."""
        assert self.reports is not None
        self.reports.flush()  # reports the gateway could not take before
        try:
            pointer = self.link.production(self.job_id)
        except UnknownNameError:
            return self.predictor.version  # no production version yet
        key = manifest_key(pointer)
        if key in self.refused:
            return self.predictor.version
        sha = pointer.sha256
        try:
            manifest = read_manifest(pointer, self.release_key)
            if not self.guard.check(manifest):
                return self.predictor.version  # the manifest already acted on
        except DowngradeError as exc:
            self.downgrades_refused += 1
            log.error("%s", exc)
            return self.predictor.version
        except (SignatureError, ValidationError) as exc:
            self._refuse(key, sha, _sequence(pointer), exc, f"the release manifest of {sha[:12]}")
            return self.predictor.version
        version = manifest.version
        if version == self.predictor.version:
            self.guard.accept(manifest)
            return version
        if version in self.predictor.versions:  # the coordinator rolled back to a kept version
            self.predictor.rollback(to=version)
            self.guard.accept(manifest)
            log.info("job %s rolled back: serving %s again", self.job_id, version)
            return version
        try:
            if pointer.metadata.get("task", self.predictor.task.name) != self.predictor.task.name:
                raise ValidationError(
                    f"production model {version} is for task {pointer.metadata.get('task')!r},"
                    f" this predictor serves {self.predictor.task.name!r}"
                )
            payload = self.link.model(sha)
            if self.release_key is not None:
                check_release(self.release_key, sha, payload, pointer)
            served = self.predictor.load(version, load_model(payload, sha))
        except (SignatureError, ValidationError) as exc:
            self._refuse(key, sha, manifest.sequence, exc, f"production model {version}")
            return self.predictor.version
        self.guard.accept(manifest)
        if manifest.status == "canary":  # its health counts towards widening the rollout
            report = HealthReport(
                sha256=sha,
                sequence=manifest.sequence,
                check="passed",
                holdout_accuracy=served.holdout_accuracy,
                reason=served.skipped[:500],
            )
            self.reports.put(self.job_id, report)
        log.info("serving %s (%s, manifest %d)", version, sha[:12], manifest.sequence)
        return version

    def _refuse(self, key: str, sha: str, sequence: int | None, exc: Exception, what: str) -> None:
        """Remember the manifest as refused, log it and report it upstream."""
        assert self.reports is not None
        self.refused[key] = str(exc)
        log.error("refused %s: %s", what, exc)
        self.reports.put(self.job_id, refusal_report(sha, refusal_check(exc), str(exc), sequence))

    def run(self, stop: threading.Event, poll_s: float = 5.0) -> None:
        """Sync every ``poll_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.sync()
            except FedgeError as exc:  # gateway unreachable and the like: try again later
                log.warning("production sync for %s failed: %s", self.job_id, exc)
            stop.wait(poll_s)
