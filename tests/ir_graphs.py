"""Hand-built IR graphs around the binary (broadcasting), reduce and matmul
ops, with fixed seeded weights: what the Keras frontend will lower an
attention block, a squeeze-and-excitation block and op nodes with constants
to, built here without it so the stages below the frontend are tested on
their own."""
from __future__ import annotations

import numpy as np

from exporter import ir
from exporter.frontends import movement

NO_CLAMP = (None, None)


class Builder:
    def __init__(self, name, seed):
        self.g = ir.Graph(name)
        self.rng = np.random.default_rng(seed)

    def input(self, name, shape):
        name = self.g.add_tensor(name, shape).name
        self.g.inputs.append(name)
        return name

    def node(self, op, inputs, shape, attrs=None, weights=None, name=None):
        t = self.g.add_tensor(name or op, shape).name
        self.g.add_node(ir.Node(t, op, list(inputs), [t], dict(attrs or {}),
                                {k: np.asarray(v, np.float32) for k, v in (weights or {}).items()},
                                layer=t, keras_class=op))
        return t

    def dense(self, x, units, clamp=NO_CLAMP, scale=None):
        n_in = self.g.tensors[x].shape[-1]
        w = self.rng.normal(0, scale or n_in ** -0.5, (units, n_in))
        b = self.rng.normal(0, 0.1, units)
        shape = self.g.tensors[x].shape[:-1] + (units,)
        return self.node("dense", [x], shape, {"clamp": clamp}, {"kernel": w, "bias": b})

    def conv3x3(self, x, out_c, clamp=NO_CLAMP):
        h, w, c = self.g.tensors[x].shape
        attrs = {"kernel": (3, 3), "strides": (1, 1), "dilation": (1, 1), "pad": (1, 1),
                 "padding": "same", "in_hw": (h, w), "out_hw": (h, w), "clamp": clamp}
        kernel = self.rng.normal(0, (9 * c) ** -0.5, (out_c, 3, 3, c))
        return self.node("conv2d", [x], (h, w, out_c), attrs,
                         {"kernel": kernel, "bias": self.rng.normal(0, 0.1, out_c)})

    def binary(self, func, a, b=None, const=None, const_first=False, clamp=NO_CLAMP, shape=None):
        shapes = [self.g.tensors[a].shape,
                  self.g.tensors[b].shape if b is not None else np.shape(const)]
        attrs = {"func": func, "clamp": clamp}
        weights = {}
        if const is not None:
            attrs["const_first"] = const_first
            weights["const"] = const
        out = shape or np.broadcast_shapes(*shapes)
        return self.node("binary", [a] + ([b] if b is not None else []), out, attrs, weights,
                         name=f"{func}")

    def reduce(self, func, x, dims, shape, clamp=NO_CLAMP):
        return self.node("reduce", [x], shape, {"func": func, "dims": dims, "clamp": clamp},
                         name=f"reduce_{func}")

    def activation(self, func, x):
        return self.node("activation", [x], self.g.tensors[x].shape, {"func": func}, name=func)

    def softmax(self, x):
        return self.node("softmax", [x], self.g.tensors[x].shape)

    def permute(self, x, view, dims):
        """The Keras Permute `dims` (1-based) of x viewed with shape `view`."""
        out_shape, moves = movement.permute(view, dims)
        return self.node("copy", [x], out_shape, {"moves": moves, "fill": False,
                                                  "out_size": int(np.prod(out_shape))},
                         name="transpose")


def attention(t=16, d=24, heads=2, dk=8, seed=0, b=None):
    """x (T, D) -> Q, K, V dense -> Q * 1/sqrt(dk) -> scores (H, T, S) =
    matmul(Q, K) -> softmax -> V^T (H, dk, S) copy -> matmul(P, V^T) (T, H
    dk) -> dense back to D -> + x -> mean over T -> dense -> softmax, as
    Keras's MultiHeadAttention computes it (query scaled before the dot
    product)."""
    b = b or Builder("attention", seed)
    x = b.input("x", (t, d))
    q, k, v = (b.dense(x, heads * dk) for _ in range(3))
    q = b.binary("mul", q, const=np.float32(1.0 / np.sqrt(dk)))
    scores = b.node("matmul", [q, k], (heads, t, t), {
        "m": t, "n": t, "k": dk, "a_row": heads * dk, "b_row": heads * dk, "c_row": t,
        "batch": [(heads, dk, dk, t * t)]}, name="scores")
    p = b.softmax(scores)
    vt = b.permute(v, (t, heads, dk), (2, 3, 1))
    o = b.node("matmul", [p, vt], (t, heads * dk), {
        "m": t, "n": dk, "k": t, "a_row": t, "b_row": t, "c_row": heads * dk,
        "batch": [(heads, t * t, dk * t, dk)]}, name="context")
    y = b.binary("add", b.dense(o, d), x)
    pooled = b.reduce("mean", y, (1, t, d), (d,))
    b.g.outputs += [b.softmax(b.dense(pooled, 5))]
    return b.g


