"""Streaming example-weighted mean of model deltas: Σ nₖ·Δₖ / Σ nₖ (McMahan et al. 2017).

Memory is O(model): one float64 running sum per tensor, never one copy per device. Updates are
validated on the way in; a bad update (wrong names, shapes or dtype, NaN/Inf, no examples, a
device that already contributed) is recorded in :attr:`WeightedMeanAccumulator.rejected` with the
reason and is never averaged in — :meth:`~WeightedMeanAccumulator.add` does not raise for it.
Gateways keep one accumulator per round and the coordinator :meth:`merges
<WeightedMeanAccumulator.merge>` their partial sums, or folds in a partial that arrived over the
network with :meth:`~WeightedMeanAccumulator.add_partial` (exactly once per source).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.base import Aggregate, Update
from fedge.core.params import Params, ParamSpec
from fedge.errors import AggregationError, ShapeMismatchError, ValidationError

__all__ = ["WeightedMeanAccumulator"]

F64 = NDArray[np.float64]


class WeightedMeanAccumulator:
    """Accumulates weighted deltas for one round; :meth:`result` gives the mean."""

    def __init__(self, spec: ParamSpec) -> None:
        self.spec = spec
        self._sum: dict[str, F64] = {
            n: np.zeros(s, dtype=np.float64) for n, s in zip(spec.names, spec.shapes, strict=True)
        }
        self._total = 0.0
        self._accepted: set[str] = set()
        self._sources: set[str] = set()
        self._rejected: list[tuple[str, str]] = []

    @property
    def weighted_sum(self) -> dict[str, F64]:
        """A copy of Σ wₖ·Δₖ per tensor (float64), e.g. for a gateway to forward."""
        return {n: a.copy() for n, a in self._sum.items()}

    @property
    def total_weight(self) -> float:
        """Σ wₖ over accepted updates."""
        return self._total

    @property
    def num_accepted(self) -> int:
        """How many updates were averaged in."""
        return len(self._accepted)

    @property
    def rejected(self) -> tuple[tuple[str, str], ...]:
        """(device_id, reason) for every refused update, in arrival order."""
        return tuple(self._rejected)

    def add(self, update: Update) -> bool:
        """Average in one update; on a bad update record why, and return False."""
        device_id = str(update.device_id)
        weight = update.num_examples
        if device_id in self._accepted:
            return self._reject(device_id, "duplicate: this device already contributed")
        if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight <= 0:
            return self._reject(device_id, f"num_examples must be an integer > 0, got {weight!r}")
        if not isinstance(update.delta, Mapping):
            return self._reject(
                device_id,
                f"delta must be a mapping of name → array, got {type(update.delta).__name__}",
            )
        try:
            delta = self.spec.validate(update.delta, finite=True)
        except ValidationError as exc:
            return self._reject(device_id, str(exc))
        w = np.float64(weight)
        for name in self.spec.names:
            self._sum[name] += w * delta[name]
        self._total += float(w)
        self._accepted.add(device_id)
        return True

    def add_stacked(
        self, device_ids: Sequence[str], stacked: Mapping[str, np.ndarray], weights: np.ndarray
    ) -> int:
        """Average in D updates stacked on axis 0 (one einsum per tensor); returns how many."""
        ids = [str(d) for d in device_ids]
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(ids),):
            raise ShapeMismatchError(f"{len(ids)} device ids but weights of shape {w.shape}")
        for name in set(stacked) & set(self.spec.names):
            if np.ndim(stacked[name]) < 1 or np.shape(stacked[name])[0] != len(ids):
                raise ShapeMismatchError(
                    f"{name}: leading axis must be the {len(ids)} devices, got shape "
                    f"{np.shape(stacked[name])}"
                )
        problem = self._check_stacked(stacked)
        if problem is not None:
            for d in ids:
                self._reject(d, problem)
            return 0
        ok = np.isfinite(w) & (w > 0)
        finite = np.ones(len(ids), dtype=bool)
        for name in self.spec.names:
            finite &= np.isfinite(stacked[name].reshape(len(ids), -1)).all(axis=1)
        in_batch: set[str] = set()
        fresh = np.ones(len(ids), dtype=bool)
        for i, d in enumerate(ids):  # per device, not per scalar: ids need a set lookup
            fresh[i] = d not in self._accepted and d not in in_batch
            in_batch.add(d)
        accept = ok & finite & fresh
        for i in np.flatnonzero(~accept).tolist():
            reason = (
                f"weight must be finite and > 0, got {w[i]}"
                if not ok[i]
                else "contains NaN or Inf; the update is rejected"
                if not finite[i]
                else "duplicate: this device already contributed"
            )
            self._reject(ids[i], reason)
        rows = np.flatnonzero(accept)
        if rows.size == 0:
            return 0
        all_rows = rows.size == len(ids)
        for name in self.spec.names:
            arr = stacked[name] if all_rows else stacked[name][rows]
            self._sum[name] += np.einsum("d,d...->...", w[rows], arr)
        self._total += float(w[rows].sum())
        self._accepted.update(ids[i] for i in rows.tolist())
        return int(rows.size)

    def add_partial(
        self,
        source_id: str,
        weighted_sum: Mapping[str, np.ndarray],
        total_weight: float,
        num_accepted: int,
        contributors: Sequence[str],
    ) -> bool:
        """Fold in another tier's partial sum Σ wₖ·Δₖ (float64 or float32) once per source.

        ``contributors`` are the device ids summed in it (``num_accepted`` of them, none already
        counted here). On a bad partial record ``(source_id, reason)`` and return False.
        """
        source = str(source_id)
        devices = [str(d) for d in contributors]
        if source in self._sources:
            return self._reject(source, "duplicate: this source already contributed its partial")
        problem = self._check_partial(weighted_sum, total_weight, num_accepted, devices)
        if problem is not None:
            return self._reject(source, problem)
        for name in self.spec.names:
            self._sum[name] += np.asarray(weighted_sum[name], dtype=np.float64)
        self._total += float(total_weight)
        self._accepted.update(devices)
        self._sources.add(source)
        return True

    def _check_partial(
        self,
        sums: Mapping[str, np.ndarray],
        total_weight: float,
        num_accepted: int,
        devices: list[str],
    ) -> str | None:
        if isinstance(num_accepted, bool) or not isinstance(num_accepted, (int, np.integer)):
            return f"num_accepted must be an integer, got {num_accepted!r}"
        if num_accepted < 1 or num_accepted != len(devices) or len(set(devices)) != len(devices):
            return (
                f"num_accepted ({num_accepted}) must be >= 1 and equal the number of distinct "
                f"contributors ({len(set(devices))} of {len(devices)} listed)"
            )
        if not (np.isfinite(total_weight) and total_weight > 0):
            return f"total_weight must be finite and > 0, got {total_weight!r}"
        twice = self._accepted.intersection(devices)
        if twice:
            return f"{len(twice)} contributor(s) already counted (e.g. {sorted(twice)[:3]})"
        if not isinstance(sums, Mapping) or set(sums) != set(self.spec.names):
            names = sorted(sums) if isinstance(sums, Mapping) else type(sums).__name__
            return f"tensor names {names} do not match the model's {sorted(self.spec.names)}"
        for name, shape in zip(self.spec.names, self.spec.shapes, strict=True):
            arr = sums[name]
            if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float64, np.float32):
                return f"{name}: expected a float64 (or float32) array, got {getattr(arr, 'dtype', type(arr).__name__)}"
            if tuple(arr.shape) != shape:
                return f"{name}: expected shape {shape}, got {tuple(arr.shape)}"
            if not np.isfinite(arr).all():
                return f"{name}: contains NaN or Inf; the partial is rejected"
        return None

    def merge(self, other: WeightedMeanAccumulator) -> None:
        """Add another accumulator's partial sums (e.g. a gateway's) into this one."""
        if other.spec != self.spec:
            raise ShapeMismatchError("cannot merge accumulators built for different models")
        overlap = self._accepted & other._accepted
        if overlap:
            raise AggregationError(
                f"cannot merge: {len(overlap)} device(s) are in both partial aggregates "
                f"(e.g. {sorted(overlap)[:3]}); each device must be counted once"
            )
        for name in self.spec.names:
            self._sum[name] += other._sum[name]
        self._total += other._total
        self._accepted |= other._accepted
        self._sources |= other._sources
        self._rejected.extend(other._rejected)

    def result(self) -> Aggregate:
        """The weighted mean of the accepted updates; AggregationError if there are none."""
        if not self._accepted:
            sample = "; ".join(f"{d}: {r}" for d, r in self._rejected[:3])
            raise AggregationError(
                f"no update was accepted ({len(self._rejected)} rejected"
                + (f", e.g. {sample}" if sample else "")
                + "); the round cannot be aggregated"
            )
        mean: Params = {n: (a / self._total).astype(np.float32) for n, a in self._sum.items()}
        return Aggregate(mean, self._total, self.num_accepted, self.rejected)

    def _reject(self, device_id: str, reason: str) -> bool:
        self._rejected.append((device_id, reason))
        return False

    def _check_stacked(self, stacked: Mapping[str, np.ndarray]) -> str | None:
        if set(stacked) != set(self.spec.names):
            missing = sorted(set(self.spec.names) - set(stacked))
            extra = sorted(set(stacked) - set(self.spec.names))
            return f"parameter names do not match the model: missing {missing}, unexpected {extra}"
        for name, shape in zip(self.spec.names, self.spec.shapes, strict=True):
            arr = stacked[name]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                return f"{name}: expected a float32 numpy array, got {getattr(arr, 'dtype', type(arr).__name__)}"
            if tuple(arr.shape[1:]) != shape:
                return f"{name}: expected shape (D, *{shape}), got {tuple(arr.shape)}"
        return None
