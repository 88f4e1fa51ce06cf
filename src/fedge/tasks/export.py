"""Export a task's model for serving elsewhere: safetensors weights + task name, or ONNX.

:func:`export_weights` writes the weights as a fedge safetensors payload whose metadata names the
task (``fedge.task``) and any version metadata, so :func:`fedge.tasks.get_task` can rebuild the
module. :func:`export_onnx` traces the task's module with ``torch.onnx.export`` (a dynamic batch
dimension; input ``x`` of ``num_features`` float32 values, output ``logits``), and
:func:`onnx_runner` runs such a model with onnxruntime, the lighter alternative to torch on a
device (:class:`fedge.device.predictor.Predictor` takes it as ``make_runner=onnx_make_runner``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fedge.core.params import Params, load_into_module
from fedge.core.serde import decode_params, encode_params
from fedge.errors import ValidationError
from fedge.tasks.base import Task

__all__ = [
    "ONNX_OPSET",
    "export_onnx",
    "export_weights",
    "import_weights",
    "onnx_make_runner",
    "onnx_runner",
]

ONNX_OPSET = 17
_TASK_KEY = "fedge.task"


def export_weights(
    task_name: str, params: Params, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The weights as a safetensors payload naming the task (and carrying ``metadata``)."""
    return encode_params(params, {**(metadata or {}), _TASK_KEY: task_name})


def import_weights(payload: bytes) -> tuple[str, Params, dict[str, str]]:
    """(task name, weights, metadata) of an :func:`export_weights` payload."""
    params, metadata = decode_params(payload)
    task_name = metadata.get(_TASK_KEY)
    if not task_name:
        raise ValidationError(f"the payload names no task ({_TASK_KEY}); it is not a fedge export")
    return task_name, params, dict(metadata)


def export_onnx(task: Task, params: Params) -> bytes:
    """The task's model with ``params`` as an ONNX model (opset ``ONNX_OPSET``, dynamic batch)."""
    import torch

    model = task.build_model()
    load_into_module(model, params)
    model.eval()
    example = torch.zeros(1, task.num_features)
    # the TorchScript-based exporter is deprecated (torch >= 2.9) but exact for these models
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            path := Path(tmp) / "model.onnx",
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        return path.read_bytes()


def onnx_runner(onnx_model: bytes, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the ONNX model on float32 rows with onnxruntime (CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {"x": x})[0]
        return out

    return run


def onnx_make_runner(task: Task, params: Params) -> Callable[[np.ndarray], np.ndarray]:
    """Export to ONNX and run with onnxruntime: a ``make_runner`` for the device Predictor."""
    return onnx_runner(export_onnx(task, params))
