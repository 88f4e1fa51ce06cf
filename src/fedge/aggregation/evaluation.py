"""Federated evaluation: sums of devices' local evaluations, and their wire form.

Before it trains, a device evaluates the model version it received on its own local data and
reports three sums with its update -- examples, correct predictions and the loss summed over its
examples -- as the ``EVAL_KEYS`` of the update's metadata. A gateway adds them up over the
devices whose update it accepted and forwards the totals (and ``eval_devices``, how many devices
they cover) in its partial; the coordinator adds the partials up and records, on the version that
was evaluated (the round's starting model), ``accuracy = Σcorrect / Σexamples`` and
``loss = Σloss / Σexamples``: every example weighs the same, as in TFF's federated evaluation and
Flower's ``evaluate`` rounds (Σnₖ·accₖ / Σnₖ).

Sums travel only in plain rounds without differential privacy: a device of a secure or DP round
reports none (:func:`reports_evaluation`), and a gateway or coordinator refuses an update or a
partial of such a round that carries them. :func:`parse_eval_meta` checks every value that
arrives: all keys or none, integers where counts are, finite, non-negative, correct ≤ examples,
and for a partial 1 ≤ eval_devices ≤ its contributors ≤ ... ≤ examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fedge.errors import NonFiniteError, ValidationError

__all__ = [
    "EVAL_KEYS",
    "PARTIAL_EVAL_KEYS",
    "EvaluationSums",
    "check_evaluation_allowed",
    "eval_meta",
    "parse_eval_meta",
    "reports_evaluation",
]

EVAL_KEYS = ("eval_examples", "eval_correct", "eval_loss_sum")  # in a device's update
PARTIAL_EVAL_KEYS = (*EVAL_KEYS, "eval_devices")  # in a gateway's partial
_SLACK = 1e-6  # correct ≤ examples, within float rounding of a sum


@dataclass(frozen=True)
class EvaluationSums:
    """Σ examples, Σ correct, Σ loss over ``devices`` devices' local evaluations."""

    examples: int = 0
    correct: float = 0.0
    loss_sum: float = 0.0
    devices: int = 0

    def __add__(self, other: EvaluationSums) -> EvaluationSums:
        return EvaluationSums(
            self.examples + other.examples,
            self.correct + other.correct,
            self.loss_sum + other.loss_sum,
            self.devices + other.devices,
        )

    @property
    def accuracy(self) -> float | None:
        """Σcorrect / Σexamples (None over no example)."""
        return self.correct / self.examples if self.examples else None

    @property
    def loss(self) -> float | None:
        """Σloss / Σexamples: the mean loss per example (None over no example)."""
        return self.loss_sum / self.examples if self.examples else None


def reports_evaluation(privacy_mode: str, secure: bool) -> bool:
    """Whether a device of a round with this privacy mode (and secure sum or not) reports sums.

    Not under secure aggregation: the gateway must not learn one device's metrics, and the
    secure vector's coordinates are clipped to the job's range, where unbounded counts and
    losses do not fit. Not under differential privacy: ε accounts for the update alone, and a
    device's exact counts of right answers on its own data would be a release it does not cover.
    """
    return privacy_mode == "none" and not secure


def check_evaluation_allowed(sums: EvaluationSums | None, privacy_mode: str, secure: bool) -> None:
    """Refuse (:class:`ValidationError`) evaluation sums sent for a round that takes none."""
    if sums is not None and not reports_evaluation(privacy_mode, secure):
        why = "secure aggregation" if secure else f"differential privacy ({privacy_mode})"
        raise ValidationError(
            f"this round runs under {why} and takes no federated evaluation: its devices must"
            " not report one (send the payload without the eval_* metadata)"
        )


def eval_meta(sums: EvaluationSums | None, *, partial: bool = False) -> dict[str, str]:
    """The metadata entries carrying ``sums`` (none for None, or a partial covering no device)."""
    if sums is None or (partial and sums.devices == 0):
        return {}
    meta = {
        "eval_examples": str(sums.examples),
        "eval_correct": repr(float(sums.correct)),
        "eval_loss_sum": repr(float(sums.loss_sum)),
    }
    if partial:
        meta["eval_devices"] = str(sums.devices)
    return meta


def _count(meta: Mapping[str, str], key: str) -> int:
    try:
        value = int(meta[key])
    except ValueError:
        raise ValidationError(f"payload metadata {key!r} must be an integer") from None
    if value < 0:
        raise ValidationError(f"payload metadata {key!r} must be >= 0, got {value}")
    return value


def _number(meta: Mapping[str, str], key: str) -> float:
    try:
        value = float(meta[key])
    except ValueError:
        raise ValidationError(f"payload metadata {key!r} must be a number") from None
    if not math.isfinite(value):
        raise NonFiniteError(f"payload metadata {key!r} is not finite: {value}")
    if value < 0:
        raise ValidationError(f"payload metadata {key!r} must be >= 0, got {value}")
    return value


def parse_eval_meta(
    meta: Mapping[str, str], *, partial: bool = False, contributors: int | None = None
) -> EvaluationSums | None:
    """The evaluation sums an update (or a partial of ``contributors``) carries; None: none.

    Raises :class:`ValidationError` for anything but all of the keys or none of them, and for
    values that are not finite, negative, fractional counts, or more correct than examples.
    """
    keys = PARTIAL_EVAL_KEYS if partial else EVAL_KEYS
    present = [k for k in keys if k in meta]
    if not present:
        return None
    if len(present) != len(keys):
        missing = sorted(set(keys) - set(present))
        raise ValidationError(
            f"federated evaluation needs all of {list(keys)}; {missing} missing: send all of"
            " them or none"
        )
    examples = _count(meta, "eval_examples")
    correct = _number(meta, "eval_correct")
    loss_sum = _number(meta, "eval_loss_sum")
    devices = _count(meta, "eval_devices") if partial else 1
    if correct > examples * (1 + _SLACK) + _SLACK:
        raise ValidationError(
            f"eval_correct = {correct:g} is more than eval_examples = {examples}: a device"
            " cannot be right on more examples than it evaluated"
        )
    if devices < 1 or examples < devices:
        raise ValidationError(
            f"federated evaluation of {devices} device(s) over {examples} example(s): each"
            " device that reports evaluated at least one example"
        )
    if contributors is not None and devices > contributors:
        raise ValidationError(
            f"eval_devices = {devices} is more than the partial's {contributors} contributor(s)"
        )
    return EvaluationSums(examples, min(correct, float(examples)), loss_sum, devices)
