"""Handlers of Dense, normalization/affine layers, activations and shape-only
layers."""
from __future__ import annotations

import numpy as np

from .. import validate
from .context import with_bias
from .registry import layer


@layer("Dense")
def dense(ctx):
    c = ctx.config
    kernel, bias = ctx.kernel_and_bias()
    fin, units = ctx.in_shape[-1], c["units"]
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (fin, units), ("in", "out"))
    out_shape = ctx.in_shape[:-1] + (units,)
    clamp, func = ctx.activation(c["activation"])
    weights = with_bias({"kernel": np.ascontiguousarray(kernel.T)}, bias)
    batches = int(np.prod(ctx.in_shape[:-1], dtype=np.int64))
    info = ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=("in", "out"),
                    c_layout=(units, fin), c_dims=("out", "in"),
                    params=kernel.size + (0 if bias is None else bias.size),
                    macs=batches * fin * units)
    producer = ctx.graph.producer(ctx.inputs[0])
    if producer is None or producer.op not in ("rnn", "embedding"):  # per step is the point there
        validate.dense_nd_warning(info)
    return ctx.add_then_activation("dense", ctx.inputs, out_shape, {"clamp": clamp}, weights, func)


@layer("BatchNormalization")
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


def _affine(ctx, scale, offset):
    """y = scale·x + offset per channel: the IR's batchnorm op."""
    ch = ctx.in_shape[-1]
    a = np.broadcast_to(np.asarray(scale, np.float32).ravel(), (ch,)).astype(np.float32)
    b = np.broadcast_to(np.asarray(offset, np.float32).ravel(), (ch,)).astype(np.float32)
    validate.check_finite(ctx.name, ctx.cls, [a, b])
    ctx.info(ctx.in_shape, macs=int(np.prod(ctx.in_shape)))
    return ctx.add("batchnorm", ctx.inputs, ctx.in_shape, {}, {"scale": a, "offset": b})


@layer("Rescaling")
def rescaling(ctx):
    scale, offset = ctx.config["scale"], ctx.config["offset"]
    if np.size(scale) not in (1, ctx.in_shape[-1]) or np.size(offset) not in (1, ctx.in_shape[-1]):
        ctx.unsupported("Rescaling with a scale/offset that is neither scalar nor per channel")
    return _affine(ctx, scale, offset)


@layer("Normalization")
def normalization(ctx):
    axis = ctx.config.get("axis")
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    if axis not in ((-1,), (len(ctx.in_shape),), (None,), ()):
        ctx.unsupported(f"Normalization over axis {axis}; only the last (channel) axis")
    ctx.config.accept("mean", "variance")  # the layer's mean/variance are read below
    mean = np.asarray(ctx.layer.mean, np.float64).ravel()
    std = np.maximum(np.sqrt(np.asarray(ctx.layer.variance, np.float64).ravel()), 1e-7)
    if ctx.config.get("invert"):
        return _affine(ctx, std, mean)
    return _affine(ctx, 1.0 / std, -mean / std)


@layer("Flatten")
def flatten(ctx):
    if len(ctx.in_shape) > 1:
        ctx.channels_last()
    out_shape = (int(np.prod(ctx.in_shape)),)
    ctx.info(out_shape)
    return ctx.add("reshape", ctx.inputs, out_shape)


@layer("Reshape")
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


@layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
         "GaussianDropout", "AlphaDropout", "ActivityRegularization")
def inference_identity(ctx):
    """Training-only layers: identity at inference, removed by a pass."""
    ctx.config.accept(*ctx.config)  # rate, noise_shape, stddev...: training only
    ctx.info(ctx.in_shape)
    return ctx.add("identity", ctx.inputs, ctx.in_shape)


@layer("Activation")
def activation_layer(ctx):
    clamp, func = ctx.activation(ctx.config["activation"])
    ctx.info(ctx.in_shape)
    if func:
        return ctx.add_activation(func, ctx.inputs[0], suffix="")
    return ctx.add("activation", ctx.inputs, ctx.in_shape,
                   {"func": "clamp", "clamp": clamp})


@layer("ReLU")
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


@layer("LeakyReLU")
def leaky_relu_layer(ctx):
    c = ctx.config
    slope = c.get("negative_slope", c.get("alpha", 0.3))
    ctx.info(ctx.in_shape)
    return ctx.add_activation("leaky_relu", ctx.inputs[0], suffix="", alpha=float(slope))


@layer("PReLU")
def prelu_layer(ctx):
    ctx.config.accept("shared_axes")  # visible in alpha's shape
    alpha = ctx.weights()[0]  # the input's shape, with 1 on shared axes
    shape = ctx.in_shape
    if alpha.shape[-1] == shape[-1] and all(d == 1 for d in alpha.shape[:-1]):
        values = alpha.reshape(-1)                      # one per channel
    else:
        values = np.broadcast_to(alpha, shape).reshape(-1)  # one per element
    ctx.info(shape, params=alpha.size)
    return ctx.add("prelu", ctx.inputs, shape, {}, {"alpha": values.astype(np.float32)})


@layer("ELU")
def elu_layer(ctx):
    ctx.info(ctx.in_shape)
    return ctx.add_activation("elu", ctx.inputs[0], suffix="",
                              alpha=float(ctx.config.get("alpha", 1.0)))


@layer("Softmax")
def softmax_layer(ctx):
    axis = ctx.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, len(ctx.in_shape)):
        ctx.unsupported(f"softmax over axis {axis} is not supported; only the last axis")
    ctx.info(ctx.in_shape)
    return ctx.add("softmax", ctx.inputs, ctx.in_shape, {"axis": -1})
