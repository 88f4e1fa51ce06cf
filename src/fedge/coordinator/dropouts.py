"""The devices a round lost, by phase, counted by the coordinator when the round closes.

What the coordinator can see for itself (``fedge_dropouts_total`` at the coordinator):

- ``training``: devices connected to it directly that were handed a task and never reported;
- ``report``: for each gateway handed the round whose partial never arrived, its quota -- every
  device it was to bring is lost to the round, and the coordinator cannot know how many it had
  handed the task to (the gateway's own ``/metrics`` counts those that never reported to it).

A gateway that did report counts its own devices' training dropouts (``training`` on its
``/metrics``). A round with secure aggregation has neither direct devices nor partials: its
losses are counted per SecAgg+ phase as each phase closes (:mod:`fedge.coordinator.secure`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from fedge.coordinator.selection import DIRECT

if TYPE_CHECKING:
    from fedge.coordinator.live import LiveRound

__all__ = ["count_dropouts", "round_dropouts"]


def count_dropouts(
    direct_handed: Collection[str],
    direct_reported: Collection[str],
    gateways_handed: Collection[str],
    gateways_reported: Collection[str],
    quotas: Mapping[str, int],
) -> dict[str, int]:
    """Devices lost by phase: direct devices handed a task minus those that reported
    (``training``), and the quotas of the gateways handed the round that never reported
    (``report``); phases with none are left out."""
    counts = {
        "training": len(set(direct_handed) - set(direct_reported)),
        "report": sum(
            quotas.get(g, 0) for g in set(gateways_handed) - set(gateways_reported) if g != DIRECT
        ),
    }
    return {phase: n for phase, n in counts.items() if n > 0}


def round_dropouts(live: LiveRound) -> dict[str, int]:
    """What ``live`` lost, by phase, as it closes (nothing for a secure round: see above)."""
    if live.secure is not None:
        return {}
    return count_dropouts(
        live.direct_assigned,
        live.direct_submitted,
        live.handed,
        live.machine.reported,
        live.machine.quotas,
    )
