"""Handlers of the layers keras.applications defines for its own models
(built into Keras, serialized under their keras.src.applications module):
ConvNeXt's LayerScale and StochasticDepth, InceptionResNetV2's
CustomScaleLayer."""
from __future__ import annotations

import numpy as np

from .ops_elementwise import affine, binary_tensors
from .registry import handler

CONVNEXT = "keras.src.applications.convnext"
INCEPTION_RESNET = "keras.src.applications.inception_resnet_v2"


@handler(CONVNEXT, "LayerScale")
def layer_scale(ctx):
    """x * gamma, gamma one value per channel: an affine."""
    ctx.config.accept("init_values")  # gamma's initial value; gamma is read
    (gamma,) = ctx.weights()
    if gamma.shape != (ctx.in_shape[-1],) or int(ctx.config["projection_dim"]) != gamma.size:
        ctx.unsupported(f"a gamma of shape {gamma.shape} on {ctx.in_shape}")
    ctx.info(ctx.in_shape, params=gamma.size, macs=int(np.prod(ctx.in_shape)))
    return affine(ctx, ctx.inputs[0], gamma, 0.0)


@handler(CONVNEXT, "StochasticDepth")
def stochastic_depth(ctx):
    """Drops whole residual branches in training only: identity at inference."""
    ctx.config.accept(*ctx.config)
    ctx.info(ctx.in_shape)
    return ctx.add("identity", ctx.inputs, ctx.in_shape)


@handler(INCEPTION_RESNET, "CustomScaleLayer")
def custom_scale(ctx):
    """inputs[0] + inputs[1] * scale."""
    if len(ctx.inputs) != 2:
        ctx.unsupported(f"{len(ctx.inputs)} inputs; [shortcut, residual] expected")
    scale = float(ctx.config["scale"])
    ctx.info(ctx.in_shape, macs=int(np.prod(ctx.in_shape)))
    scaled = ctx.add("batchnorm", [ctx.inputs[1]], ctx.shape(ctx.inputs[1]),
                     {"clamp": (None, None)},
                     {"scale": np.full(ctx.shape(ctx.inputs[1])[-1], scale, np.float32),
                      "offset": np.zeros(ctx.shape(ctx.inputs[1])[-1], np.float32)},
                     suffix="_scaled")
    return binary_tensors(ctx, "add", [ctx.inputs[0], scaled])
