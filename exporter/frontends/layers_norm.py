"""Handlers of LayerNormalization, RMSNormalization, GroupNormalization and
UnitNormalization: the IR's `norm` over a (A, B, C, D) view of the tensor,
statistics over B and D for every (a, c).

Keras's formulas (keras/src/ops/nn.py), which the modes reproduce:
- LayerNormalization: (x - mean) * rsqrt(var + eps) * gamma + beta;
  with rms_scaling=True Keras computes x * rsqrt(var + eps) * gamma (the
  variance still about the mean, x not centred): mode "rms_scaling";
- RMSNormalization: x * rsqrt(mean(x^2) + eps) * scale: mode "rms";
- GroupNormalization: LayerNormalization's formula per group of channels;
- UnitNormalization: x * min(rsqrt(sum(x^2)), 1 / 1e-12): mode "l2".
"""
from __future__ import annotations

import numpy as np

from .ops_shape import norm_axis
from .registry import layer


def prod(xs) -> int:
    return int(np.prod(list(xs), dtype=np.int64))


def axes_of(ctx, axis) -> list:
    """Keras axes (batch = 0) as sorted sample axes."""
    rank = len(ctx.in_shape) + 1
    axes = sorted({norm_axis(ctx, a, rank) for a in (axis if isinstance(axis, (list, tuple))
                                                        else [axis])})
    if 0 in axes:
        ctx.unsupported("normalization over the batch axis")
    return [a - 1 for a in axes]


def dims_for(ctx, axes: list) -> tuple:
    """(A, B, C, D) with the normalized axes as B (one block) then D (a
    block that ends the shape), or refuse."""
    shape = ctx.in_shape
    n = len(shape)
    blocks, start = [], None
    for k in range(n + 1):
        inside = k < n and k in axes
        if inside and start is None:
            start = k
        elif not inside and start is not None:
            blocks.append((start, k))
            start = None
    if len(blocks) == 1 and blocks[0][1] == n:      # [A][D]
        (s, e), = blocks
        return prod(shape[:s]), 1, 1, prod(shape[s:])
    if len(blocks) == 1:                            # [A][B][C]
        (s, e), = blocks
        return prod(shape[:s]), prod(shape[s:e]), prod(shape[e:]), 1
    if len(blocks) == 2 and blocks[1][1] == n:      # [A][B][C][D]
        (s1, e1), (s2, _) = blocks
        return prod(shape[:s1]), prod(shape[s1:e1]), prod(shape[e1:s2]), prod(shape[s2:])
    ctx.unsupported(f"normalization over axes {[a + 1 for a in axes]} of (None,) + {shape}: "
                    f"the normalized axes must form at most two blocks, the second at the end")


def norm_node(ctx, dims, mode, eps, gamma=None, beta=None, param_index=(0, 0, 1)) -> str:
    weights = {}
    for key, v in (("gamma", gamma), ("beta", beta)):
        if v is not None:
            weights[key] = np.ascontiguousarray(np.asarray(v, np.float32).ravel())
    if not np.isfinite(eps) or eps < 0:
        ctx.unsupported(f"epsilon={eps}")
    size = int(np.prod(ctx.in_shape))
    ctx.info(ctx.in_shape, params=sum(w.size for w in weights.values()), macs=4 * size)
    return ctx.add("norm", ctx.inputs, ctx.in_shape,
                   {"dims": tuple(int(d) for d in dims), "mode": mode, "epsilon": float(eps),
                    "param_index": tuple(int(s) for s in param_index)}, weights)


@layer("LayerNormalization")
def layer_normalization(ctx):
    c = ctx.config
    axes = axes_of(ctx, c["axis"])
    dims = dims_for(ctx, axes)
    rms = bool(c["rms_scaling"])
    ws = ctx.weights()
    gamma = ws.pop(0) if (c["scale"] or rms) else None
    beta = ws.pop(0) if (c["center"] and not rms) else None
    want = tuple(ctx.in_shape[a] for a in axes)
    for w in (gamma, beta):
        if w is not None and w.shape != want:
            ctx.unsupported(f"stores a gamma/beta of shape {w.shape}; its axes imply {want}")
    _, _, _, d = dims
    return norm_node(ctx, dims, "rms_scaling" if rms else "layer", c["epsilon"], gamma, beta,
                     (d, 0, 1))


@layer("RMSNormalization")
def rms_normalization(ctx):
    c = ctx.config
    axes = axes_of(ctx, c["axis"])
    dims = dims_for(ctx, axes)
    (scale,) = ctx.weights()
    want = tuple(ctx.in_shape[a] for a in axes)
    if scale.shape != want and scale.shape != (ctx.in_shape[-1],):
        ctx.unsupported(f"stores a scale of shape {scale.shape}; its axes imply {want}")
    eps = c["epsilon"] if c["epsilon"] is not None else 1e-7  # keras.config.epsilon()
    return norm_node(ctx, dims, "rms", eps, scale, None, (dims[3], 0, 1))


@layer("GroupNormalization")
def group_normalization(ctx):
    c = ctx.config
    if norm_axis(ctx, c["axis"], len(ctx.in_shape) + 1) != len(ctx.in_shape):
        ctx.unsupported(f"groups along axis {c['axis']}; only the channel (last) axis")
    channels = ctx.in_shape[-1]
    groups = channels if c["groups"] == -1 else int(c["groups"])
    if groups <= 0 or channels % groups:
        ctx.unsupported(f"{groups} groups do not divide {channels} channels")
    ws = ctx.weights()
    gamma = ws.pop(0) if c["scale"] else None
    beta = ws.pop(0) if c["center"] else None
    per = channels // groups
    dims = (1, prod(ctx.in_shape[:-1]), groups, per)
    return norm_node(ctx, dims, "layer", c["epsilon"], gamma, beta, (0, per, 1))


@layer("UnitNormalization")
def unit_normalization(ctx):
    axes = axes_of(ctx, ctx.config["axis"])
    return norm_node(ctx, dims_for(ctx, axes), "l2", 1e-12)
