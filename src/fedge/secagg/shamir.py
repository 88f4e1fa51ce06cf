"""Shamir secret sharing of 256-bit secrets over the prime field GF(2^256 + 297).

Shamir, "How to share a secret", CACM 1979. A secret ``s`` is the constant term of a random
polynomial of degree ``t - 1``; holder ``x`` receives ``f(x)``. Any ``t`` shares give ``s`` by
Lagrange interpolation at zero, and any ``t - 1`` shares are uniformly distributed whatever
``s`` is, so they reveal nothing. 2^256 + 297 is the smallest prime above 2^256, so every
32-byte seed or X25519 private key is a field element.

Reconstruction is batched: the Lagrange weights depend only on the holders' x-coordinates, so
they are computed once (with one modular inversion for the whole set) and reused for every
secret shared among the same holders.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import numpy as np

from fedge.errors import SecAggIntegrityError
from fedge.secagg.crypto import RandBytes

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "lagrange_weights",
    "reconstruct",
    "reconstruct_many",
    "share_from_bytes",
    "share_to_bytes",
    "split",
]

PRIME = 2**256 + 297
SHARE_BYTES = 33


def _random_element(randbytes: RandBytes, prime: int) -> int:
    # 16 extra bytes make the modular bias below 2^-128.
    nbytes = (prime.bit_length() + 7) // 8 + 16
    return int.from_bytes(randbytes(nbytes), "big") % prime


def split(
    secret: int,
    xs: Sequence[int],
    threshold: int,
    randbytes: RandBytes = os.urandom,
    *,
    prime: int = PRIME,
) -> list[int]:
    """Shares ``f(x)`` for each holder ``x`` of a random degree-``threshold-1`` polynomial."""
    if not 0 <= secret < prime:
        raise SecAggIntegrityError("secret is not an element of the field")
    if not 1 <= threshold <= len(xs):
        raise SecAggIntegrityError(f"threshold {threshold} impossible with {len(xs)} holders")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise SecAggIntegrityError("holder coordinates must be distinct non-zero field elements")
    coeffs = [secret] + [_random_element(randbytes, prime) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner; degree < threshold, a few hundred at most
            acc = (acc * x + c) % prime
        shares.append(acc)
    return shares


@functools.lru_cache(maxsize=4096)
def lagrange_weights(xs: tuple[int, ...], prime: int = PRIME) -> tuple[int, ...]:
    """Weights ``w_i`` with ``f(0) = sum_i w_i f(x_i)`` for any polynomial of degree < len(xs).

    ``w_i = prod_{j != i} x_j / (x_j - x_i)``. Holder coordinates are small integers, so the
    difference matrix is formed with numpy and multiplied in int64 blocks that cannot overflow;
    only the few block products per row are combined as Python integers. One modular inversion
    (Montgomery's trick) then serves all denominators.
    """
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise SecAggIntegrityError("share coordinates must be distinct and non-zero")
    everything = math.prod(xs)
    nums = [everything // xi % prime for xi in xs]
    dens = [d % prime for d in _row_products_of_differences(xs)]
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % prime)
    inv = pow(prefix[-1], -1, prime)
    inverses = [0] * len(dens)
    for i in range(len(dens) - 1, -1, -1):
        inverses[i] = inv * prefix[i] % prime
        inv = inv * dens[i] % prime
    return tuple(n * v % prime for n, v in zip(nums, inverses, strict=True))


def _row_products_of_differences(xs: tuple[int, ...]) -> list[int]:
    """``prod_{j != i} (x_j - x_i)`` for every ``i``, exactly."""
    bits = max(xs).bit_length()
    if bits > 31:  # not small: plain Python products
        return [math.prod([xj - xi for xj in xs if xj != xi]) for xi in xs]
    arr = np.asarray(xs, dtype=np.int64)
    diff = arr[None, :] - arr[:, None]
    np.fill_diagonal(diff, 1)
    group = max(1, 62 // bits)  # |x_j - x_i| < 2^bits, so `group` factors fit in int64
    pad = (-len(xs)) % group
    if pad:
        diff = np.concatenate([diff, np.ones((len(xs), pad), dtype=np.int64)], axis=1)
    blocks = diff.reshape(len(xs), -1, group).prod(axis=2)
    return [math.prod(row) for row in blocks.tolist()]


def reconstruct(xs: Sequence[int], ys: Sequence[int], *, prime: int = PRIME) -> int:
    """The secret behind shares ``(x_i, y_i)``; needs at least ``threshold`` of them."""
    return reconstruct_many(xs, [ys], prime=prime)[0]


def reconstruct_many(
    xs: Sequence[int], ys_per_secret: Sequence[Sequence[int]], *, prime: int = PRIME
) -> list[int]:
    """Reconstruct several secrets whose shares are held by the same holders ``xs``."""
    weights = lagrange_weights(tuple(xs), prime)
    out = []
    for ys in ys_per_secret:
        if len(ys) != len(weights):
            raise SecAggIntegrityError("each secret needs one share per holder coordinate")
        out.append(sum(w * y for w, y in zip(weights, ys, strict=True)) % prime)
    return out


def share_to_bytes(share: int) -> bytes:
    """A share as 33 big-endian bytes."""
    return share.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Parse :func:`share_to_bytes`; refuse wrong lengths and non-field values."""
    if len(data) != SHARE_BYTES:
        raise SecAggIntegrityError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecAggIntegrityError("share is not a field element")
    return value
