"""Handlers of the pooling layers, 1-D to 3-D, local and global."""
from __future__ import annotations

import numpy as np

from .ops_linalg import reduce_axes
from .geometry import as_pair, window3d, window_attrs
from .context import CLAMPS
from .registry import layer


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


@layer("MaxPooling1D")
def max_pool1d(ctx):
    return _pool(ctx, "max_pool", True)


@layer("MaxPooling2D")
def max_pool2d(ctx):
    return _pool(ctx, "max_pool", False)


@layer("AveragePooling1D")
def avg_pool1d(ctx):
    return _pool(ctx, "avg_pool", True)


@layer("AveragePooling2D")
def avg_pool2d(ctx):
    return _pool(ctx, "avg_pool", False)


def _global_pool(ctx, op):
    shape = ctx.in_shape
    if ctx.config.get("data_format", "channels_last") == "channels_first":
        # channels first: axis 0 holds the channels, the rest is pooled
        return reduce_axes(ctx, ctx.inputs[0], list(range(1, len(shape))),
                           "mean" if op == "mean" else "max", bool(ctx.config["keepdims"]))
    in_hw = (1, int(np.prod(shape[:-1])))  # all positions in a row, 1-D to 3-D alike
    ch = shape[-1]
    keep = ctx.config.get("keepdims", False)
    out_shape = ((1,) * (len(shape) - 1) + (ch,)) if keep else (ch,)
    attrs = {"kernel": in_hw, "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
             "padding": "valid", "clamp": CLAMPS["linear"], "in_hw": in_hw,
             "out_hw": (1, 1)}
    ctx.info(out_shape, macs=in_hw[0] * in_hw[1] * ch)
    return ctx.add(op, ctx.inputs, out_shape, attrs)


@layer("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")
def global_max_pool(ctx):
    return _global_pool(ctx, "max_pool")


@layer("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D")
def global_avg_pool(ctx):
    return _global_pool(ctx, "mean")


def _pool3d(ctx, op):
    c = ctx.config
    ctx.channels_last()
    k = as_pair(c["pool_size"])
    win = window3d(ctx.in_shape[:3], k, as_pair(c["strides"] or c["pool_size"]), (1, 1, 1),
                   c["padding"])
    out_shape = tuple(win["out"]) + (ctx.in_shape[-1],)
    ctx.info(out_shape, macs=int(np.prod(out_shape)) * int(np.prod(k)))
    return ctx.add(op, ctx.inputs, out_shape, {"window3d": win, "clamp": CLAMPS["linear"]})


@layer("MaxPooling3D")
def max_pool3d(ctx):
    return _pool3d(ctx, "max_pool3d")


@layer("AveragePooling3D")
def avg_pool3d(ctx):
    return _pool3d(ctx, "avg_pool3d")
