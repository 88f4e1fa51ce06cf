"""Content-addressed artifact store: sha256(bytes) → one file, written atomically, verified on read.

Layout: ``<root>/<first two hex digits>/<sha256>``. A write goes to a temporary file in the same
directory, is flushed to disk and renamed into place, so a reader never sees half a file and a
crash leaves at most a stray ``.tmp``. Writing the same bytes twice is a no-op. Reads recompute the
hash; a file whose bytes no longer match its name is reported, never returned.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from fedge.errors import UnknownNameError, ValidationError

__all__ = ["ArtifactStore", "sha256_hex"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Immutable blobs on the local filesystem, named by their sha256."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it exists)."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValidationError(f"not a sha256 digest (64 lowercase hex digits): {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """True when the blob is stored."""
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data``; return its sha256 (idempotent)."""
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{digest[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return digest

    def get(self, sha256: str) -> bytes:
        """The bytes of blob ``sha256``, after checking they still hash to it."""
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise UnknownNameError(f"no artifact {sha256} in {self.root}") from None
        if sha256_hex(data) != sha256:
            raise ValidationError(
                f"artifact {target} is corrupted: its content no longer hashes to its name; "
                "restore it from a backup or delete it"
            )
        return data
