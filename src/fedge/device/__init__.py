"""The device runtime: local data store, eligibility, the agent loop and its one task's work.

Modules: :mod:`.store` (SQLite data with a retention window), :mod:`.collector` (the demo's
data source), :mod:`.eligibility` (charging / idle / unmetered / enough data), :mod:`.work`
(verify model, train, privatise, encode), :mod:`.agent` (check-in loop, outbox delivery),
:mod:`.backoff`, :mod:`.config` and :mod:`.cli` (``fedge device``).
"""

from __future__ import annotations

from fedge.device.agent import AgentStats, DeviceAgent, GatewayLink, update_key
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.config import DeviceConfig, load_device_config
from fedge.device.eligibility import (
    AlwaysEligible,
    ConditionsPolicy,
    EligibilityDecision,
    EligibilityPolicy,
)
from fedge.device.store import LocalStore
from fedge.device.work import load_model, make_update

__all__ = [
    "AgentStats",
    "AlwaysEligible",
    "Backoff",
    "ConditionsPolicy",
    "DemoCollector",
    "DeviceAgent",
    "DeviceConfig",
    "EligibilityDecision",
    "EligibilityPolicy",
    "GatewayLink",
    "LocalStore",
    "device_share",
    "load_device_config",
    "load_model",
    "make_update",
    "update_key",
]
