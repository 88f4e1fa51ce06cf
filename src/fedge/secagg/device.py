"""The device side of SecAgg+ as a sans-IO state machine.

Bonawitz et al. 2017 (arXiv:1611.04482, Fig. 4, "User" column) restricted to the neighbours of
a SecAgg+ graph (Bell et al. 2020, arXiv:2009.00727). The session consumes messages and returns
messages; it never touches sockets, clocks or logs. Phases::

    WAIT_SETUP ─RoundSetup─▶ WAIT_KEYS ─KeyBundle─▶ WAIT_SHARES ─ShareBundle─▶ READY
    READY ─mask(update)─▶ WAIT_UNMASK ─UnmaskRequest─▶ DONE

A message in any other phase, for another session or another device is refused with
:class:`~fedge.errors.SecAggProtocolError` and changes nothing. Signatures on the round setup
(coordinator) and on every neighbour's key advertisement (device identity keys from the PKI)
are verified, so a relay cannot substitute keys. An unmask request that names a peer both as
survivor and as dropped — which would reveal both its self-mask and its mask key — is refused
with :class:`~fedge.errors.UnmaskRefusedError`, and only one unmask request is ever answered.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from fedge.errors import (
    RoundAbandonedError,
    SecAggIntegrityError,
    SecAggProtocolError,
    UnmaskRefusedError,
)
from fedge.secagg import shamir
from fedge.secagg.crypto import (
    RandBytes,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
    open_sealed,
    seal,
    x25519_keypair,
    x25519_shared,
    x25519_shared_many,
)
from fedge.secagg.masking import MaskExpander, pairwise_seeds, pairwise_sign
from fedge.secagg.messages import (
    EncryptedShares,
    KeyAdvertisement,
    KeyBundle,
    MaskedInput,
    Message,
    RoundSetup,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
    signed_bytes,
)
from fedge.secagg.quantize import quantize

__all__ = [
    "KEY_SHARE",
    "SEED_SHARE",
    "DevicePhase",
    "DeviceSession",
    "decode_unmask_records",
    "encode_unmask_record",
    "seed_commitment",
    "share_key",
    "unmask_key",
]


class DevicePhase(enum.Enum):
    """Where a :class:`DeviceSession` is in the protocol."""

    WAIT_SETUP = "wait_setup"
    WAIT_KEYS = "wait_keys"
    WAIT_SHARES = "wait_shares"
    READY = "ready"  # shares received; waiting for the local update
    WAIT_UNMASK = "wait_unmask"
    DONE = "done"


def seed_commitment(session_id: bytes, device_id: str, seed: bytes) -> bytes:
    """SHA-256 commitment to the self-mask seed, signed in the key advertisement."""
    return hashlib.sha256(
        b"fedge/secagg/v1/seed|" + session_id + b"|" + device_id.encode() + b"|" + seed
    ).digest()


def share_key(shared: bytes, session_id: bytes, sender: str, to: str) -> bytes:
    """AES-GCM key for the shares ``sender`` seals to ``to``, from their X25519 secret.

    One agreement serves both directions; HKDF's ``info`` names the direction.
    """
    info = b"fedge/secagg/v1/share|" + sender.encode() + b"|" + to.encode()
    return hkdf_sha256(shared, salt=session_id, info=info)


def unmask_key(private: bytes, peer_public: bytes, session_id: bytes, device_id: str) -> bytes:
    """AES-GCM key for a device's unmask reply to the coordinator."""
    info = b"fedge/secagg/v1/unmask|" + device_id.encode()
    return hkdf_sha256(x25519_shared(private, peer_public), salt=session_id, info=info)


def share_aad(session_id: bytes, sender: str, to: str) -> bytes:
    """Associated data binding a share ciphertext to the session and both ids."""
    return session_id + b"|share|" + sender.encode() + b"|" + to.encode()


