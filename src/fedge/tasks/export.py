"""Export a task's model for serving elsewhere: safetensors weights + task name, or ONNX.

:func:`export_weights` writes the weights as a fedge safetensors payload whose metadata names the
task (``fedge.task``) and any version metadata, so :func:`fedge.tasks.get_task` can rebuild the
module. :func:`export_onnx` gives an ONNX model (a dynamic batch dimension; input ``x`` of
``num_features`` float32 values, output ``logits``) two ways:

- ``via="weights"``: for a task whose module is an ``nn.Sequential`` of ``Linear`` layers and
  ReLU / Tanh / Sigmoid activations (every MLP task: the MNIST 2NN, digits, the use-case
  models), :func:`onnx_from_weights` writes the graph itself with the ``onnx`` helper API --
  one ``Gemm`` per layer holding its weights, one node per activation. No tracing: torch only
  builds the (weightless) module once to read its layer list.
- ``via="torch"``: ``torch.onnx.export`` traces the module (any architecture, e.g. the CNN).

``"auto"`` (the default) takes the first when the task allows it. :func:`onnx_runner` runs such
a model with onnxruntime, the lighter alternative to torch on a device; :func:`onnx_make_runner`
is the ``make_runner`` of :class:`fedge.device.predictor.Predictor` for ``runtime =
"onnxruntime"`` (it builds the graph once per model version, when the version is loaded).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedge.core.params import Params, load_into_module
from fedge.core.serde import decode_params, encode_params
from fedge.errors import ValidationError
from fedge.tasks.base import Task

if TYPE_CHECKING:
    import onnx
    from torch import nn

__all__ = [
    "ONNX_OPSET",
    "export_onnx",
    "export_weights",
    "import_weights",
    "onnx_from_weights",
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


def export_onnx(
    task: Task, params: Params, *, via: Literal["auto", "weights", "torch"] = "auto"
) -> bytes:
    """The task's model with ``params`` as an ONNX model (opset ``ONNX_OPSET``, dynamic batch).

    ``via``: "weights" (the graph written from the weights; MLP tasks only), "torch" (traced by
    ``torch.onnx.export``) or "auto" (weights when the task allows it, else torch)."""
    if via != "torch":
        model = onnx_from_weights(task, params)
        if model is not None:
            return model
        if via == "weights":
            raise ValidationError(
                f"task {task.name}'s module is not a Sequential of Linear layers and ReLU/Tanh/"
                "Sigmoid: its ONNX graph cannot be written from the weights; export via torch"
            )
    return _torch_export(task, params)


def _torch_export(task: Task, params: Params) -> bytes:
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


_ACTIVATIONS = {"ReLU": "Relu", "Tanh": "Tanh", "Sigmoid": "Sigmoid"}
_IGNORED = {"Identity", "Dropout"}  # no-ops in eval mode


def _layers(module: nn.Module) -> list[tuple[str, str]] | None:
    """(child name, ONNX op) of a Sequential MLP, or None for any other architecture."""
    from torch import nn

    if not isinstance(module, nn.Sequential):
        return None
    out: list[tuple[str, str]] = []
    for name, child in module.named_children():
        kind = type(child).__name__
        if isinstance(child, nn.Linear):
            out.append((name, "Gemm"))
        elif type(child) in (nn.ReLU, nn.Tanh, nn.Sigmoid):
            out.append((name, _ACTIVATIONS[kind]))
        elif type(child) in (nn.Identity, nn.Dropout):
            continue
        else:
            return None
    return out if any(op == "Gemm" for _, op in out) else None


def onnx_from_weights(task: Task, params: Params) -> bytes | None:
    """The ONNX graph of an MLP task written from its weights (None: not an MLP task).

    Raises :class:`ValidationError` when ``params`` do not fit the task's layers."""
    import onnx
    from onnx import TensorProto, helper

    module = task.build_model()
    layers = _layers(module)
    if layers is None:
        return None
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(np.shape(v)) for k, v in params.items()}
    if got != expected:
        raise ValidationError(
            f"weights do not fit task {task.name}: expected {expected}, got {got}"
        )
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    current = "x"
    for i, (name, op) in enumerate(layers):
        out = "logits" if i == len(layers) - 1 else f"h{i}"
        if op == "Gemm":
            inputs = [current, f"{name}.weight"]
            weights.append(_tensor(params, f"{name}.weight"))
            if f"{name}.bias" in params:
                inputs.append(f"{name}.bias")
                weights.append(_tensor(params, f"{name}.bias"))
            nodes.append(helper.make_node("Gemm", inputs, [out], name=name, transB=1))
        else:
            nodes.append(helper.make_node(op, [current], [out], name=f"{op.lower()}{name}"))
        current = out
    classes = next(np.shape(params[f"{n}.weight"])[0] for n, op in reversed(layers) if op == "Gemm")
    graph = helper.make_graph(
        nodes,
        task.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", task.num_features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", int(classes)])],
        initializer=weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="fedge"
    )
    model.ir_version = min(model.ir_version, 8)  # what onnxruntime >= 1.14 reads
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _tensor(params: Params, name: str) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(params[name], dtype=np.float32), name=name)
