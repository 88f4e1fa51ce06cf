"""Fixtures for gateway tests: a real model payload, identities, assignments and update payloads."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from fedge.core.params import Params, ParamSpec, from_module
from fedge.core.serde import encode_params
from fedge.identity import Identity, Role
from fedge.tasks import get_task
from fedge.transport.messages import RoundAssignment, TrainingPlan, new_nonce

TASK = "digits_mlp"


def identity(name: str, role: Role = Role.DEVICE, site: str | None = "site-a") -> Identity:
    """An identity as the HTTP layer would hand it over after verifying a certificate."""
    now = datetime.now(UTC)
    return Identity(role, name, site, 1, now - timedelta(days=1), now + timedelta(days=1))


@pytest.fixture(scope="session")
def global_params() -> Params:
    import torch

    torch.manual_seed(0)
    return from_module(get_task(TASK).build_model())


@pytest.fixture(scope="session")
def model_payload(global_params: Params) -> bytes:
    return encode_params(global_params, {"kind": "model"})


@pytest.fixture(scope="session")
def model_sha(model_payload: bytes) -> str:
    return hashlib.sha256(model_payload).hexdigest()


@pytest.fixture(scope="session")
def spec(global_params: Params) -> ParamSpec:
    return ParamSpec.of(global_params)


@pytest.fixture
def assignment(model_sha: str) -> Callable[..., RoundAssignment]:
    def make(job: str = "job1", rnd: int = 1, quota: int = 3, **kw: object) -> RoundAssignment:
        now = time.time()
        fields: dict[str, object] = {
            "job_id": job,
            "round": rnd,
            "task_name": TASK,
            "model_sha256": model_sha,
            "quota": quota,
            "training_deadline": now + 60,
            "report_deadline": now + 90,
            "plan": TrainingPlan(),
        }
        fields.update(kw)
        return RoundAssignment.model_validate(fields)

    return make


def make_update_payload(
    spec: ParamSpec,
    device: str,
    *,
    job: str = "job1",
    rnd: int = 1,
    num_examples: int = 5,
    seed: int = 0,
    nonce: str | None = None,
) -> tuple[bytes, Params]:
    """A real update payload with binding metadata, and the delta it carries."""
    rng = np.random.default_rng(seed)
    delta = {
        n: rng.normal(size=s).astype(np.float32)
        for n, s in zip(spec.names, spec.shapes, strict=True)
    }
    meta = {
        "kind": "update",
        "job": job,
        "round": str(rnd),
        "device": device,
        "nonce": nonce or new_nonce(),
        "num_examples": str(num_examples),
        "train_loss": "0.5",
    }
    return encode_params(delta, meta), delta
