"""Secure-aggregation messages: frozen dataclasses that travel without pickle.

Control messages become versioned JSON (bytes as base64); the two messages that carry vectors
(:class:`MaskedInput`, :class:`RelaySum`) become a :mod:`fedge.core.serde` tensor payload whose
metadata holds the same JSON. :func:`to_wire` / :func:`from_wire` are the only entry points a
transport needs; every malformed, oversized or wrongly typed payload is refused with
:class:`~fedge.errors.SecAggIntegrityError` before any protocol object sees it.

Flow (Bonawitz et al. 2017, arXiv:1611.04482, Fig. 4; Bell et al. 2020, arXiv:2009.00727)::

    coordinator ─RoundSetup (signed)──▶ device           phase 0: parameters, neighbours
    device ─KeyAdvertisement (signed)─▶ coordinator      phase 1: advertise keys
    coordinator ─KeyBundle───────────▶ device
    device ─EncryptedShares──────────▶ coordinator       phase 2: share keys
    coordinator ─ShareBundle─────────▶ device
    device ─MaskedInput──────────────▶ relay             phase 3: masked input
    relay ─RelaySum──────────────────▶ coordinator
    coordinator ─UnmaskRequest───────▶ device            phase 4: unmask
    device ─UnmaskResponse (sealed to the coordinator)─▶ coordinator
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
from numpy.typing import NDArray

from fedge.core.serde import decode_arrays, encode_arrays
from fedge.errors import SecAggConfigError, SecAggIntegrityError, WireFormatError
from fedge.secagg.config import SessionParams

__all__ = [
    "MESSAGE_VERSION",
    "EncryptedShares",
    "KeyAdvertisement",
    "KeyBundle",
    "MaskedInput",
    "Message",
    "RelaySum",
    "RoundSetup",
    "ShareBundle",
    "UnmaskRequest",
    "UnmaskResponse",
    "from_dict",
    "from_wire",
    "signed_bytes",
    "to_dict",
    "to_wire",
]

MESSAGE_VERSION = 1
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_MAX_ITEMS = 1_000_000
_MAX_BLOB = 64 * 1024
_MAX_ID = 256
UIntVector: TypeAlias = NDArray[np.unsignedinteger]


@dataclass(frozen=True)
class RoundSetup:
    """Coordinator → device: session parameters, neighbours and the coordinator's key, signed."""

    kind: ClassVar[str] = "round_setup"
    session_id: bytes
    device_id: str
    params: SessionParams
    index: int  # the device's Shamir x-coordinate
    neighbours: tuple[str, ...]
    neighbour_indices: tuple[int, ...]
    coordinator_key: bytes  # X25519 public key the unmask replies are sealed to
    signature: bytes = b""


@dataclass(frozen=True)
class KeyAdvertisement:
    """Device → coordinator: two X25519 public keys and a seed commitment, signed (phase 1)."""

    kind: ClassVar[str] = "key_advertisement"
    session_id: bytes
    device_id: str
    enc_key: bytes  # c_u^PK: share encryption, and the unmask reply to the coordinator
    mask_key: bytes  # s_u^PK: pairwise masks
    seed_commitment: bytes  # SHA-256 over the session, the id and the self-mask seed b_u
    signature: bytes = b""


@dataclass(frozen=True)
class KeyBundle:
    """Coordinator → device: its neighbours' signed advertisements."""

    kind: ClassVar[str] = "key_bundle"
    session_id: bytes
    device_id: str
    adverts: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShares:
    """Device → coordinator: one AES-GCM ciphertext per neighbour (phase 2)."""

    kind: ClassVar[str] = "encrypted_shares"
    session_id: bytes
    device_id: str
    ciphertexts: tuple[tuple[str, bytes], ...]  # (recipient, ciphertext)


@dataclass(frozen=True)
class ShareBundle:
    """Coordinator → device: the ciphertexts its neighbours sealed to it."""

    kind: ClassVar[str] = "share_bundle"
    session_id: bytes
    device_id: str
    ciphertexts: tuple[tuple[str, bytes], ...]  # (sender, ciphertext)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Device → relay: the masked, quantised update (phase 3)."""

    kind: ClassVar[str] = "masked_input"
    session_id: bytes
    device_id: str
    vector: UIntVector


