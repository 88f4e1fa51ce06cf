"""The gateway's running sum stays O(model), never O(model x devices): the peak memory traced
while a cohort takes 10 updates and while it takes 500 (a model of 10^5 parameters) differ by
less than one update's size. Memory is what is measured, never time."""

from __future__ import annotations

import tracemalloc

import numpy as np

from fedge.core.params import ParamSpec
from fedge.core.serde import encode_params
from fedge.gateway.cohort import Cohort, decode_update, encode_partial

SPEC = ParamSpec(("b", "w"), ((400,), (300, 332)))  # 100,000 parameters, 400 KB in float32


def _payload(device: str, rng: np.random.Generator) -> bytes:
    delta = {
        n: rng.standard_normal(s, dtype=np.float32)
        for n, s in zip(SPEC.names, SPEC.shapes, strict=True)
    }
    meta = {
        "kind": "update", "job": "j", "round": "1", "device": device,
        "nonce": f"{rng.integers(2**63):032x}", "num_examples": "20", "train_loss": "0.5",
    }  # fmt: skip
    return encode_params(delta, meta)


def _peak_of_round(updates: int) -> int:
    """Peak traced bytes while one round's cohort takes ``updates`` updates and forms its
    partial; each payload arrives, is checked and folded in, then dropped (as the service does)."""
    rng = np.random.default_rng(updates)
    tracemalloc.start()
    try:
        cohort = Cohort(SPEC)
        tracemalloc.reset_peak()
        for i in range(updates):
            device = f"device-{i:04d}"
            decoded = decode_update(
                _payload(device, rng), SPEC, job_id="j", round_number=1, device=device
            )
            assert cohort.add(decoded)
            del decoded
        partial = encode_partial(cohort, job_id="j", round_number=1, gateway="gw", site="s",
                                 nonce="0" * 32)  # fmt: skip
        assert cohort.num_accepted == updates and len(partial) > 4 * SPEC.size
        del partial
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cohort_peak_memory_is_flat_in_the_number_of_updates() -> None:
    assert SPEC.size == 100_000
    few, many = _peak_of_round(10), _peak_of_round(500)
    update = 4 * SPEC.size  # one float32 update
    # O(model): a float64 sum, one update in flight, its float32 partial; per device only
    # its id and nonce. O(model x devices) would add ~490 updates (~196 MB) at 500.
    assert many - few < update, (few, many)
    assert few < 12 * update  # and the flat level is a few copies of the model, not more
