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
from . import keras_file, movement

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

def window_1d(size, k, stride, dilation, padding):
    """Output length and leading pad, as TensorFlow computes them."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2  # the odd pixel goes after, as in TF
    if padding == "causal":
        return (size - 1) // stride + 1, span - 1
    raise ValueError(padding)


def window_attrs(in_hw, k, strides, dilation, padding):
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, k, strides, dilation
    oh, pt = window_1d(h, kh, sh, dh, padding if padding != "causal" else "valid")
    ow, pl = window_1d(w, kw, sw, dw, padding)
    return (oh, ow), {"kernel": (kh, kw), "strides": (sh, sw),
                      "dilation": (dh, dw), "pad": (pt, pl), "padding": padding}


def as_pair(v):
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)


# ---- handlers ------------------------------------------------------------

def _conv(ctx: LayerContext, one_d: bool):
    c = ctx.config
    ctx.channels_last()
    if c.get("groups", 1) != 1:
        ctx.unsupported("grouped convolution (groups > 1) is not supported yet")
    ws = ctx.weights()
    kernel, bias = ws[0], (ws[1] if c["use_bias"] else None)
    k, strides, dil = as_pair(c["kernel_size"]), as_pair(c["strides"]), as_pair(c["dilation_rate"])
    if one_d:
        steps, cin = ctx.in_shape
        in_hw, k, strides, dil = (1, steps), (1,) + k, (1,) + strides, (1,) + dil
        expected, dims = (k[1], cin, c["filters"]), ("k", "in", "out")
        c_weights = kernel.transpose(2, 0, 1)[:, None, :, :]
    else:
        h, w, cin = ctx.in_shape
        in_hw = (h, w)
        expected, dims = (k[0], k[1], cin, c["filters"]), ("kh", "kw", "in", "out")
        c_weights = kernel.transpose(3, 0, 1, 2)
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, expected, dims)
    (oh, ow), attrs = window_attrs(in_hw, k, strides, dil, c["padding"])
    cout = c["filters"]
    out_shape = (ow, cout) if one_d else (oh, ow, cout)
    clamp, func = ctx.activation(c["activation"])
    attrs.update(clamp=clamp, in_hw=in_hw, out_hw=(oh, ow))
    weights = {"kernel": np.ascontiguousarray(c_weights)}
    if bias is not None:
        weights["bias"] = bias
    params = kernel.size + (0 if bias is None else bias.size)
    info = ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims,
                    c_layout=c_weights.shape, c_dims=("out", "kh", "kw", "in"),
                    params=params, macs=oh * ow * cout * k[0] * k[1] * cin)
    if one_d:
        validate.conv1d_warnings(info)
    t = ctx.add("conv2d", ctx.inputs, out_shape, attrs, weights)
    return ctx.add_activation(func, t) if func else t


@handles("Conv1D")
def conv1d(ctx):
    return _conv(ctx, one_d=True)


@handles("Conv2D")
def conv2d(ctx):
    return _conv(ctx, one_d=False)


@handles("DepthwiseConv2D")
def depthwise_conv2d(ctx):
    c = ctx.config
    ctx.channels_last()
    ws = ctx.weights()
    kernel, bias = ws[0], (ws[1] if c["use_bias"] else None)
    k, strides, dil = as_pair(c["kernel_size"]), as_pair(c["strides"]), as_pair(c["dilation_rate"])
    h, w, cin = ctx.in_shape
    mult = c["depth_multiplier"]
    dims = ("kh", "kw", "in", "mult")
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (k[0], k[1], cin, mult), dims)
    (oh, ow), attrs = window_attrs((h, w), k, strides, dil, c["padding"])
    cout = cin * mult
    clamp, func = ctx.activation(c["activation"])
    attrs.update(clamp=clamp, in_hw=(h, w), out_hw=(oh, ow))
    # (kh, kw, in, mult) in C order is already (kh, kw, in*mult): channel c*mult+m
    c_weights = kernel.reshape(1, k[0], k[1], cout)
    weights = {"kernel": np.ascontiguousarray(c_weights)}
    if bias is not None:
        weights["bias"] = bias
    ctx.info((oh, ow, cout), kernel_shape=kernel.shape, kernel_dims=dims,
             c_layout=c_weights.shape, c_dims=("1", "kh", "kw", "in·mult"),
             params=kernel.size + (0 if bias is None else bias.size),
             macs=oh * ow * cout * k[0] * k[1])
    t = ctx.add("depthwise_conv2d", ctx.inputs, (oh, ow, cout), attrs, weights)
    return ctx.add_activation(func, t) if func else t


def _separable(ctx, one_d: bool):
    """Depthwise then pointwise (1x1) convolution: two IR nodes."""
    c = ctx.config
    ctx.channels_last()
    ws = ctx.weights()
    dk, pk = ws[0], ws[1]
    bias = ws[2] if c["use_bias"] else None
    k, strides, dil = as_pair(c["kernel_size"]), as_pair(c["strides"]), as_pair(c["dilation_rate"])
    mult, cout = c["depth_multiplier"], c["filters"]
    if one_d:
        steps, cin = ctx.in_shape
        in_hw, k, strides, dil = (1, steps), (1,) + k, (1,) + strides, (1,) + dil
        validate.check_kernel(ctx.name, ctx.cls, dk.shape, (k[1], cin, mult), ("k", "in", "mult"))
        validate.check_kernel(ctx.name, ctx.cls, pk.shape, (1, cin * mult, cout), ("1", "in·mult", "out"))
    else:
        h, w, cin = ctx.in_shape
        in_hw = (h, w)
        validate.check_kernel(ctx.name, ctx.cls, dk.shape, (k[0], k[1], cin, mult),
                              ("kh", "kw", "in", "mult"))
        validate.check_kernel(ctx.name, ctx.cls, pk.shape, (1, 1, cin * mult, cout),
                              ("1", "1", "in·mult", "out"))
    (oh, ow), attrs = window_attrs(in_hw, k, strides, dil, c["padding"])
    mid_shape = (ow, cin * mult) if one_d else (oh, ow, cin * mult)
    out_shape = (ow, cout) if one_d else (oh, ow, cout)
    clamp, func = ctx.activation(c["activation"])
    attrs.update(clamp=CLAMPS["linear"], in_hw=in_hw, out_hw=(oh, ow))
    depthwise = {"kernel": np.ascontiguousarray(dk.reshape(1, k[0], k[1], cin * mult))}
    pointwise = {"kernel": np.ascontiguousarray(pk.reshape(cin * mult, cout).T[:, None, None, :])}
    if bias is not None:
        pointwise["bias"] = bias
    ctx.info(out_shape, kernel_shape=dk.shape, kernel_dims=("kh", "kw", "in", "mult")[-dk.ndim:],
             c_layout=depthwise["kernel"].shape, c_dims=("1", "kh", "kw", "in·mult"),
             params=dk.size + pk.size + (0 if bias is None else bias.size),
             macs=oh * ow * cin * mult * (k[0] * k[1] + cout))
    t = ctx.add("depthwise_conv2d", ctx.inputs, mid_shape, attrs, depthwise, suffix="_depthwise")
    point_attrs = {"kernel": (1, 1), "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
                   "padding": "valid", "clamp": clamp, "in_hw": (oh, ow), "out_hw": (oh, ow)}
    t = ctx.add("conv2d", [t], out_shape, point_attrs, pointwise)
    return ctx.add_activation(func, t) if func else t


@handles("SeparableConv1D")
def separable_conv1d(ctx):
    return _separable(ctx, one_d=True)


@handles("SeparableConv2D")
def separable_conv2d(ctx):
    return _separable(ctx, one_d=False)


@handles("BatchNormalization")
def batch_normalization(ctx):
    """y = a·x + b per channel; folded into the conv/dense before it by a pass."""
    c = ctx.config
    axis = c["axis"][0] if isinstance(c["axis"], (list, tuple)) else c["axis"]
    if axis not in (-1, len(ctx.in_shape)):
        ctx.unsupported(f"BatchNormalization over axis {axis}; only the last (channel) axis")
    ws = ctx.weights()
    ch = ctx.in_shape[-1]
    gamma = ws.pop(0) if c.get("scale", True) else np.ones(ch, np.float32)
    beta = ws.pop(0) if c.get("center", True) else np.zeros(ch, np.float32)
    mean, var = ws
    a = gamma / np.sqrt(var.astype(np.float64) + c["epsilon"])
    b = beta - mean * a
    ctx.info(ctx.in_shape, params=4 * ch, macs=int(np.prod(ctx.in_shape)))
    return ctx.add("batchnorm", ctx.inputs, ctx.in_shape, {},
                   {"scale": a.astype(np.float32), "offset": b.astype(np.float32)})


@handles("Add")
def add(ctx):
    shapes = {ctx.graph.tensors[t].shape for t in ctx.inputs}
    if len(shapes) != 1:
        ctx.unsupported(f"Add of different shapes {sorted(shapes)} (broadcasting) is "
                        f"not supported yet")
    ctx.info(ctx.in_shape, macs=int(np.prod(ctx.in_shape)) * (len(ctx.inputs) - 1))
    t = ctx.inputs[0]
    for k, other in enumerate(ctx.inputs[1:]):
        last = k == len(ctx.inputs) - 2
        t = ctx.add("add", [t, other], ctx.in_shape, {"clamp": CLAMPS["linear"]},
                    suffix="" if last else f"_part{k}")
    return t


def _affine(ctx, scale, offset):
    """y = scale·x + offset per channel: the IR's batchnorm op."""
    ch = ctx.in_shape[-1]
    a = np.broadcast_to(np.asarray(scale, np.float32).ravel(), (ch,)).astype(np.float32)
    b = np.broadcast_to(np.asarray(offset, np.float32).ravel(), (ch,)).astype(np.float32)
    validate.check_finite(ctx.name, ctx.cls, [a, b])
    ctx.info(ctx.in_shape, macs=int(np.prod(ctx.in_shape)))
    return ctx.add("batchnorm", ctx.inputs, ctx.in_shape, {}, {"scale": a, "offset": b})


