"""Federated evaluation at the coordinator: partials' and direct devices' sums, recorded on the
round's starting model, shown by the admin API; bad values and DP rounds refused.

The last test is one real round across the three tiers in process: device agents train through a
real gateway service, whose partial the coordinator commits; the recorded federated metrics equal
the reference evaluation of the starting model on every device's own data.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.gateway.conftest import identity

from fedge.aggregation.evaluation import EvaluationSums, eval_meta
from fedge.coordinator.payloads import decode_partial, decode_update
from fedge.core.params import ParamSpec, to_torch
from fedge.device.agent import DeviceAgent
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.eligibility import AlwaysEligible
from fedge.device.store import LocalStore
from fedge.errors import NonFiniteError, ValidationError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Role
from fedge.privacy import PrivacyLedger
from fedge.simulation.evaluate import evaluate
from fedge.storage.outbox import Outbox
from fedge.tasks import get_task
from fedge.transport import messages as m
from fedge.transport.replay import ReplayGuard

from .conftest import identity as coordinator_identity
from .helpers import (
    ADMIN,
    GW_A,
    Clock,
    checkin,
    device_updates,
    make_service,
    model_params,
    partial_payload,
    run_plain_round,
    spec,
    update_payload,
)


def _initial(svc: object) -> str:
    live = svc.driver.live.get("digits")  # type: ignore[attr-defined]
    assert live is not None
    return str(live.base_sha256)


def test_partials_sums_land_on_the_rounds_starting_model(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=2))
    svc.tick()
    initial = _initial(svc)
    run_plain_round(
        svc,
        clock,
        1,
        evaluation={
            "gw-a": EvaluationSums(30, 12.0, 60.0, 2),
            "gw-b": EvaluationSums(10, 8.0, 5.0, 1),  # one of its two devices evaluated
        },
    )
    (v1,) = [v for v in svc.admin.list_models(ADMIN, "digits") if v.round == 1]
    first = svc.admin.get_model(ADMIN, initial)
    assert first.federated == m.FederatedEvaluationView(
        accuracy=20 / 40, loss=65 / 40, examples=40, devices=3
    )
    assert v1.federated is None and v1.parent_sha256 == initial  # evaluated by round 2's devices
    run_plain_round(svc, clock, 2, evaluation={"gw-a": EvaluationSums(50, 45.0, 10.0, 2)})
    v1 = svc.admin.get_model(ADMIN, v1.sha256)
    assert v1.federated is not None and (v1.federated.accuracy, v1.federated.devices) == (0.9, 2)
    diff = svc.admin.diff_models(ADMIN, initial, v1.sha256)
    assert diff.metric_deltas["federated_accuracy"] == pytest.approx(0.9 - 0.5)
    assert diff.metric_deltas["federated_loss"] == pytest.approx(10 / 50 - 65 / 40)
    (v2,) = [v for v in svc.admin.list_models(ADMIN, "digits") if v.round == 2]
    later = svc.admin.diff_models(ADMIN, v1.sha256, v2.sha256)  # v2: not evaluated by devices yet
    assert set(later.metric_deltas) == {"accuracy", "loss"}


def test_a_round_without_evaluation_records_none(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1))
    svc.tick()
    initial = _initial(svc)
    run_plain_round(svc, clock, 1)
    assert svc.admin.get_model(ADMIN, initial).federated is None
    row = svc.store.get_model_version(initial)
    assert row is not None and row.federated_examples is None


def _partial(pspec: ParamSpec, **meta: str) -> bytes:
    return partial_payload(GW_A, "digits", 1, device_updates(pspec, ["d1", "d2"], 1), **meta)


GOOD = eval_meta(EvaluationSums(20, 15.0, 9.0, 2), partial=True)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"eval_correct": "21"}, ValidationError, "more than eval_examples"),
        ({"eval_loss_sum": "nan"}, NonFiniteError, "not finite"),
        ({"eval_loss_sum": "inf"}, NonFiniteError, "not finite"),
        ({"eval_correct": "-1"}, ValidationError, "must be >= 0"),
        ({"eval_examples": "-3"}, ValidationError, "must be >= 0"),
        ({"eval_examples": "19.5"}, ValidationError, "must be an integer"),
        ({"eval_devices": "3"}, ValidationError, "more than the partial's 2 contributor"),
        ({"eval_devices": "0"}, ValidationError, "at least one example"),
        ({"eval_examples": "1", "eval_correct": "1"}, ValidationError, "at least one example"),
        ({"eval_correct": "many"}, ValidationError, "must be a number"),
    ],
)
def test_bad_partial_evaluation_is_refused_like_any_bad_partial(
    change: dict[str, str], error: type[Exception], match: str
) -> None:
    pspec = ParamSpec.of({"w": np.zeros((3, 2), np.float32)})
    with pytest.raises(error, match=match):
        decode_partial(
            _partial(pspec, **{**GOOD, **change}),
            pspec,
            job_id="digits",
            round_number=1,
            peer=GW_A,
            max_bytes=1 << 20,
        )
    incomplete = {k: v for k, v in GOOD.items() if k != "eval_loss_sum"}
    with pytest.raises(ValidationError, match="all of them or none"):
        decode_partial(
            _partial(pspec, **incomplete),
            pspec,
            job_id="digits",
            round_number=1,
            peer=GW_A,
            max_bytes=1 << 20,
        )


def test_a_refused_partial_leaves_no_evaluation_and_dp_rounds_take_none(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(
        ADMIN,
        spec(rounds=1, privacy={"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0}),
    )
    for _ in range(2):
        checkin(svc, GW_A, 2)
        svc.tick()
    pspec = svc.driver.runtime("digits").param_spec
    with pytest.raises(ValidationError, match="differential privacy"):
        svc.submit_partial(GW_A, "digits", 1, _partial(pspec, **GOOD))
    live = svc.driver.live["digits"]
    assert live.evaluation == EvaluationSums() and live.acc.num_accepted == 0
    assert not svc.store.has_partial("digits", 1, GW_A.name)  # it may come again without them


def test_a_direct_device_reports_its_evaluation_to_the_coordinator(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1, devices_per_round=1, min_devices=1))
    device = coordinator_identity(Role.DEVICE, "solo", "s9")
    request = m.CheckInRequest(
        device_id="solo",
        nonce=m.new_nonce(),
        eligibility=m.Eligibility(num_examples=50),
    )
    assert isinstance(svc.checkin(device, request), m.Wait)  # seen: counts as eligible now
    svc.tick()
    task = svc.checkin(device, request.model_copy(update={"nonce": m.new_nonce()}))
    assert isinstance(task, m.TaskAssignment)
    pspec = svc.driver.runtime("digits").param_spec
    (u,) = device_updates(pspec, ["solo"], 3)
    bad = update_payload("solo", "digits", 1, u, eval_examples="5", eval_correct="6",
                         eval_loss_sum="1.0")  # fmt: skip
    with pytest.raises(ValidationError, match="more than eval_examples"):
        decode_update(bad, pspec, job_id="digits", round_number=1, peer=device)
    good = eval_meta(EvaluationSums(50, 40.0, 20.0, 1))
    assert svc.submit_update(device, "digits", 1, update_payload("solo", "digits", 1, u, **good))
    clock.now += 61
    svc.tick()
    view = svc.admin.get_model(ADMIN, task.model_sha256)
    assert view.federated == m.FederatedEvaluationView(
        accuracy=0.8, loss=0.4, examples=50, devices=1
    )


def _agent(tmp_path: Path, service: GatewayService, index: int) -> DeviceAgent:
    name = f"d{index}"
    store = LocalStore(tmp_path / f"{name}-data.sqlite", retention_s=3600)
    x, y = device_share("digits_mlp", 8, index, seed=0)
    DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
    return DeviceAgent(
        device_id=name,
        link=_Link(service, name),
        store=store,
        policy=AlwaysEligible(),
        ledger=PrivacyLedger(tmp_path / f"{name}-privacy.sqlite", 10.0),
        outbox=Outbox(tmp_path / f"{name}-outbox.sqlite"),
        backoff=Backoff(rng=random.Random(index)),
    )


class _Link:
    """A device's wire to the gateway service, in process (as the HTTP layer would call it)."""

    def __init__(self, service: GatewayService, name: str) -> None:
        self.service, self.peer = service, identity(name, site="s1")

    def checkin(self, request: m.CheckInRequest) -> m.TaskAssignment | m.Wait:
        return self.service.checkin(self.peer, request)

    def model(self, sha256: str) -> bytes:
        return self.service.model(self.peer, sha256)

    def release(self, sha256: str) -> m.ModelRelease:
        return self.service.release(self.peer, sha256)

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> m.Receipt:
        return self.service.submit_update(self.peer, job_id, round_number, payload)


