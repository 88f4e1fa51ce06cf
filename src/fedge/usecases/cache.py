"""Generated fleets cached on disk: the physics runs once per configuration, not per process.

Every device process of a networked demo builds the task's data to find its own share; the
cache (``$XDG_CACHE_HOME/fedge``, keyed by the generator, its configuration and seed) makes
that a file read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np

from fedge.data.datasets import _cache_dir
from fedge.usecases.fleet import Fleet

__all__ = ["cached_fleet"]

_VERSION = 4  # bump when a generator's output changes


def cached_fleet(
    key: str, build: Callable[[], tuple[Fleet, np.ndarray]]
) -> tuple[Fleet, np.ndarray]:
    """``build()`` (a fleet and one extra label array), cached under ``key``."""
    digest = hashlib.sha256(f"{_VERSION}:{key}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"usecase-{digest}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            fleet = Fleet(
                x=f["x"],
                y=f["y"],
                device=f["device"],
                group=f["group"],
                raw_bytes=f["raw_bytes"],
                feature_names=tuple(str(s) for s in f["feature_names"]),
                class_names=tuple(str(s) for s in f["class_names"]),
            )
            return fleet, f["extra"]
    fleet, extra = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        x=fleet.x,
        y=fleet.y,
        device=fleet.device,
        group=fleet.group,
        raw_bytes=fleet.raw_bytes,
        feature_names=np.array(fleet.feature_names),
        class_names=np.array(fleet.class_names),
        extra=extra,
    )
    tmp.replace(path)
    return fleet, extra
