"""Recovering dropped and surviving devices' secrets from Shamir shares, checked and robust.

The unmask step of SecAgg (Bonawitz et al. 2017, arXiv:1611.04482, §4): for each surviving
device the server rebuilds its self-mask seed ``b_u``, for each dropped one its mask key
``s_u^SK``, each from ``t`` shares revealed by its neighbours (Bell et al. 2020,
arXiv:2009.00727). Every recovered value is checked against what the device signed in its key
advertisement (a seed commitment, a public key); a tampered share is outvoted by trying other
``t``-subsets when more than ``t`` shares arrived, and otherwise the round is abandoned.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence

from fedge.errors import RoundAbandonedError
from fedge.secagg import shamir

__all__ = ["MAX_ROBUST_TRIES", "reconstruct_checked", "reconstruct_owners"]

MAX_ROBUST_TRIES = 64
Check = Callable[[int], bool]


def reconstruct_checked(
    owner: str, shares: Mapping[int, int], threshold: int, what: str, check: Check
) -> int:
    """The secret of ``owner`` from ``shares`` (holder x → y) that passes ``check``."""
    points = sorted(shares.items())
    if len(points) < threshold:
        raise RoundAbandonedError(
            f"only {len(points)} shares of the {what} of {owner!r} arrived; threshold {threshold}"
        )
    for subset in itertools.islice(_subsets(points, threshold), MAX_ROBUST_TRIES):
        xs, ys = zip(*subset, strict=True)
        value = shamir.reconstruct(xs, ys)
        if check(value):
            return value
    raise RoundAbandonedError(
        f"the shares of the {what} of {owner!r} do not match its signed commitment "
        "(tampered shares); the round is abandoned"
    )


def reconstruct_owners(
    owners: Sequence[str],
    store: Mapping[str, Mapping[int, int]],
    threshold: int,
    what: str,
    check_of: Callable[[str], Check],
) -> dict[str, int]:
    """Every owner's secret, sharing Lagrange weights between owners with common holders.

    Owners given in ring order are grouped greedily while ``t`` holders answered for all of
    them, so one set of weights (an O(t²) computation) serves a whole run of neighbours and
    each secret then costs ``t`` multiplications. A value failing its check falls back to
    :func:`reconstruct_checked`, which outvotes tampered shares.
    """
    out: dict[str, int] = {}
    i = 0
    while i < len(owners):
        common = set(store.get(owners[i], {}))
        j = i + 1
        if len(common) >= threshold:
            while j < len(owners):
                narrower = common.intersection(store.get(owners[j], {}))
                if len(narrower) < threshold:
                    break
                common, j = narrower, j + 1
        xs = tuple(sorted(common)[:threshold])
        weights = shamir.lagrange_weights(xs) if len(xs) == threshold else ()
        for owner in owners[i:j]:
            shares = store.get(owner, {})
            check = check_of(owner)
            value = -1
            if weights:
                value = sum(w * shares[x] for w, x in zip(weights, xs, strict=True)) % shamir.PRIME
            if value < 0 or not check(value):  # too few holders, or tampered: slow path
                value = reconstruct_checked(owner, shares, threshold, what, check)
            out[owner] = value
        i = j
    return out


def _subsets(points: list[tuple[int, int]], t: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """The first ``t`` points, then sliding windows, then all combinations (lazily)."""
    windows = (tuple(points[i : i + t]) for i in range(1, len(points) - t + 1))
    return itertools.chain([tuple(points[:t])], windows, itertools.combinations(points, t))
