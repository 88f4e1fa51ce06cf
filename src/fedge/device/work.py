"""One task on the device, without I/O: verify the model, train, privatise, encode the update.

:func:`load_model` refuses a model whose SHA-256 is not the one the task named. :func:`make_update`
trains with :func:`fedge.training.train_local` -- the same reference trainer the simulator is
tested against -- then applies the task's :class:`~fedge.transport.messages.PrivacyPlan`
(clip to ``clip_norm``; under local DP add N(0, (z·C)²) from the injected generator) and encodes the
float32 delta with its binding metadata (``UPDATE_KEYS``). Only this delta ever leaves the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_params, encode_params
from fedge.errors import PrivacyError, ValidationError
from fedge.privacy import clip_tree, local_dp_update
from fedge.tasks import get_task
from fedge.training import LocalTrainingConfig, train_local
from fedge.transport.messages import PrivacyPlan, TaskAssignment, TrainingPlan, new_nonce

__all__ = [
    "TrainedUpdate",
    "check_privacy_plan",
    "load_model",
    "make_update",
    "privatise",
    "training_config",
]


@dataclass(frozen=True)
class TrainedUpdate:
    """The encoded update and what the device may log about it."""

    payload: bytes
    nonce: str
    num_examples: int
    train_loss: float
    update_norm: float  # L2 norm before clipping


def load_model(payload: bytes, sha256: str) -> Params:
    """Decode a model payload after checking it hashes to ``sha256``; refuse it otherwise."""
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise ValidationError(
            f"model payload hashes to {got}, but the task named {sha256}: refusing to train on it"
        )
    params, _ = decode_params(payload)
    return params


def training_config(plan: TrainingPlan) -> LocalTrainingConfig:
    """The client optimizer the plan asks for."""
    return LocalTrainingConfig(**plan.model_dump())  # the wire plan mirrors the config


def check_privacy_plan(plan: PrivacyPlan, *, secure: bool = True) -> None:
    """Raise :class:`PrivacyError` when this device cannot honour the plan (decline the task).

    ``secure``: the task's sum is a secure one (distributed DP needs it).
    """
    if plan.mode == "distributed":
        missing = [
            k for k in ("clip_norm", "granularity", "noise_stddev", "rounding_bound")
            if getattr(plan, k) is None
        ]  # fmt: skip
        if missing:
            raise PrivacyError(
                f"distributed DP needs {', '.join(missing)} in the task's privacy plan; the task "
                "is declined"
            )
        if not secure:
            raise PrivacyError(
                "distributed DP noise protects only a securely aggregated sum, and this task has "
                "no secure aggregation; the task is declined"
            )
    if plan.mode in ("central", "local", "distributed") and plan.clip_norm is None:
        raise PrivacyError(f"privacy mode {plan.mode!r} needs a clip_norm; the task is declined")
    if plan.mode == "local" and plan.local_noise_multiplier is None:
        raise PrivacyError("local DP needs a local_noise_multiplier; the task is declined")


def privatise(
    delta: Params, plan: PrivacyPlan, noise_rng: np.random.Generator
) -> tuple[Params, float]:
    """Clip (and under local DP, noise) the delta as the plan says; returns (delta, its raw norm).

    Under distributed DP the clipped delta gets its noise later, on the integer grid, just before
    it is masked (:func:`fedge.device.secure.secure_vector`).
    """
    check_privacy_plan(plan)
    if plan.clip_norm is None:
        spec = ParamSpec.of(delta)
        return delta, float(np.linalg.norm(spec.flatten(delta).astype(np.float64)))
    clipped, norm = clip_tree(delta, plan.clip_norm)
    if plan.mode == "local" and plan.local_noise_multiplier is not None:
        z = plan.local_noise_multiplier
        spec = ParamSpec.of(clipped)
        noisy = local_dp_update(spec.flatten(clipped), plan.clip_norm, z, noise_rng)
        clipped = {k: np.array(v) for k, v in spec.unflatten(noisy).items()}
    return clipped, norm


def make_update(
    task: TaskAssignment,
    global_params: Params,
    x: np.ndarray,
    y: np.ndarray,
    device_id: str,
    *,
    train_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    extra_meta: Mapping[str, str] | None = None,
) -> TrainedUpdate:
    """Train on (x, y) from ``global_params`` and return the encoded, privatised update.

    ``extra_meta``: more metadata for the update (the federated evaluation's ``EVAL_KEYS``)."""
    result = train_local(
        get_task(task.task_name), global_params, x, y, training_config(task.plan), train_rng
    )
    delta, norm = privatise(result.delta, task.privacy, noise_rng)
    nonce = new_nonce()
    meta = {
        **(extra_meta or {}),  # first: the binding keys below cannot be overridden
        "kind": "update",
        "job": task.job_id,
        "round": str(task.round),
        "device": device_id,
        "nonce": nonce,
        "num_examples": str(result.num_examples),
        "train_loss": repr(float(result.loss)),
    }
    return TrainedUpdate(encode_params(delta, meta), nonce, result.num_examples, result.loss, norm)
