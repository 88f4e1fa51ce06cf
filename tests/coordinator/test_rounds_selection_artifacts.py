"""Round state machine (every transition, valid and invalid), quotas, artifact store."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fedge.coordinator.artifacts import ArtifactStore, sha256_hex
from fedge.coordinator.rounds import TERMINAL, TRANSITIONS, Round, RoundState
from fedge.coordinator.selection import DIRECT, matches_selector, plan_quotas, round_target
from fedge.errors import ProtocolError, UnknownNameError, ValidationError

S = RoundState


def _round_in(state: RoundState) -> Round:
    """A round driven through valid transitions to ``state``."""
    r = Round("job", 1)
    path = {
        S.PLANNED: [],
        S.CONFIGURING: ["open"],
        S.TRAINING: ["open", "start"],
        S.AGGREGATING: ["open", "start", "agg"],
        S.COMMITTED: ["open", "start", "agg", "commit"],
        S.ABANDONED: ["abandon"],
    }[state]
    for step in path:
        _apply(r, step_target(step))
    assert r.state == state
    return r


def step_target(step: str) -> RoundState:
    return {
        "open": S.CONFIGURING,
        "start": S.TRAINING,
        "agg": S.AGGREGATING,
        "commit": S.COMMITTED,
        "abandon": S.ABANDONED,
    }[step]


def _apply(r: Round, target: RoundState) -> None:
    if target == S.CONFIGURING:
        r.open({"gw": 2}, 10.0, 20.0)
    elif target == S.TRAINING:
        r.start_training()
    elif target == S.AGGREGATING:
        r.begin_aggregation()
    elif target == S.COMMITTED:
        r.commit()
    elif target == S.ABANDONED:
        r.abandon("test")
    else:
        pytest.skip("planned is only the initial state")


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_transition(source: RoundState, target: RoundState) -> None:
    r = _round_in(source)
    if target == S.PLANNED:  # no transition leads back to planned
        assert target not in TRANSITIONS[source]
        return
    if target in TRANSITIONS[source]:
        _apply(r, target)
        assert r.state == target
    else:
        with pytest.raises(ProtocolError, match="cannot become"):
            _apply(r, target)
        assert r.state == source


def test_terminal_states_go_nowhere() -> None:
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    assert _round_in(S.COMMITTED).terminal and not _round_in(S.TRAINING).terminal


def test_open_needs_quota_and_ordered_deadlines() -> None:
    with pytest.raises(ProtocolError, match="no quota"):
        Round("j", 1).open({"gw": 0}, 1.0, 2.0)
    with pytest.raises(ProtocolError, match="report deadline"):
        Round("j", 1).open({"gw": 1}, 5.0, 2.0)


def test_due_by_reports_and_deadlines() -> None:
    r = Round("j", 1)
    r.open({"a": 2, "b": 1, "c": 0}, 10.0, 20.0)
    assert r.due(5.0) is None and r.due(10.0) == "unclaimed"
    r.start_training()
    assert r.due(15.0) is None and r.due(20.0) == "deadline"
    r.mark_reported("a")
    assert r.due(15.0) is None and r.due(15.0, also_done=["b"]) == "reported"
    with pytest.raises(ProtocolError, match="no quota"):
        r.mark_reported("c")
    r.mark_reported("b")
    assert r.due(0.0) == "reported"
    r.begin_aggregation()
    with pytest.raises(ProtocolError, match="no more reports"):
        r.mark_reported("a")


def test_quotas_largest_remainder() -> None:
    assert round_target(10, 1.3) == 13 and round_target(10, 1.0) == 10
    q = plan_quotas(10, 1.3, {"gw-a": 50, "gw-b": 30, DIRECT: 20})
    assert q == {"gw-a": 6, "gw-b": 4, DIRECT: 3} and sum(q.values()) == 13
    q = plan_quotas(3, 1.0, {"a": 1, "b": 1, "c": 1, "d": 0})
    assert q == {"a": 1, "b": 1, "c": 1, "d": 0}
    assert plan_quotas(4, 1.0, {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}) == {
        "a": 1, "b": 1, "c": 1, "d": 1, "e": 0,
    }  # fmt: skip
    assert plan_quotas(100, 1.5, {"a": 3, "b": 2}) == {"a": 3, "b": 2}  # all eligible asked
    assert plan_quotas(5, 1.0, {}) == {} and plan_quotas(5, 1.0, {"a": 0}) == {"a": 0}
    for eligible in ({"a": 7, "b": 11, "c": 13}, {"a": 1, "b": 100}, {"x": 5}):
        q = plan_quotas(9, 1.3, eligible)
        assert sum(q.values()) == min(12, sum(eligible.values()))
        assert all(q[k] <= eligible[k] for k in eligible)


def test_selector() -> None:
    assert matches_selector({"kind": "cam", "fw": "2"}, {"kind": "cam"})
    assert not matches_selector({"kind": "cam"}, {"kind": "cam", "fw": "2"})
    assert matches_selector({}, {})


def test_artifacts_content_addressed_atomic_verified(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a")
    sha = store.put(b"hello")
    assert sha == sha256_hex(b"hello") and store.put(b"hello") == sha
    assert store.get(sha) == b"hello" and store.has(sha)
    assert not list(store.path(sha).parent.glob("*.tmp"))
    store.path(sha).write_bytes(b"tampered")
    with pytest.raises(ValidationError, match="corrupted"):
        store.get(sha)
    with pytest.raises(UnknownNameError):
        store.get("0" * 64)
    for bad in ("../../etc/passwd", "AB" * 32, "a" * 63):
        with pytest.raises(ValidationError, match="sha256"):
            store.get(bad)
