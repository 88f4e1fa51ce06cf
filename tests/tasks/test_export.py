"""Export: safetensors weights + task name round-trip; ONNX predictions equal torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.params import from_module
from fedge.core.serde import encode_params
from fedge.device.predictor import Predictor
from fedge.errors import ValidationError
from fedge.tasks import get_task
from fedge.tasks.export import (
    export_onnx,
    export_weights,
    import_weights,
    onnx_make_runner,
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


@pytest.mark.parametrize("name", ["mnist_2nn", "digits_mlp", "mnist_cnn", "maintenance"])
def test_onnx_predictions_equal_torch(name: str) -> None:
    task = get_task(name)
    torch.manual_seed(1)
    model = task.build_model().eval()
    params = from_module(model)
    run = onnx_runner(export_onnx(task, params))
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        x = rng.normal(size=(batch, task.num_features)).astype(np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        got = run(x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_predictor_on_onnxruntime_answers_like_torch() -> None:
    torch.manual_seed(2)
    params = from_module(get_task("digits_mlp").build_model())
    on_torch, on_onnx = (
        Predictor("digits_mlp"),
        Predictor("digits_mlp", make_runner=onnx_make_runner),
    )
    on_torch.load("v1", params)
    on_onnx.load("v1", params)
    x = np.random.default_rng(3).normal(size=(32, 64)).astype(np.float32)
    np.testing.assert_array_equal(on_onnx.predict(x).predictions, on_torch.predict(x).predictions)
