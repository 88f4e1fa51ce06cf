"""SGD with momentum and weight decay, as ``torch.optim.SGD`` computes it, without torch.optim.

Why not ``torch.optim.SGD``: its first construction in a process imports ``torch._dynamo``
(``Optimizer`` methods are wrapped by ``torch._disable_dynamo``), which took 1.5 s on an idle
core and 5-7 s on this loaded 2-core machine: every device's first round paid it. The update is
the same (dampening 0, no Nesterov, CPU single-tensor order of operations)::

    g = grad + weight_decay · p;   b = g (first step) | momentum · b + g;   p -= lr · (b or g)

applied to all of a model's tensors at once with ``torch._foreach_*`` ops (no Python loop over
parameters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PlainSGD"]


class PlainSGD:
    """SGD over ``params`` (their ``.grad`` after ``backward()``); state: momentum buffers."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._buffers: dict[int, torch.Tensor] = {}  # parameter position -> momentum buffer

    def zero_grad(self) -> None:
        """Forget the gradients (set to None, as ``zero_grad(set_to_none=True)``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """One update from the current gradients (tensors without a gradient are left alone)."""
        import torch

        with torch.no_grad():
            index = [i for i, p in enumerate(self.params) if p.grad is not None]
            if not index:
                return
            live = [self.params[i] for i in index]
            grads: list[torch.Tensor] = [p.grad for p in live]  # type: ignore[misc]
            if self.weight_decay:
                grads = list(torch._foreach_add(grads, live, alpha=self.weight_decay))
            if self.momentum:
                held = [i for i in index if i in self._buffers]
                if held:
                    bufs = [self._buffers[i] for i in held]
                    torch._foreach_mul_(bufs, self.momentum)
                    at = {i: k for k, i in enumerate(index)}
                    torch._foreach_add_(bufs, [grads[at[i]] for i in held])
                for i, g in zip(index, grads, strict=True):
                    if i not in self._buffers:  # a tensor's first step: its buffer is its grad
                        self._buffers[i] = torch.clone(g).detach()
                grads = [self._buffers[i] for i in index]
            torch._foreach_add_(live, grads, alpha=-self.lr)
