"""Keras 3 op nodes that reduce or contract axes: mean/sum/max/min over
axes, matmul, einsum.

Reductions become the IR's `mean` / `max_pool` (one reduced block, the
existing global-pool kernels) or `reduce`; contractions become `matmul`
(the "NT" form: both operands with the contracted axes last, copied into
that order where they are not) or, with a constant operand, `dense`.
"""
from __future__ import annotations

import numpy as np

from . import movement
from .context import CLAMPS, Ref
from .ops_elementwise import constant, one_tensor, positional
from .ops_shape import norm_axis
from .registry import NUMPY, handler

REDUCE = {"Mean": "mean", "Sum": "sum", "Max": "max", "Min": "min", "Amax": "max",
          "Amin": "min"}
MAX_BATCH_LEVELS = 3


def prod(xs) -> int:
    return int(np.prod(list(xs), dtype=np.int64))


def permute(ctx, x: str, order) -> str:
    """x with its axes in `order` (a copy), or x itself if that is the order."""
    order = tuple(order)
    if order == tuple(range(len(order))):
        return x
    out, moves = movement.permute(ctx.shape(x), tuple(a + 1 for a in order))
    return ctx.add("copy", [x], out, {"moves": moves, "fill": False, "out_size": prod(out)},
                   suffix="_transposed")


def reshaped(ctx, x: str, shape, suffix) -> str:
    shape = tuple(int(d) for d in shape)
    return x if ctx.shape(x) == shape else ctx.add("reshape", [x], shape, suffix=suffix)


@handler(NUMPY, *REDUCE)
def reduce_op(ctx):
    x = one_tensor(ctx)
    c = ctx.config
    if c.get("initial") is not None:
        ctx.unsupported("a reduction with an initial value")
    shape = ctx.shape(x)
    rank = len(shape) + 1
    axis = c["axis"]
    if axis is None:
        ctx.unsupported("a reduction over every axis reduces the batch too; give the axes")
    axes = sorted({norm_axis(ctx, a, rank) for a in (axis if isinstance(axis, (list, tuple))
                                                        else [axis])})
    if 0 in axes:
        ctx.unsupported("a reduction over the batch axis")
    return reduce_axes(ctx, x, [a - 1 for a in axes], REDUCE[ctx.cls], bool(c["keepdims"]))


def reduce_axes(ctx, x: str, axes: list, func: str, keepdims: bool) -> str:
    """func over the given sample axes of x (sorted, distinct)."""
    shape = ctx.shape(x)
    out = (tuple(1 if k in axes else d for k, d in enumerate(shape)) if keepdims else
           tuple(d for k, d in enumerate(shape) if k not in axes))
    ctx.info(out, macs=prod(shape))
    if axes == list(range(axes[0], axes[-1] + 1)):  # one block: no copy
        a, b, c = prod(shape[:axes[0]]), prod(shape[axes[0]:axes[-1] + 1]), prod(shape[axes[-1] + 1:])
        src = x
    else:
        kept = [k for k in range(len(shape)) if k not in axes]
        src = permute(ctx, x, kept + axes)
        a, b, c = prod(shape[k] for k in kept), prod(shape[k] for k in axes), 1
    if a == 1 and func in ("mean", "max"):  # the global-pool kernels
        flat = reshaped(ctx, src, (b, c), "_rows")
        attrs = {"kernel": (1, b), "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
                 "padding": "valid", "clamp": CLAMPS["linear"], "in_hw": (1, b),
                 "out_hw": (1, 1)}
        y = ctx.add("mean" if func == "mean" else "max_pool", [flat], (c,), attrs,
                    suffix="_reduced")
    else:
        y = ctx.add("reduce", [src], (a, c) if a > 1 else (c,),
                    {"dims": (a, b, c), "func": func, "clamp": CLAMPS["linear"]},
                    suffix="_reduced")
    return ctx.add("reshape", [y], out)


# ---- contractions ---------------------------------------------------------

def matmul_node(ctx, a: str, bt: str, batch_a, batch_b, m, n, k) -> str:
    """matmul of a (batch_a..., m, k) and bt (batch_b..., n, k), numpy
    broadcasting of the batch axes; output (batch..., m, n)."""
    batch = tuple(int(d) for d in np.broadcast_shapes(tuple(batch_a), tuple(batch_b)))
    if len(batch) > MAX_BATCH_LEVELS:
        ctx.unsupported(f"a matmul over {len(batch)} batch axes (at most {MAX_BATCH_LEVELS})")
    levels = []
    pa, pb = list(batch_a), list(batch_b)
    pa, pb = [1] * (len(batch) - len(pa)) + pa, [1] * (len(batch) - len(pb)) + pb
    for i, count in enumerate(batch):
        sa = 0 if pa[i] == 1 and count > 1 else prod(pa[i + 1:]) * m * k
        sb = 0 if pb[i] == 1 and count > 1 else prod(pb[i + 1:]) * n * k
        levels.append((count, sa, sb, prod(batch[i + 1:]) * m * n))
    out = batch + (m, n)
    return ctx.add("matmul", [a, bt], out, {"m": m, "n": n, "k": k, "a_row": k, "b_row": k,
                                            "c_row": n, "batch": levels}, suffix="_matmul")


