"""Secure aggregation in the simulator: every round's sum through the real SecAgg+ protocol.

With ``[secure_aggregation] enabled = true`` each participant sends ``[n·Δ, n]`` — its example
weight times its (coordinate-clipped) delta, and the weight itself — into
:func:`fedge.secagg.run_secure_sum`: real device, gateway-relay and coordinator sessions with real
X25519/AES-GCM/Shamir cryptography, devices spread over ``gateways`` simulated gateways. Devices
drop out after ``dropout_phase`` at ``dropout_rate``; the sum is over the survivors, and because
the weight travels inside the secure sum the survivors' mean is exact FedAvg up to quantisation.
Too few survivors: the round is abandoned and the global model is unchanged.

Like a real round, the protocol needs every participant's vector at once: memory here is
O(devices per round × params) (the plain simulator stays O(chunk × params)).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.base import Aggregate, Update
from fedge.core.params import ParamSpec
from fedge.errors import AggregationError

__all__ = ["SecureRoundAggregator", "spread_over_gateways"]


def spread_over_gateways(device_ids: Sequence[str], gateways: int) -> dict[str, str]:
    """Simulated sites: device i reports through gateway i mod ``gateways``."""
    return {d: f"gateway-{i % gateways}" for i, d in enumerate(device_ids)}


@dataclass
class SecureRoundAggregator:
    """Collects a round's weighted deltas on the devices and sums them with SecAgg+."""

    spec: ParamSpec
    clip: float  # every delta coordinate is clipped to ±clip before quantisation
    max_weight: float  # the largest example count a device may claim (public: the partition's)
    bits: int
    gateways: int
    dropout_rate: float
    dropout_phase: str
    seed: int
    round_number: int
    neighbours: int | None = None
    threshold: int | None = None
    _ids: list[str] = field(default_factory=list)
    _rows: list[NDArray[np.float64]] = field(default_factory=list)
    _rejected: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_accepted(self) -> int:
        """Devices whose input is in the secure sum (survivors, once the round is summed)."""
        return int(self.stats.get("survivors", len(self._ids)))

    @property
    def rejected(self) -> tuple[tuple[str, str], ...]:
        """(device_id, reason) for refused updates and devices that dropped out."""
        return tuple(self._rejected)

    def add_stacked(
        self, device_ids: Sequence[str], stacked: Mapping[str, np.ndarray], weights: np.ndarray
    ) -> int:
        """Prepare D devices' ``[w·clip(Δ), w]`` vectors; non-finite rows are refused."""
        ids = [str(d) for d in device_ids]
        matrix = self.spec.flatten_stacked(stacked, len(ids)).astype(np.float64)
        w = np.asarray(weights, dtype=np.float64)
        ok = np.isfinite(matrix).all(axis=1) & (w > 0) & (w <= self.max_weight)
        for i in np.flatnonzero(~ok).tolist():
            self._rejected.append((ids[i], "non-finite update or weight outside (0, max]"))
        rows = np.clip(matrix[ok], -self.clip, self.clip) * w[ok, None]
        vectors = np.concatenate([rows, w[ok, None]], axis=1)
        self._rows.extend(vectors)
        self._ids.extend(i for i, good in zip(ids, ok.tolist(), strict=True) if good)
        return int(ok.sum())

    def add(self, update: Update) -> bool:
        """One device's delta tree (the per-device loop backend)."""
        stacked = {n: np.asarray(a)[None] for n, a in update.delta.items()}
        return self.add_stacked([update.device_id], stacked, np.array([update.num_examples])) == 1

    def _dropouts(self) -> dict[str, str]:
        rng = np.random.default_rng([self.seed, self.round_number, 0xD40B])
        gone = rng.random(len(self._ids)) < self.dropout_rate
        return {d: self.dropout_phase for d, g in zip(self._ids, gone.tolist(), strict=True) if g}

    def result(self) -> Aggregate:
        """Run the protocol; the survivors' weighted mean delta, or AggregationError."""
        from fedge.secagg import SecAggConfig, run_secure_sum

        n = len(self._ids)
        if n < 3:
            raise AggregationError(f"secure aggregation needs at least 3 devices, got {n}")
        reach = max(self.clip, 1.0) * self.max_weight  # |w·Δ| ≤ clip·w and the weight w ≤ max
        config = SecAggConfig(
            clip_range=(-reach, reach),
            bits=self.bits,
            dropout_rate=min(0.45, max(self.dropout_rate, 0.01)),
            neighbours=self.neighbours,
            threshold=self.threshold,
        )
        drops = self._dropouts()
        gateway_of = spread_over_gateways(self._ids, self.gateways)
        outcome = run_secure_sum(
            np.asarray(self._rows),
            self._ids,
            gateway_of,
            config,
            drop_after=drops,
            rng=random.Random(f"{self.seed}/{self.round_number}"),  # the graph only
            round_id=self.round_number,
        )
        survived = set(outcome.survivors)  # a device gone after its masked input still counts
        self._rejected.extend(
            (d, f"dropped out after {p}") for d, p in drops.items() if d not in survived
        )
        self.stats = {
            "survivors": len(outcome.survivors),
            "dropped": len(drops),
            "neighbours": outcome.params.neighbours,
            "threshold": outcome.params.threshold,
            "bytes_per_device": float(np.mean(list(outcome.bytes_sent_per_device.values()) or [0])),
            "coordinator_cpu_s": float(outcome.timings.get("coordinator_s", math.nan)),
        }
        if outcome.abandoned or outcome.total is None:
            raise AggregationError(f"secure aggregation abandoned the round: {outcome.reason}")
        total_weight = float(outcome.total[-1])
        if not total_weight > 0:
            raise AggregationError("the securely summed weight is not positive")
        mean = (outcome.total[:-1] / total_weight).astype(np.float32)
        return Aggregate(self.spec.unflatten(mean), total_weight, self.num_accepted, self.rejected)
