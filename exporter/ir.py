"""Framework-free intermediate representation of a model.

The frontend turns a Keras model into a `Graph` of `Node`s over `Tensor`s;
every later stage (passes, quantization, planning, codegen) works on this
alone.  Shapes never include the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

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
    # broadcasting binary (above), reduction over one axis, batched matmul
    "reduce": False,
    "matmul": False,
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

# ---- shapes of the broadcasting binary and matmul ops ---------------------

BINARY_FUNCS = ("add", "sub", "mul", "div", "max", "min", "avg")
REDUCE_FUNCS = ("mean", "sum", "max", "min")


def binary_shapes(graph, node):
    """(first operand, second operand, output) shapes of a "binary" node in
    operand order: `const <func> a` when attrs["const_first"], else
    `a <func> b` (b a tensor or weights["const"]).  The output must have
    numpy's broadcast shape of the two."""
    a = graph.tensors[node.inputs[0]].shape
    if "const" in node.weights:
        if len(node.inputs) != 1:
            raise ExportError(f"binary node '{node.name}' has a constant and {len(node.inputs)} "
                              f"tensor inputs; it takes one")
        b = tuple(node.weights["const"].shape)
        first, second = (b, a) if node.attrs.get("const_first") else (a, b)
    elif len(node.inputs) == 2:
        first, second = a, graph.tensors[node.inputs[1]].shape
    else:
        raise ExportError(f"binary node '{node.name}' needs two operands, got "
                          f"{len(node.inputs)} tensors and no constant")
    if node.attrs["func"] not in BINARY_FUNCS:
        raise ExportError(f"binary node '{node.name}': unknown func '{node.attrs['func']}'")
    out = graph.tensors[node.outputs[0]].shape
    try:
        want = np.broadcast_shapes(first, second)
    except ValueError:
        want = None
    if want != tuple(out):
        raise ExportError(f"binary node '{node.name}': shapes {first} and {second} do not "
                          f"broadcast to its output shape {out}")
    return tuple(first), tuple(second), tuple(out)


def matmul_offsets(attrs):
    """(a, b, c) element offsets of every batch of a "matmul" node, outermost
    level first (attrs["batch"]: up to 3 (count, a_stride, b_stride,
    c_stride) levels)."""
    levels = list(attrs.get("batch") or [])
    if len(levels) > 3:
        raise ExportError(f"matmul with {len(levels)} batch levels; at most 3 are supported")
    offsets = []
    for index in product(*(range(lv[0]) for lv in levels)):
        offsets.append(tuple(sum(i * lv[1 + r] for i, lv in zip(index, levels))
                             for r in range(3)))
    return offsets


def check_matmul(graph, node) -> None:
    """Every read inside a and b, every element of c written exactly once."""
    a_t, b_t = (graph.tensors[t] for t in node.inputs)
    c_t = graph.tensors[node.outputs[0]]
    at = node.attrs
    m, n, k = at["m"], at["n"], at["k"]
    what = f"matmul node '{node.name}'"
    if min(m, n, k) < 1 or any(lv[0] < 1 for lv in at.get("batch") or []):
        raise ExportError(f"{what}: m, n, k and batch counts must be >= 1")
    written = np.zeros(c_t.size, np.int64)
    for off_a, off_b, off_c in matmul_offsets(at):
        for off, row, rows, cols, t, name in ((off_a, at["a_row"], m, k, a_t, "a"),
                                              (off_b, at["b_row"], n, k, b_t, "b")):
            ends = (off, off + (rows - 1) * row, off + cols - 1, off + (rows - 1) * row + cols - 1)
            if min(ends) < 0 or max(ends) >= t.size:
                raise ExportError(f"{what}: reads {name} outside its {t.size} elements")
        idx = off_c + np.arange(m)[:, None] * at["c_row"] + np.arange(n)[None, :]
        if idx.min() < 0 or idx.max() >= c_t.size:
            raise ExportError(f"{what}: writes outside its {c_t.size}-element output")
        np.add.at(written, idx.ravel(), 1)
    if not np.all(written == 1):
        raise ExportError(f"{what}: the batches do not write every output element exactly once")


def check_reduce(graph, node) -> None:
    a, b, c = node.attrs["dims"]
    size_in = graph.tensors[node.inputs[0]].size
    size_out = graph.tensors[node.outputs[0]].size
    if min(a, b, c) < 1 or a * b * c != size_in or a * c != size_out:
        raise ExportError(f"reduce node '{node.name}': dims {tuple(node.attrs['dims'])} do not "
                          f"fit its {size_in} input and {size_out} output elements")
    if node.attrs["func"] not in REDUCE_FUNCS:
        raise ExportError(f"reduce node '{node.name}': unknown func '{node.attrs['func']}'")


def check_node(graph, node) -> None:
    """The layout attributes of a binary, reduce or matmul node agree with
    its tensors (ExportError otherwise); other ops are not checked here."""
    if node.op == "binary":
        binary_shapes(graph, node)
    elif node.op == "reduce":
        check_reduce(graph, node)
    elif node.op == "matmul":
        check_matmul(graph, node)
