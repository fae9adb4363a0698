"""Framework-free intermediate representation of a model.

The frontend turns a Keras model into a `Graph` of `Node`s over `Tensor`s;
every later stage (passes, quantization, planning, codegen) works on this
alone.  Shapes never include the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ExportError


@dataclass
class Quant:
    """Asymmetric int8 parameters: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str = "float32"
    quant: Quant | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "int8": 1, "int16": 2, "int32": 4}[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize


@dataclass
class Node:
    """One operation.

    `op` is one of the IR ops (see `OPS`); `attrs` hold its static
    parameters, `weights` its constant arrays in the layout the C kernel
    expects (conv OHWI, dense (out, in)).  `layer` names the Keras layer the
    node came from, `keras_class` its class, for reports and errors.
    """

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    layer: str = ""
    keras_class: str = ""


# op -> whether its output may reuse its input's memory (elementwise).
OPS = {
    "conv2d": False,
    "depthwise_conv2d": False,
    "conv3d": False,
    "max_pool3d": False,
    "avg_pool3d": False,
    "batchnorm": False,
    "dense": False,
    "max_pool": False,
    "avg_pool": False,
    "mean": False,
    "activation": True,
    "softmax": True,
    "add": True,
    "binary": True,
    "copy": False,
    "prelu": True,
    "resize_bilinear": False,
    "reshape": True,
    "identity": True,
    "rnn": False,
    "embedding": False,
    "norm": True,  # each group is read before any of its elements is written
}


@dataclass
class Graph:
    name: str
    tensors: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    dtype: str = "float32"
    # What a model input's raw int8 means to the caller, where it differs
    # from the tensor's own parameters (an input affine folded away).
    boundary_quant: dict = field(default_factory=dict)
    input_affine: dict = field(default_factory=dict)  # name -> (a, b) the caller's x goes through
    warnings: list = field(default_factory=list)      # for the report, from the frontend

    def add_tensor(self, name: str, shape) -> Tensor:
        base, k = name, 1
        while name in self.tensors:
            k += 1
            name = f"{base}_{k}"
        t = Tensor(name, tuple(int(d) for d in shape))
        self.tensors[name] = t
        return t

    def add_node(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def producer(self, tensor: str):
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list:
        return [n for n in self.nodes if tensor in n.inputs]


# ---- op "norm" -----------------------------------------------------------
# x viewed row-major as attrs["dims"] = (A, B, C, D); statistics over B and D
# for every (a, c); element (a, b, c, d) uses gamma/beta[b*sb + c*sc + d*sd]
# with attrs["param_index"] = (sb, sc, sd).  Modes (k2m.h, "normalization"):
# "layer", "rms" (RMSNormalization), "rms_scaling" (Keras 3's
# LayerNormalization(rms_scaling=True): the variance, not the mean square)
# and "l2" (UnitNormalization).
NORM_MODES = ("layer", "rms", "rms_scaling", "l2")


def check_norm(node, size: int) -> None:
    """Refuse a norm node whose attributes do not describe its tensor."""
    a = node.attrs
    dims = tuple(int(v) for v in a.get("dims", ()))
    what = f"norm node '{node.name}' (layer '{node.layer}')"
    if len(dims) != 4 or min(dims) < 1 or int(np.prod(dims, dtype=np.int64)) != size:
        raise ExportError(f"{what}: dims {a.get('dims')} do not view its {size} values as (A, B, C, D)")
    if a.get("mode") not in NORM_MODES:
        raise ExportError(f"{what}: unknown mode {a.get('mode')!r}; use one of {', '.join(NORM_MODES)}")
    eps = a.get("epsilon")
    if not isinstance(eps, (int, float, np.floating)) or not np.isfinite(eps) or eps < 0:
        raise ExportError(f"{what}: epsilon {eps!r} is not a finite number >= 0")
    if a["mode"] == "l2" and eps <= 0:
        raise ExportError(f"{what}: mode l2 needs epsilon > 0 (it caps 1 / norm at 1 / epsilon)")
    params = [w for w in ("gamma", "beta") if w in node.weights]
    if set(node.weights) - {"gamma", "beta"}:
        raise ExportError(f"{what}: unknown weights {sorted(set(node.weights) - {'gamma', 'beta'})}")
    if not params:
        return
    strides = tuple(int(v) for v in a.get("param_index", ()))
    if len(strides) != 3 or min(strides) < 0:
        raise ExportError(f"{what}: param_index {a.get('param_index')} is not (sb, sc, sd) >= 0")
    top = sum((n - 1) * s for n, s in zip(dims[1:], strides))
    for w in params:
        arr = node.weights[w]
        if arr.ndim != 1 or arr.size <= top:
            raise ExportError(f"{what}: {w} of shape {arr.shape} has no element {top} "
                              f"(param_index {strides})")
