"""The edge gateway: one per site, speaking the device API downstream and one partial upstream.

Modules: :mod:`.rounds` (assignments, quota, who holds which round), :mod:`.cohort` (validate
updates, running sum, the partial payload), :mod:`.cache` (the site's model cache),
:mod:`.service` (``GatewayService``: the ``DeviceService`` of a site), :mod:`.uplink` (check-in
and sender loops), :mod:`.config` and :mod:`.cli` (``fedge gateway``).
"""

from __future__ import annotations

from fedge.gateway.cache import ModelCache
from fedge.gateway.cohort import Cohort, decode_update, encode_partial
from fedge.gateway.config import GatewayConfig, load_gateway_config
from fedge.gateway.rounds import RoundBook
from fedge.gateway.service import GatewayService, partial_key
from fedge.gateway.uplink import CoordinatorLink, Uplink

__all__ = [
    "Cohort",
    "CoordinatorLink",
    "GatewayConfig",
    "GatewayService",
    "ModelCache",
    "RoundBook",
    "Uplink",
    "decode_update",
    "encode_partial",
    "load_gateway_config",
    "partial_key",
]