@handler(NUMPY, "Matmul")
def matmul_op(ctx):
    a, b = positional(ctx, 2)
    if not isinstance(a, Ref):
        ctx.unsupported("a matmul whose left operand is a constant; write it as "
                        "a Dense or transpose both sides")
    sa = ctx.shape(a.name)
    if len(sa) < 2 and isinstance(b, Ref):
        ctx.unsupported(f"a matmul of a vector per sample {sa}; give matrices")
    if not isinstance(b, Ref):
        w = constant(ctx, b)
        if w.ndim != 2 or w.shape[0] != sa[-1]:
            ctx.unsupported(f"a matmul of {sa} with a constant of shape {w.shape}; a "
                            f"(features, units) constant is supported")
        out = sa[:-1] + (w.shape[1],)
        ctx.info(out, macs=prod(out) * sa[-1], params=w.size)
        return ctx.add("dense", [a.name], out, {"clamp": CLAMPS["linear"]},
                       {"kernel": np.ascontiguousarray(w.T.astype(np.float32))})
    sb = ctx.shape(b.name)
    if len(sb) < 2 or sb[-2] != sa[-1]:
        ctx.unsupported(f"a matmul of shapes {sa} and {sb}")
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        ctx.unsupported(f"the batch axes of {sa} and {sb} do not broadcast")
    bt = permute(ctx, b.name, list(range(len(sb) - 2)) + [len(sb) - 1, len(sb) - 2])
    m, k, n = sa[-2], sa[-1], sb[-1]
    ctx.info(tuple(np.broadcast_shapes(sa[:-2], sb[:-2])) + (m, n),
             macs=prod(np.broadcast_shapes(sa[:-2], sb[:-2])) * m * n * k)
    y = matmul_node(ctx, a.name, bt, sa[:-2], sb[:-2], m, n, k)
    return ctx.add("reshape", [y], ctx.shape(y))


@handler(NUMPY, "Einsum")
def einsum_op(ctx):
    """A two-operand einsum whose sample letter leads every tensor operand
    and the output: a batched matmul (or a Dense, with a constant)."""
    spec = str(ctx.config["subscripts"]).replace(" ", "")
    if "->" not in spec or "." in spec:
        ctx.unsupported(f"einsum '{spec}': give explicit output subscripts, no '...'")
    lhs, out = spec.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or len(ctx.args) != 2:
        ctx.unsupported(f"einsum '{spec}' of {len(ctx.args)} operands; two are supported")
    ctx.kwargs.accept(*ctx.kwargs)
    a, b = ctx.args
    if not isinstance(a, Ref):
        a, b, terms = b, a, terms[::-1]
    if not isinstance(a, Ref):
        ctx.unsupported("an einsum of two constants")
    for t in terms + [out]:
        if len(set(t)) != len(t):
            ctx.unsupported(f"einsum '{spec}' repeats a letter in one term (a diagonal)")
    ta, tb = terms
    s = ta[0]
    if out[:1] != s or (isinstance(b, Ref) and tb[:1] != s):
        ctx.unsupported(f"einsum '{spec}': the batch letter '{s}' must lead every tensor "
                        f"and the output")
    sizes = {}
    for term, shape in ((ta[1:], ctx.shape(a.name)),
                        (tb[1:], ctx.shape(b.name)) if isinstance(b, Ref)
                        else (tb, constant(ctx, b).shape)):
        if len(term) != len(shape):
            ctx.unsupported(f"einsum '{spec}': term '{term}' does not match shape {shape}")
        for letter, d in zip(term, shape):
            if sizes.setdefault(letter, d) != d:
                ctx.unsupported(f"einsum '{spec}': letter '{letter}' has sizes "
                                f"{sizes[letter]} and {d}")
    A = ta[1:]
    B = tb[1:] if isinstance(b, Ref) else tb
    O = out[1:]
    if any(ch not in O and not (ch in A and ch in B) for ch in set(A + B)):
        ctx.unsupported(f"einsum '{spec}' sums an axis of one operand only")
    kk = [ch for ch in A if ch in B and ch not in O]
    bt = [ch for ch in O if ch in A and ch in B]
    mm = [ch for ch in O if ch in A and ch not in B]
    nn = [ch for ch in O if ch in B and ch not in A]
    m, n, k = prod(sizes[c] for c in mm), prod(sizes[c] for c in nn), prod(sizes[c] for c in kk)
    ctx.info(tuple(sizes[c] for c in O), macs=prod(sizes[c] for c in bt) * m * n * k)
    a2 = permute(ctx, a.name, [A.index(c) for c in bt + mm + kk])
    if not isinstance(b, Ref):
        if bt:
            ctx.unsupported(f"einsum '{spec}': a constant operand with batch letters")
        w = constant(ctx, b).transpose([B.index(c) for c in nn + kk]).reshape(n, k)
        flat = reshaped(ctx, a2, (m, k), "_rows")
        y = ctx.add("dense", [flat], (m, n), {"clamp": CLAMPS["linear"]},
                    {"kernel": np.ascontiguousarray(w.astype(np.float32))}, suffix="_dense")
    else:
        b2 = permute(ctx, b.name, [B.index(c) for c in bt + nn + kk])
        nb = prod(sizes[c] for c in bt)
        a3 = reshaped(ctx, a2, ((nb,) if bt else ()) + (m, k), "_rows")
        b3 = reshaped(ctx, b2, ((nb,) if bt else ()) + (n, k), "_rows")
        y = matmul_node(ctx, a3, b3, (nb,) if bt else (), (nb,) if bt else (), m, n, k)
    natural = bt + mm + nn
    y = reshaped(ctx, y, tuple(sizes[c] for c in natural), "_split")
    y = permute(ctx, y, [natural.index(c) for c in O])
    return ctx.add("reshape", [y], tuple(sizes[c] for c in O))