def test_one_real_round_through_devices_gateway_and_coordinator(tmp_path: Path) -> None:
    clock = Clock(time.time())  # the gateway and the devices keep real time
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1, devices_per_round=3, min_devices=3))
    gateway = GatewayService(
        gateway_id="gw-a",
        site="s1",
        cache=ModelCache(tmp_path / "gw-models", lambda sha: svc.model(GW_A, sha)),
        outbox=Outbox(tmp_path / "gw-outbox.sqlite"),
        replay=ReplayGuard(),
    )
    checkin(svc, GW_A, 3)
    svc.tick()
    gateway.apply_assignments(checkin(svc, GW_A, 3))
    initial = _initial(svc)
    gateway.cache.get(initial)  # the uplink prefetches before devices get the round
    agents = [_agent(tmp_path, gateway, i) for i in range(3)]
    for agent in agents:
        agent.step()
        assert agent.stats.delivered == 1
    (key,) = gateway.close_due_rounds()
    (item,) = gateway.outbox.due(time.time())
    assert svc.submit_partial(GW_A, "digits", 1, item.payload).accepted
    clock.now += 1
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").state == "completed"
    # the reference: the starting model on each device's own data, one example one vote
    task = get_task("digits_mlp")
    weights = to_torch(model_params(svc, initial), copy=True)
    examples = correct = loss = 0.0
    for agent in agents:
        x, y = agent.store.examples()
        ev = evaluate(task, task.build_model(), weights, torch.from_numpy(x), torch.from_numpy(y))
        examples += ev.num_examples
        correct += ev.accuracy * ev.num_examples
        loss += ev.loss * ev.num_examples
    view = svc.admin.get_model(ADMIN, initial).federated
    assert view is not None and (view.devices, view.examples) == (3, int(examples))
    assert view.accuracy == pytest.approx(correct / examples, abs=1e-9)
    assert view.loss == pytest.approx(loss / examples, rel=1e-5)
    assert key == "partial/digits/1"