@handles("Rescaling")
def rescaling(ctx):
    scale, offset = ctx.config["scale"], ctx.config["offset"]
    if np.size(scale) not in (1, ctx.in_shape[-1]) or np.size(offset) not in (1, ctx.in_shape[-1]):
        ctx.unsupported("Rescaling with a scale/offset that is neither scalar nor per channel")
    return _affine(ctx, scale, offset)


@handles("Normalization")
def normalization(ctx):
    axis = ctx.config.get("axis")
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    if axis not in ((-1,), (len(ctx.in_shape),), (None,), ()):
        ctx.unsupported(f"Normalization over axis {axis}; only the last (channel) axis")
    mean = np.asarray(ctx.layer.mean, np.float64).ravel()
    std = np.maximum(np.sqrt(np.asarray(ctx.layer.variance, np.float64).ravel()), 1e-7)
    if ctx.config.get("invert"):
        return _affine(ctx, std, mean)
    return _affine(ctx, 1.0 / std, -mean / std)


def _conv_transpose(ctx, one_d: bool):
    """A transposed conv as the convolution it is the gradient of: the input
    spread out with stride-1 zeros and padded (a copy), then a stride-1 conv
    with the kernel flipped.  Costs s² MACs on zeros; exact."""
    c = ctx.config
    ctx.channels_last()
    if c.get("output_padding") is not None:
        ctx.unsupported("output_padding is not supported yet")
    if any(d != 1 for d in as_pair(c["dilation_rate"])):
        ctx.unsupported("dilated transposed convolution is not supported yet")
    ws = ctx.weights()
    kernel, bias = ws[0], (ws[1] if c["use_bias"] else None)
    k, s = as_pair(c["kernel_size"]), as_pair(c["strides"])
    cout = c["filters"]
    if one_d:
        steps, cin = ctx.in_shape
        in_hw, k, s = (1, steps), (1,) + k, (1,) + s
        dims = ("k", "out", "in")
        validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (k[1], cout, cin), dims)
        kernel4 = kernel[None]
    else:
        h, w, cin = ctx.in_shape
        in_hw, dims = (h, w), ("kh", "kw", "out", "in")
        validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (k[0], k[1], cout, cin), dims)
        kernel4 = kernel
    out_hw, before = [], []
    for n, kk, ss in zip(in_hw, k, s):
        if c["padding"] == "same":
            out, pad_top = n * ss, max(kk - ss, 0) // 2
        else:
            out, pad_top = n * ss + max(kk - ss, 0), 0
        out_hw.append(out)
        before.append(kk - 1 - pad_top)
    spread = tuple(out + kk - 1 for out, kk in zip(out_hw, k))  # padded, spread input
    spread_shape = (spread[0], spread[1], cin)
    so = movement.strides(spread_shape)
    m = movement.move((in_hw[0], in_hw[1], cin),
                      [in_hw[1] * cin, cin, 1], [so[0] * s[0], so[1] * s[1], 1],
                      out_offset=before[0] * so[0] + before[1] * so[1])
    mid_shape = spread_shape if not one_d else (spread[1], cin)
    t = ctx.add("copy", ctx.inputs, mid_shape,
                {"moves": [m], "fill": True, "out_size": int(np.prod(spread_shape))},
                suffix="_spread")
    c_weights = np.ascontiguousarray(kernel4[::-1, ::-1].transpose(2, 0, 1, 3))  # OHWI
    weights = {"kernel": c_weights}
    if bias is not None:
        weights["bias"] = bias
    clamp, func = ctx.activation(c["activation"])
    attrs = {"kernel": k, "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
             "padding": "valid", "clamp": clamp, "in_hw": spread, "out_hw": tuple(out_hw)}
    out_shape = (out_hw[1], cout) if one_d else (out_hw[0], out_hw[1], cout)
    ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims, c_layout=c_weights.shape,
             c_dims=("out", "kh", "kw", "in"),
             params=kernel.size + (0 if bias is None else bias.size),
             macs=in_hw[0] * in_hw[1] * cin * cout * k[0] * k[1])
    t = ctx.add("conv2d", [t], out_shape, attrs, weights)
    return ctx.add_activation(func, t) if func else t