@dataclass(frozen=True, eq=False)
class RelaySum:
    """Relay → coordinator: the sum modulo 2^b of its devices' masked inputs, and who sent them."""

    kind: ClassVar[str] = "relay_sum"
    session_id: bytes
    gateway_id: str
    contributors: tuple[str, ...]
    vector: UIntVector


@dataclass(frozen=True)
class UnmaskRequest:
    """Coordinator → device: whose self-mask shares and whose key shares it needs (phase 4)."""

    kind: ClassVar[str] = "unmask_request"
    session_id: bytes
    device_id: str
    survivors: tuple[str, ...]  # neighbours whose masked input arrived: reveal b-shares
    dropped: tuple[str, ...]  # neighbours that vanished: reveal mask-key shares


@dataclass(frozen=True)
class UnmaskResponse:
    """Device → coordinator: the requested shares, sealed to the coordinator's key."""

    kind: ClassVar[str] = "unmask_response"
    session_id: bytes
    device_id: str
    ciphertext: bytes


Message: TypeAlias = (
    RoundSetup
    | KeyAdvertisement
    | KeyBundle
    | EncryptedShares
    | ShareBundle
    | MaskedInput
    | RelaySum
    | UnmaskRequest
    | UnmaskResponse
)
_TYPES: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (
        RoundSetup, KeyAdvertisement, KeyBundle, EncryptedShares, ShareBundle,
        MaskedInput, RelaySum, UnmaskRequest, UnmaskResponse,
    )
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# dict form: every field is encoded according to its annotation


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * _MAX_BLOB:
        raise SecAggIntegrityError(f"{name}: expected base64 text of bounded size")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SecAggIntegrityError(f"{name}: invalid base64") from None


def _encode_field(annotation: str, value: Any) -> Any:
    if annotation == "bytes":
        return _b64(value)
    if annotation in ("str", "int"):
        return value
    if annotation in ("tuple[str, ...]", "tuple[int, ...]"):
        return list(value)
    if annotation == "tuple[tuple[str, bytes], ...]":
        return [[peer, _b64(blob)] for peer, blob in value]
    if annotation == "SessionParams":
        return value.to_dict()
    if annotation == "tuple[KeyAdvertisement, ...]":
        return [to_dict(a) for a in value]
    raise AssertionError(f"no codec for {annotation}")  # pragma: no cover


def _check_list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise SecAggIntegrityError(f"{name}: expected a list of at most {_MAX_ITEMS} items")
    return value


