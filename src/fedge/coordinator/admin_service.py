"""``CoordinatorAdmin``: the coordinator's admin API (jobs, devices, the model registry).

It implements :class:`~fedge.transport.services.AdminService`. Every call is an admin's
(:class:`~fedge.identity.Role` ``admin``) and every change is recorded in the audit log; the
operations themselves are :mod:`fedge.coordinator.admin` (jobs, devices) and
:mod:`fedge.coordinator.models` (the registry), under the round driver's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedge.coordinator import admin, models
from fedge.coordinator.schema import ModelVersionRow
from fedge.errors import UnknownNameError, ValidationError
from fedge.identity import Identity, Role, authorize
from fedge.transport import messages as m

if TYPE_CHECKING:
    from fedge.coordinator.driver import RoundDriver
    from fedge.coordinator.rollouts import Rollouts

__all__ = ["CoordinatorAdmin"]


class CoordinatorAdmin:
    """What an admin certificate may do on one coordinator: jobs, devices, model versions."""

    def __init__(self, driver: RoundDriver, rollouts: Rollouts) -> None:
        self.driver, self.rollouts = driver, rollouts
        self.store, self.artifacts, self.clock = driver.store, driver.artifacts, driver.clock

    def model(self, peer: Identity, sha256: str) -> bytes:
        """A model version's payload by content hash (its export)."""
        authorize(peer, roles={Role.ADMIN})
        return self.artifacts.get(self._version(sha256).sha256)

    # -- admin --------------------------------------------------------------------------------
    def create_job(self, peer: Identity, spec: m.JobSpec) -> m.JobView:
        """Validate and start a job; its first round opens at the next tick."""
        authorize(peer, roles={Role.ADMIN})
        if spec.secure_aggregation is not None and self.driver.secagg is None:
            raise ValidationError(
                f"job {spec.name!r}: this coordinator was started without the PKI files secure "
                "aggregation needs (CA, its certificate and key); remove secure_aggregation"
            )
        view = admin.create_job(self.driver, spec, self.clock())
        audit = self.driver.audit
        audit.record_admin(peer, "job.create", spec.name, {"spec": spec.model_dump(mode="json")})
        initial = self.store.list_model_versions(spec.name)[0]
        audit.record_release(initial, signed=self.driver.release_key is not None)
        return view

    def list_jobs(self, peer: Identity) -> list[m.JobView]:
        """Every job with its rounds."""
        authorize(peer, roles={Role.ADMIN})
        return [admin.job_view(self.store, j.id) for j in self.store.list_jobs()]

    def get_job(self, peer: Identity, job_id: str) -> m.JobView:
        """One job with its rounds."""
        authorize(peer, roles={Role.ADMIN})
        return admin.job_view(self.store, job_id)

    def pause_job(self, peer: Identity, job_id: str) -> m.JobView:
        """Stop handing out work (rounds already training finish); no new round opens."""
        authorize(peer, roles={Role.ADMIN})
        view = admin.set_job_state(self.driver, job_id, "running", "paused")
        self.driver.audit.record_admin(peer, "job.pause", job_id)
        return view

    def resume_job(self, peer: Identity, job_id: str) -> m.JobView:
        """Let a paused job go on."""
        authorize(peer, roles={Role.ADMIN})
        view = admin.set_job_state(self.driver, job_id, "paused", "running")
        self.driver.audit.record_admin(peer, "job.resume", job_id)
        return view

    def list_devices(self, peer: Identity) -> list[m.DeviceView]:
        """Every device the coordinator has heard of."""
        authorize(peer, roles={Role.ADMIN})
        return admin.device_views(self.store)

    def revoke_device(self, peer: Identity, device_id: str) -> m.DeviceView:
        """Refuse a device from now on (direct check-ins, and partials that count it)."""
        authorize(peer, roles={Role.ADMIN})
        self.store.set_revoked(device_id)
        self.driver.audit.record_admin(peer, "revocation", device_id)
        return admin.device_views(self.store, device_id)[0]

    # -- model registry -----------------------------------------------------------------------
    def _version(self, sha256: str) -> ModelVersionRow:
        row = self.store.get_model_version(sha256)
        if row is None:
            raise UnknownNameError(f"no model version {sha256}")
        return row

    def list_models(self, peer: Identity, job_id: str) -> list[m.ModelVersionView]:
        """Every version of a job with its lineage, metrics and status."""
        authorize(peer, roles={Role.ADMIN})
        return models.version_views(self.store, job_id, self.rollouts.view)

    def get_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """One version."""
        authorize(peer, roles={Role.ADMIN})
        return models.version_view(self.store, self._version(sha256), self.rollouts.view(sha256))

    def promote_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """Make a candidate (or retired) version production; the current one is retired."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            row = self.store.promote_version(sha256, f"promoted by {peer.name}")
            self.rollouts.sync(row.job_id, self.clock())  # its manifest (or canary stage)
        self.driver.audit.record_admin(peer, "promotion", sha256, {"job": row.job_id})
        return models.version_view(self.store, row)

    def reject_model(self, peer: Identity, sha256: str) -> m.ModelVersionView:
        """Reject a candidate for good."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            row = self.store.set_version_status(sha256, "rejected", f"rejected by {peer.name}")
        self.driver.audit.record_admin(peer, "rejection", sha256, {"job": row.job_id})
        return models.version_view(self.store, row)

    def rollback_model(self, peer: Identity, job_id: str) -> m.ModelVersionView:
        """Roll the job's production version back to the previous one; returns the restored one."""
        authorize(peer, roles={Role.ADMIN})
        with self.driver.lock:
            old, restored = self.store.rollback_job(job_id, f"rolled back by {peer.name}")
            self.rollouts.sync(job_id, self.clock())  # a new manifest names the restored one
        moved = {"rolled_back": old.sha256, "restored": restored.sha256}
        self.driver.audit.record_admin(peer, "rollback", job_id, moved)
        return models.version_view(self.store, restored)

    def diff_models(self, peer: Identity, a: str, b: str) -> m.ModelDiff:
        """Metric changes and weight distance from version ``a`` to ``b``."""
        authorize(peer, roles={Role.ADMIN})
        return models.diff_versions(self.store, self.artifacts, self._version(a), self._version(b))