class DeviceSession:
    """One device's part in one secure-aggregation round.

    ``identity_key`` is the device's Ed25519 private key; ``coordinator_identity`` and
    ``peer_identities`` are Ed25519 public keys taken from the fleet PKI, never from the round.
    """

    def __init__(
        self,
        device_id: str,
        identity_key: bytes,
        coordinator_identity: bytes,
        peer_identities: Mapping[str, bytes],
        *,
        randbytes: RandBytes = os.urandom,
    ) -> None:
        self.device_id = device_id
        self._identity_key = identity_key
        self._coordinator_identity = coordinator_identity
        self._peer_identities = peer_identities
        self._randbytes = randbytes
        self.phase = DevicePhase.WAIT_SETUP
        self.rejected: dict[str, str] = {}  # peer -> why its share was refused
        self._setup: RoundSetup | None = None
        self._enc_sk = self._mask_sk = self._seed = b""
        self._adverts: dict[str, KeyAdvertisement] = {}
        self._index_of: dict[str, int] = {}
        self._enc_shared: dict[str, bytes] = {}  # peer -> X25519 secret of the share keys
        self._held: dict[str, tuple[bytes, bytes]] = {}  # peer -> (seed share, key share)
        self._senders: tuple[str, ...] = ()  # neighbours in U2 (they sent us shares)

    # -- dispatch ---------------------------------------------------------------------------

    def receive(self, msg: Message) -> list[Message]:
        """Consume one message from the coordinator; return the messages to send back."""
        if isinstance(msg, RoundSetup):
            return [self._on_setup(msg)]
        if isinstance(msg, KeyBundle):
            self._check_addressed(msg)
            return [self._on_key_bundle(msg)]
        if isinstance(msg, ShareBundle):
            self._check_addressed(msg)
            self._on_share_bundle(msg)
            return []
        if isinstance(msg, UnmaskRequest):
            self._check_addressed(msg)
            return [self._on_unmask(msg)]
        raise SecAggProtocolError(f"a device does not accept {msg.kind} messages")

    def _expect(self, phase: DevicePhase, what: str) -> None:
        if self.phase is not phase:
            raise SecAggProtocolError(
                f"{self.device_id}: {what} refused in phase {self.phase.value} "
                f"(expected in {phase.value}); out of phase, duplicated or replayed"
            )

    def _check_addressed(self, msg: KeyBundle | ShareBundle | UnmaskRequest) -> None:
        if self._setup is None:
            raise SecAggProtocolError(f"{self.device_id}: {msg.kind} before the round setup")
        if msg.session_id != self._setup.session_id:
            raise SecAggProtocolError(
                f"{self.device_id}: {msg.kind} belongs to another session or round; refused"
            )
        if msg.device_id != self.device_id:
            raise SecAggProtocolError(f"{msg.kind} addressed to {msg.device_id!r}, not to us")

    @property
    def setup(self) -> RoundSetup:
        """The verified round setup."""
        if self._setup is None:
            raise SecAggProtocolError(f"{self.device_id}: no round setup received yet")
        return self._setup

    # -- phase 0 → 1: advertise keys -----------------------------------------------------------

    def _on_setup(self, msg: RoundSetup) -> KeyAdvertisement:
        self._expect(DevicePhase.WAIT_SETUP, "round setup")
        if msg.device_id != self.device_id:
            raise SecAggProtocolError(f"round setup addressed to {msg.device_id!r}, not to us")
        ed25519_verify(
            self._coordinator_identity, msg.signature, signed_bytes(msg), what="round setup"
        )
        msg.params.check()
        nbrs = msg.neighbours
        if (
            len(set(nbrs)) != len(nbrs)
            or self.device_id in nbrs
            or len(msg.neighbour_indices) != len(nbrs)
            or len({*msg.neighbour_indices, msg.index}) != len(nbrs) + 1
            or 0 in msg.neighbour_indices
            or msg.index == 0
        ):
            raise SecAggIntegrityError("round setup has inconsistent neighbours or indices")
        if len(nbrs) != min(msg.params.neighbours, msg.params.n - 1):
            raise SecAggIntegrityError(
                f"round setup lists {len(nbrs)} neighbours but k={msg.params.neighbours}"
            )
        unknown = [v for v in nbrs if v not in self._peer_identities]
        if unknown:
            raise SecAggIntegrityError(f"neighbours without a known identity key: {unknown[:5]}")
        self._setup = msg
        self._index_of = dict(zip(nbrs, msg.neighbour_indices, strict=True))
        self._enc_sk, enc_pk = x25519_keypair(self._randbytes)
        self._mask_sk, mask_pk = x25519_keypair(self._randbytes)
        self._seed = self._randbytes(32)
        advert = KeyAdvertisement(
            session_id=msg.session_id,
            device_id=self.device_id,
            enc_key=enc_pk,
            mask_key=mask_pk,
            seed_commitment=seed_commitment(msg.session_id, self.device_id, self._seed),
        )
        signature = ed25519_sign(self._identity_key, signed_bytes(advert))
        self.phase = DevicePhase.WAIT_KEYS
        return KeyAdvertisement(**{**advert.__dict__, "signature": signature})

    # -- phase 1 → 2: share keys ---------------------------------------------------------------

    def _on_key_bundle(self, msg: KeyBundle) -> EncryptedShares:
        self._expect(DevicePhase.WAIT_KEYS, "key bundle")
        setup = self.setup
        adverts: dict[str, KeyAdvertisement] = {}
        for advert in msg.adverts:
            peer = advert.device_id
            if peer not in self._index_of or peer in adverts:
                raise SecAggIntegrityError(f"key bundle has a stranger or duplicate: {peer!r}")
            if advert.session_id != setup.session_id:
                raise SecAggIntegrityError(f"advertisement of {peer!r} is for another session")
            ed25519_verify(
                self._peer_identities[peer], advert.signature, signed_bytes(advert),
                what=f"key advertisement of {peer!r}",
            )  # fmt: skip
            adverts[peer] = advert
        t = setup.params.threshold
        if len(adverts) < t:
            raise RoundAbandonedError(
                f"{self.device_id}: only {len(adverts)} neighbours advertised keys, threshold {t}"
            )
        peers = sorted(adverts)
        xs = [self._index_of[p] for p in peers]
        seed_shares = shamir.split(int.from_bytes(self._seed, "big"), xs, t, self._randbytes)
        key_shares = shamir.split(int.from_bytes(self._mask_sk, "big"), xs, t, self._randbytes)
        agreed = x25519_shared_many(self._enc_sk, [adverts[p].enc_key for p in peers])
        self._enc_shared = dict(zip(peers, agreed, strict=True))
        ciphertexts = []
        for peer, s_b, s_k in zip(peers, seed_shares, key_shares, strict=True):
            key = share_key(self._enc_shared[peer], setup.session_id, self.device_id, peer)
            plaintext = shamir.share_to_bytes(s_b) + shamir.share_to_bytes(s_k)
            aad = share_aad(setup.session_id, self.device_id, peer)
            ciphertexts.append((peer, seal(key, plaintext, aad, self._randbytes)))
        self._adverts = adverts
        self.phase = DevicePhase.WAIT_SHARES
        return EncryptedShares(setup.session_id, self.device_id, tuple(ciphertexts))

    # -- phase 2 → 3: receive shares, mask -------------------------------------------------------

    def _on_share_bundle(self, msg: ShareBundle) -> None:
        self._expect(DevicePhase.WAIT_SHARES, "share bundle")
        setup = self.setup
        senders = [s for s, _ in msg.ciphertexts]
        if len(set(senders)) != len(senders) or not set(senders) <= set(self._adverts):
            raise SecAggIntegrityError("share bundle has duplicate senders or strangers")
        if len(senders) < setup.params.threshold:
            raise RoundAbandonedError(
                f"{self.device_id}: only {len(senders)} neighbours sent shares, "
                f"threshold {setup.params.threshold}"
            )
        held: dict[str, tuple[bytes, bytes]] = {}
        rejected: dict[str, str] = {}
        for sender, blob in msg.ciphertexts:
            key = share_key(self._enc_shared[sender], setup.session_id, sender, self.device_id)
            try:
                plain = open_sealed(key, blob, share_aad(setup.session_id, sender, self.device_id))
                if len(plain) != 2 * shamir.SHARE_BYTES:
                    raise SecAggIntegrityError("share plaintext has the wrong length")
            except SecAggIntegrityError as exc:
                rejected[sender] = str(exc)  # the round goes on; we cannot vouch for sender
                continue
            held[sender] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
        self._held, self.rejected = held, rejected
        self._senders = tuple(sorted(senders))
        self.phase = DevicePhase.READY

    def mask(self, update: NDArray[np.floating]) -> MaskedInput:
        """Quantise, then mask ``update`` with the self-mask and pairwise masks (phase 3)."""
        self._expect(DevicePhase.READY, "masking")
        setup = self.setup
        params = setup.params
        y = quantize(update, params, self._randbytes(32))
        expander = MaskExpander(params.length, params.bits)
        plus: list[bytes] = [self._seed]
        minus: list[bytes] = []
        peers = {p: self._adverts[p].mask_key for p in self._senders}
        seeds = pairwise_seeds(self._mask_sk, peers, setup.session_id, self.device_id)
        for peer, seed in zip(peers, seeds, strict=True):
            (plus if pairwise_sign(self.device_id, peer) > 0 else minus).append(seed)
        expander.accumulate(y, plus, minus)
        self.phase = DevicePhase.WAIT_UNMASK
        return MaskedInput(setup.session_id, self.device_id, y)

    # -- phase 4: unmask -------------------------------------------------------------------------

    def _on_unmask(self, msg: UnmaskRequest) -> UnmaskResponse:
        self._expect(DevicePhase.WAIT_UNMASK, "unmask request")
        setup = self.setup
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = survivors & dropped
        if both:
            raise UnmaskRefusedError(
                f"{self.device_id}: refusing to reveal both the self-mask and the mask-key shares "
                f"of {sorted(both)[:5]}; a curious server could unmask them"
            )
        if len(survivors) != len(msg.survivors) or len(dropped) != len(msg.dropped):
            raise SecAggProtocolError("unmask request lists a peer twice")
        strangers = (survivors | dropped) - set(self._senders)
        if strangers:
            raise SecAggProtocolError(
                f"unmask request names peers that did not share with us: {sorted(strangers)[:5]}"
            )
        if len(survivors) + 1 < setup.params.threshold:
            raise UnmaskRefusedError(
                f"{self.device_id}: only {len(survivors)} surviving neighbours; below threshold "
                f"{setup.params.threshold}, unmasking could expose a small group's sum"
            )
        records = [
            encode_unmask_record(kind, self._index_of[p], self._held[p][kind])
            for kind, peers in ((SEED_SHARE, survivors), (KEY_SHARE, dropped))
            for p in sorted(peers)
            if p in self._held
        ]
        key = unmask_key(self._enc_sk, setup.coordinator_key, setup.session_id, self.device_id)
        aad = unmask_aad(setup.session_id, self.device_id)
        blob = seal(key, b"".join(records), aad, self._randbytes)
        self.phase = DevicePhase.DONE
        return UnmaskResponse(setup.session_id, self.device_id, blob)