@handles("Conv1DTranspose")
def conv1d_transpose(ctx):
    return _conv_transpose(ctx, one_d=True)


@handles("Conv2DTranspose")
def conv2d_transpose(ctx):
    return _conv_transpose(ctx, one_d=False)


def window3d(in_dhw, k, strides, dilation, padding):
    out, pad = [], []
    for n, kk, s, d in zip(in_dhw, k, strides, dilation):
        o, p = window_1d(n, kk, s, d, padding)
        out.append(o)
        pad.append(p)
    return {"in": list(in_dhw), "out": out, "k": list(k), "stride": list(strides),
            "dil": list(dilation), "pad": pad}


@handles("Conv3D")
def conv3d(ctx):
    c = ctx.config
    ctx.channels_last()
    if c.get("groups", 1) != 1:
        ctx.unsupported("grouped convolution (groups > 1) is not supported yet")
    ws = ctx.weights()
    kernel, bias = ws[0], (ws[1] if c["use_bias"] else None)
    d, h, w, cin = ctx.in_shape
    k = as_pair(c["kernel_size"])
    dims = ("kd", "kh", "kw", "in", "out")
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, k + (cin, c["filters"]), dims)
    win = window3d((d, h, w), k, as_pair(c["strides"]), as_pair(c["dilation_rate"]),
                   c["padding"])
    cout = c["filters"]
    out_shape = tuple(win["out"]) + (cout,)
    clamp, func = ctx.activation(c["activation"])
    c_weights = np.ascontiguousarray(kernel.transpose(4, 0, 1, 2, 3))
    weights = {"kernel": c_weights}
    if bias is not None:
        weights["bias"] = bias
    ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims, c_layout=c_weights.shape,
             c_dims=("out", "kd", "kh", "kw", "in"),
             params=kernel.size + (0 if bias is None else bias.size),
             macs=int(np.prod(out_shape)) * int(np.prod(k)) * cin)
    t = ctx.add("conv3d", ctx.inputs, out_shape, {"window3d": win, "clamp": clamp}, weights)
    return ctx.add_activation(func, t) if func else t


