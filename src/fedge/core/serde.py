"""The wire format for tensors: safetensors with a versioned header, never pickle.

A payload is a safetensors file whose metadata carries ``fedge.format`` and ``fedge.version``.
Decoding checks, in this order and before any tensor is materialised: total size against a
limit, the 8-byte header length against the payload, the header size, the format and version,
each tensor's dtype against an allow-list, and then (optionally) names and shapes against a
:class:`~fedge.core.params.ParamSpec` and finiteness. Every refusal is a
:class:`~fedge.errors.WireFormatError` (or its siblings) that says what was wrong.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np

from fedge.core.params import Params, ParamSpec
from fedge.errors import NonFiniteError, ShapeMismatchError, WireFormatError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "WIRE_VERSION",
    "decode_arrays",
    "decode_params",
    "encode_arrays",
    "encode_params",
]

WIRE_VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_MAX_HEADER_BYTES = 1024 * 1024
_FORMAT = "fedge-tensors"
_DTYPES: dict[str, np.dtype[np.generic]] = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "U8": np.dtype("u1"),
}
_NAME_OF = {v: k for k, v in _DTYPES.items()}


def encode_arrays(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize named arrays (little-endian, C order) with fedge's versioned header."""
    from safetensors.numpy import save

    meta = {"fedge.format": _FORMAT, "fedge.version": str(WIRE_VERSION)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise WireFormatError("metadata keys and values must be strings")
        meta[k] = v
    prepared: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        a = np.require(arr, requirements="C")
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype not in _NAME_OF:
            raise WireFormatError(
                f"{name}: dtype {a.dtype} cannot be sent; use one of {sorted(_DTYPES)}"
            )
        prepared[name] = a.astype(dtype, copy=False)
    return bytes(save(prepared, metadata=meta))


def encode_params(
    params: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize a float32 parameter tree."""
    for name, a in params.items():
        if a.dtype != np.float32:
            raise WireFormatError(f"{name}: parameters must be float32, got {a.dtype}")
    return encode_arrays(params, metadata)


def _read_header(data: bytes, max_bytes: int) -> dict[str, object]:
    if len(data) > max_bytes:
        raise WireFormatError(
            f"payload of {len(data)} bytes exceeds the limit of {max_bytes} bytes"
        )
    if len(data) < 8:
        raise WireFormatError(f"payload truncated: {len(data)} bytes, need at least 8")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES:
        raise WireFormatError(f"header of {header_len} bytes exceeds {_MAX_HEADER_BYTES} bytes")
    if 8 + header_len > len(data):
        raise WireFormatError("payload truncated inside its header")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireFormatError("header must be a JSON object")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("fedge.format") != _FORMAT:
        raise WireFormatError("not a fedge tensor payload (missing fedge.format metadata)")
    if meta.get("fedge.version") != str(WIRE_VERSION):
        raise WireFormatError(
            f"wire version {meta.get('fedge.version')!r} is not supported; this build speaks "
            f"version {WIRE_VERSION}: upgrade the older side"
        )
    data_len = len(data) - 8 - header_len
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise WireFormatError(f"{name}: malformed tensor entry")
        offs = info["data_offsets"]
        if not (
            isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
        ):
            raise WireFormatError(f"{name}: malformed data_offsets")
        end = max(end, offs[1])
    if end != data_len:
        raise WireFormatError(
            f"payload truncated or padded: tensors need {end} bytes, {data_len} present"
        )
    return header


def decode_arrays(
    data: bytes,
    *,
    allowed_dtypes: frozenset[str] = frozenset({"F32"}),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a payload into (arrays, metadata); dtypes outside ``allowed_dtypes`` are refused."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    header = _read_header(raw, max_bytes)
    for name, info in header.items():
        if name != "__metadata__" and info["dtype"] not in allowed_dtypes:  # type: ignore[index]
            raise WireFormatError(
                f"{name}: dtype {info['dtype']} not allowed here (allowed: {sorted(allowed_dtypes)})"  # type: ignore[index]
            )
    try:
        arrays = load(raw)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise WireFormatError(f"malformed tensor payload: {exc}") from None
    raw_meta = header["__metadata__"]
    assert isinstance(raw_meta, dict)  # checked by _read_header
    meta = {str(k): str(v) for k, v in raw_meta.items()}
    out = {
        name: np.require(arrays[name], requirements="C")
        for name in header
        if name != "__metadata__"
    }
    return out, meta


def decode_params(
    data: bytes,
    spec: ParamSpec | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    finite: bool = True,
) -> tuple[Params, dict[str, str]]:
    """Parse a float32 parameter tree; validate it against ``spec`` and finiteness if asked."""
    arrays, meta = decode_arrays(data, allowed_dtypes=frozenset({"F32"}), max_bytes=max_bytes)
    params: Params = {k: v.astype(np.float32, copy=False) for k, v in arrays.items()}
    if spec is not None:
        if spec.size * 4 + 8 > max_bytes:
            raise ShapeMismatchError("the model is larger than the payload limit; raise max_bytes")
        params = spec.validate(params, finite=finite)
    elif finite:
        for name, a in params.items():
            if not np.isfinite(a).all():
                raise NonFiniteError(f"{name}: contains NaN or Inf; the payload is refused")
    return params, meta
