"""Shared fixtures: a hand-driven secure-aggregation round (no driver), for transition tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from fedge.secagg import (
    CoordinatorSession,
    DeviceSession,
    MaskedInput,
    Message,
    RelaySession,
    SecAggConfig,
    from_wire,
    to_wire,
)
from fedge.secagg.crypto import ed25519_keypair


@dataclass
class Round:
    """A coordinator, its devices and relays, wired by hand; every message crosses the wire."""

    coord: CoordinatorSession
    devices: dict[str, DeviceSession]
    relays: dict[str, RelaySession]
    gateway_of: dict[str, str]
    keys: dict[str, tuple[bytes, bytes]]
    coord_keys: tuple[bytes, bytes]
    wire_log: list[bytes] = field(default_factory=list)  # everything a relay saw

    def wire(self, msg: Message) -> Message:
        data = to_wire(msg)
        self.wire_log.append(data)
        return from_wire(data)

    def run_until_masking(self) -> list[Message]:
        """Setup, advertise and share phases with everyone alive; returns the share bundles."""
        for m in self.coord.start():
            for reply in self.devices[m.device_id].receive(self.wire(m)):
                self.coord.receive(self.wire(reply))
        for m in self.coord.close_phase():
            for reply in self.devices[m.device_id].receive(self.wire(m)):
                self.coord.receive(self.wire(reply))
        return self.coord.close_phase()

    def mask_all(self, vectors: np.ndarray, alive: set[str] | None = None) -> None:
        ids = sorted(self.devices)
        for i, d in enumerate(ids):
            if alive is not None and d not in alive:
                continue
            masked = self.wire(self.devices[d].mask(vectors[i]))
            assert isinstance(masked, MaskedInput)
            self.relays[self.gateway_of[d]].receive(masked)
        for relay in self.relays.values():
            s = relay.flush()
            if s is not None:
                self.coord.receive(self.wire(s))

    def unmask(self, alive: set[str] | None = None) -> None:
        for m in self.coord.close_phase():
            if alive is not None and m.device_id not in alive:
                continue
            for reply in self.devices[m.device_id].receive(self.wire(m)):
                self.coord.receive(self.wire(reply))
        self.coord.close_phase()


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


@pytest.fixture
def make_round() -> Callable[..., Round]:
    def build(
        n: int = 6,
        length: int = 16,
        gateways: int = 2,
        config: SecAggConfig | None = None,
        seed: int = 0,
    ) -> Round:
        cfg = config or SecAggConfig(clip_range=(0.0, 100.0), levels=100, dropout_rate=0.0)
        params = cfg.resolve(n, length)
        rb = seeded_bytes(seed)
        ids = [f"dev{i:02d}" for i in range(n)]
        keys = {d: ed25519_keypair(rb) for d in ids}
        pubs = {d: pk for d, (_, pk) in keys.items()}
        coord_keys = ed25519_keypair(rb)
        coord = CoordinatorSession(
            params, ids, pubs, coord_keys[0], rng=random.Random(seed), randbytes=rb
        )
        devices = {d: DeviceSession(d, keys[d][0], coord_keys[1], pubs, randbytes=rb) for d in ids}
        gateway_of = {d: f"gw{i % gateways}" for i, d in enumerate(ids)}
        relays = {
            g: RelaySession(g, coord.session_id, params, [d for d in ids if gateway_of[d] == g])
            for g in sorted(set(gateway_of.values()))
        }
        return Round(coord, devices, relays, gateway_of, keys, coord_keys)

    return build
