"""Eligible devices are counted by the database (Store.count_eligible_devices, on SQLite and
PostgreSQL), and equal what a scan of every device row finds (the reference below)."""

from __future__ import annotations

from fedge.coordinator.selection import matches_selector
from fedge.coordinator.store import Store

NOW = 1_000_000.0
SEEN = NOW - 600


def _fleet(store: Store) -> None:
    for i in range(40):
        site = f"s{i % 3}"
        gateway = f"gw-{i % 3}" if i % 4 else None  # every fourth device talks to us directly
        labels = {"zone": "a" if i % 2 else "b", "hw": "pi4" if i % 3 else "jetson"}
        last_seen = NOW - (1000 if i % 5 == 0 else 10)  # every fifth not seen for a while
        store.touch_device(f"d{i:02d}", site, gateway, last_seen, labels=labels)
    for i in (1, 2, 8):
        store.set_revoked(f"d{i:02d}")
    store.touch_device("unlabelled", "s0", "gw-0", NOW, labels={})


def _reference(store: Store, selector: dict[str, str]) -> tuple[dict[str, int], int]:
    per_site: dict[str, int] = {}
    direct = 0
    for d in store.list_devices():
        if d.revoked or not matches_selector(d.labels, selector):
            continue
        if d.gateway_id is not None and d.site is not None:
            per_site[d.site] = per_site.get(d.site, 0) + 1
        elif d.gateway_id is None and (d.last_seen or 0.0) >= SEEN:
            direct += 1
    return per_site, direct


def test_counts_equal_a_scan_of_every_device(store: Store) -> None:
    _fleet(store)
    for selector in ({}, {"zone": "a"}, {"zone": "b", "hw": "pi4"}, {"zone": "c"}, {"x": "1"}):
        assert store.count_eligible_devices(selector, SEEN) == _reference(store, selector), selector
    per_site, direct = store.count_eligible_devices({}, SEEN)
    assert sum(per_site.values()) == 29 and direct == 7  # 30 - 2 revoked + 1; 10 - 2 stale - 1
