"""CoordinatorService without HTTP: real task (digits_mlp), real payloads from fedge.core.serde."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.coordinator import DIRECT, CoordinatorService
from fedge.core.params import Params, ParamSpec
from fedge.errors import (
    AuthorizationError,
    NonFiniteError,
    PayloadTooLarge,
    ProtocolError,
    ShapeMismatchError,
    UnknownNameError,
    ValidationError,
    WireFormatError,
)
from fedge.identity import Role
from fedge.transport import messages as m

from .conftest import identity
from .helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    fedavg,
    make_service,
    model_params,
    partial_payload,
    spec,
    update_payload,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> CoordinatorService:
    return make_service(tmp_path, clock)


def _open_round(svc: CoordinatorService, **over: object) -> tuple[Params, ParamSpec]:
    """Create the job, let both gateways check in, open round 1; the initial params."""
    view = svc.admin.create_job(ADMIN, spec(**over))
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()
    job = svc.admin.get_job(ADMIN, view.id)
    assert job.rounds[-1].state == "configuring", job.rounds
    base = model_params(svc, svc.store.get_job(view.id).model_sha256 or "")
    return base, ParamSpec.of(base)


def _assert_params(a: Params, b: Params, tol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol)


def test_full_round_commits_the_fedavg_of_two_gateways(svc: CoordinatorService) -> None:
    base, pspec = _open_round(svc)
    live = svc.live_round("digits")
    assert live is not None and live.machine.quotas == {"gw-a": 2, "gw-b": 2}
    assign = checkin(svc, GW_A).assignments
    assert [(a.job_id, a.round, a.quota) for a in assign] == [("digits", 1, 2)]
    assert assign[0].task_name == "digits_mlp" and assign[0].model_sha256 == live.base_sha256
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "training"
    ups_a = device_updates(pspec, ["a1", "a2"], seed=1)
    ups_b = device_updates(pspec, ["b1", "b2"], seed=2)
    r = svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, ups_a))
    assert r.accepted and not r.duplicate
    checkin(svc, GW_B)
    r = svc.submit_partial(GW_B, "digits", 1, partial_payload(GW_B, "digits", 1, ups_b))
    assert r.accepted
    svc.tick()  # every assigned gateway reported: aggregate now, no need to wait
    job = svc.admin.get_job(ADMIN, "digits")
    first = job.rounds[0]
    assert first.state == "committed" and first.participants == 4
    assert first.gateways_reported == 2 and first.accuracy is not None
    assert first.model_sha256 is not None
    _assert_params(model_params(svc, first.model_sha256), fedavg(base, ups_a + ups_b))
    assert job.rounds[1].state == "configuring"  # the next round opened in the same tick
    devices = {d.id: d for d in svc.admin.list_devices(ADMIN)}
    assert devices["a1"].site == "s1" and devices["b2"].gateway == "gw-b"
    assert devices["a1"].rounds_participated == 1


def test_duplicate_partial_is_acknowledged_and_counted_once(svc: CoordinatorService) -> None:
    base, pspec = _open_round(svc)
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    ups_a = device_updates(pspec, ["a1", "a2"], seed=1)
    ups_b = device_updates(pspec, ["b1"], seed=2)
    payload = partial_payload(GW_A, "digits", 1, ups_a)
    assert svc.submit_partial(GW_A, "digits", 1, payload).accepted
    again = svc.submit_partial(GW_A, "digits", 1, payload)  # outbox retry: same bytes
    assert again.accepted and again.duplicate
    other = partial_payload(GW_A, "digits", 1, ups_a)  # fresh nonce, same round: still once
    assert svc.submit_partial(GW_A, "digits", 1, other).duplicate
    svc.submit_partial(GW_B, "digits", 1, partial_payload(GW_B, "digits", 1, ups_b))
    svc.tick()
    first = svc.admin.get_job(ADMIN, "digits").rounds[0]
    assert first.state == "committed" and first.participants == 3
    _assert_params(model_params(svc, first.model_sha256 or ""), fedavg(base, ups_a + ups_b))
    # after the commit a late resend is still just a duplicate, not an error
    assert svc.submit_partial(GW_A, "digits", 1, payload).duplicate


def test_bad_partials_are_refused_and_the_round_goes_on(svc: CoordinatorService) -> None:
    base, pspec = _open_round(svc)
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    ups = device_updates(pspec, ["a1", "a2"], seed=3)
    svc.store.touch_device("b9", "s2", "gw-b", now=1.0)  # a device known at site s2
    gw_c = identity(Role.GATEWAY, "gw-c", "s3")
    device = identity(Role.DEVICE, "a1", "s1")
    one = device_updates(pspec, ["a1"], seed=4)
    poisoned = np.zeros(pspec.shapes[0])
    poisoned.flat[0] = np.nan
    cases: list[tuple[object, type[Exception], bytes, int]] = [
        (GW_A, ProtocolError, partial_payload(GW_A, "digits", 7, ups), 7),  # stale round
        (GW_A, ProtocolError, partial_payload(GW_A, "digits", 2, ups, round="1"), 2),
        (GW_B, AuthorizationError, partial_payload(GW_A, "digits", 1, ups), 1),  # wrong gw
        (gw_c, ProtocolError, partial_payload(gw_c, "digits", 1, ups), 1),  # no quota
        (
            GW_A,
            AuthorizationError,
            partial_payload(GW_A, "digits", 1, device_updates(pspec, ["b9"], 6)),
            1,
        ),  # other site
        (
            GW_A,
            NonFiniteError,
            partial_payload(GW_A, "digits", 1, one, {pspec.names[0]: poisoned}),
            1,
        ),
        (
            GW_A,
            ShapeMismatchError,
            partial_payload(GW_A, "digits", 1, one, {pspec.names[1]: np.zeros(3)}),
            1,
        ),
        (
            GW_A,
            ProtocolError,
            partial_payload(GW_A, "digits", 1, device_updates(pspec, ["x", "y", "z"], 7)),
            1,
        ),
        (GW_A, ValidationError, partial_payload(GW_A, "digits", 1, ups, num_accepted="3"), 1),
        (GW_A, ValidationError, partial_payload(GW_A, "digits", 1, ups, total_weight="1"), 1),
        (GW_A, WireFormatError, b"\x80\x04pickle-me", 1),
        (GW_A, PayloadTooLarge, b"\0" * (20 * 1024 * 1024), 1),
        (device, AuthorizationError, partial_payload(GW_A, "digits", 1, ups), 1),
    ]
    for peer, error, payload, rnd in cases:
        with pytest.raises(error):
            svc.submit_partial(peer, "digits", rnd, payload)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError):
        svc.submit_partial(GW_A, "nope", 1, partial_payload(GW_A, "nope", 1, ups))
    live = svc.live_round("digits")
    assert live is not None and live.acc.num_accepted == 0 and live.machine.reported == set()
    good_b = device_updates(pspec, ["b1", "b2"], seed=8)
    assert svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, ups)).accepted
    assert svc.submit_partial(
        GW_B, "digits", 1, partial_payload(GW_B, "digits", 1, good_b)
    ).accepted
    svc.tick()
    first = svc.admin.get_job(ADMIN, "digits").rounds[0]
    assert first.state == "committed" and first.participants == 4
    _assert_params(model_params(svc, first.model_sha256 or ""), fedavg(base, ups + good_b))


def test_replayed_nonce_is_refused(svc: CoordinatorService) -> None:
    _, pspec = _open_round(svc)
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    first = partial_payload(GW_A, "digits", 1, device_updates(pspec, ["a1"], 1))
    svc.submit_partial(GW_A, "digits", 1, first)
    nonce = svc.store.receipts("digits", 1)[0].nonce
    replay = partial_payload(GW_B, "digits", 1, device_updates(pspec, ["b1"], 2), nonce=nonce)
    with pytest.raises(ProtocolError, match="replayed"):
        svc.submit_partial(GW_B, "digits", 1, replay)


def test_too_few_devices_abandons_and_publishes_nothing(
    svc: CoordinatorService, clock: Clock
) -> None:
    _, pspec = _open_round(svc, min_devices=3)
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.submit_partial(
        GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, device_updates(pspec, ["a1"], 1))
    )
    clock.now += 60 + 29  # before the report deadline: keep waiting for gw-b
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "training"
    clock.now += 1  # report deadline reached
    svc.tick()
    job = svc.admin.get_job(ADMIN, "digits")
    assert job.rounds[0].state == "abandoned" and "min_devices = 3" in job.rounds[0].reason
    assert job.rounds[0].model_sha256 is None
    assert len(svc.store.list_model_versions("digits")) == 1  # only the initial model
    assert svc.store.get_job("digits").committed_rounds == 0
    assert job.rounds[1].round == 2  # re-run as a new attempt
    with pytest.raises(ProtocolError, match="stale"):  # a late partial for round 1
        svc.submit_partial(
            GW_B, "digits", 1, partial_payload(GW_B, "digits", 1, device_updates(pspec, ["b"], 2))
        )


def test_unclaimed_round_is_abandoned_at_the_training_deadline(
    svc: CoordinatorService, clock: Clock
) -> None:
    _open_round(svc)
    clock.now += 59.9
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "configuring"
    clock.now += 0.1
    svc.tick()
    first = svc.admin.get_job(ADMIN, "digits").rounds[0]
    assert first.state == "abandoned" and "took the round" in first.reason


def test_round_waits_in_planned_until_enough_devices(svc: CoordinatorService) -> None:
    svc.admin.create_job(ADMIN, spec(min_devices=3))
    checkin(svc, GW_A, eligible=2)
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "planned"
    checkin(svc, GW_B, eligible=1)
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.quotas == {"gw-a": 2, "gw-b": 1}


def test_pause_and_resume(svc: CoordinatorService) -> None:
    _open_round(svc)
    paused = svc.admin.pause_job(ADMIN, "digits")
    assert paused.state == "paused"
    assert checkin(svc, GW_A).assignments == []  # no new hand-outs while paused
    with pytest.raises(ProtocolError, match="paused"):
        svc.admin.pause_job(ADMIN, "digits")
    assert svc.admin.resume_job(ADMIN, "digits").state == "running"
    assert [a.round for a in checkin(svc, GW_A).assignments] == [1]
    with pytest.raises(ProtocolError):
        svc.admin.resume_job(ADMIN, "digits")
    with pytest.raises(AuthorizationError):
        svc.admin.pause_job(GW_A, "digits")


def test_restart_resumes_from_the_checkpoint(tmp_path: Path, clock: Clock) -> None:
    svc = make_service(tmp_path, clock)
    opts = {"name": "fedavgm", "options": {"server_lr": 1.0, "momentum": 0.9}}
    _, pspec = _open_round(svc, strategy=opts, rounds=3)
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    ups = device_updates(pspec, ["a1", "a2"], seed=1)
    svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, ups))
    clock.now += 100
    svc.tick()  # round 1 committed with gw-a only; round 2 opens
    before = svc.driver.jobs["digits"].state
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()  # the gateways were silent for 100 s: round 2 opens once they are back
    checkin(svc, GW_A)
    late = partial_payload(GW_A, "digits", 2, device_updates(pspec, ["a1"], 2))
    svc.submit_partial(GW_A, "digits", 2, late)  # round 2 in flight when we "crash"
    svc.store.close()

    svc2 = make_service(tmp_path, clock)  # same database, same artifacts
    job = svc2.admin.get_job(ADMIN, "digits")
    assert [r.state for r in job.rounds] == ["committed", "abandoned"]
    assert "restarted" in job.rounds[1].reason
    after = svc2.driver.jobs["digits"].state
    assert after.round == 1
    _assert_params(after.params, before.params, 0)
    for slot in before.opt_state:  # momentum restored exactly
        _assert_params(dict(after.opt_state[slot]), dict(before.opt_state[slot]), 0)
    assert svc2.submit_partial(GW_A, "digits", 2, late).duplicate  # resend: not counted again
    for number in (3, 4):
        checkin(svc2, GW_A)
        checkin(svc2, GW_B)
        svc2.tick()
        checkin(svc2, GW_A)
        payload = partial_payload(
            GW_A, "digits", number, device_updates(pspec, ["a1", "a2"], number)
        )
        assert svc2.submit_partial(GW_A, "digits", number, payload).accepted
        clock.now += 100
        svc2.tick()
    job = svc2.admin.get_job(ADMIN, "digits")
    assert [r.state for r in job.rounds] == ["committed", "abandoned", "committed", "committed"]
    assert job.state == "completed" and svc2.store.get_job("digits").committed_rounds == 3
    assert len(svc2.store.list_model_versions("digits")) == 4


def test_direct_devices_form_their_own_site(svc: CoordinatorService, clock: Clock) -> None:
    svc.admin.create_job(ADMIN, spec(devices_per_round=2, min_devices=2, rounds=1))
    devs = [identity(Role.DEVICE, f"d{i}", "home") for i in range(3)]

    def ask(dev: object) -> m.TaskAssignment | m.Wait:
        req = m.CheckInRequest(
            device_id=dev.name,
            nonce=m.new_nonce(),  # type: ignore[attr-defined]
            eligibility=m.Eligibility(num_examples=20),
        )
        return svc.checkin(dev, req)  # type: ignore[arg-type]

    assert all(isinstance(ask(d), m.Wait) for d in devs)  # round still planned
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.quotas == {DIRECT: 2}
    tasks = [ask(d) for d in devs]
    assert [isinstance(t, m.TaskAssignment) for t in tasks] == [True, True, False]
    base = model_params(svc, live.base_sha256)
    ups = device_updates(ParamSpec.of(base), ["d0", "d1"], seed=9)
    for dev, u in zip(devs, ups, strict=False):
        payload = update_payload(dev.name, "digits", 1, u)
        assert svc.submit_update(dev, "digits", 1, payload).accepted
        assert svc.submit_update(dev, "digits", 1, payload).duplicate
    with pytest.raises(AuthorizationError, match="not assigned"):
        svc.submit_update(devs[2], "digits", 1, update_payload("d2", "digits", 1, ups[0]))
    with pytest.raises(AuthorizationError, match="speaks only for itself"):
        svc.submit_update(devs[2], "digits", 1, update_payload("d0", "digits", 1, ups[0]))
    svc.tick()  # both assigned devices delivered: the direct site is done
    job = svc.admin.get_job(ADMIN, "digits")
    assert job.rounds[0].state == "committed" and job.state == "completed"
    _assert_params(model_params(svc, job.rounds[0].model_sha256 or ""), fedavg(base, ups))


def test_revoked_device_is_refused(svc: CoordinatorService) -> None:
    dev = identity(Role.DEVICE, "d0", "home")
    assert svc.admin.revoke_device(ADMIN, "d0").revoked
    req = m.CheckInRequest(
        device_id="d0", nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=5)
    )
    with pytest.raises(AuthorizationError, match="revoked"):
        svc.checkin(dev, req)


def test_central_dp_needs_unit_weights_and_clipped_sums(svc: CoordinatorService) -> None:
    privacy = {"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0}
    _, pspec = _open_round(svc, privacy=privacy)
    checkin(svc, GW_A)
    ups = device_updates(pspec, ["a1", "a2"], seed=1)
    with pytest.raises(ValidationError, match="weighs 1"):
        svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, ups))
    assign = checkin(svc, GW_A).assignments[0]
    assert assign.privacy.mode == "central" and assign.privacy.clip_norm == 1.0
    # the device ledger is charged the round's ε increment of the job's accountant
    rt = svc.driver.runtime("digits")
    assert rt.privacy_plan is not None and rt.privacy_plan.accountant is not None
    assert assign.privacy.epsilon_cost == pytest.approx(rt.privacy_plan.accountant.epsilon_after(1))
    assert assign.privacy.epsilon_cost > 0
    big = [type(u)(u.device_id, {k: v * 1000 for k, v in u.delta.items()}, 1) for u in ups]
    with pytest.raises(ValidationError, match="not clipped"):
        svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, big))
    unit = [type(u)(u.device_id, u.delta, 1) for u in ups]
    assert svc.submit_partial(GW_A, "digits", 1, partial_payload(GW_A, "digits", 1, unit)).accepted


def test_invalid_job_specs_are_refused(svc: CoordinatorService) -> None:
    with pytest.raises(ValidationError, match="unknown task"):
        svc.admin.create_job(ADMIN, spec(task="no_such_task"))
    with pytest.raises(ValidationError, match="min_devices"):
        svc.admin.create_job(ADMIN, spec(min_devices=9))
    with pytest.raises(ValidationError, match="secure aggregation"):
        svc.admin.create_job(ADMIN, spec(secure_aggregation={"k": 4}))
    svc.admin.create_job(ADMIN, spec())
    with pytest.raises(ProtocolError, match="already exists"):
        svc.admin.create_job(ADMIN, spec())
    with pytest.raises(AuthorizationError):
        svc.admin.create_job(GW_A, spec(name="other"))
