"""May the device work now? A pluggable policy, checked before every check-in.

The default :class:`ConditionsPolicy` follows production FL practice (Bonawitz et al. 2019):
train only when charging, idle, on an unmetered network and with enough local examples.

- **Charging** is read from Linux's ``/sys/class/power_supply``: a ``Mains``/``USB`` supply whose
  ``online`` is 1, or a battery whose ``status`` is ``Charging``/``Full``, means charging; a battery
  ``Discharging`` with no supply online means not. No battery at all (a directory that is absent or
  lists only supplies) is a mains-powered device: charging.
- **Idle** compares the 1-minute load average (``/proc/loadavg``) per CPU with a threshold.
- **Unmetered** is a configured fact about the device's link (the kernel cannot know a tariff).

Any object with ``evaluate(num_examples) -> EligibilityDecision`` is a policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedge.transport.messages import Eligibility

__all__ = [
    "AlwaysEligible",
    "ConditionsPolicy",
    "EligibilityDecision",
    "EligibilityPolicy",
    "read_charging",
    "read_idle",
]


@dataclass(frozen=True)
class EligibilityDecision:
    """The verdict, why not (empty when eligible), and what is reported at check-in."""

    eligible: bool
    reasons: tuple[str, ...]
    report: Eligibility


class EligibilityPolicy(Protocol):
    """Decides whether the device may ask for work now."""

    def evaluate(self, num_examples: int) -> EligibilityDecision:
        """Look at the device's state now."""
        ...


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_charging(power_supply_dir: str | Path = "/sys/class/power_supply") -> bool:
    """True when on external power (or no battery is present); see the module docstring."""
    root = Path(power_supply_dir)
    try:
        supplies = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return True  # no power-supply class: treated as mains-powered
    has_battery = False
    for supply in supplies:
        kind = (_read(supply / "type") or "").lower()
        if kind == "battery":
            has_battery = True
            status = (_read(supply / "status") or "").lower()
            if status in ("charging", "full"):
                return True
        elif _read(supply / "online") == "1":
            return True
    return not has_battery


def read_idle(loadavg_path: str | Path = "/proc/loadavg", max_load_per_cpu: float = 0.8) -> bool:
    """True when the 1-minute load average per CPU is below ``max_load_per_cpu`` (or unknown)."""
    text = _read(Path(loadavg_path))
    if not text:
        return True
    try:
        load = float(text.split()[0])
    except ValueError:
        return True
    return load / max(os.cpu_count() or 1, 1) < max_load_per_cpu


@dataclass(frozen=True)
class ConditionsPolicy:
    """Charging, idle, unmetered and enough examples, each requirement switchable."""

    min_examples: int = 1
    require_charging: bool = True
    require_idle: bool = False
    require_unmetered: bool = True
    unmetered: bool = True  # is this device's link unmetered (a configured fact)?
    max_load_per_cpu: float = 0.8
    power_supply_dir: str = "/sys/class/power_supply"
    loadavg_path: str = "/proc/loadavg"

    def evaluate(self, num_examples: int) -> EligibilityDecision:
        """Read the device's state and decide."""
        charging = read_charging(self.power_supply_dir)
        idle = read_idle(self.loadavg_path, self.max_load_per_cpu)
        reasons = []
        if self.require_charging and not charging:
            reasons.append("on battery")
        if self.require_idle and not idle:
            reasons.append("busy")
        if self.require_unmetered and not self.unmetered:
            reasons.append("metered network")
        if num_examples < self.min_examples:
            reasons.append(f"{num_examples} local examples, need {self.min_examples}")
        report = Eligibility(
            charging=charging, idle=idle, unmetered=self.unmetered, num_examples=num_examples
        )
        return EligibilityDecision(not reasons, tuple(reasons), report)


@dataclass(frozen=True)
class AlwaysEligible:
    """A policy that only asks for at least ``min_examples`` examples (tests, simulations)."""

    min_examples: int = 1

    def evaluate(self, num_examples: int) -> EligibilityDecision:
        """Eligible whenever there are enough examples."""
        ok = num_examples >= self.min_examples
        reasons = () if ok else (f"{num_examples} local examples, need {self.min_examples}",)
        return EligibilityDecision(ok, reasons, Eligibility(num_examples=num_examples))