def _pool3d(ctx, op):
    c = ctx.config
    ctx.channels_last()
    k = as_pair(c["pool_size"])
    win = window3d(ctx.in_shape[:3], k, as_pair(c["strides"] or c["pool_size"]), (1, 1, 1),
                   c["padding"])
    out_shape = tuple(win["out"]) + (ctx.in_shape[-1],)
    ctx.info(out_shape, macs=int(np.prod(out_shape)) * int(np.prod(k)))
    return ctx.add(op, ctx.inputs, out_shape, {"window3d": win, "clamp": CLAMPS["linear"]})


@handles("MaxPooling3D")
def max_pool3d(ctx):
    return _pool3d(ctx, "max_pool3d")


@handles("AveragePooling3D")
def avg_pool3d(ctx):
    return _pool3d(ctx, "avg_pool3d")


# Keras merge layer -> (IR op, func, how many inputs it takes: None = any)
MERGES = {"Subtract": ("binary", "sub", 2), "Average": ("binary", "avg", 2),
          "Multiply": ("binary", "mul", None), "Maximum": ("binary", "max", None),
          "Minimum": ("binary", "min", None)}


@handles(*MERGES)
def merge(ctx):
    op, func, arity = MERGES[ctx.cls]
    shapes = {ctx.graph.tensors[t].shape for t in ctx.inputs}
    if len(shapes) != 1:
        ctx.unsupported(f"{ctx.cls} of different shapes {sorted(shapes)} (broadcasting) is "
                        f"not supported yet")
    if arity and len(ctx.inputs) != arity:
        ctx.unsupported(f"{ctx.cls} of {len(ctx.inputs)} inputs; {arity} are supported")
    ctx.info(ctx.in_shape, macs=int(np.prod(ctx.in_shape)) * (len(ctx.inputs) - 1))
    t = ctx.inputs[0]
    for k, other in enumerate(ctx.inputs[1:]):  # Multiply/Maximum/Minimum associate
        last = k == len(ctx.inputs) - 2
        t = ctx.add(op, [t, other], ctx.in_shape, {"func": func, "clamp": CLAMPS["linear"]},
                    suffix="" if last else f"_part{k}")
    return t