def _check_str(value: object, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise SecAggIntegrityError(f"{name}: expected a non-empty id of at most {_MAX_ID} chars")
    return value


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise SecAggIntegrityError(f"{name}: expected a non-negative integer")
    return value


def _decode_field(annotation: str, value: object, name: str) -> Any:
    if annotation == "bytes":
        return _unb64(value, name)
    if annotation == "str":
        return _check_str(value, name)
    if annotation == "int":
        return _check_int(value, name)
    if annotation == "tuple[str, ...]":
        return tuple(_check_str(v, name) for v in _check_list(value, name))
    if annotation == "tuple[int, ...]":
        return tuple(_check_int(v, name) for v in _check_list(value, name))
    if annotation == "tuple[tuple[str, bytes], ...]":
        pairs = []
        for item in _check_list(value, name):
            if not isinstance(item, list) or len(item) != 2:
                raise SecAggIntegrityError(f"{name}: expected [peer, ciphertext] pairs")
            pairs.append((_check_str(item[0], name), _unb64(item[1], name)))
        return tuple(pairs)
    if annotation == "SessionParams":
        if not isinstance(value, dict):
            raise SecAggIntegrityError(f"{name}: expected an object")
        try:
            return SessionParams.from_dict(value)
        except SecAggConfigError as exc:
            raise SecAggIntegrityError(f"{name}: {exc}") from None
    if annotation == "tuple[KeyAdvertisement, ...]":
        adverts = [from_dict(a) for a in _check_list(value, name)]
        if not all(isinstance(a, KeyAdvertisement) for a in adverts):
            raise SecAggIntegrityError(f"{name}: expected key advertisements")
        return tuple(adverts)
    raise AssertionError(f"no codec for {annotation}")  # pragma: no cover


def _vector_field(cls: type[Any]) -> bool:
    return cls in (MaskedInput, RelaySum)


def to_dict(msg: Message) -> dict[str, Any]:
    """JSON-able dict of a message (vectors excluded: :func:`to_wire` carries them)."""
    out: dict[str, Any] = {"v": MESSAGE_VERSION, "type": msg.kind}
    for f in dataclasses.fields(msg):
        if f.name != "vector":
            out[f.name] = _encode_field(str(f.type), getattr(msg, f.name))
    return out


def from_dict(data: object, vector: UIntVector | None = None) -> Message:
    """Parse :func:`to_dict` output (plus the vector for vector messages), validating types."""
    if not isinstance(data, dict):
        raise SecAggIntegrityError("a secagg message must be a JSON object")
    if data.get("v") != MESSAGE_VERSION:
        raise SecAggIntegrityError(
            f"secagg message version {data.get('v')!r} is not {MESSAGE_VERSION}; upgrade"
        )
    cls = _TYPES.get(str(data.get("type")))
    if cls is None:
        raise SecAggIntegrityError(f"unknown secagg message type {data.get('type')!r}")
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(data) - names - {"v", "type"}
    if extra:
        raise SecAggIntegrityError(f"{cls.kind}: unexpected fields {sorted(extra)}")
    for f in dataclasses.fields(cls):
        if f.name == "vector":
            if vector is None:
                raise SecAggIntegrityError(f"{cls.kind}: missing vector")
            kwargs["vector"] = vector
        elif f.name in data:
            kwargs[f.name] = _decode_field(str(f.type), data[f.name], f"{cls.kind}.{f.name}")
        elif f.default is dataclasses.MISSING:
            raise SecAggIntegrityError(f"{cls.kind}: missing field {f.name!r}")
    msg: Message = cls(**kwargs)
    return msg


def signed_bytes(msg: RoundSetup | KeyAdvertisement) -> bytes:
    """Canonical bytes a signature covers: the dict form without the signature, sorted keys."""
    body = to_dict(dataclasses.replace(msg, signature=b""))
    del body["signature"]
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def to_wire(msg: Message) -> bytes:
    """Serialise a message: ``b"J" + JSON`` or ``b"T" + serde tensor payload``."""
    body = json.dumps(to_dict(msg), separators=(",", ":"))
    if isinstance(msg, (MaskedInput, RelaySum)):
        return b"T" + encode_arrays({"vector": msg.vector}, metadata={"fedge.secagg": body})
    return b"J" + body.encode()


def from_wire(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse :func:`to_wire`; refuse oversized, malformed or unknown payloads."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SecAggIntegrityError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise SecAggIntegrityError(f"message of {len(raw)} bytes exceeds {max_bytes} bytes")
    tag, payload = raw[:1], raw[1:]
    try:
        if tag == b"J":
            return from_dict(json.loads(payload))
        if tag == b"T":
            arrays, meta = decode_arrays(
                payload, allowed_dtypes=frozenset({"U32", "U64"}), max_bytes=max_bytes
            )
            if set(arrays) != {"vector"} or "fedge.secagg" not in meta:
                raise SecAggIntegrityError("vector message must hold exactly one 'vector'")
            vector = arrays["vector"]
            if vector.ndim != 1:
                raise SecAggIntegrityError("vector message must hold a 1-D vector")
            msg = from_dict(json.loads(meta["fedge.secagg"]), vector)
            if not _vector_field(type(msg)):
                raise SecAggIntegrityError(f"{msg.kind} does not carry a vector")
            return msg
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SecAggIntegrityError(f"secagg message is not valid JSON: {exc}") from None
    except WireFormatError as exc:
        raise SecAggIntegrityError(f"secagg vector payload refused: {exc}") from None
    raise SecAggIntegrityError("unknown secagg payload tag; expected b'J' or b'T'")
