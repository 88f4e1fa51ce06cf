"""One contract, two databases: the Store behaves the same on SQLite and PostgreSQL.

The PostgreSQL leg runs when FEDGE_TEST_POSTGRES_URL is set (``.ci/run`` sets it); without it
the leg is skipped with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import pytest

from fedge.coordinator.schema import CheckpointRow, ModelVersionRow
from fedge.coordinator.store import Store
from fedge.errors import ProtocolError, UnknownNameError

SHA = "ab" * 32
SHA2 = "cd" * 32


def _job(store: Store, job_id: str = "job1") -> None:
    store.add_job(job_id, {"name": job_id, "task": "digits_mlp", "rounds": 2}, now=10.0)


def test_jobs_roundtrip_and_unique_names(store: Store) -> None:
    _job(store)
    _job(store, "job2")
    with pytest.raises(ProtocolError, match="already exists"):
        _job(store)
    assert [j.id for j in store.list_jobs()] == ["job1", "job2"]
    job = store.update_job("job1", state="paused", reason="admin")
    assert (job.state, store.get_job("job1").state) == ("paused", "paused")
    assert store.get_job("job1").spec["task"] == "digits_mlp"
    with pytest.raises(UnknownNameError):
        store.get_job("nope")


def test_rounds_are_attempts_in_order(store: Store) -> None:
    _job(store)
    store.add_round("job1", 1, SHA, "planned")
    store.add_round("job1", 2, SHA, "planned")
    with pytest.raises(ProtocolError):
        store.add_round("job1", 1, SHA, "planned")
    store.update_round("job1", 1, state="abandoned", reason="restart", quotas={"gw-a": 3})
    rounds = store.list_rounds("job1")
    assert [(r.number, r.state) for r in rounds] == [(1, "abandoned"), (2, "planned")]
    got = store.get_round("job1", 1)
    assert got is not None and got.quotas == {"gw-a": 3}
    assert store.get_round("job1", 9) is None


def test_partial_receipts_are_exactly_once(store: Store) -> None:
    _job(store)
    store.add_round("job1", 1, SHA, "training")
    nonce, nonce2 = "0" * 32, "1" * 32
    assert store.record_partial("job1", 1, "gw-a", "s1", nonce, 2, 30.0, ["d1", "d2"], now=5.0)
    assert not store.record_partial("job1", 1, "gw-a", "s1", nonce2, 2, 30.0, ["d1", "d2"], 6.0)
    assert store.has_partial("job1", 1, "gw-a") and not store.has_partial("job1", 1, "gw-b")
    with pytest.raises(ProtocolError, match="replayed"):
        store.record_partial("job1", 1, "gw-b", "s2", nonce, 1, 3.0, ["d9"], now=6.0)
    with pytest.raises(ProtocolError, match="counted twice"):  # d1 already in this round
        store.record_partial("job1", 1, "gw-b", "s2", "2" * 32, 1, 3.0, ["d1"], now=6.0)
    assert [r.gateway_id for r in store.receipts("job1", 1)] == ["gw-a"]
    assert [p.device_id for p in store.participants("job1", 1)] == ["d1", "d2"]
    device = store.get_device("d1")
    assert device is not None and (device.site, device.gateway_id) == ("s1", "gw-a")
    assert store.nonce_seen(nonce) and not store.nonce_seen("3" * 32)


def test_direct_updates_once_per_device_and_nonce(store: Store) -> None:
    _job(store)
    store.add_round("job1", 1, SHA, "training")
    assert store.record_update("job1", 1, "d1", "s1", "a" * 32, now=1.0)
    assert not store.record_update("job1", 1, "d1", "s1", "b" * 32, now=2.0)
    with pytest.raises(ProtocolError, match="replayed"):
        store.record_update("job1", 1, "d2", "s1", "a" * 32, now=2.0)
    assert store.participation_counts() == {"d1": 1}


def test_fleet_gateways_and_devices(store: Store) -> None:
    store.upsert_gateway("gw-a", "s1", online=5, eligible=4, now=100.0)
    store.upsert_gateway("gw-b", "s2", online=1, eligible=1, now=50.0)
    store.upsert_gateway("gw-a", "s1", online=6, eligible=6, now=120.0)
    assert [(g.id, g.eligible_devices) for g in store.list_gateways()] == [
        ("gw-a", 6),
        ("gw-b", 1),
    ]
    assert [g.id for g in store.list_gateways(seen_since=60.0)] == ["gw-a"]
    store.touch_device("d1", "s1", None, now=1.0, labels={"kind": "cam"})
    store.touch_device("d1", "s1", None, now=2.0)  # labels kept when not given
    store.set_revoked("d1")
    store.set_revoked("ghost")
    devices = {d.id: d for d in store.list_devices()}
    assert devices["d1"].labels == {"kind": "cam"} and devices["d1"].revoked
    assert devices["d1"].last_seen == 2.0 and devices["ghost"].revoked


def test_commit_round_is_one_transaction(store: Store) -> None:
    _job(store)
    store.add_model_version(ModelVersionRow(sha256=SHA, job_id="job1", round=None, size=10,
                                            metrics={}, created_at=1.0))  # fmt: skip
    store.add_checkpoint(CheckpointRow(job_id="job1", step=0, round=None, params_sha256=SHA,
                                       opt_state_sha256=SHA, created_at=1.0))  # fmt: skip
    store.add_round("job1", 1, SHA, "aggregating")
    version = ModelVersionRow(sha256=SHA2, job_id="job1", round=1, parent_sha256=SHA, size=10,
                              metrics={"accuracy": 0.5}, created_at=2.0)  # fmt: skip
    ckpt = CheckpointRow(job_id="job1", step=1, round=1, params_sha256=SHA2,
                         opt_state_sha256=SHA, created_at=2.0)  # fmt: skip
    store.commit_round("job1", 1, version, ckpt, accuracy=0.5, participants=3, ended_at=2.0)
    job = store.get_job("job1")
    assert (job.committed_rounds, job.model_sha256) == (1, SHA2)
    rnd = store.get_round("job1", 1)
    assert rnd is not None and (rnd.state, rnd.model_sha256, rnd.participants) == (
        "committed",
        SHA2,
        3,
    )
    latest = store.latest_checkpoint("job1")
    assert latest is not None and latest.step == 1
    assert [v.sha256 for v in store.list_model_versions("job1")] == [SHA, SHA2]
    got = store.get_model_version(SHA2)
    assert got is not None and got.metrics == {"accuracy": 0.5} and got.parent_sha256 == SHA
    again = CheckpointRow(job_id="job1", step=1, round=1, params_sha256=SHA2,
                          opt_state_sha256=SHA, created_at=3.0)  # fmt: skip
    with pytest.raises(ProtocolError, match="already committed"):
        store.commit_round("job1", 1, version, again)
    assert store.get_job("job1").committed_rounds == 1
