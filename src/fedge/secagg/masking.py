"""Masks: self-masks PRG(b_u) and pairwise masks ±PRG(s_uv), added modulo 2^b.

Bonawitz et al. 2017 (arXiv:1611.04482, §4): device ``u`` sends
``y_u = x_u + PRG(b_u) + Σ_{v<u} PRG(s_uv) - Σ_{v>u} PRG(s_uv)  (mod 2^b)``. Here the order is
that of device ids; ``s_uv`` is derived with HKDF from the X25519 agreement of ``u`` and ``v`` and
bound to the session and to both ids. The PRG is AES-128-CTR (:class:`~fedge.secagg.crypto.Keystream`),
read as little-endian unsigned integers with ``np.frombuffer``: no loop over elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from fedge.secagg.crypto import Keystream, hkdf_sha256, x25519_shared_many
from fedge.secagg.quantize import dtype_for_bits

__all__ = ["MaskExpander", "pairwise_seed", "pairwise_seeds", "pairwise_sign"]

_PAIRWISE_INFO = b"fedge/secagg/v1/pairwise-mask"


def pairwise_seed(private: bytes, peer_public: bytes, session_id: bytes, u: str, v: str) -> bytes:
    """The 32-byte seed ``s_uv`` shared by ``u`` and ``v`` (symmetric in the two ids)."""
    return pairwise_seeds(private, {v: peer_public}, session_id, u)[0]


def pairwise_seeds(
    private: bytes, peer_publics: Mapping[str, bytes], session_id: bytes, u: str
) -> list[bytes]:
    """``s_uv`` for every peer ``v`` in ``peer_publics`` (in its order), for device ``u``."""
    secrets = x25519_shared_many(private, list(peer_publics.values()))
    out = []
    for v, shared in zip(peer_publics, secrets, strict=True):
        a, b = sorted((u, v))
        info = _PAIRWISE_INFO + b"|" + a.encode() + b"|" + b.encode()
        out.append(hkdf_sha256(shared, salt=session_id, info=info))
    return out


def pairwise_sign(u: str, v: str) -> int:
    """+1 when ``u`` adds the mask it shares with ``v``, -1 when it subtracts it."""
    return 1 if u < v else -1


class MaskExpander:
    """Expands seeds into mask vectors of ``length`` elements modulo ``2^bits``."""

    def __init__(self, length: int, bits: int) -> None:
        self.length = length
        self.bits = bits
        self.dtype = dtype_for_bits(bits)
        self._stream = Keystream(length * self.dtype.itemsize)
        self._modmask = self.dtype.type((1 << bits) - 1)

    def zeros(self) -> NDArray[np.unsignedinteger]:
        """An all-zero accumulator of the right dtype."""
        return np.zeros(self.length, dtype=self.dtype)

    def expand(self, seed: bytes) -> NDArray[np.unsignedinteger]:
        """PRG(seed) reduced modulo 2^bits (a fresh array)."""
        out = np.frombuffer(self._stream.fill(seed), dtype=self.dtype.newbyteorder("<"))
        return np.bitwise_and(out, self._modmask, dtype=self.dtype)

    def accumulate(
        self,
        acc: NDArray[np.unsignedinteger],
        plus: Iterable[bytes] = (),
        minus: Iterable[bytes] = (),
    ) -> None:
        """``acc += Σ PRG(plus) - Σ PRG(minus)`` in place, modulo 2^bits."""
        view_dtype = self.dtype.newbyteorder("<")
        for seed in plus:
            np.add(acc, np.frombuffer(self._stream.fill(seed), dtype=view_dtype), out=acc)
        for seed in minus:
            np.subtract(acc, np.frombuffer(self._stream.fill(seed), dtype=view_dtype), out=acc)
        self.reduce(acc)

    def reduce(self, acc: NDArray[np.unsignedinteger]) -> None:
        """Reduce ``acc`` modulo 2^bits in place (the unsigned dtype already wraps at 2^32/2^64)."""
        if self.bits < 8 * self.dtype.itemsize:
            np.bitwise_and(acc, self._modmask, out=acc)
