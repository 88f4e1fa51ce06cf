"""Wire format of secagg messages: round trips, and every malformed payload refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedge.errors import SecAggIntegrityError
from fedge.secagg import (
    EncryptedShares,
    KeyAdvertisement,
    KeyBundle,
    MaskedInput,
    RelaySum,
    RoundSetup,
    SecAggConfig,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
    from_wire,
    to_wire,
)
from fedge.secagg.messages import from_dict, to_dict

SID = b"s" * 32
ADVERT = KeyAdvertisement(SID, "d1", b"e" * 32, b"m" * 32, b"c" * 32, b"g" * 64)
VECTOR = np.arange(5, dtype=np.uint32)
MESSAGES = [
    RoundSetup(SID, "d1", SecAggConfig().resolve(5, 5), 1, ("d2", "d3"), (2, 3), b"k" * 32, b"x"),
    ADVERT,
    KeyBundle(SID, "d2", (ADVERT,)),
    EncryptedShares(SID, "d1", (("d2", b"\x00" * 94),)),
    ShareBundle(SID, "d2", (("d1", b"\x01" * 94),)),
    UnmaskRequest(SID, "d1", ("d2",), ("d3",)),
    UnmaskResponse(SID, "d1", b"sealed"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.kind)
def test_control_messages_roundtrip_as_json(msg):
    data = to_wire(msg)
    assert data[:1] == b"J"
    json.loads(data[1:])  # plain JSON, no pickle
    assert from_wire(data) == msg


def test_vector_messages_roundtrip_through_serde():
    for msg in (MaskedInput(SID, "d1", VECTOR), RelaySum(SID, "gw", ("d1", "d2"), VECTOR)):
        back = from_wire(to_wire(msg))
        assert type(back) is type(msg)
        assert (back.vector == VECTOR).all() and back.vector.dtype == np.uint32
        assert to_dict(back) == to_dict(msg)


def _json(body: dict[str, object]) -> bytes:
    return b"J" + json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "unknown secagg payload"),
        (b"Xabc", "unknown secagg payload"),
        (b"J{not json", "not valid JSON"),
        (b"J[1, 2]", "JSON object"),
        (_json({"v": 2, "type": "unmask_response"}), "version"),
        (_json({"v": 1, "type": "pickle"}), "unknown secagg message type"),
        (_json({**to_dict(MESSAGES[-1]), "extra": 1}), "unexpected fields"),
        (_json({**to_dict(MESSAGES[-1]), "ciphertext": "%%%"}), "base64"),
        (_json({**to_dict(MESSAGES[-1]), "device_id": ""}), "non-empty id"),
        (_json({**to_dict(MESSAGES[-2]), "survivors": "d2"}), "list"),
        (_json({k: v for k, v in to_dict(MESSAGES[-1]).items() if k != "session_id"}), "missing"),
        (_json({**to_dict(MaskedInput(SID, "d1", VECTOR))}), "missing vector"),
        (b"T" + b"\x00" * 4, "vector payload refused"),
    ],
)
def test_malformed_payloads_refused(payload, match):
    with pytest.raises(SecAggIntegrityError, match=match):
        from_wire(payload)


def test_oversized_and_wrong_dtype_refused():
    data = to_wire(MaskedInput(SID, "d1", VECTOR))
    with pytest.raises(SecAggIntegrityError, match="exceeds"):
        from_wire(data, max_bytes=10)
    from fedge.core.serde import encode_arrays

    meta = {"fedge.secagg": json.dumps(to_dict(MaskedInput(SID, "d1", VECTOR)))}
    floats = b"T" + encode_arrays({"vector": np.zeros(5, np.float32)}, metadata=meta)
    with pytest.raises(SecAggIntegrityError, match="not allowed"):
        from_wire(floats)
    control = b"T" + encode_arrays(
        {"vector": VECTOR}, metadata={"fedge.secagg": json.dumps(to_dict(MESSAGES[-1]))}
    )
    with pytest.raises(SecAggIntegrityError, match="does not carry a vector"):
        from_wire(control)


def test_round_setup_params_are_rechecked_on_parse():
    body = to_dict(MESSAGES[0])
    body["params"]["threshold"] = 1  # t <= k/2
    with pytest.raises(SecAggIntegrityError, match="k/2"):
        from_dict(body)
