"""Keep the device's predictor on its job's production model version.

:meth:`ProductionFollower.sync` asks the gateway which version to serve
(``GET /v1/jobs/{job}/production``): a signed release manifest (:mod:`fedge.transport.manifests`),
refused when its signature fails or its sequence is lower than one accepted before (a downgrade
or replay). A new version is downloaded, its release checked with the
release public key (a tampered, wrongly signed, foreign or unsigned model is refused and
remembered, so it is not fetched again), decoded, health-checked and hot-swapped into the
:class:`~fedge.device.predictor.Predictor`. When the coordinator rolls back, production names a
version the predictor still keeps, and the predictor rolls back to it without a download.
A refused version leaves the version being served in place. For a version on the canary
gateways (manifest status ``canary``) the device reports its health check to the gateway
(``POST /v1/jobs/{job}/health``), which forwards it to the coordinator.
"""

from __future__ import annotations

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
    HealthCheckError,
    SignatureError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
)
from fedge.identity.signing import ReleaseVerifyKey
from fedge.transport.manifests import Manifest, ManifestGuard, read_manifest
from fedge.transport.messages import HealthReport, ModelRelease, Receipt
from fedge.transport.releases import check_release

__all__ = ["ProductionFollower", "ProductionLink"]

log = logging.getLogger(__name__)


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
    refused: dict[str, str] = field(default_factory=dict)  # sha256 -> reason (not retried)
    # the newest manifest accepted: an older one (a downgrade or replay) is refused
    guard: ManifestGuard = field(default_factory=ManifestGuard)
    # where health reports on canary versions go (the gateway); None: not reported
    health_sink: Callable[[str, HealthReport], Receipt] | None = None
    downgrades_refused: int = 0
    _pending: HealthReport | None = None  # a report not delivered yet (gateway unreachable)

    def sync(self) -> str | None:
        """Serve the version the manifest names; returns the version served (None: nothing yet)."""
        self._send_pending()
        try:
            pointer = self.link.production(self.job_id)
        except UnknownNameError:
            return self.predictor.version  # no production version yet
        sha = pointer.sha256
        if sha in self.refused:
            return self.predictor.version
        try:
            manifest = read_manifest(pointer, self.release_key)
            if not self.guard.check(manifest):
                return self.predictor.version  # the manifest already acted on
        except DowngradeError as exc:
            self.downgrades_refused += 1
            log.error("%s", exc)
            return self.predictor.version
        except (SignatureError, ValidationError) as exc:
            self.refused[sha] = str(exc)
            log.error("refused the release manifest of %s: %s", sha[:12], exc)
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
            self.refused[sha] = str(exc)
            log.error("refused production model %s: %s", version, exc)
            check = "release" if isinstance(exc, SignatureError) else "load"
            if isinstance(exc, HealthCheckError) and exc.check:
                check = exc.check
            self._report(manifest, check, None, str(exc))
            return self.predictor.version
        self.guard.accept(manifest)
        self._report(manifest, "passed", served.holdout_accuracy, "")
        log.info("serving %s (%s, manifest %d)", version, sha[:12], manifest.sequence)
        return version

    def _report(self, manifest: Manifest, check: str, accuracy: float | None, reason: str) -> None:
        """Report the health check of a canary version (production ones are not reported)."""
        if manifest.status != "canary" or self.health_sink is None:
            return
        self._pending = HealthReport(
            sha256=manifest.sha256,
            sequence=manifest.sequence,
            check=check,
            holdout_accuracy=accuracy,
            reason=reason[:500],
        )
        self._send_pending()

    def _send_pending(self) -> None:
        report, sink = self._pending, self.health_sink
        if report is None or sink is None:
            return
        try:
            receipt = sink(self.job_id, report)
        except UnavailableError as exc:  # the gateway is unreachable: next sync tries again
            log.warning("health report on %s not delivered yet: %s", report.sha256[:12], exc)
            return
        except FedgeError as exc:  # stale or not needed (the rollout moved on): drop it
            log.info("health report on %s dropped: %s", report.sha256[:12], exc)
        else:
            log.info("reported %s on %s: %s", report.check, report.sha256[:12], receipt.reason)
        self._pending = None

    def run(self, stop: threading.Event, poll_s: float = 5.0) -> None:
        """Sync every ``poll_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.sync()
            except FedgeError as exc:  # gateway unreachable and the like: try again later
                log.warning("production sync for %s failed: %s", self.job_id, exc)
            stop.wait(poll_s)
