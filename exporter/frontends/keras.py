"""Keras model → IR graph.

One small handler per Keras layer class, registered in `HANDLERS` by class
(never by layer name).  A handler reads the layer's config and weights,
checks them (`validate`), and adds IR nodes through a `LayerContext`.
Unknown layers are collected and reported together, never skipped.
"""
from __future__ import annotations

import numpy as np

from .. import validate
from ..errors import ExportError, UnsupportedModelError
from ..ir import Graph, Node
from ..validate import LayerInfo
from . import keras_file

HANDLERS: dict = {}

# Activations a conv/dense applies as an output clamp; others become a node.
CLAMPS = {"linear": (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0)}
# Keras activation name -> (IR function, its parameters)
ELEMENTWISE = {
    "sigmoid": ("sigmoid", {}), "tanh": ("tanh", {}),
    "leaky_relu": ("leaky_relu", {"alpha": 0.2}), "elu": ("elu", {"alpha": 1.0}),
    "selu": ("selu", {}), "hard_sigmoid": ("hard_sigmoid", {}),
    "hard_silu": ("hard_swish", {}), "hard_swish": ("hard_swish", {}),
    "silu": ("swish", {}), "swish": ("swish", {}), "gelu": ("gelu", {}),
    "softplus": ("softplus", {}), "softsign": ("softsign", {}),
    "exponential": ("exponential", {}), "mish": ("mish", {}),
}


def with_bias(weights: dict, bias) -> dict:
    return weights if bias is None else {**weights, "bias": bias}


def handles(*classes):
    def register(fn):
        for cls in classes:
            HANDLERS[cls] = fn
        return fn
    return register


class LayerContext:
    """What a handler sees: its layer, its input tensors, and the graph."""

    def __init__(self, graph: Graph, layer, inputs: list, infos: list):
        self.graph = graph
        self.layer = layer
        self.cls = type(layer).__name__
        self.config = layer.get_config()
        self.inputs = inputs
        self.infos = infos

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def in_shape(self) -> tuple:
        return self.graph.tensors[self.inputs[0]].shape

    def add(self, op, inputs, out_shape, attrs=None, weights=None, suffix=""):
        validate.check_output_shape(self.name, self.cls, self.in_shape, out_shape)
        out = self.graph.add_tensor(self.name + suffix, out_shape)
        self.graph.add_node(Node(  # unique like its tensor: a shared layer is called twice
            name=out.name, op=op, inputs=list(inputs),
            outputs=[out.name], attrs=dict(attrs or {}),
            weights=dict(weights or {}), layer=self.name, keras_class=self.cls))
        return out.name

    def info(self, out_shape, **kw) -> LayerInfo:
        info = LayerInfo(self.name, self.cls, self.in_shape, tuple(out_shape), **kw)
        self.infos.append(info)
        return info

    def weights(self):
        arrays = [np.asarray(w, dtype=np.float32) for w in self.layer.get_weights()]
        validate.check_finite(self.name, self.cls, arrays)
        return arrays

    def kernel_and_bias(self):
        """The layer's kernel and its bias (None with use_bias=False)."""
        ws = self.weights()
        return ws[0], (ws[1] if self.config.get("use_bias", True) else None)

    def add_then_activation(self, op, inputs, out_shape, attrs, weights, func):
        """The op, then the activation= it could not fuse (if any)."""
        t = self.add(op, inputs, out_shape, attrs, weights)
        return self.add_activation(func, t) if func else t

    def unsupported(self, why: str):
        raise UnsupportedModelError(f"layer '{self.name}' ({self.cls}): {why}")

    def channels_last(self):
        if self.config.get("data_format", "channels_last") != "channels_last":
            self.unsupported("data_format='channels_first' is not supported; "
                             "use channels_last (the Keras default)")

    def activation(self, name: str) -> tuple:
        """Split `activation=` into a fused clamp and, if needed, a node."""
        if not isinstance(name, str):
            self.unsupported("a custom activation function cannot be exported")
        if name in CLAMPS:
            return CLAMPS[name], None
        if name in ELEMENTWISE or name == "softmax":
            return CLAMPS["linear"], name
        self.unsupported(f"activation '{name}' is not supported yet "
                         f"(supported: {', '.join(sorted(set(CLAMPS) | set(ELEMENTWISE) | {'softmax'}))})")

    def add_activation(self, name: str, tensor: str, suffix="_act", **params) -> str:
        """An activation node for Keras activation `name` (params override defaults)."""
        shape = self.graph.tensors[tensor].shape
        if name == "softmax":
            return self.add("softmax", [tensor], shape, {"axis": -1}, suffix=suffix)
        func, defaults = ELEMENTWISE[name]
        return self.add("activation", [tensor], shape, {"func": func, **defaults, **params},
                        suffix=suffix)


