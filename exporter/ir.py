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
