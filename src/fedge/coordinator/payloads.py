"""Decode and check the tensor payloads gateways and devices upload, before they touch a sum.

Checks, in order: size (against what this model can need), wire format and dtype (no pickle;
F64/F32 for partial sums, F32 for updates), binding metadata (kind, job and round equal to the
URL's, sender equal to the TLS peer, a well-formed nonce), counts, the optional federated
evaluation sums (:func:`~fedge.aggregation.evaluation.parse_eval_meta`), then names, shapes and
finiteness of every tensor. Each refusal is a fedge error the HTTP layer maps to a status:
:class:`~fedge.errors.PayloadTooLarge` (413), :class:`~fedge.errors.ValidationError` and its
subclasses (400), :class:`~fedge.errors.AuthorizationError` (403, wrong sender or site),
:class:`~fedge.errors.ProtocolError` (409, bound to another job or round).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.aggregation.evaluation import EvaluationSums, parse_eval_meta
from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_arrays, decode_params
from fedge.errors import (
    AuthorizationError,
    NonFiniteError,
    PayloadTooLarge,
    ProtocolError,
    ShapeMismatchError,
    ValidationError,
)
from fedge.identity import Identity

__all__ = [
    "DeviceUpdate",
    "PartialSum",
    "check_clipped",
    "check_weights",
    "decode_partial",
    "decode_update",
    "partial_limit",
    "update_limit",
]

_NONCE = re.compile(r"[0-9a-f]{32}")
_HEADER_ALLOWANCE = 64 * 1024  # tensor names, offsets and the binding metadata
_PER_CONTRIBUTOR = 160  # bytes of header per device id in contributors/rejected (generous)


def update_limit(spec: ParamSpec) -> int:
    """The largest update payload this model can need (float32 tensors + header)."""
    return 4 * spec.size + _HEADER_ALLOWANCE


def partial_limit(spec: ParamSpec, max_contributors: int) -> int:
    """The largest partial payload: sums (float64 at most; current gateways send float32) +
    header with ``max_contributors`` ids."""
    return 8 * spec.size + _HEADER_ALLOWANCE + _PER_CONTRIBUTOR * max(1, max_contributors)


@dataclass(frozen=True)
class PartialSum:
    """A gateway's checked partial aggregate for one round."""

    gateway: str
    site: str
    nonce: str
    sums: dict[str, NDArray[np.float64]]
    total_weight: float
    num_accepted: int
    contributors: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
    evaluation: EvaluationSums | None = None  # its devices' federated evaluation, summed


@dataclass(frozen=True)
class DeviceUpdate:
    """A directly connected device's checked update."""

    device: str
    nonce: str
    delta: Params
    num_examples: int
    train_loss: float | None
    evaluation: EvaluationSums | None = None  # the device's federated evaluation, if any


