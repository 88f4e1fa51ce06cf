"""The coordinator's running sum of a round stays O(model), never O(model x partials): the peak
memory traced while it folds in 10 gateways' partials and while it folds in 500 (a model of
10^5 parameters, each partial checked as a gateway's upload is) differ by less than one
partial's size. Memory is what is measured, never time."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np

from fedge.aggregation import WeightedMeanAccumulator
from fedge.coordinator.payloads import decode_partial, partial_limit
from fedge.core.params import ParamSpec
from fedge.core.serde import encode_arrays
from fedge.identity import Identity, Role

SPEC = ParamSpec(("b", "w"), ((400,), (300, 332)))  # 100,000 parameters, 400 KB in float32


def _gateway(i: int) -> Identity:
    now = datetime.now(UTC)
    return Identity(Role.GATEWAY, f"gw-{i:04d}", f"site-{i:04d}", i + 1, now - timedelta(days=1),
                    now + timedelta(days=1))  # fmt: skip


def _partial(gw: Identity, rng: np.random.Generator) -> bytes:
    """A gateway's float32 partial of 2 devices' updates, as fedge.gateway.cohort encodes it."""
    sums = {
        n: rng.standard_normal(s, dtype=np.float32)
        for n, s in zip(SPEC.names, SPEC.shapes, strict=True)
    }
    meta = {
        "kind": "partial", "job": "j", "round": "1", "gateway": gw.name, "site": str(gw.site),
        "nonce": f"{rng.integers(2**63):032x}", "total_weight": "40.0", "num_accepted": "2",
        "contributors": json.dumps([f"{gw.name}-d0", f"{gw.name}-d1"]), "rejected": "[]",
    }  # fmt: skip
    return encode_arrays(sums, meta)


def _peak_of_round(partials: int) -> int:
    """Peak traced bytes while a round's sum takes ``partials`` partials: each payload arrives,
    is decoded and checked, folded in and dropped (as CoordinatorService.submit_partial does)."""
    rng = np.random.default_rng(partials)
    limit = partial_limit(SPEC, 1000)
    tracemalloc.start()
    try:
        acc = WeightedMeanAccumulator(SPEC)
        tracemalloc.reset_peak()
        for i in range(partials):
            gw = _gateway(i)
            p = decode_partial(
                _partial(gw, rng), SPEC, job_id="j", round_number=1, peer=gw, max_bytes=limit
            )
            assert acc.add_partial(gw.name, p.sums, p.total_weight, p.num_accepted, p.contributors)
            del p
        result = acc.result()
        assert acc.num_accepted == 2 * partials and result.num_accepted == 2 * partials
        del result
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_partial_accumulation_peak_memory_is_flat_in_the_number_of_partials() -> None:
    assert SPEC.size == 100_000
    few, many = _peak_of_round(10), _peak_of_round(500)
    partial = 4 * SPEC.size  # one float32 partial
    # O(model): the float64 sum, one partial in flight and the mean; per partial only its
    # source and device ids. O(model x partials) would add ~490 partials (~196 MB) at 500.
    assert many - few < partial, (few, many)
    assert few < 12 * partial