def squeeze_excite(h=6, w=5, c=12, seed=1, b=None):
    """conv -> relu, squeeze (mean) -> dense relu -> dense -> sigmoid,
    excite x * s (C,) broadcast over (H, W), then hard-swish written with
    op nodes: y * relu6(y + 3) * (1/6), a per-channel constant bias, and a
    max over H of the result."""
    b = b or Builder("se", seed)
    x = b.input("x", (h, w, c))
    y = b.conv3x3(x, c, clamp=(0.0, None))
    s = b.reduce("mean", y, (1, h * w, c), (c,))
    s = b.activation("sigmoid", b.dense(b.dense(s, c // 4, clamp=(0.0, None)), c))
    y = b.binary("mul", y, s)
    t = b.binary("add", y, const=np.float32(3.0), clamp=(0.0, 6.0))
    y = b.binary("mul", b.binary("mul", y, t), const=np.float32(1.0 / 6.0))
    y = b.binary("add", y, const=b.rng.normal(0, 0.3, c).astype(np.float32))
    b.g.outputs += [b.reduce("max", y, (1, h, w * c), (w, c))]
    return b.g


def broadcasts(seed=2, b=None):
    """Every func of binary on every kind of broadcast, the constant on
    either side, and the reductions, on two inputs a (4, 5, 6), b (1, 5, 1);
    the divisor kept away from zero (sigmoid + 0.5)."""
    bl = b or Builder("broadcasts", seed)
    a = bl.input("a", (4, 5, 6))
    b = bl.input("b", (1, 5, 1))
    s = bl.binary("add", bl.activation("sigmoid", b), const=np.float32(0.5))   # (1, 5, 1)
    ab = bl.binary("sub", a, b)                                                # both ways
    r = bl.binary("div", ab, s)                                                # (4, 5, 6) / (1, 5, 1)
    r = bl.binary("max", r, const=np.float32([0.2, -0.1, 0.0, 0.3, -0.4, 0.1]))
    r = bl.binary("sub", r, const=np.float32(1.5), const_first=True)            # 1.5 - r
    m = bl.binary("mul", s, r)                                                 # small one first
    col = bl.reduce("mean", a, (4, 5, 6), (4, 6))                              # (4, 6)
    lo = bl.binary("min", m, bl.reduce("sum", col, (4, 1, 6), (4, 1, 6)))      # (4, 5, 6) vs (4, 1, 6)
    q = bl.binary("div", lo, const=np.float32(4.0))                            # x / 4 -> x * 0.25
    inv = bl.binary("div", bl.binary("add", s, const=np.float32(1.0)), const=np.float32(2.0),
                    const_first=True)                                          # 2 / (s + 1)
    avg = bl.binary("avg", q, inv)
    # a (6,) vector against (4, 5, 6): rank mismatch, then a two-level matmul
    v = bl.reduce("min", bl.reduce("max", avg, (4, 5, 6), (4, 6)), (1, 4, 6), (6,))
    out = bl.binary("add", avg, v, clamp=(-1.0, None))
    gram = bl.node("matmul", [out, out], (4, 5, 5), {
        "m": 5, "n": 5, "k": 6, "a_row": 6, "b_row": 6, "c_row": 5,
        "batch": [(2, 60, 60, 50), (2, 30, 30, 25)]}, name="gram")
    bl.g.outputs += [gram, avg]
    return bl.g


def combined(seed=0):
    """The three graphs side by side in one (4 inputs, 4 outputs): one
    folder with every new kernel and call, for the compile tests."""
    b = Builder("combined", seed)
    for make in (attention, squeeze_excite, broadcasts):
        make(b=b)
    return b.g
