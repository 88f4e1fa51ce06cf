"""The gateway (relay) side of SecAgg+: forward what it cannot read, sum what it must.

The cross-tier extension of SecAgg in fedge's design (ARCHITECTURE.md §3): a gateway passes
its devices' control messages through unchanged (advertisements are signed, shares and unmask
replies are sealed to keys it does not hold) and replaces their masked inputs by one sum
modulo 2^b plus the list of contributors. Because every device's input also carries its own
self-mask PRG(b_u) (Bonawitz et al. 2017, arXiv:1611.04482, §4), the sum is uniformly random
to the gateway even when every pairwise mask cancels inside its site.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedge.errors import SecAggIntegrityError, SecAggProtocolError
from fedge.secagg.config import SessionParams
from fedge.secagg.messages import MaskedInput, Message, RelaySum
from fedge.secagg.quantize import dtype_for_bits

__all__ = ["RelaySession"]


class RelaySession:
    """One gateway's relay for one round: ``devices`` are the site's devices in that round."""

    def __init__(
        self, gateway_id: str, session_id: bytes, params: SessionParams, devices: Iterable[str]
    ) -> None:
        self.gateway_id = gateway_id
        self.session_id = session_id
        self.params = params
        self.devices = frozenset(devices)
        self._dtype = dtype_for_bits(params.bits)
        self._sum = np.zeros(params.length, dtype=self._dtype)
        self._contributors: list[str] = []
        self._flushed = False

    @property
    def contributors(self) -> tuple[str, ...]:
        """Devices whose masked input is in the running sum."""
        return tuple(self._contributors)

    def forward(self, msg: Message) -> Message:
        """Check that a device's control message is for this round and this site; pass it on."""
        sender = getattr(msg, "device_id", None)
        if msg.session_id != self.session_id:
            raise SecAggProtocolError(f"{msg.kind} belongs to another session or round; refused")
        if sender not in self.devices:
            raise SecAggProtocolError(f"{sender!r} is not a device of gateway {self.gateway_id!r}")
        if isinstance(msg, MaskedInput):
            raise SecAggProtocolError("masked inputs are summed with receive(), not forwarded")
        return msg

    def receive(self, msg: MaskedInput) -> None:
        """Add one device's masked input to the site's sum modulo 2^b."""
        if self._flushed:
            raise SecAggProtocolError(f"gateway {self.gateway_id!r} already forwarded its sum")
        self.forward_check(msg)
        if msg.device_id in self._contributors:
            raise SecAggProtocolError(f"duplicate masked input from {msg.device_id!r}")
        v = msg.vector
        if v.dtype != self._dtype or v.shape != (self.params.length,):
            raise SecAggIntegrityError(
                f"masked input must be {self._dtype} of length {self.params.length}, "
                f"got {v.dtype} {v.shape}"
            )
        bits = self.params.bits
        if bits < 8 * self._dtype.itemsize and int(v.max(initial=0)) >> bits:
            raise SecAggIntegrityError(f"masked input has values outside Z_2^{bits}")
        np.add(self._sum, v, out=self._sum)
        if bits < 8 * self._dtype.itemsize:
            np.bitwise_and(self._sum, self._dtype.type((1 << bits) - 1), out=self._sum)
        self._contributors.append(msg.device_id)

    def forward_check(self, msg: MaskedInput) -> None:
        """Session and site membership checks for a masked input."""
        if not isinstance(msg, MaskedInput):
            raise SecAggProtocolError(f"a relay sums masked inputs, not {msg.kind}")
        if msg.session_id != self.session_id:
            raise SecAggProtocolError("masked input belongs to another session or round; refused")
        if msg.device_id not in self.devices:
            raise SecAggProtocolError(
                f"{msg.device_id!r} is not a device of gateway {self.gateway_id!r}"
            )

    def flush(self) -> RelaySum | None:
        """The site's sum and contributors (``None`` if nobody contributed); only once."""
        if self._flushed:
            raise SecAggProtocolError(f"gateway {self.gateway_id!r} already forwarded its sum")
        self._flushed = True
        if not self._contributors:
            return None
        return RelaySum(self.session_id, self.gateway_id, tuple(self._contributors), self._sum)
