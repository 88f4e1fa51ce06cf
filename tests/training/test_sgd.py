"""PlainSGD computes what torch.optim.SGD computes, and the device trainer no longer pays for
torch.optim's first-use import of torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedge.training.sgd import PlainSGD


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


@pytest.mark.parametrize(
    ("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-3), (0.5, 1e-2)]
)
def test_plain_sgd_matches_torch_optim_sgd(momentum: float, weight_decay: float) -> None:
    ours, theirs = _model(), _model()
    opt_ours = PlainSGD(ours.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    opt_theirs = torch.optim.SGD(
        theirs.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(7):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_tensor_without_gradient_is_left_alone() -> None:
    model = _model()
    frozen = model[0].weight.detach().clone()
    model[0].weight.requires_grad_(False)
    opt = PlainSGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(2, 6)).sum().backward()  # type: ignore[no-untyped-call]
        opt.step()
    torch.testing.assert_close(model[0].weight, frozen)


_PROBE = """
import sys
import numpy as np
from fedge.core.params import from_module
from fedge.tasks import get_task
from fedge.training import LocalTrainingConfig, train_local
task = get_task("digits_mlp")
x = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
y = np.arange(40) % 10
config = LocalTrainingConfig(epochs=1, batch_size=10, lr=0.1, momentum=0.9)
train_local(task, from_module(task.build_model()), x, y, config, np.random.default_rng(0))
print("torch._dynamo" in sys.modules)
"""


def test_device_training_does_not_import_dynamo() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "False"
