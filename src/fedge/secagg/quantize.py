"""Clip, quantise with stochastic rounding into Z_{2^b}, and dequantise sums.

A value ``x`` in ``[lo, hi]`` becomes ``q = floor(u) + [r < u - floor(u)]`` with
``u = (x - lo) / step`` and ``r`` uniform in ``[0, 1)``: unbiased (``E[q·step + lo] = x``) with
error below one ``step`` (stochastic rounding, as used for SecAgg inputs by Bonawitz et al. 2017,
arXiv:1611.04482, and Kairouz et al. 2021, arXiv:2102.06387). The uniforms come from an
AES-CTR stream keyed by an injected seed, never from a general-purpose RNG. A sum of ``m``
quantised vectors dequantises to ``m·lo + S·step``; :class:`~fedge.secagg.config.SessionParams`
guarantees ``n · levels < 2^b`` so the modular sum never wraps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedge.errors import NonFiniteError, SecAggIntegrityError, ShapeMismatchError
from fedge.secagg.config import SessionParams
from fedge.secagg.crypto import Keystream

__all__ = ["dequantize_sum", "dtype_for_bits", "quantize"]


def dtype_for_bits(bits: int) -> np.dtype[np.unsignedinteger]:
    """``uint32`` for up to 32 bits, ``uint64`` above."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def quantize(
    vector: NDArray[np.floating], params: SessionParams, seed: bytes
) -> NDArray[np.unsignedinteger]:
    """Stochastically round ``vector`` (clipped or checked against the range) to ``0..levels``."""
    x = np.asarray(vector)
    if x.ndim != 1 or x.shape[0] != params.length:
        raise ShapeMismatchError(f"expected a vector of {params.length} values, got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ShapeMismatchError(f"expected floating-point values, got {x.dtype}")
    x = x.astype(np.float64)  # a private copy
    if not np.isfinite(x).all():
        raise NonFiniteError("update contains NaN or Inf; it cannot be securely aggregated")
    lo, hi = params.clip_lo, params.clip_hi
    if params.clip_inputs:
        np.clip(x, lo, hi, out=x)
    elif x.min() < lo or x.max() > hi:
        raise SecAggIntegrityError(
            f"update has values in [{x.min():g}, {x.max():g}] outside the clip range "
            f"[{lo:g}, {hi:g}]; clip it first or enable clip_inputs"
        )
    scaled = x  # reuse the buffer: scaled = (x - lo) * levels / (hi - lo)
    np.subtract(scaled, lo, out=scaled)
    np.multiply(scaled, params.levels / (hi - lo), out=scaled)
    rounded = np.floor(scaled)
    np.subtract(scaled, rounded, out=scaled)  # the fractional part, in [0, 1)
    np.multiply(scaled, 2.0**32, out=scaled)
    stream = Keystream(4 * params.length).fill(seed)
    uniform = np.frombuffer(stream, dtype="<u4", count=params.length)
    np.add(rounded, uniform < scaled, out=rounded)  # round up with probability = fraction
    np.clip(rounded, 0, params.levels, out=rounded)
    out: NDArray[np.unsignedinteger] = rounded.astype(dtype_for_bits(params.bits))
    return out


def dequantize_sum(
    total: NDArray[np.unsignedinteger], count: int, params: SessionParams
) -> NDArray[np.float64]:
    """The real-valued sum of ``count`` quantised vectors whose integer sum is ``total``."""
    return params.clip_lo * count + total.astype(np.float64) * params.step
