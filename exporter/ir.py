"""Framework-free intermediate representation of a model.

The frontend turns a Keras model into a `Graph` of `Node`s over `Tensor`s;
every later stage (passes, quantization, planning, codegen) works on this
alone.  Shapes never include the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
