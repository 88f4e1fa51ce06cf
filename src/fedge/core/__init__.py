"""Core data types: model parameters, tree maths and the wire format."""

from fedge.core.params import Params, ParamSpec, from_module, load_into_module, to_torch
from fedge.core.serde import WIRE_VERSION, decode_params, encode_params
from fedge.core.tree import (
    tree_add,
    tree_clip_by_global_norm,
    tree_global_norm,
    tree_is_finite,
    tree_scale,
    tree_sub,
    tree_weighted_mean,
    tree_zeros_like,
)

__all__ = [
    "WIRE_VERSION",
    "ParamSpec",
    "Params",
    "decode_params",
    "encode_params",
    "from_module",
    "load_into_module",
    "to_torch",
    "tree_add",
    "tree_clip_by_global_norm",
    "tree_global_norm",
    "tree_is_finite",
    "tree_scale",
    "tree_sub",
    "tree_weighted_mean",
    "tree_zeros_like",
]
