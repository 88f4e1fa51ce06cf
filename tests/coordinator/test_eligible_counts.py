"""Eligible devices are counted by the database (Store.count_eligible_devices, on SQLite and
PostgreSQL), and equal what a scan of every device row finds (the reference below): per gateway
for the devices behind one, seen recently, unrevoked, labels matching the selector."""

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
    per_gateway: dict[str, int] = {}
    direct = 0
    for d in store.list_devices():
        if d.revoked or not matches_selector(d.labels, selector) or (d.last_seen or 0.0) < SEEN:
            continue
        if d.gateway_id is not None:
            per_gateway[d.gateway_id] = per_gateway.get(d.gateway_id, 0) + 1
        else:
            direct += 1
    return per_gateway, direct


def test_counts_equal_a_scan_of_every_device(store: Store) -> None:
    _fleet(store)
    for selector in ({}, {"zone": "a"}, {"zone": "b", "hw": "pi4"}, {"zone": "c"}, {"x": "1"}):
        assert store.count_eligible_devices(selector, SEEN) == _reference(store, selector), selector
    per_gateway, direct = store.count_eligible_devices({}, SEEN)
    # behind gateways: 30 - 6 stale - 2 revoked + 1 unlabelled; direct: 10 - 2 stale - 1 revoked
    assert sum(per_gateway.values()) == 23 and direct == 7


def test_labels_forwarded_by_a_gateway_are_stored_and_counted_for_it(store: Store) -> None:
    store.register_devices({"a1": "s1", "b1": "s2"}, "gw-a", NOW)  # b1: certified for s2
    foreign = store.record_device_labels(
        "gw-a", "s1", {"a1": {"zone": "a"}, "a2": {"zone": "a"}, "b1": {"zone": "a"}}, NOW
    )
    assert foreign == ["b1"]  # another site's device: its labels are left alone
    assert store.get_device("b1").labels == {}  # type: ignore[union-attr]
    a2 = store.get_device("a2")  # not registered yet: its site waits for its certificate
    assert a2 is not None and a2.site is None and a2.gateway_id == "gw-a"
    assert store.count_eligible_devices({"zone": "a"}, SEEN) == ({"gw-a": 2}, 0)
    store.record_device_labels("gw-b", "s1", {"a2": {"zone": "b"}}, NOW)  # it moved
    assert store.count_eligible_devices({"zone": "a"}, SEEN) == ({"gw-a": 1}, 0)
    assert store.count_eligible_devices({"zone": "a"}, NOW + 1) == ({}, 0)  # not seen since


def test_revoked_devices_are_listed_for_their_site(store: Store) -> None:
    store.register_devices({"a1": "s1", "a2": "s1", "b1": "s2"}, "gw-a", NOW)
    for device in ("a2", "b1", "never-seen"):
        store.set_revoked(device)
    assert store.revoked_devices("s1", 10) == ["a2", "never-seen"]  # its own, and unknown ones
    assert store.revoked_devices("s2", 1) == ["b1"]
