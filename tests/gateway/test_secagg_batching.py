"""The gateway's per-site secure-aggregation traffic, without I/O: the upstream batch
(:mod:`fedge.gateway.batching`) and the fan-out of the site inbox (:mod:`fedge.gateway.fanout`)."""

from __future__ import annotations

import base64

import pytest

from fedge.errors import ValidationError
from fedge.gateway.batching import UpBatch
from fedge.gateway.fanout import SiteInbox
from fedge.transport.messages import (
    MAX_BATCH_ITEMS,
    KeyBinding,
    SecAggJoin,
    SecAggSiteInbox,
    SecAggSiteMessage,
    new_nonce,
)


def binding(name: str, role: str = "device") -> KeyBinding:
    return KeyBinding(
        role=role,  # type: ignore[arg-type]
        name=name,
        identity_key=base64.b64encode(bytes(32)).decode(),
        certificate=f"certificate of {name}",
        proof="cHJvb2Y=",
    )


def join(device: str) -> SecAggJoin:
    return SecAggJoin(
        job_id="j", round=1, device_id=device, nonce=new_nonce(), binding=binding(device)
    )


def test_a_batch_goes_up_once_nobody_it_waits_for_is_missing() -> None:
    batch = UpBatch(linger_s=2.0)
    assert not batch.due(0.0, set())  # nothing queued
    assert batch.add_join(join("d1"), now=0.0)
    assert not batch.due(0.1, {"d1", "d2"})  # d2 has not sent its item yet
    assert batch.add_message("d2", b"advert of d2", now=0.2)
    assert batch.due(0.2, {"d1", "d2"})
    sent, joins, messages = batch.take()
    assert [j.device_id for j in sent.joins] == ["d1"] and [p.device for p in joins] == ["d1"]
    assert [(m.device_id, base64.b64decode(m.message)) for m in sent.messages] == [
        ("d2", b"advert of d2")
    ]
    assert [p.device for p in messages] == ["d2"] and len(batch) == 0


def test_a_missing_device_holds_the_batch_only_for_the_linger() -> None:
    batch = UpBatch(linger_s=0.5)
    batch.add_message("d1", b"shares of d1", now=10.0)
    assert not batch.due(10.4, {"d1", "d2"})
    assert batch.due(10.5, {"d1", "d2"})  # d2 dropped out: the others go up without it


def test_resends_are_duplicates_even_after_the_batch_went_up() -> None:
    batch = UpBatch(linger_s=1.0)
    j = join("d1")
    assert batch.add_join(j, 0.0) and not batch.add_join(j, 0.1)
    assert batch.add_message("d1", b"x", 0.0) and not batch.add_message("d1", b"x", 0.2)
    batch.take()
    assert not batch.add_message("d1", b"x", 0.3)
    assert batch.add_message("d1", b"y", 0.3)  # other bytes: a new message


def test_batches_are_bounded_in_items_and_bytes() -> None:
    batch = UpBatch(linger_s=60.0, max_bytes=10_000)
    for i in range(MAX_BATCH_ITEMS + 10):
        assert batch.add_message(f"d{i}", f"message {i:04d}".encode(), now=0.0)
    assert batch.due(0.0, {"someone else"})  # full: no waiting for the rest
    first, _, taken = batch.take()
    assert len(first.messages) == len(taken) <= MAX_BATCH_ITEMS
    assert len(first.model_dump_json()) <= 10_000
    rest = []
    while len(batch):
        rest.extend(batch.take()[2])
    assert len(taken) + len(rest) == MAX_BATCH_ITEMS + 10
    big = UpBatch(linger_s=0.0, max_bytes=100)
    big.add_message("d1", bytes(1000), now=0.0)  # larger than a batch: it goes up alone
    assert len(big.take()[0].messages) == 1


def test_undelivered_items_go_back_in_front_and_old_ones_are_dropped() -> None:
    batch = UpBatch(linger_s=0.0, max_age_s=5.0)
    batch.add_message("old", b"a", now=0.0)
    batch.add_message("new", b"b", now=4.0)
    _, _, taken = batch.take()
    batch.add_message("later", b"c", now=4.5)
    dropped = batch.put_back(taken, now=6.0, retry_at=7.0)
    assert [p.device for p in dropped] == ["old"]
    assert not batch.due(6.5, set())  # backing off until retry_at
    assert batch.due(7.0, set())
    assert [m.device_id for m in batch.take()[0].messages] == ["new", "later"]


def page(after: int, items: list[tuple[str, str]], **over: object) -> SecAggSiteInbox:
    fields: dict[str, object] = {
        "state": "running",
        "messages": [SecAggSiteMessage(device_id=d, message=t) for d, t in items],
        "next": after + len(items),
        "phase": "advertise_keys",
    }
    fields.update(over)
    return SecAggSiteInbox.model_validate(fields)


def test_site_inbox_fans_out_to_device_inboxes_with_their_neighbours_keys() -> None:
    inbox = SiteInbox()
    members = {"d1", "d2"}
    first = page(
        0,
        [("d1", "AAAA"), ("d2", "BBBB")],
        bindings=[binding("coordinator", "coordinator"), binding("d2"), binding("x9")],
        neighbours={"d1": ["d2", "x9"], "d2": ["x9"]},
        phase_deadline=100.0,
    )
    assert inbox.merge(first, members) == [("d1", "AAAA"), ("d2", "BBBB")]
    assert inbox.cursor == 2 and inbox.has_news("d1", 0) and not inbox.has_news("d1", 1)
    view = inbox.view("d1", 0)
    assert view.messages == ["AAAA"] and view.next == 1 and view.phase_deadline == 100.0
    assert [b.name for b in view.bindings] == ["coordinator", "d2", "x9"]
    assert [b.name for b in inbox.view("d2", 0).bindings] == ["coordinator", "x9"]
    assert inbox.view("d1", 1).bindings == []  # only with the first page, as the coordinator
    inbox.merge(page(2, [("d1", "CCCC")], relay_deadline=50.0), members)
    inbox.merge(page(3, [], state="done", phase="done"), members)
    assert inbox.view("d1", 1).messages == ["CCCC"] and inbox.relay_deadline == 50.0
    assert inbox.final and inbox.has_news("d2", 1) and inbox.view("d2", 1).state == "done"
    with pytest.raises(ValidationError, match="past the 1 messages"):
        inbox.view("d2", 2)


def test_site_inbox_refuses_inconsistent_or_foreign_pages() -> None:
    inbox = SiteInbox()
    with pytest.raises(ValidationError, match="inconsistent"):
        inbox.merge(page(0, [("d1", "AAAA")], next=5), {"d1"})
    with pytest.raises(ValidationError, match="did not join here"):
        inbox.merge(page(0, [("d7", "AAAA")]), {"d1"})
    with pytest.raises(ValidationError, match="start with the coordinator"):
        inbox.merge(page(0, [], bindings=[binding("d1")]), {"d1"})
    assert inbox.cursor == 0
