"""One round's running sum at a gateway: validate device updates, fold them in, form the partial.

Memory is O(model) per round: a :class:`~fedge.aggregation.WeightedMeanAccumulator` keeps one
float64 sum per tensor; each update is decoded, checked and added, then dropped. An update is
checked before it can touch the sum, in this order: size (against the model's own size), wire
format and dtype (float32 only, never pickle), names and shapes against the model's
:class:`~fedge.core.ParamSpec`, finiteness, and the binding metadata (``UPDATE_KEYS``: kind, job,
round, device = the certificate's subject, a well-formed nonce, num_examples > 0, a finite
train_loss) and the optional federated evaluation (``EVAL_KEYS``, checked by
:func:`~fedge.aggregation.evaluation.parse_eval_meta`). :func:`encode_partial` turns the sum into
the payload of ``PARTIAL_KEYS``, with the evaluation sums of the accepted devices: the gateway
forwards their totals only, never one device's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from fedge.aggregation import WeightedMeanAccumulator
from fedge.aggregation.base import Update
from fedge.aggregation.evaluation import EvaluationSums, eval_meta, parse_eval_meta
from fedge.core.params import ParamSpec
from fedge.core.serde import decode_params, encode_arrays
from fedge.errors import PayloadTooLarge, ValidationError, WireFormatError
from fedge.transport.messages import UPDATE_KEYS

__all__ = ["Cohort", "DecodedUpdate", "decode_update", "encode_partial", "update_size_limit"]

_NONCE = re.compile(r"^[0-9a-f]{32}$")
_HEADER_ALLOWANCE = 64 * 1024  # safetensors header + binding metadata


@dataclass(frozen=True)
class DecodedUpdate:
    """A checked update: the delta as an :class:`Update` plus its nonce and training loss."""

    update: Update
    nonce: str
    train_loss: float
    evaluation: EvaluationSums | None = None  # the device's federated evaluation, if any


def update_size_limit(spec: ParamSpec) -> int:
    """The largest update payload a model of this spec can need (float32 + header allowance)."""
    return spec.nbytes + _HEADER_ALLOWANCE


def decode_update(
    payload: bytes, spec: ParamSpec, *, job_id: str, round_number: int, device: str
) -> DecodedUpdate:
    """Parse and check one device's update payload; raise a :class:`ValidationError` if bad."""
    limit = update_size_limit(spec)
    if len(payload) > limit:  # 413, like the coordinator: no model of this spec needs more
        raise PayloadTooLarge(
            f"update of {len(payload)} bytes exceeds {limit} bytes for this model"
        )
    params, meta = decode_params(payload, spec, max_bytes=limit)
    missing = [k for k in UPDATE_KEYS if k not in meta]
    if missing:
        raise WireFormatError(f"update payload lacks binding metadata {missing}")
    expected = {"kind": "update", "job": job_id, "round": str(round_number), "device": device}
    for key, want in expected.items():
        if meta[key] != want:
            raise ValidationError(
                f"update is bound to {key}={meta[key]!r}, but was sent as {want!r}: an update "
                "is valid only for the job, round and device it was made for"
            )
    if not _NONCE.match(meta["nonce"]):
        raise WireFormatError("update nonce must be 32 lower-case hex digits")
    try:
        num_examples = int(meta["num_examples"])
        train_loss = float(meta["train_loss"])
    except ValueError:
        raise WireFormatError("num_examples must be an integer and train_loss a number") from None
    if num_examples <= 0:
        raise ValidationError(f"num_examples must be > 0, got {num_examples}")
    if not math.isfinite(train_loss):
        raise ValidationError("train_loss must be a finite number")
    evaluation = parse_eval_meta(meta)
    update = Update(device, params, num_examples, {"train_loss": train_loss})
    return DecodedUpdate(update, meta["nonce"], train_loss, evaluation)