# ---- padding -------------------------------------------------------------


# ---- handlers ------------------------------------------------------------


# ---- graph walk ----------------------------------------------------------

def supported_classes() -> set:
    return set(HANDLERS)


def _functional(model):
    import keras
    if isinstance(model, keras.Sequential):
        f = getattr(model, "_functional", None)
        if f is None:
            raise ExportError("the Sequential model has no input shape; build it "
                              "with keras.Input(shape=...) first")
        return f
    return model


def check_classes(model) -> None:
    """For models passed in memory: the same all-at-once check as for files."""
    bad = [f"'{l.name}' ({type(l).__name__})" for l in _functional(model)._operations
           if type(l).__name__ not in HANDLERS and type(l).__name__ != "InputLayer"]
    if bad:
        raise UnsupportedModelError(
            f"the model has {len(bad)} unsupported layer{'s' if len(bad) > 1 else ''}: "
            + "; ".join(bad) + f". Supported layers: {', '.join(sorted(HANDLERS))}")


def to_graph(model, name: str):
    """Lower a Keras model to an IR graph; returns (graph, layer infos)."""
    check_classes(model)
    f = _functional(model)
    graph = Graph(name)
    infos: list = []
    known: dict = {}  # id(KerasTensor) -> IR tensor name
    for t in f.inputs:
        shape = tuple(t.shape[1:])
        if any(d is None or d <= 0 for d in shape):
            raise UnsupportedModelError(f"model input '{t.name}' has shape {tuple(t.shape)}; "
                              f"every dimension but the batch must be fixed and > 0")
        known[id(t)] = graph.add_tensor(t.name, shape).name
        graph.inputs.append(known[id(t)])
    # Keras's own execution order: deepest nodes (nearest the inputs) first.
    for depth in sorted(f._nodes_by_depth, reverse=True):
        for node in f._nodes_by_depth[depth]:
            layer = node.operation
            if type(layer).__name__ == "InputLayer":
                continue
            ins = [id(t) for t in node.input_tensors]
            ctx = LayerContext(graph, layer, [known[i] for i in ins], infos)
            out = HANDLERS[type(layer).__name__](ctx)
            kt = node.output_tensors[0]
            ours, theirs = graph.tensors[out].shape, tuple(kt.shape[1:])
            if ours != theirs:
                raise UnsupportedModelError(
                    f"layer '{layer.name}' ({ctx.cls}): Keras says its output is "
                    f"{theirs} but the exporter computed {ours}; please report this")
            known[id(kt)] = out
    graph.outputs = [known[id(t)] for t in f.outputs]
    for name in graph.inputs:
        if graph.tensors[name].dtype == "int32" and any(
                n.op != "embedding" for n in graph.consumers(name)):
            raise UnsupportedModelError(
                f"model input '{name}' feeds an Embedding and other layers; integer "
                f"indices can only be read by Embedding layers")
    return graph, infos


def load(path: str, limits=None):
    return keras_file.load(path, supported_classes(), limits)


# Importing the handler modules registers their layer classes.
from . import (layers_conv, layers_core, layers_merge, layers_pool,  # noqa: E402,F401
               layers_recurrent)
