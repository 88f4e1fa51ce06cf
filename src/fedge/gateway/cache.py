"""The site's model cache: each model version fetched once from upstream, kept on disk by hash.

Files are content-addressed (``<directory>/<sha256>.model``), written atomically (temporary
file, fsync, rename) and checked against their hash both when fetched and when first read back
after a restart, so a corrupted or substituted file is never served: it is deleted and fetched
again. Concurrent requests for a missing version wait for one fetch instead of starting many.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from fedge.errors import UnknownNameError, ValidationError

__all__ = ["ModelCache", "sha256_hex"]

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ModelCache:
    """Model payloads by content hash, fetched through ``fetch(sha256) -> bytes`` when missing."""

    def __init__(self, directory: str | Path, fetch: Callable[[str], bytes]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fetch = fetch
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
            self._verified.add(sha256)
        return data

    def get(self, sha256: str) -> bytes:
        """The payload with this hash: from disk, or fetched once and stored."""
        data = self._read_verified(sha256)
        if data is not None:
            return data
        with self._lock:
            data = self._read_verified(sha256)  # another thread may have fetched it meanwhile
            if data is not None:
                return data
            data = self._fetch(sha256)
            self.fetches += 1
            got = sha256_hex(data)
            if got != sha256:
                raise ValidationError(
                    f"upstream sent a model whose sha256 is {got}, not the {sha256} asked for; "
                    "it was discarded"
                )
            self._write(sha256, data)
            self._verified.add(sha256)
            return data

    def _write(self, sha256: str, data: bytes) -> None:
        path = self._path(sha256)
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
                self._verified.discard(path.stem)
                removed += 1
        return removed
