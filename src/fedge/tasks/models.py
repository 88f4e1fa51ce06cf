"""Model architectures used by the built-in tasks."""

from __future__ import annotations

import itertools

from torch import nn

__all__ = ["cnn_mcmahan", "logistic_regression", "mlp", "mlp_2nn"]


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """A ReLU multi-layer perceptron with the given layer sizes (input first, logits last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mlp_2nn() -> nn.Sequential:
    """The "2NN" of McMahan et al. 2017 (arXiv:1602.05629): 784-200-200-10, ReLU; 199,210 params."""
    return mlp((784, 200, 200, 10))


def cnn_mcmahan() -> nn.Sequential:
    """The MNIST CNN of McMahan et al. 2017: two 5×5 conv layers (32, 64 channels) each followed
    by 2×2 max pooling, a 512-unit ReLU layer and a softmax output; 1,663,370 params."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )


def logistic_regression(num_features: int, num_classes: int) -> nn.Sequential:
    """Multinomial logistic regression (one linear layer; softmax lives in the loss)."""
    return nn.Sequential(nn.Linear(num_features, num_classes))
