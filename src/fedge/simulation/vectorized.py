"""Vectorised virtual devices: many devices' local training as one batched computation.

Devices that share an architecture train together: their parameters are stacked along a leading
"device" axis and one ``torch.func.vmap`` of ``grad(functional_call(model, ...))`` computes every
device's gradient in a single call per step. Devices with fewer examples (or that finished their
epochs) are masked out of a step, so the result equals running each device alone with
:func:`fedge.training.train_local` on the same batch schedule (tested). Memory is bounded by the
chunk of devices trained at once, not by how many devices there are.

For ``nn.Sequential`` models of common layers a hand-batched forward
(:mod:`fedge.simulation.batched`) replaces ``vmap``; it computes the same thing several times
faster. ``use_vmap=True`` forces the generic path (tested to agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from fedge.simulation.batched import compile_batched_forward
from fedge.training.plan import LocalTrainingConfig, batch_schedule, example_weights

if TYPE_CHECKING:
    from fedge.tasks.base import Task

__all__ = ["ChunkResult", "VectorizedTrainer"]

TensorTree = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ChunkResult:
    """Stacked updates of a chunk of devices: ``deltas[name]`` has shape (D, *param_shape)."""

    deltas: TensorTree
    num_examples: np.ndarray  # (D,) int64
    losses: np.ndarray  # (D,) mean training loss per device


class VectorizedTrainer:
    """Trains chunks of devices of one task with vmap over stacked parameters."""

    def __init__(self, task: Task, *, use_vmap: bool = False) -> None:
        self.task = task
        self.model = task.build_model()
        self.names = [n for n, _ in self.model.named_parameters()]
        self.batched_forward = None if use_vmap else compile_batched_forward(self.model)

        def device_loss(
            params: TensorTree,
            anchor: TensorTree,
            x: torch.Tensor,
            y: torch.Tensor,
            mask: torch.Tensor,
            mu: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            out = functional_call(self.model, params, (x,))
            per_example = task.loss(out, y)
            loss = (per_example * mask).sum() / mask.sum().clamp_min(1.0)
            prox = sum(((params[k] - anchor[k]) ** 2).sum() for k in params)
            return loss + 0.5 * mu * prox, loss  # (objective, reported loss)

        self._vmap_grad = vmap(
            grad_and_value(device_loss, has_aux=True), in_dims=(0, None, 0, 0, 0, None)
        )

    @property
    def path(self) -> str:
        """Which implementation trains: ``"batched"`` (hand-batched layers) or ``"vmap"``."""
        return "vmap" if self.batched_forward is None else "batched"

    def fused_sgd(self, config: LocalTrainingConfig) -> bool:
        """True when plain SGD on an all-Linear model can fuse gradient and update."""
        return (
            self.batched_forward is not None
            and self.batched_forward.linear_only
            and config.momentum == 0.0
        )

    def _fused_step(
        self,
        params: TensorTree,
        anchor: TensorTree,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        config: LocalTrainingConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step for every device, fused per Linear layer; returns (losses, active)."""
        assert self.batched_forward is not None
        d, b = y.shape
        with torch.enable_grad():
            out, taps = self.batched_forward.forward_taps(params, x)
            per_example = self.task.loss(out.reshape(d * b, -1), y.reshape(-1)).view(d, b)
            loss = (per_example * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
            deltas = torch.autograd.grad(loss.sum(), [t.z for t in taps])
        active = (mask.sum(dim=1) > 0).to(torch.float32)
        lr = config.lr
        shrink = config.weight_decay + config.proximal_mu
        if shrink:
            # weight decay and the proximal term are linear in W: apply them before the data
            # gradient (same arithmetic as g = ∇loss + wd·W + μ(W − W₀); W ← W − lr·g)
            for k in self.names:
                a = active.view((d,) + (1,) * (params[k].dim() - 1))
                step = config.weight_decay * params[k]
                if config.proximal_mu:
                    step = step + config.proximal_mu * (params[k] - anchor[k].unsqueeze(0))
                params[k].addcmul_(a, step, value=-lr)
        for tap, delta in zip(taps, deltas, strict=True):
            params[tap.weight].baddbmm_(delta.transpose(1, 2), tap.h.detach(), alpha=-lr)
            if tap.bias is not None:
                params[tap.bias].sub_(delta.sum(dim=1), alpha=lr)
        return loss.detach(), active

    def _grad(
        self,
        params: TensorTree,
        anchor: TensorTree,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
    ) -> tuple[TensorTree, torch.Tensor]:
        """Per-device gradients and losses, shapes (D, ...) and (D,)."""
        if self.batched_forward is None:
            grads, (_, loss) = self._vmap_grad(params, anchor, x, y, mask, mu)
            return grads, loss
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            out = self.batched_forward(leaves, x)
            d, b = y.shape
            per_example = self.task.loss(out.reshape(d * b, -1), y.reshape(-1)).view(d, b)
            loss = (per_example * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
            total = loss.sum()
            if float(mu) > 0:
                prox = sum(((leaves[k] - anchor[k].unsqueeze(0)) ** 2).sum() for k in leaves)
                total = total + 0.5 * mu * prox
            grads = torch.autograd.grad(total, [leaves[k] for k in self.names])
        return dict(zip(self.names, grads, strict=True)), loss.detach()

    def train(
        self,
        global_params: TensorTree,
        data_x: torch.Tensor,
        data_y: torch.Tensor,
        device_indices: Sequence[np.ndarray],
        config: LocalTrainingConfig,
        rngs: Sequence[np.random.Generator],
    ) -> ChunkResult:
        """Train the devices whose example indices (into data_x/data_y) are ``device_indices``."""
        d = len(device_indices)
        schedules = [
            batch_schedule(len(ix), config.batch_size, config.epochs, rng)
            for ix, rng in zip(device_indices, rngs, strict=True)
        ]
        steps = max(s.shape[0] for s in schedules)
        width = max(s.shape[1] for s in schedules)
        index = np.full((d, steps, width), -1, dtype=np.int64)
        # each example's loss weight on its device (class_weighting); 0 marks padding
        weight = np.zeros((d, steps, width), dtype=np.float32)
        labels = data_y.numpy()
        for i, (ix, sched) in enumerate(zip(device_indices, schedules, strict=True)):
            local = np.where(sched >= 0, ix[np.maximum(sched, 0)], -1)
            index[i, : sched.shape[0], : sched.shape[1]] = local
            w = example_weights(labels[ix], config.class_weighting)
            on = (sched >= 0).astype(np.float32)
            weight[i, : sched.shape[0], : sched.shape[1]] = (
                on if w is None else np.where(sched >= 0, w[np.maximum(sched, 0)], 0.0)
            )
        index_t = torch.from_numpy(index)
        weight_t = torch.from_numpy(weight)

        params = {k: v.unsqueeze(0).repeat(d, *([1] * v.dim())) for k, v in global_params.items()}
        velocity = {k: torch.zeros_like(v) for k, v in params.items()} if config.momentum else {}
        mu = torch.tensor(config.proximal_mu, dtype=torch.float32)
        loss_sum = torch.zeros(d)
        step_count = torch.zeros(d)
        fused = self.fused_sgd(config)
        with torch.no_grad():
            for s in range(steps):
                batch = index_t[:, s]
                mask = weight_t[:, s]  # losses are the mask-weighted mean over each batch
                safe = batch.clamp_min(0)
                if fused:
                    loss, active = self._fused_step(
                        params, global_params, data_x[safe], data_y[safe], mask, config
                    )
                    loss_sum += loss * active
                    step_count += active
                    continue
                grads, loss = self._grad(
                    params, global_params, data_x[safe], data_y[safe], mask, mu
                )
                active = (mask.sum(dim=1) > 0).to(torch.float32)
                all_active = bool(active.all())
                loss_sum += loss * active
                step_count += active
                for k in self.names:
                    g = grads[k]
                    a = active.view((d,) + (1,) * (g.dim() - 1))
                    if config.weight_decay:
                        g = g.add(params[k], alpha=config.weight_decay)
                    if config.momentum:
                        # v ← μ·v + g on active devices only (torch SGD semantics, no dampening)
                        v = velocity[k]
                        if all_active:
                            v.mul_(config.momentum).add_(g)
                        else:
                            v.addcmul_(a, g + (config.momentum - 1.0) * v)
                        g = v
                    if all_active:
                        params[k].sub_(g, alpha=config.lr)
                    else:
                        params[k].addcmul_(a, g, value=-config.lr)
        deltas = {k: params[k] - global_params[k].unsqueeze(0) for k in self.names}
        return ChunkResult(
            deltas=deltas,
            num_examples=np.array([len(ix) for ix in device_indices], dtype=np.int64),
            losses=(loss_sum / step_count.clamp_min(1)).numpy().astype(np.float64),
        )
