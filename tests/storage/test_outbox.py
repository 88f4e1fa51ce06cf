"""The SQLite outbox: idempotent puts, due/failed/delivered, expiry, restart, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fedge.storage import Outbox


def test_put_is_idempotent_and_due_orders_by_next_attempt(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        assert box.put("a", "/v1/x", b"one", deadline=100.0)
        assert not box.put("a", "/v1/x", b"other", deadline=200.0)  # same key: left as it is
        assert box.put("b", "/v1/y", b"two", deadline=100.0)
        assert [i.key for i in box.due(now=10.0)] == ["a", "b"]
        assert box.get("a") is not None and box.get("a").payload == b"one"  # type: ignore[union-attr]
        box.mark_failed("a", retry_at=20.0, error="connection refused")
        assert [i.key for i in box.due(now=10.0)] == ["b"]
        item = box.due(now=25.0)[-1]
        assert (item.key, item.attempts, item.last_error) == ("a", 1, "connection refused")
        assert box.pending() == 2 and [i.key for i in box.pending_items()] == ["a", "b"]


def test_delivered_items_are_not_resent_even_if_put_again(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        box.put("partial/job1/3", "/v1/jobs/job1/rounds/3/partials", b"sum", deadline=100.0)
        box.mark_delivered("partial/job1/3", now=5.0)
        assert box.is_delivered("partial/job1/3")
        assert not box.put("partial/job1/3", "/v1/...", b"sum", deadline=100.0)
        assert box.due(now=10.0) == [] and box.pending() == 0
        assert box.forget_delivered(before=6.0) == 1
        assert not box.is_delivered("partial/job1/3")


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.db"
    box = Outbox(path)
    box.put("k1", "dest", bytes(range(256)) * 100, deadline=1e12)
    box.put("k2", "dest", b"delivered", deadline=1e12)
    box.mark_delivered("k2")
    box.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Outbox(path) as again:
        (item,) = again.due(now=0.0)
        assert item.key == "k1" and item.payload == bytes(range(256)) * 100
        assert again.is_delivered("k2")
        assert not again.put("k2", "dest", b"delivered", deadline=1e12)


def test_expire_drops_and_reports_past_deadline_items(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        box.put("old", "d", b"1", deadline=50.0)
        box.put("new", "d", b"2", deadline=500.0)
        assert [i.key for i in box.due(now=60.0)] == ["new"]  # past deadline: not due
        expired = box.expire(now=60.0)
        assert [(i.key, i.payload) for i in expired] == [("old", b"1")]
        assert box.expire(now=60.0) == []
        assert box.pending() == 1
        assert box.has("old") and not box.put("old", "d", b"1", deadline=500.0)  # not resent


def test_concurrent_puts_from_threads(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        added: list[bool] = []

        def worker(offset: int) -> None:
            for i in range(50):
                added.append(box.put(f"k{(i + offset) % 60}", "d", b"x", deadline=1e12))

        threads = [threading.Thread(target=worker, args=(n * 10,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(added) == 60 == box.pending()


def test_discard_keeps_the_key_and_none_deadline_never_expires(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        assert box.put("partial/j/1", "https://coordinator", b"sum", deadline=None)
        assert box.put("partial/j/2", "https://coordinator", b"sum2", deadline=100.0)
        assert [(i.key, i.expires_at) for i in box.pending_items()] == [
            ("partial/j/1", None), ("partial/j/2", 100.0),
        ]  # fmt: skip
        assert [i.key for i in box.expire(now=1e9)] == ["partial/j/2"]
        assert box.due(now=1e9)[0].destination == "https://coordinator"
        box.discard("partial/j/1", "stale round")
        assert box.pending_items() == [] and box.has("partial/j/1") and box.has("partial/j/2")
        assert not box.put("partial/j/1", "https://coordinator", b"sum", deadline=None)
        assert not box.has("partial/j/3")


def test_due_with_a_prefix_lists_one_kind_of_message(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        box.put("partial/job1/3", "/v1/jobs/job1/rounds/3/partials", b"sum", deadline=None)
        box.put(
            "relay-sum/job1/3/gw-a",
            "/v1/gateway/jobs/job1/rounds/3/secagg",
            b"masked",
            deadline=None,
        )
        box.put(
            "relay-sum/job1/4/gw-a", "/v1/gateway/jobs/job1/rounds/4/secagg", b"m4", deadline=None
        )
        assert [i.key for i in box.due(10.0, prefix="partial/")] == ["partial/job1/3"]
        assert [i.key for i in box.due(10.0, prefix="relay-sum/")] == [
            "relay-sum/job1/3/gw-a",
            "relay-sum/job1/4/gw-a",
        ]
        assert len(box.due(10.0)) == 3  # no prefix: everything due
        box.mark_delivered("relay-sum/job1/3/gw-a")
        assert [i.key for i in box.due(10.0, prefix="relay-sum/")] == ["relay-sum/job1/4/gw-a"]