def _binding(meta: Mapping[str, str], kind: str, job_id: str, round_number: int) -> str:
    if meta.get("kind") != kind:
        raise ValidationError(f"payload kind is {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("job") != job_id or meta.get("round") != str(round_number):
        raise ProtocolError(
            f"payload is bound to job {meta.get('job')!r} round {meta.get('round')!r} but was "
            f"sent to job {job_id!r} round {round_number}: stale or replayed, refused"
        )
    nonce = meta.get("nonce", "")
    if not _NONCE.fullmatch(nonce):
        raise ValidationError("payload nonce must be 32 lowercase hex digits (128 bits)")
    return nonce


def _int(meta: Mapping[str, str], key: str) -> int:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        raise ValidationError(f"payload metadata {key!r} must be an integer") from None


def _float(meta: Mapping[str, str], key: str) -> float:
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        raise ValidationError(f"payload metadata {key!r} must be a number") from None
    if not math.isfinite(value):
        raise NonFiniteError(f"payload metadata {key!r} is not finite: {value}")
    return value


def _json_list(meta: Mapping[str, str], key: str) -> list[object]:
    try:
        value = json.loads(meta.get(key, "[]"))
    except json.JSONDecodeError:
        raise ValidationError(f"payload metadata {key!r} must be a JSON list") from None
    if not isinstance(value, list):
        raise ValidationError(f"payload metadata {key!r} must be a JSON list")
    return value


def decode_partial(
    payload: bytes,
    spec: ParamSpec,
    *,
    job_id: str,
    round_number: int,
    peer: Identity,
    max_bytes: int,
) -> PartialSum:
    """Check a gateway's partial-sum payload (``PARTIAL_KEYS``) against the model and the peer."""
    if len(payload) > max_bytes:
        raise PayloadTooLarge(f"partial of {len(payload)} bytes exceeds {max_bytes} bytes")
    arrays, meta = decode_arrays(
        payload, allowed_dtypes=frozenset({"F64", "F32"}), max_bytes=max_bytes
    )
    nonce = _binding(meta, "partial", job_id, round_number)
    if meta.get("gateway") != peer.name or meta.get("site") != peer.site:
        raise AuthorizationError(
            f"partial claims gateway {meta.get('gateway')!r} of site {meta.get('site')!r} but was "
            f"sent by {peer.name!r} of site {peer.site!r}: a gateway reports only for itself"
        )
    contributors = _json_list(meta, "contributors")
    if not all(isinstance(d, str) and d for d in contributors):
        raise ValidationError("contributors must be a JSON list of device ids")
    ids = tuple(str(d) for d in contributors)
    num = _int(meta, "num_accepted")
    if num < 0 or num != len(ids) or len(set(ids)) != len(ids):
        raise ValidationError(
            f"num_accepted = {num} must equal the {len(set(ids))} distinct contributors listed"
        )
    total = _float(meta, "total_weight")
    if num == 0 and total != 0:
        raise ValidationError(
            f"an empty partial (no contributors) must have total_weight 0, got {total}"
        )
    if num > 0 and total <= 0:
        raise ValidationError(f"total_weight must be > 0, got {total}")
    rejected = tuple(
        (str(r[0]), str(r[1]))
        for r in _json_list(meta, "rejected")
        if isinstance(r, list) and len(r) == 2
    )
    evaluation = parse_eval_meta(meta, partial=True, contributors=num)
    sums = _check_tensors(arrays, spec)
    return PartialSum(peer.name, str(peer.site), nonce, sums, total, num, ids, rejected, evaluation)


def _check_tensors(
    arrays: Mapping[str, np.ndarray], spec: ParamSpec
) -> dict[str, NDArray[np.float64]]:
    if set(arrays) != set(spec.names):
        missing = sorted(set(spec.names) - set(arrays))
        extra = sorted(set(arrays) - set(spec.names))
        raise ShapeMismatchError(
            f"tensor names do not match the model: missing {missing}, unexpected {extra}"
        )
    out: dict[str, NDArray[np.float64]] = {}
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        arr = arrays[name]
        if tuple(arr.shape) != shape:
            raise ShapeMismatchError(f"{name}: expected shape {shape}, got {tuple(arr.shape)}")
        if not np.isfinite(arr).all():
            raise NonFiniteError(f"{name}: contains NaN or Inf; the partial is refused")
        out[name] = arr.astype(np.float64, copy=False)
    return out


def decode_update(
    payload: bytes,
    spec: ParamSpec,
    *,
    job_id: str,
    round_number: int,
    peer: Identity,
) -> DeviceUpdate:
    """Check a device's update payload (``UPDATE_KEYS``) against the model and the peer."""
    limit = update_limit(spec)
    if len(payload) > limit:
        raise PayloadTooLarge(f"update of {len(payload)} bytes exceeds {limit} bytes")
    delta, meta = decode_params(payload, spec, max_bytes=limit)
    nonce = _binding(meta, "update", job_id, round_number)
    if meta.get("device") != peer.name:
        raise AuthorizationError(
            f"update claims device {meta.get('device')!r} but was sent by {peer.name!r}: a "
            "device speaks only for itself"
        )
    num = _int(meta, "num_examples")
    if num < 1:
        raise ValidationError(f"num_examples must be >= 1, got {num}")
    loss = _float(meta, "train_loss") if meta.get("train_loss") not in (None, "") else None
    return DeviceUpdate(peer.name, nonce, delta, num, loss, parse_eval_meta(meta))


def check_clipped(tensors: Mapping[str, np.ndarray], count: int, clip_norm: float) -> None:
    """Refuse a sum of ``count`` updates clipped to ``clip_norm`` whose L2 norm is larger than
    ``count × clip_norm`` (the triangle inequality): some update was not clipped."""
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in tensors.values()))
    bound = count * clip_norm * (1 + 1e-5) + 1e-9
    if norm > bound:
        raise ValidationError(
            f"sum of {count} update(s) has L2 norm {norm:.4g} > {count} × clip_norm "
            f"{clip_norm:g}: updates were not clipped as the round's privacy plan asks"
        )


def check_weights(dp: bool, total_weight: float, count: int) -> None:
    """Refuse a partial whose total weight cannot come from ``count`` updates (each weighs 1
    under differential privacy, else its number of examples)."""
    if dp and abs(total_weight - count) > 1e-6 * count:
        raise ValidationError(
            f"total_weight {total_weight:g} must equal the {count} contributors: under "
            "differential privacy every update weighs 1 (never its example count)"
        )
    if not dp and total_weight < count:
        raise ValidationError(
            f"total_weight {total_weight:g} is below the {count} contributors: each update "
            "weighs its number of examples (>= 1)"
        )
