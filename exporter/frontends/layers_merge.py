"""Handlers of the layers that combine or move tensors: the merges, padding,
cropping, upsampling, Permute, RepeatVector, Concatenate."""
from __future__ import annotations

import numpy as np

from .. import validate
from . import movement
from .ops_elementwise import binary_tensors
from .registry import layer


# Keras merge layer -> (binary func, how many inputs it takes: None = any).
# Inputs of different shapes broadcast as NumPy does (Keras expands the
# lower-rank ones at axis 1, which per sample is NumPy's leading 1s).
MERGES = {"Add": ("add", None), "Subtract": ("sub", 2), "Average": ("avg", 2),
          "Multiply": ("mul", None), "Maximum": ("max", None), "Minimum": ("min", None)}


@layer(*MERGES)
def merge(ctx):
    func, arity = MERGES[ctx.cls]
    if arity and len(ctx.inputs) != arity:
        ctx.unsupported(f"{ctx.cls} of {len(ctx.inputs)} inputs; {arity} are supported")
    if func == "avg" and len(ctx.inputs) != 2:
        ctx.unsupported("Average of more than two inputs")
    return binary_tensors(ctx, func, list(ctx.inputs))


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


@layer("ZeroPadding1D", "ZeroPadding2D")
def zero_padding(ctx):
    return _pad_or_crop(ctx, "padding", +1)


@layer("Cropping1D", "Cropping2D")
def cropping(ctx):
    return _pad_or_crop(ctx, "cropping", -1)


@layer("UpSampling1D", "UpSampling2D")
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


@layer("Permute")
def permute(ctx):
    out, moves = movement.permute(ctx.in_shape, tuple(ctx.config["dims"]))
    return _copy(ctx, out, moves)


@layer("RepeatVector")
def repeat_vector(ctx):
    out, moves = movement.repeat(ctx.in_shape, int(ctx.config["n"]))
    return _copy(ctx, out, moves)


@layer("Concatenate")
def concatenate(ctx):
    shapes = [ctx.graph.tensors[t].shape for t in ctx.inputs]
    axis = ctx.config.get("axis", -1)
    axis = axis - 1 if axis > 0 else axis % len(shapes[0])  # Keras counts the batch axis
    if any(len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]
           for s in shapes):
        ctx.unsupported(f"Concatenate of shapes {shapes} along axis {axis}")
    out, moves = movement.concatenate(shapes, axis)
    return _copy(ctx, out, moves)
