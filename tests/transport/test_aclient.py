"""AsyncFedgeClient against the real mutual-TLS server: same answers, same errors as the sync client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from fedge.core.serde import encode_arrays
from fedge.errors import (
    AuthorizationError,
    CertificateError,
    PayloadTooLarge,
    ProtocolError,
    UnavailableError,
    UnknownNameError,
)
from fedge.identity import PkiPaths, Role
from fedge.transport.aclient import AsyncFedgeClient
from fedge.transport.messages import (
    CheckInRequest,
    Eligibility,
    GatewayCheckIn,
    JobSpec,
    Wait,
    new_nonce,
)

from .conftest import MODEL, MODEL_SHA, UPDATE_LIMIT, Fleet, update_payload

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def aclient(fleet: Fleet, name: str, *, pki: PkiPaths | None = None, **kw: Any) -> AsyncFedgeClient:
    paths = pki or fleet.pki
    return AsyncFedgeClient(
        kw.pop("url", fleet.server.url),
        ca=fleet.pki.ca_cert,
        cert=paths.cert_for(name),
        key=paths.key_for(name),
        timeout=10.0,
        **kw,
    )


def checkin_request(device: str) -> CheckInRequest:
    return CheckInRequest(
        device_id=device, nonce=new_nonce(), eligibility=Eligibility(num_examples=10)
    )


def test_device_endpoints(fleet: Fleet) -> None:
    async def main() -> None:
        async with aclient(fleet, "dev-1") as client:
            assert (await client.health()).protocol == 1
            answer = await client.checkin(checkin_request("dev-1"))
            assert isinstance(answer, Wait) and answer.retry_after_s == 5.0
            assert await client.model(MODEL_SHA) == MODEL
            with pytest.raises(UnknownNameError, match="no model"):
                await client.model("0" * 64)
            nonce = new_nonce()
            assert (await client.submit_update("job1", 1, update_payload(nonce))).accepted
            with pytest.raises(ProtocolError, match="replayed nonce"):
                await client.submit_update("job1", 1, update_payload(nonce))

    run(main())
    what, peer, _ = next(c for c in reversed(fleet.service.calls) if c[0] == "checkin")
    assert (what, peer.role, peer.name, peer.site) == ("checkin", Role.DEVICE, "dev-1", "a")


def test_refusals_map_to_fedge_errors(fleet: Fleet) -> None:
    async def main() -> None:
        async with aclient(fleet, "dev-1") as client:
            with pytest.raises(AuthorizationError, match="dev-2"):
                await client.checkin(checkin_request("dev-2"))
            with pytest.raises(AuthorizationError, match="admin"):
                await client.list_jobs()
            big = update_payload(new_nonce(), n=UPDATE_LIMIT)
            with pytest.raises(PayloadTooLarge, match="limit"):
                await client.submit_update("job1", 1, big)
        async with aclient(fleet, "dev-1", max_download_bytes=8) as small:
            with pytest.raises(PayloadTooLarge, match="over 8 bytes"):
                await small.model(MODEL_SHA)

    run(main())


def test_gateway_and_admin_endpoints(fleet: Fleet) -> None:
    async def main() -> None:
        async with aclient(fleet, "gw-a") as gateway:
            request = GatewayCheckIn(
                gateway_id="gw-a", site="a", nonce=new_nonce(), online_devices=2, eligible_devices=1
            )
            assert (await gateway.gateway_checkin(request)).assignments == []
            partial = encode_arrays({"w": np.ones(6)}, {"kind": "partial", "nonce": new_nonce()})
            assert (await gateway.submit_partial("job1", 1, partial)).accepted
        async with aclient(fleet, "alice") as admin:
            spec = JobSpec(name="async-job", task="digits", rounds=2, devices_per_round=3)
            assert (await admin.create_job(spec)).spec == spec
            assert [j.id for j in await admin.list_jobs()] == ["job1"]
            assert (await admin.get_job("job1")).state == "running"
            assert (await admin.pause_job("job1")).state == "paused"
            assert (await admin.resume_job("job1")).state == "running"
            assert (await admin.list_devices())[0].id == "dev-1"
            assert (await admin.revoke_device("dev-2")).revoked

    run(main())


def test_many_identities_on_one_loop_and_hooks_see_every_request(fleet: Fleet) -> None:
    seen: list[tuple[str, str]] = []

    def hook(name: str) -> Callable[[Any], Awaitable[None]]:
        async def on_request(request: Any) -> None:
            seen.append((name, request.url.path))

        return on_request

    async def one(name: str) -> bool:
        async with aclient(fleet, name, event_hooks={"request": [hook(name)]}) as client:
            answer = await client.checkin(checkin_request(name))
            return isinstance(answer, Wait)

    async def main() -> list[bool]:
        return await asyncio.gather(*(one(n) for n in ("dev-1", "dev-2", "dev-1", "dev-2")))

    assert run(main()) == [True] * 4
    assert sorted(seen) == [("dev-1", "/v1/checkin")] * 2 + [("dev-2", "/v1/checkin")] * 2


def test_unreachable_server_and_foreign_ca(fleet: Fleet) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def main() -> None:
        async with aclient(fleet, "dev-1", url=f"https://127.0.0.1:{port}") as client:
            with pytest.raises(UnavailableError):
                await client.health()
        async with aclient(fleet, "dev-1", pki=fleet.other) as stranger:
            with pytest.raises((CertificateError, UnavailableError), match="certificate"):
                await stranger.checkin(checkin_request("dev-1"))

    run(main())