@handles("Dense")
def dense(ctx):
    c = ctx.config
    ws = ctx.weights()
    kernel, bias = ws[0], (ws[1] if c["use_bias"] else None)
    fin, units = ctx.in_shape[-1], c["units"]
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (fin, units), ("in", "out"))
    out_shape = ctx.in_shape[:-1] + (units,)
    clamp, func = ctx.activation(c["activation"])
    weights = {"kernel": np.ascontiguousarray(kernel.T)}
    if bias is not None:
        weights["bias"] = bias
    batches = int(np.prod(ctx.in_shape[:-1], dtype=np.int64))
    info = ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=("in", "out"),
                    c_layout=(units, fin), c_dims=("out", "in"),
                    params=kernel.size + (0 if bias is None else bias.size),
                    macs=batches * fin * units)
    validate.dense_nd_warning(info)
    t = ctx.add("dense", ctx.inputs, out_shape, {"clamp": clamp}, weights)
    return ctx.add_activation(func, t) if func else t


def _pool(ctx, op, one_d):
    c = ctx.config
    ctx.channels_last()
    k = as_pair(c["pool_size"])
    strides = as_pair(c["strides"] or c["pool_size"])
    if one_d:
        steps, ch = ctx.in_shape
        in_hw, k, strides = (1, steps), (1,) + k, (1,) + strides
    else:
        h, w, ch = ctx.in_shape
        in_hw = (h, w)
    (oh, ow), attrs = window_attrs(in_hw, k, strides, (1, 1), c["padding"])
    out_shape = (ow, ch) if one_d else (oh, ow, ch)
    attrs.update(clamp=CLAMPS["linear"], in_hw=in_hw, out_hw=(oh, ow))
    ctx.info(out_shape, macs=oh * ow * ch * k[0] * k[1])
    return ctx.add(op, ctx.inputs, out_shape, attrs)


@handles("MaxPooling1D")
def max_pool1d(ctx):
    return _pool(ctx, "max_pool", True)


@handles("MaxPooling2D")
def max_pool2d(ctx):
    return _pool(ctx, "max_pool", False)


