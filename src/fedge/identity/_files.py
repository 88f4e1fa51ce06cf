"""Small file helpers for the PKI: atomic replacement and owner-only private key files.

Every file is written to a temporary sibling and moved into place with :func:`os.replace`, so a
reader (for example a server watching the CRL) never sees a half-written file and always sees a new
inode after a change.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["PRIVATE_MODE", "PUBLIC_MODE", "write_atomic", "write_private"]

PRIVATE_MODE = 0o600  # private keys: owner read/write only
PUBLIC_MODE = 0o644  # certificates, CRL, inventory, public keys


def write_atomic(path: Path, data: bytes, *, mode: int = PUBLIC_MODE, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (set before any byte lands).

    ``durable=False`` skips the fsync: for a batch whose writer syncs once at the end.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; widen only for public files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a private key file readable and writable by its owner only (0600)."""
    write_atomic(path, data, mode=PRIVATE_MODE, durable=durable)
