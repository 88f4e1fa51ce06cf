"""Export: safetensors weights + task name round-trip; ONNX predictions equal torch's for every
registered task, both for the graph written from the weights and for the torch exporter's."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
import pytest
import torch

from fedge.core.params import from_module
from fedge.core.serde import encode_params
from fedge.device.predictor import Predictor
from fedge.errors import ValidationError
from fedge.tasks import get_task
from fedge.tasks.base import TASKS
from fedge.tasks.export import (
    export_onnx,
    export_weights,
    import_weights,
    onnx_from_weights,
    onnx_runner,
)


def test_weights_round_trip_with_task_name() -> None:
    torch.manual_seed(0)
    params = from_module(get_task("digits_mlp").build_model())
    payload = export_weights("digits_mlp", params, {"version": "job/r3"})
    task_name, back, meta = import_weights(payload)
    assert task_name == "digits_mlp" and meta["version"] == "job/r3"
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    with pytest.raises(ValidationError, match="names no task"):
        import_weights(encode_params(params))


get_task("digits_mlp")  # registers the built-in and use-case tasks
ALL_TASKS = sorted(TASKS)  # every registered task: the MNIST ones, digits, every use case
assert {"maintenance", "wearables", "mobility", "basic_motions", "mnist_cnn"} <= set(ALL_TASKS)
CONVOLUTIONAL = {"mnist_cnn"}  # not an MLP: its graph needs the torch exporter


@pytest.mark.parametrize("via", ["auto", "torch"])
@pytest.mark.parametrize("name", ALL_TASKS)
def test_onnx_predictions_equal_torch(name: str, via: Literal["auto", "torch"]) -> None:
    task = get_task(name)
    torch.manual_seed(1)
    model = task.build_model().eval()
    params = from_module(model)
    run = onnx_runner(export_onnx(task, params, via=via))
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        x = rng.normal(size=(batch, task.num_features)).astype(np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        got = run(x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.parametrize("name", ALL_TASKS)
def test_mlp_graphs_are_written_from_the_weights_without_tracing(name: str) -> None:
    task = get_task(name)
    params = from_module(task.build_model())
    written = onnx_from_weights(task, params)
    if name in CONVOLUTIONAL:
        assert written is None
        with pytest.raises(ValidationError, match="export via torch"):
            export_onnx(task, params, via="weights")
        return
    assert written is not None and export_onnx(task, params) == written  # "auto" picks it
    graph = onnx.load_from_string(written).graph
    linear = [n for n in task.build_model() if isinstance(n, torch.nn.Linear)]
    assert [n.op_type for n in graph.node].count("Gemm") == len(linear)
    assert {i.name for i in graph.initializer} == set(params)


def test_weights_that_do_not_fit_the_task_are_refused() -> None:
    task = get_task("digits_mlp")
    params = from_module(task.build_model())
    wrong = {k: v[..., :2] for k, v in params.items()}
    with pytest.raises(ValidationError, match="do not fit task digits_mlp"):
        onnx_from_weights(task, wrong)
    with pytest.raises(ValidationError, match="do not fit"):
        onnx_from_weights(task, {k: v for k, v in params.items() if k != "0.bias"})


def test_predictor_on_onnxruntime_answers_like_torch() -> None:
    torch.manual_seed(2)
    params = from_module(get_task("digits_mlp").build_model())
    on_torch, on_onnx = (
        Predictor("digits_mlp"),
        Predictor("digits_mlp", runtime="onnxruntime"),
    )
    on_torch.load("v1", params)
    on_onnx.load("v1", params)
    x = np.random.default_rng(3).normal(size=(32, 64)).astype(np.float32)
    np.testing.assert_array_equal(on_onnx.predict(x).predictions, on_torch.predict(x).predictions)
