"""Model parameters as named float32 arrays, with torch ⇄ numpy adapters.

``Params`` is a plain ``dict[str, np.ndarray]`` (names in the model's own order, float32 arrays).
Everything that travels or is aggregated is a ``Params``; :class:`ParamSpec` records the names and
shapes a model expects, validates incoming trees against them and flattens them to one vector
(for secure aggregation and privacy, which work on vectors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedge.errors import NonFiniteError, ShapeMismatchError

if TYPE_CHECKING:
    import torch

__all__ = ["Array", "ParamSpec", "Params", "from_module", "load_into_module", "to_torch"]

Array = NDArray[np.float32]
Params = dict[str, Array]


@dataclass(frozen=True)
class ParamSpec:
    """The names and shapes of a model's parameters, in order (all float32)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, params: Mapping[str, np.ndarray]) -> ParamSpec:
        """The spec of an existing parameter tree."""
        return cls(tuple(params), tuple(tuple(int(d) for d in a.shape) for a in params.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of scalars in each tensor."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return int(sum(self.sizes))

    @property
    def nbytes(self) -> int:
        """Bytes of one float32 copy of the parameters."""
        return 4 * self.size

    def validate(self, params: Mapping[str, np.ndarray], *, finite: bool = True) -> Params:
        """Check names, shapes, dtype (and finiteness); return the tree in spec order.

        Raises :class:`ShapeMismatchError` or :class:`NonFiniteError` with the offending tensor.
        """
        if set(params) != set(self.names):
            missing = sorted(set(self.names) - set(params))
            extra = sorted(set(params) - set(self.names))
            raise ShapeMismatchError(
                f"parameter names do not match the model: missing {missing}, unexpected {extra}"
            )
        out: Params = {}
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = params[name]
            if not isinstance(arr, np.ndarray):
                raise ShapeMismatchError(
                    f"{name}: expected a numpy array, got {type(arr).__name__}"
                )
            if arr.dtype != np.float32:
                raise ShapeMismatchError(f"{name}: expected dtype float32, got {arr.dtype}")
            if tuple(arr.shape) != shape:
                raise ShapeMismatchError(f"{name}: expected shape {shape}, got {tuple(arr.shape)}")
            if finite and not np.isfinite(arr).all():
                raise NonFiniteError(f"{name}: contains NaN or Inf; the update is rejected")
            out[name] = arr
        return out

    def flatten(self, params: Mapping[str, np.ndarray]) -> Array:
        """Concatenate the tensors (in spec order) into one float32 vector."""
        return np.concatenate(
            [np.ravel(params[n]).astype(np.float32, copy=False) for n in self.names]
        )

    def flatten_stacked(self, stacked: Mapping[str, np.ndarray], rows: int) -> Array:
        """Stacked trees (``stacked[name]`` of shape (rows, *shape)) as one (rows, size) matrix."""
        matrix = np.concatenate(
            [np.asarray(stacked[n], np.float32).reshape(rows, -1) for n in self.names], axis=1
        )
        if matrix.shape[1] != self.size:
            raise ShapeMismatchError(f"expected {self.size} parameters, got {matrix.shape[1]}")
        return matrix

    def unflatten(self, vector: np.ndarray) -> Params:
        """Split a vector made by :meth:`flatten` back into named tensors (views, no copy)."""
        vec = np.asarray(vector, dtype=np.float32)
        if vec.ndim != 1 or vec.size != self.size:
            raise ShapeMismatchError(
                f"expected a vector of {self.size} values, got shape {vec.shape}"
            )
        out: Params = {}
        offset = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[name] = vec[offset : offset + size].reshape(shape)
            offset += size
        return out

    def zeros(self) -> Params:
        """A tree of zeros with this spec."""
        return {
            n: np.zeros(s, dtype=np.float32) for n, s in zip(self.names, self.shapes, strict=True)
        }


def from_module(module: torch.nn.Module) -> Params:
    """Copy a torch module's trainable parameters into a new ``Params`` tree."""
    return {
        name: p.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, p in module.named_parameters()
    }


def to_torch(params: Mapping[str, np.ndarray], *, copy: bool = False) -> dict[str, torch.Tensor]:
    """View a ``Params`` tree as float32 CPU tensors (shared memory unless ``copy`` or read-only)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, a in params.items():
        arr = np.ascontiguousarray(a, dtype=np.float32)
        if copy or not arr.flags.writeable:
            arr = arr.copy()
        out[name] = torch.from_numpy(arr)
    return out


def load_into_module(module: torch.nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Overwrite a module's parameters in place; shapes are validated first."""
    import torch

    spec = ParamSpec.of(from_module(module))
    checked = spec.validate(params, finite=False)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(checked[name]))