@handles("AveragePooling1D")
def avg_pool1d(ctx):
    return _pool(ctx, "avg_pool", True)


@handles("AveragePooling2D")
def avg_pool2d(ctx):
    return _pool(ctx, "avg_pool", False)


def _global_pool(ctx, op):
    ctx.channels_last()
    shape = ctx.in_shape
    in_hw = (1, int(np.prod(shape[:-1])))  # all positions in a row, 1-D to 3-D alike
    ch = shape[-1]
    keep = ctx.config.get("keepdims", False)
    out_shape = ((1,) * (len(shape) - 1) + (ch,)) if keep else (ch,)
    attrs = {"kernel": in_hw, "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
             "padding": "valid", "clamp": CLAMPS["linear"], "in_hw": in_hw,
             "out_hw": (1, 1)}
    ctx.info(out_shape, macs=in_hw[0] * in_hw[1] * ch)
    return ctx.add(op, ctx.inputs, out_shape, attrs)


@handles("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")
def global_max_pool(ctx):
    return _global_pool(ctx, "max_pool")


@handles("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D")
def global_avg_pool(ctx):
    return _global_pool(ctx, "mean")


@handles("Flatten")
def flatten(ctx):
    if len(ctx.in_shape) > 1:
        ctx.channels_last()
    out_shape = (int(np.prod(ctx.in_shape)),)
    ctx.info(out_shape)
    return ctx.add("reshape", ctx.inputs, out_shape)


@handles("Reshape")
def reshape(ctx):
    target = list(ctx.config["target_shape"])
    total = int(np.prod(ctx.in_shape))
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = total // known if known else 0
    if int(np.prod(target)) != total:
        ctx.unsupported(f"cannot reshape {ctx.in_shape} to {tuple(target)}")
    ctx.info(tuple(target))
    return ctx.add("reshape", ctx.inputs, tuple(target))


def _copy(ctx, out_shape, moves, fill=False):
    ctx.info(out_shape)
    return ctx.add("copy", ctx.inputs, out_shape, {"moves": moves, "fill": fill,
                                                   "out_size": int(np.prod(out_shape))})


def _pairs(value, n):
    """Keras's padding/cropping argument as n (before, after) pairs."""
    if isinstance(value, int):
        return [(value, value)] * n
    value = list(value)
    if n == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [tuple(value)]
    return [(v, v) if isinstance(v, int) else tuple(v) for v in value]


def _pad_or_crop(ctx, key, sign):
    ctx.channels_last()
    shape = ctx.in_shape
    pairs = _pairs(ctx.config[key], len(shape) - 1)
    out = tuple(d + sign * (a + b) for d, (a, b) in zip(shape[:-1], pairs)) + (shape[-1],)
    validate.check_output_shape(ctx.name, ctx.cls, shape, out)
    starts = [a for a, _ in pairs] + [0]
    zeros = [0] * len(shape)
    if sign > 0:  # padding: the input lands at `starts` in the output
        m = movement.pad_or_crop(shape, out, zeros, starts)
    else:         # cropping: the output is read from `starts` in the input
        m = movement.pad_or_crop(shape, out, starts, zeros)
    return _copy(ctx, out, [m], fill=sign > 0)


@handles("ZeroPadding1D", "ZeroPadding2D")
def zero_padding(ctx):
    return _pad_or_crop(ctx, "padding", +1)


@handles("Cropping1D", "Cropping2D")
def cropping(ctx):
    return _pad_or_crop(ctx, "cropping", -1)


@handles("UpSampling1D", "UpSampling2D")
def upsampling(ctx):
    c = ctx.config
    ctx.channels_last()
    size = c["size"]
    factors = (size,) if isinstance(size, int) else tuple(size)
    interpolation = c.get("interpolation", "nearest")
    if interpolation == "bilinear" and len(ctx.in_shape) == 3:
        h, w, ch = ctx.in_shape
        out = (h * factors[0], w * factors[1], ch)
        ctx.info(out)
        return ctx.add("resize_bilinear", ctx.inputs, out,
                       {"y": movement.bilinear_map(h, out[0]), "x": movement.bilinear_map(w, out[1])})
    if interpolation != "nearest":
        ctx.unsupported(f"interpolation='{interpolation}' is not supported yet; "
                        f"use 'nearest' (or 'bilinear' in 2-D)")
    out, moves = movement.upsample(ctx.in_shape, factors)
    return _copy(ctx, out, moves)


