"""What a handler sees: its Keras node (layer or op), its inputs, the graph.

A handler reads the node's config and call arguments through `LayerContext`,
which records what it read.  Whatever it did not read must be the Keras
default (or a training-only argument): otherwise the node is refused by
name, because a handler that ignores an argument would approximate.
"""
from __future__ import annotations

import inspect

import numpy as np

from .. import validate
from ..errors import UnsupportedModelError
from ..ir import Node

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

# Config keys that do not change what a trained layer computes at inference
# (training-time settings, or masking options with no mask present).
TRAINING_ONLY = {"zero_output_for_mask", "name", "trainable", "dtype", "activity_regularizer", "seed", "momentum",
                 "renorm", "renorm_clipping", "renorm_momentum", "synchronized",
                 "dropout", "recurrent_dropout", "unroll", "implementation", "use_cudnn",
                 "unit_forget_bias", "build_config", "input_dim", "input_length",
                 "batch_input_shape", "input_shape", "autocast", "scale_factor_initializer"}
TRAINING_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def with_bias(weights: dict, bias) -> dict:
    return weights if bias is None else {**weights, "bias": bias}


class TrackedConfig(dict):
    """A config dict that remembers which keys were read."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def accept(self, *keys):
        self.read.update(keys)

    def unread(self) -> dict:
        return {k: v for k, v in self.items() if k not in self.read}


class Ref:
    """A tensor argument of a node, by its IR name."""

    def __init__(self, name: str, keras_shape: tuple):
        self.name, self.keras_shape = name, keras_shape

    def __repr__(self):
        return f"<tensor {self.name}>"


class LayerContext:
    """One Keras node being lowered: `inputs` are the IR names of its tensor
    inputs in order, `args`/`kwargs` its call arguments with tensors as Ref."""

    def __init__(self, graph, layer, inputs: list, infos: list, path: str = "",
                 args=(), kwargs=None, key=("", "")):
        self.graph = graph
        self.layer = layer
        self.cls = type(layer).__name__
        self.key = key
        self.config = TrackedConfig(layer.get_config())
        self.inputs = inputs
        self.infos = infos
        self.path = path
        self.args = list(args)
        self.kwargs = TrackedConfig(kwargs or {})
        self.has_info = False  # one report row per Keras node

    @property
    def name(self) -> str:
        return self.path + self.layer.name

    @property
    def in_shape(self) -> tuple:
        return self.graph.tensors[self.inputs[0]].shape

    def shape(self, tensor: str) -> tuple:
        return self.graph.tensors[tensor].shape

    def add(self, op, inputs, out_shape, attrs=None, weights=None, suffix=""):
        validate.check_output_shape(self.name, self.cls, self.in_shape, out_shape)
        out = self.graph.add_tensor(self.name + suffix, out_shape)
        self.graph.add_node(Node(  # unique like its tensor: a shared layer is called twice
            name=out.name, op=op, inputs=list(inputs),
            outputs=[out.name], attrs=dict(attrs or {}),
            weights=dict(weights or {}), layer=self.name, keras_class=self.cls))
        return out.name

    def info(self, out_shape, **kw) -> validate.LayerInfo:
        info = validate.LayerInfo(self.name, self.cls, self.in_shape, tuple(out_shape),
                                  call=self.describe_call(), **kw)
        self.has_info = True
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

    def describe_call(self) -> str:
        """An op node's call as the user wrote it, constants included (for
        --explain); layers say nothing here."""
        from .registry import LAYERS
        if self.key[0] == LAYERS or not self.key[0]:
            return ""
        parts = [show(a) for a in self.args]
        parts += [f"{k}={show(v)}" for k, v in self.kwargs.items() if v is not None]
        parts += [f"{k}={v!r}" for k, v in self.config.items() if k != "name"]
        return f"{self.key[1]}({', '.join(parts)})"

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

    # ---- after the handler ran -------------------------------------------

    def check_understood(self) -> None:
        """Refuse any config or call argument the handler did not read whose
        value is not Keras's default: it would change what Keras computes."""
        check_read(type(self.layer), self.config, self.unsupported)
        for key, value in self.kwargs.unread().items():
            if value is None or key == "training":  # the walk handles training=
                continue
            self.unsupported(f"the call argument {key}={value!r} is not supported")


def check_read(cls, config: TrackedConfig, unsupported) -> None:
    """Every key of `config` was read, is training-only or has the default
    of `cls`'s constructor; else `unsupported(why)`."""
    defaults = init_defaults(cls)
    for key, value in config.unread().items():
        if key in TRAINING_ONLY or key.endswith(TRAINING_SUFFIXES):
            continue
        if key in defaults and same_value(value, defaults[key]):
            continue
        unsupported(f"argument {key}={value!r} is not understood by the exporter, "
                    f"which does not approximate; remove it or use its default"
                    + (f" ({defaults[key]!r})" if key in defaults else ""))


def show(value) -> str:
    """A call argument for people: tensors by name, arrays by shape and the
    first values."""
    if isinstance(value, Ref):
        return value.name
    if isinstance(value, (list, tuple)):
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
        flat = np.asarray(value).ravel()
        head = ", ".join(f"{float(v):.4g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
        return f"array{tuple(np.shape(value))}[{head}]"
    if isinstance(value, slice):
        return ":".join("" if v is None else str(v) for v in (value.start, value.stop, value.step)).rstrip(":") or ":"
    return repr(value)


def init_defaults(cls) -> dict:
    """Keyword defaults of a Keras class's constructor, base classes included."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.default is not inspect.Parameter.empty:
                out[p.name] = p.default
    return out


def same_value(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (list, tuple)) and len(a) == 1:
        return same_value(a[0], b)
    try:
        return bool(a == b)
    except Exception:
        return False
