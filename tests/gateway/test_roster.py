"""SiteRoster: who is online and eligible, which labels are due, which certificates to register."""

from __future__ import annotations

from fedge.gateway.roster import SiteRoster


def test_presence_counts_recent_devices_and_sends_labels_when_due() -> None:
    roster = SiteRoster(online_window_s=100.0, label_refresh_s=60.0)
    roster.saw("a", 0.0, eligible=True, labels={"model": "x1"}, der=b"cert-a")
    roster.saw("b", 0.0, eligible=False, labels={"model": "x2"}, der=None)
    roster.saw("c", 0.0, eligible=True, labels={"k" * 65: "too long a key"}, der=None)
    p = roster.presence(10.0)
    assert (p.online, p.eligible) == (3, 2)
    assert p.labels == {"a": {"model": "x1"}}  # b is not eligible; c's labels cannot be forwarded
    roster.labels_sent(p.labels, 10.0)
    assert roster.presence(20.0).labels == {}  # sent lately, unchanged
    roster.saw("a", 30.0, eligible=True, labels={"model": "x3"}, der=b"cert-a")
    assert roster.presence(30.0).labels == {"a": {"model": "x3"}}  # changed: due again
    roster.labels_sent({"a": {"model": "x3"}}, 30.0)
    assert roster.presence(95.0).labels == {"a": {"model": "x3"}}  # refresh interval passed
    p = roster.presence(105.0)
    assert (p.online, p.eligible) == (1, 1)  # only a checked in within the last 100 s


def test_certificates_wait_until_registered_and_a_forgotten_device_is_gone() -> None:
    roster = SiteRoster()
    roster.saw("a", 0.0, eligible=True, labels={}, der=b"cert-a")
    roster.saw("b", 0.0, eligible=True, labels={}, der=b"cert-b")
    assert roster.unregistered_certificates() == {"a": b"cert-a", "b": b"cert-b"}
    roster.mark_registered(["a"])
    roster.saw("a", 1.0, eligible=True, labels={}, der=b"cert-a")  # not asked for again
    assert roster.unregistered_certificates() == {"b": b"cert-b"}
    roster.forget("b")
    assert roster.unregistered_certificates() == {}
    p = roster.presence(2.0)
    assert (p.online, p.eligible) == (1, 1)
