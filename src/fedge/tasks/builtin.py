"""Built-in tasks: McMahan et al. 2017's MNIST models on real digits, and sklearn digits."""

from __future__ import annotations

import functools

from fedge.data.datasets import ArrayDataset, load_digits, load_mnist5k, stratified_split
from fedge.tasks.base import Task, register_task
from fedge.tasks.models import cnn_mcmahan, logistic_regression, mlp, mlp_2nn

__all__ = ["digits_data", "mnist_data"]

MNIST_TEST_FRACTION = 0.2
MNIST_SPLIT_SEED = 42


@functools.cache
def mnist_data() -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST-5000 split 80/20, stratified, seed 42: 4,000 train and 1,000 test digits."""
    return stratified_split(
        load_mnist5k(), MNIST_TEST_FRACTION, MNIST_SPLIT_SEED, cache_key="mnist5k"
    )


@functools.cache
def digits_data() -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's 8×8 digits split 80/20, stratified, seed 42."""
    return stratified_split(load_digits(), 0.2, 42, cache_key="digits")


@register_task("mnist_2nn")
def mnist_2nn() -> Task:
    """The 2NN (784-200-200-10 MLP) of McMahan et al. 2017 on MNIST-5000."""
    return Task(
        name="mnist_2nn",
        description="MNIST-5000, 2NN MLP 784-200-200-10 (McMahan et al. 2017)",
        build_model=mlp_2nn,
        load_data=mnist_data,
        num_features=784,
        num_classes=10,
    )


@register_task("mnist_cnn")
def mnist_cnn() -> Task:
    """The CNN of McMahan et al. 2017 on MNIST-5000."""
    return Task(
        name="mnist_cnn",
        description="MNIST-5000, CNN 2×conv5x5 + 512 FC (McMahan et al. 2017)",
        build_model=cnn_mcmahan,
        load_data=mnist_data,
        num_features=784,
        num_classes=10,
    )


@register_task("mnist_logreg")
def mnist_logreg() -> Task:
    """Multinomial logistic regression on MNIST-5000 (7,850 parameters)."""
    return Task(
        name="mnist_logreg",
        description="MNIST-5000, logistic regression 784→10",
        build_model=functools.partial(logistic_regression, 784, 10),
        load_data=mnist_data,
        num_features=784,
        num_classes=10,
    )


@register_task("digits_mlp")
def digits_mlp() -> Task:
    """A small MLP (64-32-10) on scikit-learn's 8×8 digits: the fast task for tests."""
    return Task(
        name="digits_mlp",
        description="sklearn digits 8×8, MLP 64-32-10",
        build_model=functools.partial(mlp, (64, 32, 10)),
        load_data=digits_data,
        num_features=64,
        num_classes=10,
    )


@register_task("mnist_mlp128")
def mnist_mlp128() -> Task:
    """A one-hidden-layer MLP (784-128-10, 101,770 params ≈ 10⁵) on MNIST-5000: load tests."""
    return Task(
        name="mnist_mlp128",
        description="MNIST-5000, MLP 784-128-10 (~1e5 parameters, for load tests)",
        build_model=functools.partial(mlp, (784, 128, 10)),
        load_data=mnist_data,
        num_features=784,
        num_classes=10,
    )
