"""Handlers of the pooling layers, 1-D to 3-D, local and global."""
from __future__ import annotations

import numpy as np

from .geometry import as_pair, window3d, window_attrs
from .keras import CLAMPS, handles


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
