"""Unit tests without sockets: status mapping both ways, replay guard, backoff, body limits."""

from __future__ import annotations

import random
import threading

import pytest

from fedge.errors import (
    AuthorizationError,
    CertificateError,
    ConfigError,
    ExpiredCertificateError,
    FedgeError,
    NonFiniteError,
    PayloadTooLarge,
    PkiError,
    ProtocolError,
    RevokedError,
    SecAggProtocolError,
    ShapeMismatchError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
    WireFormatError,
)
from fedge.transport.client import retry_with_backoff
from fedge.transport.errors import error_from_response, status_for
from fedge.transport.limits import BodyLimits
from fedge.transport.messages import ErrorBody
from fedge.transport.replay import ReplayGuard

CASES: list[tuple[FedgeError, int]] = [
    (AuthorizationError("no"), 403),
    (CertificateError("no"), 401),
    (ExpiredCertificateError("old"), 401),
    (RevokedError("gone"), 401),
    (ValidationError("bad"), 400),
    (WireFormatError("short"), 400),
    (ShapeMismatchError("shape"), 400),
    (NonFiniteError("nan"), 400),
    (ProtocolError("replayed nonce"), 409),
    (SecAggProtocolError("out of phase"), 409),
    (UnknownNameError("no job"), 404),
    (PayloadTooLarge("big"), 413),
    (ConfigError("bad spec"), 400),
    (UnavailableError("later"), 503),
    (PkiError("crl unreadable"), 503),
    (FedgeError("other"), 500),
]


@pytest.mark.parametrize(("exc", "status"), CASES)
def test_status_mapping_round_trips(exc: FedgeError, status: int) -> None:
    got, code = status_for(exc)
    assert got == status
    body = ErrorBody(error=code, detail=str(exc)).model_dump_json().encode()
    back = error_from_response(status, body)
    if status >= 500:
        assert isinstance(back, UnavailableError)
    else:
        assert isinstance(back, type(exc)) or type(exc) in (SecAggProtocolError, ConfigError)
        assert str(back) == str(exc)  # the server's detail travels


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, ValidationError), (401, CertificateError), (403, AuthorizationError),
     (404, UnknownNameError), (409, ProtocolError), (413, PayloadTooLarge),
     (422, ValidationError), (429, UnavailableError), (502, UnavailableError)],
)  # fmt: skip
def test_unknown_codes_and_non_json_bodies_map_by_status(status: int, cls: type) -> None:
    assert isinstance(error_from_response(status, b"<html>proxy error</html>"), cls)
    body = ErrorBody(error="something_new", detail="x").model_dump_json().encode()
    assert isinstance(error_from_response(status, body), cls)


def test_replay_guard_refuses_repeats_until_ttl() -> None:
    now = [0.0]
    guard = ReplayGuard(ttl_s=10, clock=lambda: now[0])
    guard.check("dev-1", "a" * 32)
    guard.check("dev-2", "a" * 32)  # same nonce, other sender: fine
    with pytest.raises(ProtocolError, match="replayed nonce"):
        guard.check("dev-1", "a" * 32)
    now[0] = 10.5
    guard.check("dev-1", "a" * 32)  # forgotten after the TTL
    assert len(guard) == 1


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(ttl_s=1000, max_entries=100)
    for i in range(1000):
        guard.check("dev", f"{i:032x}")
    assert len(guard) == 100
    with pytest.raises(ProtocolError):
        guard.check("dev", f"{999:032x}")


def test_replay_guard_is_thread_safe() -> None:
    guard = ReplayGuard()
    accepted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for i in range(200):
            try:
                guard.check("dev", f"{i:032x}")
            except ProtocolError:
                continue
            with lock:
                accepted.append(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(accepted) == list(range(200))  # each nonce accepted exactly once


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_retry_retries_unavailable_with_capped_full_jitter() -> None:
    t = FakeTime()
    attempts = []

    def flaky() -> str:
        attempts.append(t.now)
        if len(attempts) < 6:
            raise UnavailableError("down")
        return "ok"

    result = retry_with_backoff(
        flaky, deadline=t.now + 1000, base=1.0, cap=4.0, rng=random.Random(0),
        clock=t.clock, sleep=t.sleep,
    )  # fmt: skip
    assert result == "ok" and len(attempts) == 6
    for n, s in enumerate(t.sleeps):
        assert 0 <= s <= min(4.0, 2.0**n)
    no_jitter = FakeTime()
    attempts.clear()
    retry_with_backoff(
        flaky, deadline=no_jitter.now + 1000, base=1.0, cap=4.0, jitter=False,
        clock=no_jitter.clock, sleep=no_jitter.sleep,
    )  # fmt: skip
    assert no_jitter.sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_retry_stops_at_final_errors_and_deadline() -> None:
    t = FakeTime()
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ProtocolError("stale round")

    with pytest.raises(ProtocolError):
        retry_with_backoff(refused, deadline=t.now + 100, clock=t.clock, sleep=t.sleep)
    assert len(calls) == 1 and t.sleeps == []

    def down() -> None:
        raise UnavailableError("down")

    with pytest.raises(UnavailableError):
        retry_with_backoff(
            down, deadline=t.now + 10, base=1.0, jitter=False, clock=t.clock, sleep=t.sleep
        )
    assert t.now <= 1000.0 + 10


def test_body_limits_per_route() -> None:
    limits = BodyLimits(json=1, update=2, partial=3)
    assert limits.for_path("/v1/checkin") == 1
    assert limits.for_path("/v1/jobs/j/rounds/3/updates") == 2
    assert limits.for_path("/v1/jobs/j/rounds/3/partials") == 3
    assert limits.for_path("/v1/admin/jobs") == 1
