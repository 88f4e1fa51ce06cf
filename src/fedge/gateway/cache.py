"""The site's model cache: each model version fetched once from upstream, kept on disk by hash.

Files are content-addressed (``<directory>/<sha256>.model``), written atomically (temporary
file, fsync, rename) and checked against their hash both when fetched and when first read back
after a restart, so a corrupted or substituted file is never served: it is deleted and fetched
again. Concurrent requests for a missing version wait for one fetch instead of starting many.

Signed releases: given ``fetch_release``, each version's release signature is fetched with it
and kept beside it (``<sha256>.release``, JSON) for the site's devices. Given ``release_key``
too, a version is cached only if its release verifies (:func:`fedge.transport.releases.check_release`);
a tampered payload, a wrong or foreign signature and an unsigned version are refused with
:class:`~fedge.errors.SignatureError`, counted in ``refused`` and logged, and nothing is cached.

**Refusals are reported** to the coordinator through ``reports``
(:class:`~fedge.transport.reports.ReportQueue`, ``POST /v1/jobs/{job}/health`` without a
device: the gateway's own refusal), canary stage or not: a payload that does not hash to what
was asked, a release that does not verify, and -- :meth:`ModelCache.manifest` -- a release
manifest that does not. The job is the one the caller names (``get(sha, job_id=...)``), else the
one the version's release names; a refusal with neither is logged only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from fedge.errors import FedgeError, SignatureError, UnknownNameError, ValidationError
from fedge.identity.signing import ReleaseVerifyKey
from fedge.transport.manifests import Manifest, read_manifest
from fedge.transport.messages import ModelRelease
from fedge.transport.releases import check_release
from fedge.transport.reports import Check, ReportQueue, refusal_check, refusal_report

__all__ = ["ModelCache", "sha256_hex"]

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ModelCache:
    """Model payloads by content hash, fetched through ``fetch(sha256) -> bytes`` when missing."""

    def __init__(
        self,
        directory: str | Path,
        fetch: Callable[[str], bytes],
        *,
        fetch_release: Callable[[str], ModelRelease] | None = None,
        release_key: ReleaseVerifyKey | None = None,
        reports: ReportQueue | None = None,
    ) -> None:
        if release_key is not None and fetch_release is None:
            raise ValueError("a release key needs fetch_release to obtain the signatures")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fetch = fetch
        self._fetch_release = fetch_release
        self.release_key = release_key
        self.refused: list[tuple[str, str]] = []  # (sha256, reason) of versions refused
        self.reports = reports  # where refusals go (the coordinator); None: logged only
        self._lock = threading.Lock()  # serialises fetches: one download per version
        self._verified: set[str] = set()
        self.fetches = 0  # upstream downloads made by this process (for tests and metrics)

    def _path(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise UnknownNameError(f"{sha256!r} is not a model hash (64 lower-case hex digits)")
        return self.directory / f"{sha256}.model"

    def has(self, sha256: str) -> bool:
        """True when the version is on disk (not yet necessarily verified)."""
        return self._path(sha256).exists()

    def _read_verified(self, sha256: str) -> bytes | None:
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256 not in self._verified:
            if sha256_hex(data) != sha256:
                log.warning("cached model %s does not match its hash; fetching it again", sha256)
                path.unlink(missing_ok=True)
                return None
            if self.release_key is not None:
                try:
                    check_release(self.release_key, sha256, data, self.release(sha256))
                except SignatureError as exc:
                    log.warning("cached model %s: %s; fetching it again", sha256, exc)
                    path.unlink(missing_ok=True)
                    return None
            self._verified.add(sha256)
        return data

    def release(self, sha256: str) -> ModelRelease | None:
        """The release signature kept beside a cached version (None: unsigned or not cached)."""
        try:
            return ModelRelease.model_validate_json(self._release_path(sha256).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("the kept release of model %s is unreadable", sha256)
            return None

    def _release_path(self, sha256: str) -> Path:
        return self._path(sha256).with_suffix(".release")

    def _upstream_release(self, sha256: str) -> ModelRelease | None:
        if self._fetch_release is None:
            return None
        try:
            return self._fetch_release(sha256)
        except UnknownNameError:
            return None  # unsigned upstream

    def get(self, sha256: str, *, job_id: str | None = None) -> bytes:
        """The payload with this hash: from disk, or fetched once and stored (``job_id``: the
        job it is fetched for, named in the report should it be refused)."""
        data = self._read_verified(sha256)
        if data is not None:
            return data
        refusal: FedgeError | None = None
        release: ModelRelease | None = None
        with self._lock:
            data = self._read_verified(sha256)  # another thread may have fetched it meanwhile
            if data is not None:
                return data
            data = self._fetch(sha256)
            self.fetches += 1
            got = sha256_hex(data)
            if got != sha256:
                refusal = ValidationError(
                    f"upstream sent a model whose sha256 is {got}, not the {sha256} asked for; "
                    "it was discarded"
                )
            else:
                release = self._upstream_release(sha256)
                if self.release_key is not None:
                    try:
                        check_release(self.release_key, sha256, data, release)
                    except SignatureError as exc:
                        refusal = exc
            if refusal is None:
                if release is not None:
                    self._write(self._release_path(sha256), release.model_dump_json().encode())
                self._write(self._path(sha256), data)
                self._verified.add(sha256)
                return data
        # refused: reported outside the lock (it talks to the coordinator)
        self.refused.append((sha256, str(refusal)))
        log.error("refused model %s: %s", sha256, refusal)
        self._report(sha256, "release", str(refusal), job_id, release)
        raise refusal

    def flush_reports(self) -> None:
        """Send again the refusal reports the coordinator could not take before (if any)."""
        if self.reports is not None and self.reports.pending():
            self.reports.flush()

    def manifest(self, job_id: str, pointer: ModelRelease) -> Manifest:
        """``pointer`` read as a release manifest, verified with the release key (if any); a
        manifest that fails is refused (:class:`SignatureError`, :class:`ValidationError`),
        counted and reported like a refused model. Reports the coordinator could not take
        before are sent again first (devices ask for the manifest every few seconds)."""
        self.flush_reports()
        try:
            return read_manifest(pointer, self.release_key)
        except (SignatureError, ValidationError) as exc:
            self.refused.append((pointer.sha256, f"release manifest: {exc}"))
            try:
                sequence: int | None = int(pointer.metadata.get("sequence", ""))
            except ValueError:
                sequence = None
            reason = f"release manifest refused: {exc}"
            self._report(pointer.sha256, refusal_check(exc), reason, job_id, None, sequence)
            raise

    def _report(
        self,
        sha256: str,
        check: Check,
        reason: str,
        job_id: str | None,
        release: ModelRelease | None,
        sequence: int | None = None,
    ) -> None:
        """Send the gateway's refusal of ``sha256`` to the coordinator (never raises)."""
        if self.reports is None:
            return
        if job_id is None:
            if release is None:
                try:
                    release = self._upstream_release(sha256)
                except FedgeError:
                    release = None
            job_id = release.metadata.get("job") if release is not None else None
        if not job_id:
            log.warning("refusal of model %s not reported: no job names it", sha256[:12])
            return
        self.reports.put(job_id, refusal_report(sha256, check, reason, sequence))

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def evict_except(self, keep: set[str]) -> int:
        """Delete cached versions not in ``keep``; returns how many were removed."""
        removed = 0
        for path in self.directory.glob("*.model"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                path.with_suffix(".release").unlink(missing_ok=True)
                self._verified.discard(path.stem)
                removed += 1
        return removed
