"""The SecAgg+ communication graph: a Harary graph on a random permutation of the devices.

Bell et al. 2020 (arXiv:2009.00727, §4) join each device to ``k`` others; a Harary graph
H(k, n) places the devices on a ring and links each to the ``k/2`` nearest on either side.
Randomly permuting the devices first makes the neighbourhoods random, which the tail bounds in
:mod:`fedge.secagg.config` assume. ``k >= n - 1`` is the complete graph (SecAgg).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fedge.errors import SecAggConfigError

__all__ = ["harary_graph"]


def harary_graph(
    device_ids: Sequence[str], k: int, rng: random.Random
) -> dict[str, tuple[str, ...]]:
    """Each device's neighbours (sorted) in H(k, n) over a random permutation drawn from ``rng``."""
    n = len(device_ids)
    if len(set(device_ids)) != n:
        raise SecAggConfigError("device ids must be unique")
    if k >= n - 1:
        return {d: tuple(sorted(set(device_ids) - {d})) for d in device_ids}
    if k < 2 or k % 2:
        raise SecAggConfigError(f"a Harary graph needs an even k >= 2, got {k}")
    order = list(device_ids)
    rng.shuffle(order)
    half = k // 2
    return {
        order[i]: tuple(sorted(order[(i + j) % n] for j in range(-half, half + 1) if j != 0))
        for i in range(n)
    }
