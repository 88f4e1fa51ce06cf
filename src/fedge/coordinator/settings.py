"""Tunables of the coordinator's service logic (the process config wraps these)."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.coordinator.canary import CanaryPolicy

__all__ = ["CoordinatorSettings"]


@dataclass(frozen=True)
class CoordinatorSettings:
    """How the coordinator paces rounds; defaults suit a small fleet."""

    gateway_ttl_s: float = 60.0  # a gateway silent for longer gets no quota in new rounds
    device_ttl_s: float = 300.0  # a direct device silent for longer is not counted eligible
    poll_interval_s: float = 2.0  # retry_after told to gateways and waiting devices
    max_consecutive_abandoned: int = 10  # then the job fails instead of retrying forever
    max_contributors: int = 100_000  # per partial; bounds the partial payload's header
    long_poll_s: float = 0.0  # hold a direct device's check-in up to this long (0: answer at once)
    max_held_checkins: int = 10_000  # check-ins held at once; more are answered at once
    # release gate: a committed version becomes production only if its accuracy is at most this
    # much below production's; otherwise it stays a candidate (None: never promote automatically)
    release_margin: float | None = 0.0
    # staged rollout: a new production version goes to a share of gateways first and widens
    # only if their devices' health reports hold (None: every gateway at once)
    canary: CanaryPolicy | None = None
