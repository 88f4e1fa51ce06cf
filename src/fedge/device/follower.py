"""Keep the device's predictor on its job's production model version.

:meth:`ProductionFollower.sync` asks the gateway which version is in production
(``GET /v1/jobs/{job}/production``). A new version is downloaded, its release checked with the
release public key (a tampered, wrongly signed, foreign or unsigned model is refused and
remembered, so it is not fetched again), decoded, health-checked and hot-swapped into the
:class:`~fedge.device.predictor.Predictor`. When the coordinator rolls back, production names a
version the predictor still keeps, and the predictor rolls back to it without a download.
A refused version leaves the version being served in place.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from fedge.device.predictor import Predictor
from fedge.device.work import load_model
from fedge.errors import FedgeError, SignatureError, UnknownNameError, ValidationError
from fedge.identity.signing import ReleaseVerifyKey
from fedge.transport.messages import ModelRelease
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
    """Swaps ``predictor`` to the production version of ``job_id``; rolls back with it."""

    link: ProductionLink
    predictor: Predictor
    job_id: str
    release_key: ReleaseVerifyKey | None = None  # set: refuse models without a valid release
    refused: dict[str, str] = field(default_factory=dict)  # sha256 -> reason (not retried)

    def sync(self) -> str | None:
        """Serve the production version now; returns the version served (None: nothing yet)."""
        try:
            pointer = self.link.production(self.job_id)
        except UnknownNameError:
            return self.predictor.version  # no production version yet
        sha = pointer.sha256
        version = pointer.metadata.get("version") or sha[:12]
        if version == self.predictor.version or sha in self.refused:
            return self.predictor.version
        if version in self.predictor.versions:  # the coordinator rolled back to a kept version
            self.predictor.rollback(to=version)
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
                check_release(
                    self.release_key, sha, payload, pointer if pointer.signature else None
                )
            self.predictor.load(version, load_model(payload, sha))
        except (SignatureError, ValidationError) as exc:
            self.refused[sha] = str(exc)
            log.error("refused production model %s: %s", version, exc)
            return self.predictor.version
        log.info("serving %s (%s)", version, sha[:12])
        return version

    def run(self, stop: threading.Event, poll_s: float = 5.0) -> None:
        """Sync every ``poll_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.sync()
            except FedgeError as exc:  # gateway unreachable and the like: try again later
                log.warning("production sync for %s failed: %s", self.job_id, exc)
            stop.wait(poll_s)
