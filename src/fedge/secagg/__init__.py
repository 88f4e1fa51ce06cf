"""Secure aggregation: SecAgg+ (Bell et al. 2020, arXiv:2009.00727) across device, gateway, cloud.

SecAgg+ generalises SecAgg (Bonawitz et al. 2017, arXiv:1611.04482), which is the complete-graph
case. The protocol is written once, without I/O, as three state machines —
:class:`DeviceSession`, :class:`RelaySession` (gateway) and :class:`CoordinatorSession` — that
consume and produce the messages of :mod:`fedge.secagg.messages`. :func:`run_secure_sum` drives
them in one process for the simulator and the benchmark.

Modules: ``config`` (safe parameters), ``crypto`` (the only hazmat import), ``shamir``,
``quantize``, ``masking``, ``graph``, ``messages``, ``device``, ``relay``, ``coordinator``,
``driver``.
"""

from __future__ import annotations

from fedge.secagg.config import SecAggConfig, SessionParams, derive_graph_parameters
from fedge.secagg.coordinator import CoordinatorPhase, CoordinatorSession, SecAggOutcome
from fedge.secagg.device import DevicePhase, DeviceSession
from fedge.secagg.driver import DROP_PHASES, SecureSumResult, run_secure_sum
from fedge.secagg.messages import (
    EncryptedShares,
    KeyAdvertisement,
    KeyBundle,
    MaskedInput,
    Message,
    RelaySum,
    RoundSetup,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
    from_wire,
    to_wire,
)
from fedge.secagg.quantize import dequantize_sum, quantize
from fedge.secagg.relay import RelaySession

__all__ = [
    "DROP_PHASES",
    "CoordinatorPhase",
    "CoordinatorSession",
    "DevicePhase",
    "DeviceSession",
    "EncryptedShares",
    "KeyAdvertisement",
    "KeyBundle",
    "MaskedInput",
    "Message",
    "RelaySession",
    "RelaySum",
    "RoundSetup",
    "SecAggConfig",
    "SecAggOutcome",
    "SecureSumResult",
    "SessionParams",
    "ShareBundle",
    "UnmaskRequest",
    "UnmaskResponse",
    "dequantize_sum",
    "derive_graph_parameters",
    "from_wire",
    "quantize",
    "run_secure_sum",
    "to_wire",
]
