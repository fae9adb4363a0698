"""Handlers of the convolution layers: Conv1D/2D/3D, DepthwiseConv2D,
SeparableConv1D/2D, Conv1D/2DTranspose."""
from __future__ import annotations

import numpy as np

from .. import validate
from . import movement
from .geometry import as_pair, window3d, window_attrs
from .context import CLAMPS, LayerContext, with_bias
from .registry import layer


def _conv(ctx: LayerContext, one_d: bool):
    c = ctx.config
    ctx.channels_last()
    if c.get("groups", 1) != 1:
        ctx.unsupported("grouped convolution (groups > 1) is not supported yet")
    kernel, bias = ctx.kernel_and_bias()
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
    weights = with_bias({"kernel": np.ascontiguousarray(c_weights)}, bias)
    params = kernel.size + (0 if bias is None else bias.size)
    info = ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims,
                    c_layout=c_weights.shape, c_dims=("out", "kh", "kw", "in"),
                    params=params, macs=oh * ow * cout * k[0] * k[1] * cin)
    if one_d:
        validate.conv1d_warnings(info)
    return ctx.add_then_activation("conv2d", ctx.inputs, out_shape, attrs, weights, func)


@layer("Conv1D")
def conv1d(ctx):
    return _conv(ctx, one_d=True)


@layer("Conv2D")
def conv2d(ctx):
    return _conv(ctx, one_d=False)


@layer("DepthwiseConv2D")
def depthwise_conv2d(ctx):
    c = ctx.config
    ctx.channels_last()
    kernel, bias = ctx.kernel_and_bias()
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
    weights = with_bias({"kernel": np.ascontiguousarray(c_weights)}, bias)
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
    pointwise = with_bias({"kernel": np.ascontiguousarray(pk.reshape(cin * mult, cout).T[:, None, None, :])}, bias)
    ctx.info(out_shape, kernel_shape=dk.shape, kernel_dims=("kh", "kw", "in", "mult")[-dk.ndim:],
             c_layout=depthwise["kernel"].shape, c_dims=("1", "kh", "kw", "in·mult"),
             params=dk.size + pk.size + (0 if bias is None else bias.size),
             macs=oh * ow * cin * mult * (k[0] * k[1] + cout))
    t = ctx.add("depthwise_conv2d", ctx.inputs, mid_shape, attrs, depthwise, suffix="_depthwise")
    point_attrs = {"kernel": (1, 1), "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
                   "padding": "valid", "clamp": clamp, "in_hw": (oh, ow), "out_hw": (oh, ow)}
    return ctx.add_then_activation("conv2d", [t], out_shape, point_attrs, pointwise, func)


@layer("SeparableConv1D")
def separable_conv1d(ctx):
    return _separable(ctx, one_d=True)


@layer("SeparableConv2D")
def separable_conv2d(ctx):
    return _separable(ctx, one_d=False)


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
    kernel, bias = ctx.kernel_and_bias()
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
    weights = with_bias({"kernel": c_weights}, bias)
    clamp, func = ctx.activation(c["activation"])
    attrs = {"kernel": k, "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
             "padding": "valid", "clamp": clamp, "in_hw": spread, "out_hw": tuple(out_hw)}
    out_shape = (out_hw[1], cout) if one_d else (out_hw[0], out_hw[1], cout)
    ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims, c_layout=c_weights.shape,
             c_dims=("out", "kh", "kw", "in"),
             params=kernel.size + (0 if bias is None else bias.size),
             macs=in_hw[0] * in_hw[1] * cin * cout * k[0] * k[1])
    return ctx.add_then_activation("conv2d", [t], out_shape, attrs, weights, func)


@layer("Conv1DTranspose")
def conv1d_transpose(ctx):
    return _conv_transpose(ctx, one_d=True)


@layer("Conv2DTranspose")
def conv2d_transpose(ctx):
    return _conv_transpose(ctx, one_d=False)


@layer("Conv3D")
def conv3d(ctx):
    c = ctx.config
    ctx.channels_last()
    if c.get("groups", 1) != 1:
        ctx.unsupported("grouped convolution (groups > 1) is not supported yet")
    kernel, bias = ctx.kernel_and_bias()
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
    weights = with_bias({"kernel": c_weights}, bias)
    ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=dims, c_layout=c_weights.shape,
             c_dims=("out", "kd", "kh", "kw", "in"),
             params=kernel.size + (0 if bias is None else bias.size),
             macs=int(np.prod(out_shape)) * int(np.prod(k)) * cin)
    return ctx.add_then_activation("conv3d", ctx.inputs, out_shape, {"window3d": win, "clamp": clamp}, weights, func)
