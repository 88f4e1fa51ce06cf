"""The coordinator (server) side of SecAgg+ as a sans-IO state machine.

Bonawitz et al. 2017 (arXiv:1611.04482, Fig. 4, "Server" column) over the SecAgg+ graph of
Bell et al. 2020 (arXiv:2009.00727). The transport delivers messages with :meth:`receive` and
calls :meth:`close_phase` when everyone answered (:attr:`waiting_for` is empty) or a deadline
passed; each close returns the next phase's messages. Sets of devices, as in the paper:
``U1`` advertised keys, ``U2`` shared keys, ``U3`` sent a masked input (via a relay sum), ``U4``
answered the unmask request.

Refused, with nothing changed: messages for another session (replays from other rounds), out of
phase, from devices not eligible in this phase, duplicates, bad signatures, malformed vectors
and relay sums that repeat a contributor. A round whose survivors or any neighbourhood fall
below ``t`` is abandoned and reveals nothing. Reconstructed secrets are checked against the
signed commitments (seed hash, mask public key) by :mod:`fedge.secagg.recovery`.
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.errors import (
    RoundAbandonedError,
    SecAggIntegrityError,
    SecAggProtocolError,
)
from fedge.secagg import shamir
from fedge.secagg.config import SessionParams
from fedge.secagg.crypto import (
    RandBytes,
    ed25519_sign,
    ed25519_verify,
    open_sealed,
    x25519_keypair,
    x25519_public,
)
from fedge.secagg.device import (
    SEED_SHARE,
    decode_unmask_records,
    seed_commitment,
    unmask_aad,
    unmask_key,
)
from fedge.secagg.graph import harary_graph
from fedge.secagg.masking import MaskExpander, pairwise_seeds, pairwise_sign
from fedge.secagg.messages import (
    EncryptedShares,
    KeyAdvertisement,
    KeyBundle,
    Message,
    RelaySum,
    RoundSetup,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
    signed_bytes,
)
from fedge.secagg.quantize import dtype_for_bits
from fedge.secagg.recovery import reconstruct_owners

__all__ = ["CoordinatorPhase", "CoordinatorSession", "SecAggOutcome"]

_SEALED_SHARE_BYTES = 12 + 2 * shamir.SHARE_BYTES + 16


class CoordinatorPhase(enum.Enum):
    """Where a :class:`CoordinatorSession` is in the protocol."""

    SETUP = "setup"
    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"
    ABANDONED = "abandoned"


@dataclass(frozen=True, eq=False)
class SecAggOutcome:
    """The integer sum over the survivors (``None`` when abandoned) and who they are."""

    total: NDArray[np.unsignedinteger] | None
    survivors: tuple[str, ...]
    abandoned: bool
    reason: str = ""


class CoordinatorSession:
    """The server of one secure-aggregation round over ``device_ids``."""

    def __init__(
        self,
        params: SessionParams,
        device_ids: Sequence[str],
        device_identities: Mapping[str, bytes],
        signing_key: bytes,
        *,
        job_id: str = "job",
        round_id: int = 0,
        rng: random.Random | None = None,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        params.check()
        if len(device_ids) != params.n:
            raise SecAggProtocolError(
                f"{len(device_ids)} devices but the session is for n={params.n}"
            )
        missing = [d for d in device_ids if d not in device_identities]
        if missing:
            raise SecAggIntegrityError(f"no identity key for devices {missing[:5]}")
        self.params = params
        self._identities = device_identities
        self._signing_key = signing_key
        self.session_id = hashlib.sha256(
            b"fedge/secagg/v1/session|%s|%d|" % (job_id.encode(), round_id) + randbytes(16)
        ).digest()
        self.graph = harary_graph(device_ids, params.neighbours, rng or secrets.SystemRandom())
        self.index = {d: i + 1 for i, d in enumerate(sorted(device_ids))}
        self._id_of = {i: d for d, i in self.index.items()}
        self._nbr_sets = {d: frozenset(nbrs) for d, nbrs in self.graph.items()}
        self._request_sets: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._enc_sk, self.public_key = x25519_keypair(randbytes)
        self.phase = CoordinatorPhase.SETUP
        self.reason = ""
        self._adverts: dict[str, KeyAdvertisement] = {}
        self._shares: dict[str, dict[str, bytes]] = {}  # sender -> recipient -> ciphertext
        self._relays: set[str] = set()
        self._contributors: set[str] = set()
        self._sum: NDArray[np.unsignedinteger] | None = None
        self._requests: dict[str, UnmaskRequest] = {}
        self._seed_shares: dict[str, dict[int, int]] = {}  # owner -> holder x -> share
        self._key_shares: dict[str, dict[int, int]] = {}
        self._answered: set[str] = set()
        self._u2: frozenset[str] = frozenset()
        self._u3: frozenset[str] = frozenset()
        self.outcome: SecAggOutcome | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def waiting_for(self) -> frozenset[str]:
        """Devices whose message for the current phase has not arrived yet."""
        if self.phase is CoordinatorPhase.ADVERTISE_KEYS:
            return frozenset(self.graph) - set(self._adverts)
        if self.phase is CoordinatorPhase.SHARE_KEYS:
            return frozenset(self._adverts) - set(self._shares)
        if self.phase is CoordinatorPhase.MASKED_INPUT:
            return self._u2 - self._contributors
        if self.phase is CoordinatorPhase.UNMASK:
            return frozenset(self._requests) - self._answered
        return frozenset()

    def start(self) -> list[Message]:
        """Open the round: one signed :class:`RoundSetup` per device."""
        self._expect(CoordinatorPhase.SETUP, "start")
        out: list[Message] = []
        for device, nbrs in self.graph.items():
            setup = RoundSetup(
                session_id=self.session_id, device_id=device, params=self.params,
                index=self.index[device], neighbours=nbrs,
                neighbour_indices=tuple(self.index[v] for v in nbrs),
                coordinator_key=self.public_key,
            )  # fmt: skip
            signature = ed25519_sign(self._signing_key, signed_bytes(setup))
            out.append(RoundSetup(**{**setup.__dict__, "signature": signature}))
        self.phase = CoordinatorPhase.ADVERTISE_KEYS
        return out

    def _expect(self, phase: CoordinatorPhase, what: str) -> None:
        if self.phase is not phase:
            raise SecAggProtocolError(
                f"{what} refused in phase {self.phase.value} (expected in {phase.value}); "
                "out of phase, late or replayed"
            )

    def _abandon(self, reason: str) -> list[Message]:
        self.phase = CoordinatorPhase.ABANDONED
        self.reason = reason
        self._sum = None
        self.outcome = SecAggOutcome(None, (), True, reason)
        return []

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, msg: Message) -> None:
        """Validate and store one message; refusals raise and leave the session unchanged."""
        if msg.session_id != self.session_id:
            raise SecAggProtocolError(f"{msg.kind} belongs to another session or round; refused")
        if isinstance(msg, KeyAdvertisement):
            self._on_advert(msg)
        elif isinstance(msg, EncryptedShares):
            self._on_shares(msg)
        elif isinstance(msg, RelaySum):
            self._on_relay_sum(msg)
        elif isinstance(msg, UnmaskResponse):
            self._on_unmask_response(msg)
        else:
            raise SecAggProtocolError(f"the coordinator does not accept {msg.kind} messages")

    def _on_advert(self, msg: KeyAdvertisement) -> None:
        self._expect(CoordinatorPhase.ADVERTISE_KEYS, "key advertisement")
        d = msg.device_id
        if d not in self.graph:
            raise SecAggProtocolError(f"key advertisement from {d!r}, not selected for the round")
        if d in self._adverts:
            raise SecAggProtocolError(f"duplicate key advertisement from {d!r}")
        if len(msg.enc_key) != 32 or len(msg.mask_key) != 32 or len(msg.seed_commitment) != 32:
            raise SecAggIntegrityError(f"key advertisement of {d!r} has malformed keys")
        ed25519_verify(
            self._identities[d], msg.signature, signed_bytes(msg), what=f"advert of {d!r}"
        )
        self._adverts[d] = msg

    def _on_shares(self, msg: EncryptedShares) -> None:
        self._expect(CoordinatorPhase.SHARE_KEYS, "encrypted shares")
        d = msg.device_id
        if d not in self._adverts:
            raise SecAggProtocolError(f"shares from {d!r}, which did not advertise keys")
        if d in self._shares:
            raise SecAggProtocolError(f"duplicate shares from {d!r}")
        expected = set(self.graph[d]) & set(self._adverts)
        recipients = [r for r, _ in msg.ciphertexts]
        if len(recipients) != len(expected) or set(recipients) != expected:
            raise SecAggIntegrityError(
                f"{d!r} must send one ciphertext to each of its {len(expected)} neighbours"
            )
        if any(len(c) != _SEALED_SHARE_BYTES for _, c in msg.ciphertexts):
            raise SecAggIntegrityError(f"{d!r} sent a share ciphertext of the wrong size")
        self._shares[d] = dict(msg.ciphertexts)

    def _on_relay_sum(self, msg: RelaySum) -> None:
        self._expect(CoordinatorPhase.MASKED_INPUT, "relay sum")
        who = set(msg.contributors)
        if msg.gateway_id in self._relays:
            raise SecAggProtocolError(f"duplicate sum from gateway {msg.gateway_id!r}")
        if len(who) != len(msg.contributors) or not who:
            raise SecAggIntegrityError(f"gateway {msg.gateway_id!r} lists no or repeated devices")
        if not who <= self._u2:
            raise SecAggProtocolError(
                f"gateway {msg.gateway_id!r} reports devices that did not share keys: "
                f"{sorted(who - self._u2)[:5]}"
            )
        if who & self._contributors:
            raise SecAggProtocolError(
                f"devices {sorted(who & self._contributors)[:5]} were already reported"
            )
        _check_vector(msg.vector, self.params)
        assert self._sum is not None
        np.add(self._sum, msg.vector, out=self._sum)
        self._relays.add(msg.gateway_id)
        self._contributors |= who

    def _on_unmask_response(self, msg: UnmaskResponse) -> None:
        self._expect(CoordinatorPhase.UNMASK, "unmask response")
        d = msg.device_id
        if d not in self._requests:
            raise SecAggProtocolError(f"unmask response from {d!r}, which was not asked")
        if d in self._answered:
            raise SecAggProtocolError(f"duplicate unmask response from {d!r}")
        key = unmask_key(self._enc_sk, self._adverts[d].enc_key, self.session_id, d)
        plain = open_sealed(key, msg.ciphertext, unmask_aad(self.session_id, d))
        records = decode_unmask_records(plain)
        request = self._request_sets[d]
        x = self.index[d]
        seeds: dict[str, int] = {}
        keys: dict[str, int] = {}
        for kind, owner_index, share in records:
            owner = self._id_of.get(owner_index, "")
            allowed, into = (request[0], seeds) if kind == SEED_SHARE else (request[1], keys)
            if owner not in allowed or owner in into:
                raise SecAggIntegrityError(f"{d!r} answered shares that were not asked for")
            into[owner] = share
        for peer, value in seeds.items():
            self._seed_shares.setdefault(peer, {})[x] = value
        for peer, value in keys.items():
            self._key_shares.setdefault(peer, {})[x] = value
        self._answered.add(d)

    # -- closing phases ----------------------------------------------------------------------------

    def close_phase(self) -> list[Message]:
        """End the current phase with whoever answered; return the next phase's messages."""
        t = self.params.threshold
        if self.phase is CoordinatorPhase.ADVERTISE_KEYS:
            u1 = set(self._adverts)
            short = self._short_neighbourhood(u1, u1)
            if short:
                return self._abandon(f"after key advertisement: {short}")
            self.phase = CoordinatorPhase.SHARE_KEYS
            return [
                KeyBundle(
                    self.session_id, u, tuple(self._adverts[v] for v in self.graph[u] if v in u1)
                )
                for u in sorted(u1)
            ]
        if self.phase is CoordinatorPhase.SHARE_KEYS:
            u2 = frozenset(self._shares)
            short = self._short_neighbourhood(u2, u2)
            if short:
                return self._abandon(f"after key sharing: {short}")
            self._u2 = u2
            self._sum = np.zeros(self.params.length, dtype=dtype_for_bits(self.params.bits))
            self.phase = CoordinatorPhase.MASKED_INPUT
            return [ShareBundle(self.session_id, v, self._sealed_for(v, u2)) for v in sorted(u2)]
        if self.phase is CoordinatorPhase.MASKED_INPUT:
            u3 = frozenset(self._contributors)
            dropped = self._u2 - u3
            short = self._short_neighbourhood(u3, u3) or self._short_neighbourhood(
                {d for d in dropped if set(self.graph[d]) & u3}, u3
            )
            if len(u3) < t or short:
                return self._abandon(
                    f"after masked input: {len(u3)} survivors; {short or f'below threshold {t}'}"
                )
            self._u3 = u3
            self.phase = CoordinatorPhase.UNMASK
            for u in sorted(u3):
                nbrs = self.graph[u]
                request = UnmaskRequest(
                    self.session_id, u,
                    survivors=tuple(v for v in nbrs if v in u3),
                    dropped=tuple(v for v in nbrs if v in dropped),
                )  # fmt: skip
                self._requests[u] = request
                self._request_sets[u] = (frozenset(request.survivors), frozenset(request.dropped))
            return list(self._requests.values())
        if self.phase is CoordinatorPhase.UNMASK:
            try:
                total = self._unmask()
            except RoundAbandonedError as exc:
                return self._abandon(str(exc))
            self.phase = CoordinatorPhase.DONE
            self.outcome = SecAggOutcome(total, tuple(sorted(self._u3)), False)
            return []
        raise SecAggProtocolError(f"no phase to close in {self.phase.value}")

    def _sealed_for(self, v: str, u2: frozenset[str]) -> tuple[tuple[str, bytes], ...]:
        return tuple((u, self._shares[u][v]) for u in self.graph[v] if u in u2)

    def _short_neighbourhood(
        self, owners: set[str] | frozenset[str], alive: frozenset[str] | set[str]
    ) -> str:
        t = self.params.threshold
        for u in sorted(owners):
            count = len(self._nbr_sets[u] & alive)
            if count < t:
                return f"{u!r} has {count} live neighbours, below threshold t={t}"
        return ""

    def _unmask(self) -> NDArray[np.unsignedinteger]:
        assert self._sum is not None
        ring = list(self.graph)  # ring order: neighbouring owners share most holders
        survivors = [u for u in ring if u in self._u3]
        dropped = [d for d in ring if d in self._u2 and d not in self._u3]
        dropped = [d for d in dropped if self._nbr_sets[d] & self._u3]
        t = self.params.threshold
        seeds = reconstruct_owners(survivors, self._seed_shares, t, "self-mask seed", self._seed_ok)
        keys = reconstruct_owners(dropped, self._key_shares, t, "mask key", self._key_ok)
        plus: list[bytes] = []
        minus: list[bytes] = [seeds[u].to_bytes(32, "big") for u in survivors]
        for d in dropped:
            live = [v for v in self.graph[d] if v in self._u3]
            peers = {v: self._adverts[v].mask_key for v in live}
            pair_seeds = pairwise_seeds(keys[d].to_bytes(32, "big"), peers, self.session_id, d)
            for v, seed in zip(live, pair_seeds, strict=True):
                # v added sign(v, d) * PRG(s_vd); take it back out.
                (minus if pairwise_sign(v, d) > 0 else plus).append(seed)
        total = self._sum.copy()
        MaskExpander(self.params.length, self.params.bits).accumulate(total, plus, minus)
        return total

    def _seed_ok(self, owner: str) -> Callable[[int], bool]:
        def check(value: int) -> bool:
            seed = value.to_bytes(33, "big")[1:]
            committed = seed_commitment(self.session_id, owner, seed)
            return value < 2**256 and committed == self._adverts[owner].seed_commitment

        return check

    def _key_ok(self, owner: str) -> Callable[[int], bool]:
        def check(value: int) -> bool:
            if value >= 2**256:
                return False
            return x25519_public(value.to_bytes(32, "big")) == self._adverts[owner].mask_key

        return check


def _check_vector(vector: NDArray[np.unsignedinteger], params: SessionParams) -> None:
    dtype = dtype_for_bits(params.bits)
    if vector.dtype != dtype or vector.shape != (params.length,):
        raise SecAggIntegrityError(
            f"vector must be {dtype} of length {params.length}, got {vector.dtype} {vector.shape}"
        )
    if params.bits < 8 * dtype.itemsize and int(vector.max(initial=0)) >> params.bits:
        raise SecAggIntegrityError(f"vector has values outside Z_2^{params.bits}")