@handles("Permute")
def permute(ctx):
    out, moves = movement.permute(ctx.in_shape, tuple(ctx.config["dims"]))
    return _copy(ctx, out, moves)


@handles("RepeatVector")
def repeat_vector(ctx):
    out, moves = movement.repeat(ctx.in_shape, int(ctx.config["n"]))
    return _copy(ctx, out, moves)


@handles("Concatenate")
def concatenate(ctx):
    shapes = [ctx.graph.tensors[t].shape for t in ctx.inputs]
    axis = ctx.config.get("axis", -1)
    axis = axis - 1 if axis > 0 else axis % len(shapes[0])  # Keras counts the batch axis
    if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
           for s in shapes):
        ctx.unsupported(f"Concatenate of shapes {shapes} along axis {axis}")
    out, moves = movement.concatenate(shapes, axis)
    return _copy(ctx, out, moves)


@handles("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
         "GaussianDropout", "AlphaDropout", "ActivityRegularization")
def inference_identity(ctx):
    """Training-only layers: identity at inference, removed by a pass."""
    ctx.info(ctx.in_shape)
    return ctx.add("identity", ctx.inputs, ctx.in_shape)


@handles("Activation")
def activation_layer(ctx):
    clamp, func = ctx.activation(ctx.config["activation"])
    ctx.info(ctx.in_shape)
    if func:
        return ctx.add_activation(func, ctx.inputs[0], suffix="")
    return ctx.add("activation", ctx.inputs, ctx.in_shape,
                   {"func": "clamp", "clamp": clamp})


@handles("ReLU")
def relu_layer(ctx):
    c = ctx.config
    top = c.get("max_value")
    ctx.info(ctx.in_shape)
    if c.get("negative_slope") or c.get("threshold"):
        if top is not None:
            ctx.unsupported("ReLU with both max_value and negative_slope/threshold "
                            "is not supported yet")
        return ctx.add_activation("leaky_relu", ctx.inputs[0], suffix="",
                                  alpha=float(c.get("negative_slope") or 0.0),
                                  threshold=float(c.get("threshold") or 0.0))
    return ctx.add("activation", ctx.inputs, ctx.in_shape,
                   {"func": "clamp", "clamp": (0.0, None if top is None else float(top))})


@handles("LeakyReLU")
def leaky_relu_layer(ctx):
    c = ctx.config
    slope = c.get("negative_slope", c.get("alpha", 0.3))
    ctx.info(ctx.in_shape)
    return ctx.add_activation("leaky_relu", ctx.inputs[0], suffix="", alpha=float(slope))


@handles("PReLU")
def prelu_layer(ctx):
    alpha = ctx.weights()[0]  # the input's shape, with 1 on shared axes
    shape = ctx.in_shape
    if alpha.shape[-1] == shape[-1] and all(d == 1 for d in alpha.shape[:-1]):
        values = alpha.reshape(-1)                      # one per channel
    else:
        values = np.broadcast_to(alpha, shape).reshape(-1)  # one per element
    ctx.info(shape, params=alpha.size)
    return ctx.add("prelu", ctx.inputs, shape, {}, {"alpha": values.astype(np.float32)})


@handles("ELU")
def elu_layer(ctx):
    ctx.info(ctx.in_shape)
    return ctx.add_activation("elu", ctx.inputs[0], suffix="",
                              alpha=float(ctx.config.get("alpha", 1.0)))


@handles("Softmax")
def softmax_layer(ctx):
    axis = ctx.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, len(ctx.in_shape)):
        ctx.unsupported(f"softmax over axis {axis} is not supported; only the last axis")
    ctx.info(ctx.in_shape)
    return ctx.add("softmax", ctx.inputs, ctx.in_shape, {"axis": -1})


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
            raise ExportError(f"model input '{t.name}' has shape {tuple(t.shape)}; "
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
    return graph, infos


def load(path: str):
    return keras_file.load(path, supported_classes())
