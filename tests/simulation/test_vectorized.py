"""The vectorised trainer equals the per-device reference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.params import from_module, to_torch
from fedge.simulation.batched import compile_batched_forward
from fedge.simulation.vectorized import VectorizedTrainer
from fedge.tasks import get_task
from fedge.training import LocalTrainingConfig, device_rng, train_local

CONFIGS = {
    "plain": LocalTrainingConfig(epochs=1, batch_size=10, lr=0.1),
    "momentum+prox+wd": LocalTrainingConfig(
        epochs=2, batch_size=7, lr=0.05, momentum=0.9, weight_decay=1e-3, proximal_mu=0.1
    ),
    "full batch": LocalTrainingConfig(epochs=1, batch_size=None, lr=0.5),
    "prox+wd, fused": LocalTrainingConfig(
        epochs=2, batch_size=7, lr=0.05, weight_decay=1e-3, proximal_mu=0.1
    ),
    "class-balanced, fused": LocalTrainingConfig(
        epochs=2, batch_size=7, lr=0.05, class_weighting="balanced"
    ),
    "class-balanced, momentum": LocalTrainingConfig(
        epochs=2, batch_size=7, lr=0.05, momentum=0.9, class_weighting="balanced"
    ),
}


def _compare(task_name: str, cfg: LocalTrainingConfig, *, use_vmap: bool, atol: float) -> None:
    task = get_task(task_name)
    train, _ = task.load_data()
    torch.manual_seed(0)
    global_params = from_module(task.build_model())
    # devices of unequal sizes, so masking of finished devices is exercised
    sizes = [12, 25, 7, 30]
    starts = np.cumsum([0, *sizes[:-1]])
    indices = [np.arange(s, s + n, dtype=np.int64) for s, n in zip(starts, sizes, strict=True)]
    trainer = VectorizedTrainer(task, use_vmap=use_vmap)
    result = trainer.train(
        to_torch(global_params),
        torch.from_numpy(train.x),
        torch.from_numpy(train.y),
        indices,
        cfg,
        [device_rng(7, 1, i) for i in range(len(indices))],
    )
    for i, ix in enumerate(indices):
        ref = train_local(task, global_params, train.x[ix], train.y[ix], cfg, device_rng(7, 1, i))
        assert result.num_examples[i] == len(ix)
        assert result.losses[i] == pytest.approx(ref.loss, rel=1e-4, abs=1e-5)
        for name, expected in ref.delta.items():
            np.testing.assert_allclose(result.deltas[name][i].numpy(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("use_vmap", [False, True], ids=["batched", "vmap"])
def test_mlp_matches_reference_loop(cfg_name: str, use_vmap: bool) -> None:
    _compare("digits_mlp", CONFIGS[cfg_name], use_vmap=use_vmap, atol=2e-6)


@pytest.mark.parametrize("use_vmap", [False, True], ids=["batched", "vmap"])
def test_mnist_2nn_matches_reference_loop(use_vmap: bool) -> None:
    _compare("mnist_2nn", CONFIGS["plain"], use_vmap=use_vmap, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("use_vmap", [False, True], ids=["batched", "vmap"])
def test_cnn_matches_reference_loop(use_vmap: bool) -> None:
    _compare(
        "mnist_cnn",
        LocalTrainingConfig(epochs=1, batch_size=10, lr=0.05),
        use_vmap=use_vmap,
        atol=2e-5,
    )


def test_fused_sgd_is_used_for_mlps_without_momentum() -> None:
    trainer = VectorizedTrainer(get_task("digits_mlp"))
    assert trainer.fused_sgd(CONFIGS["plain"])
    assert trainer.fused_sgd(CONFIGS["prox+wd, fused"])
    assert not trainer.fused_sgd(CONFIGS["momentum+prox+wd"])
    assert not VectorizedTrainer(get_task("mnist_cnn")).fused_sgd(CONFIGS["plain"])


def test_batched_path_is_chosen_for_supported_models_only() -> None:
    assert compile_batched_forward(get_task("mnist_2nn").build_model()) is not None
    assert compile_batched_forward(get_task("mnist_cnn").build_model()) is not None
    assert compile_batched_forward(torch.nn.Sequential(torch.nn.BatchNorm1d(3))) is None
    assert compile_batched_forward(torch.nn.Linear(3, 2)) is None  # not a Sequential: vmap
    assert VectorizedTrainer(get_task("digits_mlp")).path == "batched"
    assert VectorizedTrainer(get_task("digits_mlp"), use_vmap=True).path == "vmap"
