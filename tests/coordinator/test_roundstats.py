"""Per-round records for operators: coordinator ingress vs device-direct, secure-sum outcomes.

The store-level tests run on SQLite and PostgreSQL (the ``store`` fixture); the service test
checks what a real plain round records, byte for byte, from the payloads it received.
"""

from __future__ import annotations

from pathlib import Path

from fedge.coordinator.roundstats import RoundStats, RoundTraffic, direct_equivalent
from fedge.coordinator.store import Store

from .helpers import ADMIN, Clock, make_service, run_plain_round, spec


def test_direct_equivalent_counts_each_folded_device() -> None:
    # a control message or a device's own update stands for itself
    assert direct_equivalent("secagg", 300, 0, 1000) == 300
    assert direct_equivalent("update", 4_100, 1, 1000) == 4_100
    # a relay sum of 5 masked inputs: 5 vectors of the same size
    assert direct_equivalent("secagg", 9_000, 5, 1000) == 45_000
    # a plain partial of 3: float64 sums (8 B/parameter) become 3 float32 updates (4 B/parameter)
    assert direct_equivalent("partial", 8_000 + 200, 3, 1000) == 3 * (4_000 + 200)


def test_traffic_sums_per_round(store: Store) -> None:
    stats = RoundStats(store.engine)
    stats.record_traffic("j", 1, "gw-a", "partial", 100, 4, 400, now=1.0)
    stats.record_traffic("j", 1, "gw-b", "partial", 100, 2, 200, now=2.0)
    stats.record_traffic("j", 2, "dev-1", "update", 50, 1, 50, now=3.0)
    stats.record_traffic("other", 1, "gw-a", "partial", 999, 9, 9_999, now=3.0)
    assert stats.traffic("j") == [RoundTraffic(1, 200, 600, 2), RoundTraffic(2, 50, 50, 1)]
    assert stats.traffic("j")[0].saved_bytes == 400
    assert stats.traffic("none") == []


def test_secagg_outcome_is_kept_once(store: Store) -> None:
    stats = RoundStats(store.engine)
    stats.record_secagg("j", 2, expected=6, joined=5, survivors=4, reason="", now=5.0)
    stats.record_secagg("j", 2, expected=6, joined=5, survivors=0, reason="again", now=6.0)
    stats.record_secagg("j", 1, expected=6, joined=2, survivors=0, reason="too few", now=4.0)
    got = [
        (o.round, o.joined, o.survivors, o.abandoned, o.reason) for o in stats.secagg_outcomes("j")
    ]
    assert got == [(1, 2, 0, True, "too few"), (2, 5, 4, False, "")]


def test_a_plain_round_records_what_each_gateway_sent(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)

    svc.admin.create_job(ADMIN, spec(rounds=1, devices_per_round=4, min_devices=2))
    parameters = svc.driver.runtime("digits").param_spec.size
    sizes = run_plain_round(svc, clock, 1)
    (traffic,) = svc.driver.stats.traffic("digits")
    assert traffic.round == 1 and traffic.payloads == 2
    assert traffic.received_bytes == sum(sizes)
    # two devices per partial, each would have sent float32 (4 B) instead of float64 (8 B)
    assert traffic.device_direct_bytes == sum(2 * (s - 4 * parameters) for s in sizes)
    assert traffic.saved_bytes > 0