class Cohort:
    """The running weighted sum of one round's accepted updates at one gateway.

    Updates weigh their example count, except under differential privacy (``uniform``), where
    every clipped update weighs 1 so the sum's sensitivity is the clip norm (DP-FedAvg).
    """

    def __init__(self, spec: ParamSpec, *, uniform: bool = False) -> None:
        self.spec = spec
        self.uniform = uniform
        self._acc = WeightedMeanAccumulator(spec)
        self._nonces: dict[str, str] = {}  # device -> nonce of its accepted update
        self._refused: dict[str, str] = {}  # device -> why its (latest) payload was refused
        self._evaluation = EvaluationSums()  # Σ of the accepted devices' evaluations

    @property
    def num_accepted(self) -> int:
        """Updates folded into the sum."""
        return self._acc.num_accepted

    @property
    def total_weight(self) -> float:
        """Σ weights over accepted updates (examples, or 1 each under DP)."""
        return self._acc.total_weight

    @property
    def evaluation(self) -> EvaluationSums:
        """The federated evaluation summed over accepted updates that carried one."""
        return self._evaluation

    def nonce_of(self, device: str) -> str | None:
        """The nonce of ``device``'s accepted update, if it has one."""
        return self._nonces.get(device)

    def add(self, decoded: DecodedUpdate) -> bool:
        """Fold a checked update in; False (recorded in ``rejected``) if the accumulator refuses.

        Raises :class:`ValidationError` (recorded too) for an update of a DP round that carries
        a federated evaluation (:func:`~fedge.aggregation.evaluation.reports_evaluation`).
        """
        update = decoded.update
        if self.uniform and decoded.evaluation is not None:
            reason = (
                "an update under differential privacy carries no federated evaluation (its ε"
                " does not cover it): send it without the eval_* metadata"
            )
            self.reject(update.device_id, reason)
            raise ValidationError(f"update refused: {reason}")
        if self.uniform:
            update = dataclasses.replace(update, num_examples=1)
        if not self._acc.add(update):
            return False
        if decoded.evaluation is not None:
            self._evaluation += decoded.evaluation
        self._nonces[decoded.update.device_id] = decoded.nonce
        self._refused.pop(decoded.update.device_id, None)  # a retry that succeeded
        return True

    def reject(self, device: str, reason: str) -> None:
        """Record a refused update so the coordinator sees why (the sum is untouched)."""
        self._refused[device] = reason

    def rejected(self) -> tuple[tuple[str, str], ...]:
        """(device, reason) for every refused update; a device refused and then accepted on
        retry is a contributor, not listed here (a second update after acceptance is)."""
        return tuple(self._refused.items()) + self._acc.rejected

    def contributors(self) -> list[str]:
        """Devices whose update is in the sum, sorted."""
        return sorted(self._nonces)

    def weighted_sum(self) -> dict[str, np.ndarray]:
        """Σ num_examples·Δ per tensor, float64."""
        return dict(self._acc.weighted_sum)


def encode_partial(
    cohort: Cohort, *, job_id: str, round_number: int, gateway: str, site: str, nonce: str
) -> bytes:
    """The partial-sum payload (``PARTIAL_KEYS`` metadata, float32 weighted sums).

    The sum is kept in float64 while updates stream in and rounded to float32 once, on the way
    out: half the bytes into the coordinator. Exact enough: each of the K float32 updates it
    sums already carries a rounding error of up to 2⁻²⁴ of its magnitude, so the float64 sum
    is only known to about K·2⁻²⁴ relative; one more rounding (≤ 2⁻²⁴ of the sum) adds less
    than that, and the model it updates is float32 too. The coordinator accepts F32 and F64
    partials (older gateways send F64) and adds them up in float64.
    """
    meta = {
        "kind": "partial",
        "job": job_id,
        "round": str(round_number),
        "gateway": gateway,
        "site": site,
        "nonce": nonce,
        "total_weight": repr(float(cohort.total_weight)),
        "num_accepted": str(cohort.num_accepted),
        "contributors": json.dumps(cohort.contributors()),
        "rejected": json.dumps([[d, r] for d, r in cohort.rejected()]),
        **eval_meta(cohort.evaluation, partial=True),
    }
    sums = {name: total.astype(np.float32) for name, total in cohort.weighted_sum().items()}
    return encode_arrays(sums, meta)