SEED_SHARE, KEY_SHARE = 0, 1
UNMASK_RECORD_BYTES = 1 + 4 + shamir.SHARE_BYTES


def encode_unmask_record(kind: int, owner_index: int, share: bytes) -> bytes:
    """One revealed share: kind (0 seed, 1 mask key), the owner's index, the 33-byte share."""
    return bytes([kind]) + owner_index.to_bytes(4, "big") + share


def decode_unmask_records(plain: bytes) -> list[tuple[int, int, int]]:
    """Parse concatenated :func:`encode_unmask_record` records into (kind, owner index, share)."""
    if len(plain) % UNMASK_RECORD_BYTES:
        raise SecAggIntegrityError("unmask reply is not a whole number of share records")
    out = []
    for off in range(0, len(plain), UNMASK_RECORD_BYTES):
        kind = plain[off]
        if kind not in (SEED_SHARE, KEY_SHARE):
            raise SecAggIntegrityError(f"unknown share kind {kind} in unmask reply")
        owner = int.from_bytes(plain[off + 1 : off + 5], "big")
        share = shamir.share_from_bytes(plain[off + 5 : off + UNMASK_RECORD_BYTES])
        out.append((kind, owner, share))
    return out


def unmask_aad(session_id: bytes, device_id: str) -> bytes:
    """Associated data binding an unmask reply to the session and the device."""
    return session_id + b"|unmask|" + device_id.encode()
