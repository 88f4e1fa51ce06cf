"""Refusals are counted by the application's reason: each refusal below, raised by the
coordinator's and the gateway's own code, is named by :func:`refusal_reason` as it should be
(the label of ``fedge_requests_refused_total``; see tests/telemetry/test_metrics.py for the
HTTP path from the error handler to the counter)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.coordinator.conftest import identity
from tests.coordinator.helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    make_service,
    model_params,
    partial_payload,
    spec,
)

from fedge.coordinator import CoordinatorService
from fedge.core.params import ParamSpec
from fedge.errors import (
    ExpiredCertificateError,
    FedgeError,
    PayloadTooLarge,
    PrivacyBudgetExceeded,
    RevokedError,
    SecAggProtocolError,
)
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Identity, Role
from fedge.storage.outbox import Outbox
from fedge.transport import messages as m
from fedge.transport.errors import refusal_reason, secagg_errors
from fedge.transport.replay import ReplayGuard


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(FedgeError) as refused:
        call()
    return refusal_reason(refused.value)


@pytest.fixture
def svc(tmp_path: Path) -> CoordinatorService:
    """A coordinator with round 1 of job "digits" open, gw-a and gw-b each handed it."""
    service = make_service(tmp_path, Clock())
    service.admin.create_job(ADMIN, spec(rounds=2))
    for _ in range(2):
        checkin(service, GW_A)
        checkin(service, GW_B)
        service.tick()
    return service


def _partial(svc: CoordinatorService, ids: list[str], gw: object = GW_A) -> bytes:
    live = svc.live_round("digits")
    assert live is not None
    pspec = ParamSpec.of(model_params(svc, live.base_sha256))
    return partial_payload(gw, "digits", 1, device_updates(pspec, ids, seed=3))  # type: ignore[arg-type]


def test_coordinator_refusals_are_named(svc: CoordinatorService) -> None:
    elsewhere = _partial(svc, ["a1"])  # bound to round 1, sent to round 7: replayed elsewhere
    assert reason(lambda: svc.submit_partial(GW_A, "digits", 7, elsewhere)) == "replay"
    svc.store.register_devices({"b9": "s2"}, "gw-b", 0.0)  # a device of the other site
    svc.store.register_devices({"a7": "s1"}, "gw-a", 0.0)
    foreign = _partial(svc, ["b9"])
    assert reason(lambda: svc.submit_partial(GW_A, "digits", 1, foreign)) == "wrong_site"
    svc.admin.revoke_device(ADMIN, "a7")
    revoked = _partial(svc, ["a7"])
    assert reason(lambda: svc.submit_partial(GW_A, "digits", 1, revoked)) == "revoked"
    live = svc.live_round("digits")
    assert live is not None
    pspec = ParamSpec.of(model_params(svc, live.base_sha256))
    ups = device_updates(pspec, ["a1"], seed=4)
    bad = partial_payload(GW_A, "digits", 1, ups, sums={"extra": np.zeros(3)})
    assert reason(lambda: svc.submit_partial(GW_A, "digits", 1, bad)) == "invalid_tensor"
    assert reason(lambda: svc.admin.list_jobs(GW_A)) == "forbidden"
    assert reason(lambda: svc.admin.get_job(ADMIN, "nope")) == "not_found"
    ok = _partial(svc, ["a1", "a2"])
    assert svc.submit_partial(GW_A, "digits", 1, ok).accepted
    assert isinstance(svc.clock, Clock)
    svc.clock.now += 91  # round 1 commits at its deadline without gw-b: it takes nothing more
    svc.tick()
    late = _partial(svc, ["b1"], GW_B)
    assert reason(lambda: svc.submit_partial(GW_B, "digits", 1, late)) == "stale_round"


def test_replays_and_typed_refusals_are_named() -> None:
    guard = ReplayGuard()
    guard.check("dev-1", "n1")
    assert reason(lambda: guard.check("dev-1", "n1")) == "replay"
    for exc, expected in (
        (RevokedError("listed on the CRL"), "revoked"),
        (ExpiredCertificateError("expired"), "expired"),
        (PayloadTooLarge("over 1 MiB"), "oversized"),
        (PrivacyBudgetExceeded("epsilon 8 > 4"), "budget_exhausted"),
    ):
        assert refusal_reason(exc) == expected, exc


def test_secure_aggregation_refusals_are_named() -> None:
    """The words of fedge.secagg's sessions' refusals, mapped at the service boundary."""

    def secagg(message: str) -> str:
        def raise_it() -> None:
            with secagg_errors():
                raise SecAggProtocolError(message)

        return reason(raise_it)

    assert secagg("duplicate key advertisement from 'd1'") == "duplicate"
    assert secagg("masked input belongs to another session or round; refused") == "stale_round"
    assert secagg("no phase to close in unmask") == "out_of_phase"


def test_gateway_refusals_are_named(tmp_path: Path) -> None:
    def no_fetch(sha256: str) -> bytes:
        raise AssertionError("nothing is fetched here")

    gateway = GatewayService(
        gateway_id="gw-a",
        site="s1",
        cache=ModelCache(tmp_path / "models", no_fetch),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
    )
    home, away = identity(Role.DEVICE, "d1", "s1"), identity(Role.DEVICE, "d9", "s2")

    def ask(dev: Identity, nonce: str) -> object:
        request = m.CheckInRequest(
            device_id=dev.name, nonce=nonce, eligibility=m.Eligibility(num_examples=5)
        )
        return gateway.checkin(dev, request)

    assert reason(lambda: ask(away, m.new_nonce())) == "wrong_site"
    nonce = m.new_nonce()
    ask(home, nonce)
    assert reason(lambda: ask(home, nonce)) == "replay"
    assert reason(lambda: gateway.submit_update(home, "digits", 3, b"")) == "stale_round"
