"""Selection: how many devices each site may train in a round.

A round asks for K devices and over-selects by a factor (devices always drop out), so it hands out
``ceil(K × over_selection)`` tasks. They are spread over the sites in proportion to each site's
eligible devices with the largest-remainder (Hamilton) method, so quotas sum exactly to the
total; no site gets more than it has eligible. Devices that talk to the coordinator directly (no
gateway) form one pseudo-site, :data:`DIRECT`.

Which devices are eligible respects the job's label selector (every ``key = value`` must match).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["DIRECT", "matches_selector", "plan_quotas", "round_target"]

DIRECT = "(direct)"  # the pseudo-site of directly connected devices; never a valid gateway id


def round_target(devices_per_round: int, over_selection: float) -> int:
    """ceil(K × over_selection): how many tasks a round hands out (at least K)."""
    return max(devices_per_round, math.ceil(devices_per_round * over_selection - 1e-9))


def matches_selector(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """True when every ``key = value`` of ``selector`` is among ``labels``."""
    return all(labels.get(k) == v for k, v in selector.items())


def plan_quotas(
    devices_per_round: int, over_selection: float, eligible: Mapping[str, int]
) -> dict[str, int]:
    """Spread the round's tasks over sites in proportion to ``eligible`` (largest remainder).

    Returns a quota for every site in ``eligible`` (0 for sites with no eligible device). When the
    fleet has fewer eligible devices than the target, every eligible device is asked.
    """
    counts = {site: max(0, int(n)) for site, n in eligible.items()}
    available = sum(counts.values())
    target = min(round_target(devices_per_round, over_selection), available)
    if target == 0:
        return dict.fromkeys(counts, 0)
    exact = {site: target * n / available for site, n in counts.items()}
    quotas = {site: math.floor(x) for site, x in exact.items()}
    left = target - sum(quotas.values())
    # Largest fractional part first; ties go to the larger site, then by name (deterministic).
    order = sorted(counts, key=lambda s: (-(exact[s] - quotas[s]), -counts[s], s))
    for site in order[:left]:
        quotas[site] += 1
    return quotas
