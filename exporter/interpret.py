"""A numpy float interpreter of the IR.

It gives every intermediate tensor, including those Keras never exposes
(a conv's output before a split-off sigmoid), so calibration sees exactly the
tensors the C code will hold.  Tests also use it to check the lowering
against Keras independently of the C code.
"""
from __future__ import annotations

import numpy as np

from .ir import check_node, check_norm, matmul_offsets


def _pad(x, attrs, value):
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["strides"], attrs["dilation"]
    (oh, ow), (pt, pl) = attrs["out_hw"], attrs["pad"]
    need_h = (oh - 1) * sh + (kh - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw - 1) * dw + 1
    h, w = x.shape[1:3]
    pb, pr = max(need_h - h - pt, 0), max(need_w - w - pl, 0)
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _taps(xp, attrs):
    """Yield (ky, kx, view of the input pixels that tap sees per output)."""
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["strides"], attrs["dilation"]
    oh, ow = attrs["out_hw"]
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, xp[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw, :]


def _clamp(y, clamp):
    lo, hi = clamp
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return y


def _as_nhwc(x, attrs):
    h, w = attrs["in_hw"]
    return x.reshape(x.shape[0], h, w, -1)


def conv2d(node, x):
    a = node.attrs
    xp = _pad(_as_nhwc(x, a), a, 0.0).astype(np.float64)
    w = node.weights["kernel"].astype(np.float64)  # OHWI
    y = 0.0
    for ky, kx, view in _taps(xp, a):
        y = y + view @ w[:, ky, kx, :].T
    if "bias" in node.weights:
        y = y + node.weights["bias"]
    return _clamp(y, a["clamp"])


def _taps3d(x, win, value):
    """Yield (kz, ky, kx, view) over a padded NDHWC batch, as _taps in 2-D."""
    pads = [(0, 0)]
    for n, o, k, s, d, p in zip(win["in"], win["out"], win["k"], win["stride"], win["dil"],
                                win["pad"]):
        need = (o - 1) * s + (k - 1) * d + 1
        pads.append((p, max(need - n - p, 0)))
    xp = np.pad(x, pads + [(0, 0)], constant_values=value)
    (od, oh, ow), (sd, sh, sw), (dd, dh, dw) = win["out"], win["stride"], win["dil"]
    for kz in range(win["k"][0]):
        for ky in range(win["k"][1]):
            for kx in range(win["k"][2]):
                z, y, x0 = kz * dd, ky * dh, kx * dw
                yield kz, ky, kx, xp[:, z:z + (od - 1) * sd + 1:sd, y:y + (oh - 1) * sh + 1:sh,
                                     x0:x0 + (ow - 1) * sw + 1:sw, :]


def conv3d(node, x):
    win = node.attrs["window3d"]
    w = node.weights["kernel"].astype(np.float64)  # (out, kd, kh, kw, in)
    y = 0.0
    for kz, ky, kx, view in _taps3d(x.astype(np.float64), win, 0.0):
        y = y + view @ w[:, kz, ky, kx, :].T
    if "bias" in node.weights:
        y = y + node.weights["bias"]
    return _clamp(y, node.attrs["clamp"])


def max_pool3d(node, x):
    y = np.max([v for *_, v in _taps3d(x, node.attrs["window3d"], -np.inf)], axis=0)
    return _clamp(y, node.attrs["clamp"])


def avg_pool3d(node, x):
    win = node.attrs["window3d"]
    total = sum(v for *_, v in _taps3d(x.astype(np.float64), win, 0.0))
    count = sum(v for *_, v in _taps3d(np.ones_like(x[:1, ..., :1]), win, 0.0))
    return _clamp(total / count, node.attrs["clamp"])


def depthwise_conv2d(node, x):
    a = node.attrs
    xh = _as_nhwc(x, a)
    w = node.weights["kernel"][0].astype(np.float64)  # (kh, kw, in*mult)
    mult = w.shape[-1] // xh.shape[-1]
    xp = _pad(np.repeat(xh, mult, axis=-1), a, 0.0).astype(np.float64)
    y = 0.0
    for ky, kx, view in _taps(xp, a):
        y = y + view * w[ky, kx]
    if "bias" in node.weights:
        y = y + node.weights["bias"]
    return _clamp(y, a["clamp"])


def dense(node, x):
    y = x.astype(np.float64) @ node.weights["kernel"].T.astype(np.float64)
    if "bias" in node.weights:
        y = y + node.weights["bias"]
    return _clamp(y, node.attrs["clamp"])


def max_pool(node, x):
    a = node.attrs
    xp = _pad(_as_nhwc(x, a), a, -np.inf)
    y = np.max([v for _, _, v in _taps(xp, a)], axis=0)
    return _clamp(y, a["clamp"])


def avg_pool(node, x):
    a = node.attrs
    xh = _as_nhwc(x, a)
    xp = _pad(xh, a, 0.0).astype(np.float64)
    ones = _pad(np.ones_like(xh[:1, :, :, :1]), a, 0.0)
    total = sum(v for _, _, v in _taps(xp, a))
    count = sum(v for _, _, v in _taps(ones, a))  # padding is not counted
    return _clamp(total / count, a["clamp"])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x)


# Keras 3's definitions (keras.activations); a = the node's attrs.
FUNCS = {
    "sigmoid": lambda x, a: _sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
    "leaky_relu": lambda x, a: np.where(x >= a.get("threshold", 0.0), x,
                                        a["alpha"] * (x - a.get("threshold", 0.0))),
    "elu": lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0))),
    "selu": lambda x, a: 1.0507009873554805 * np.where(
        x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
    "hard_sigmoid": lambda x, a: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_swish": lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "swish": lambda x, a: x * _sigmoid(x),
    "gelu": lambda x, a: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "gelu_tanh": lambda x, a: 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3))),
    "softplus": lambda x, a: _softplus(x),
    "softsign": lambda x, a: x / (1.0 + np.abs(x)),
    "exponential": lambda x, a: np.exp(x),
    "mish": lambda x, a: x * np.tanh(_softplus(x)),
    # functions of keras.ops nodes (a = the constant where there is one)
    "affine": lambda x, a: a["alpha"] * x + a["threshold"],
    "square": lambda x, a: x * x,
    "sqrt": lambda x, a: np.sqrt(x),
    "rsqrt": lambda x, a: 1.0 / np.sqrt(x),
    "abs": lambda x, a: np.abs(x),
    "log": lambda x, a: np.log(x),
    "log1p": lambda x, a: np.log1p(x),
    "expm1": lambda x, a: np.expm1(x),
    "reciprocal": lambda x, a: 1.0 / x,
    "rdiv": lambda x, a: a["alpha"] / x,
    "pow": lambda x, a: np.power(x, a["alpha"]),
    "rpow": lambda x, a: np.power(a["alpha"], x),
    "sign": lambda x, a: np.sign(x),
    "erf": lambda x, a: _erf(x),
    "sin": lambda x, a: np.sin(x),
    "cos": lambda x, a: np.cos(x),
    "floor": lambda x, a: np.floor(x),
    "ceil": lambda x, a: np.ceil(x),
}


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x)


def apply(func: str, attrs: dict, x):
    if func == "clamp":
        return _clamp(x, attrs["clamp"])
    if func == "chain":  # int8: consecutive functions folded into one table
        for step in attrs["chain"]:
            x = apply(step["func"], step, x)
        return x
    with np.errstate(all="ignore"):  # log(0), 1/0...: the C gives the same inf/nan
        return FUNCS[func](np.asarray(x, np.float64), attrs)


def activation(node, x):
    return apply(node.attrs["func"], node.attrs, x)


def softmax(node, x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def add(node, a, b):
    return _clamp(a + b, node.attrs["clamp"])


def copy(node, *xs):
    from .frontends import movement
    return movement.run(node.attrs["moves"], xs, node.attrs["out_size"])


def prelu(node, x):
    alpha = node.weights["alpha"]
    flat = x.reshape(x.shape[0], -1)
    a = np.tile(alpha, flat.shape[1] // alpha.size)
    return np.where(flat >= 0, flat, a * flat)


def resize_bilinear(node, x):
    from .frontends import movement
    return movement.resize_bilinear(np.asarray(x, np.float64), node.attrs["y"], node.attrs["x"])


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
          "min": np.minimum, "avg": lambda a, b: (a + b) / 2.0, "div": np.true_divide}


def _unbatched_rank(x, rank):
    """A batch (N,) + shape as (N,) + shape padded with leading 1s to `rank`
    axes, so numpy broadcasts the shapes without the batch axis (the IR's)."""
    return x.reshape((x.shape[0],) + (1,) * (rank + 1 - x.ndim) + x.shape[1:])


def binary(node, a, b=None):
    """numpy's broadcast of func over the two operands (the second may be
    the constant weights["const"], first with attrs["const_first"])."""
    if b is None:
        c = node.weights["const"].astype(np.float64)
        rank = max(a.ndim - 1, c.ndim)
        a = _unbatched_rank(a, rank)
        a, b = (c, a) if node.attrs.get("const_first") else (a, c)
    else:
        rank = max(a.ndim, b.ndim) - 1
        a, b = _unbatched_rank(a, rank), _unbatched_rank(b, rank)
    with np.errstate(divide="ignore", invalid="ignore"):  # x / 0 is inf or nan, as in Keras
        y = BINARY[node.attrs["func"]](a, b)
    return _clamp(y, node.attrs["clamp"])


REDUCE = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}


def reduce(node, x):
    """x viewed as (A, B, C), reduced over B."""
    a, b, c = node.attrs["dims"]
    y = REDUCE[node.attrs["func"]](np.asarray(x, np.float64).reshape(len(x), a, b, c), axis=2)
    return _clamp(y, node.attrs["clamp"])


def matmul(node, a, b):
    """C[i][j] = sum_k A[off_a + i a_row + k] B[off_b + j b_row + k] at
    off_c + i c_row + j, for every batch offset (the "NT" form)."""
    at = node.attrs
    m, n, k = at["m"], at["n"], at["k"]
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    out = np.zeros((len(a), m * n * len(matmul_offsets(at))))
    i, j, kk = np.arange(m)[:, None], np.arange(n)[:, None], np.arange(k)[None, :]
    for off_a, off_b, off_c in matmul_offsets(at):
        rows_a, rows_b = a[:, off_a + i * at["a_row"] + kk], b[:, off_b + j * at["b_row"] + kk]
        out[:, off_c + i * at["c_row"] + j.T] = np.einsum("smk,snk->smn", rows_a, rows_b)
    return _clamp(out, at.get("clamp", (None, None)))


def reshape(node, x):
    return x


def embedding(node, x):
    from .quantize import round_away  # the C's rounding of float indices
    index = np.clip(round_away(x), 0, node.attrs["vocab"] - 1).astype(np.int64)
    return node.weights["table"].astype(np.float64)[index]


RNN_ACTS = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0.0),
            "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
            "linear": lambda x: x}


def rnn(node, x, probes=None):
    """Keras's SimpleRNN/LSTM/GRU cell equations over the sequence, from a
    zero state.  `probes`, if given, receives the internal values the int8
    kernels hold in int16 (gate pre-activations, gates, cell state...), keyed
    by name, for calibration."""
    a, w = node.attrs, node.weights
    steps, units = a["steps"], a["units"]
    act, rec = RNN_ACTS[a["act"]], RNN_ACTS[a["rec_act"]]
    x = np.asarray(x, np.float64).reshape(len(x), steps, a["features"])
    kernel, recurrent = w["kernel"].astype(np.float64), w["recurrent"].astype(np.float64)
    bias = w.get("bias", np.zeros(len(kernel))).astype(np.float64)
    rbias = w.get("recurrent_bias", np.zeros(len(kernel))).astype(np.float64)
    h = np.zeros((len(x), units))
    c = np.zeros_like(h)
    seen: dict = {}
    outs = []

    def probe(key, v):
        seen.setdefault(key, []).append(v)

    for s in range(steps):
        xs = x[:, steps - 1 - s if a["backwards"] else s]
        zx = xs @ kernel.T + bias
        if a["cell"] == "simple":
            pre = zx + h @ recurrent.T
            probe("pre0", pre)
            h = act(pre)
        elif a["cell"] == "lstm":
            pre = zx + h @ recurrent.T
            gates = []
            for g, f in enumerate((rec, rec, act, rec)):
                p = pre[:, g * units:(g + 1) * units]
                probe(f"pre{g}", p)
                gates.append(f(p))
                probe(f"gate{g}", gates[-1])
            i, f, g, o = gates
            c = f * c + i * g
            probe("c", c)
            cell = act(c)
            probe("cell", cell)
            h = o * cell
        else:
            u = units
            zh = h @ recurrent.T + rbias
            z = rec(zx[:, :u] + zh[:, :u])
            r = rec(zx[:, u:2 * u] + zh[:, u:2 * u])
            probe("pre0", zx[:, :u] + zh[:, :u])
            probe("pre1", zx[:, u:2 * u] + zh[:, u:2 * u])
            probe("gate0", z)
            probe("gate1", r)
            if a["reset_after"]:
                probe("q", zh[:, 2 * u:])
                pre = zx[:, 2 * u:] + r * zh[:, 2 * u:]
            else:
                probe("rh", r * h)
                pre = zx[:, 2 * u:] + (r * h) @ recurrent[2 * u:].T
            probe("pre2", pre)
            hh = act(pre)
            probe("gate2", hh)
            h = z * h + (1.0 - z) * hh
        probe("h", h)
        outs.append(h)
    if probes is not None:
        probes.update({k: np.stack(v) for k, v in seen.items()})
    if not a["sequences"]:
        return h
    if a["reverse_output"]:
        outs = outs[::-1]
    return np.stack(outs, axis=1)


def norm(node, x):
    """Keras's normalization formulas (ir.check_norm): LayerNormalization
    (ops.moments' population variance), RMSNormalization, Keras 3's
    rms_scaling (x over sqrt(var + eps)) and ops.normalize's
    x * min(rsqrt(sum x^2), 1 / eps)."""
    a, w = node.attrs, node.weights
    check_norm(node, int(np.prod(x.shape[1:], dtype=np.int64)))
    (A, B, C, D), eps, mode = a["dims"], a["epsilon"], a["mode"]
    g = np.asarray(x, np.float64).reshape(len(x), A, B, C, D)
    axes = (2, 4)
    if mode in ("layer", "rms_scaling"):
        mean = g.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(((g - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
        y = (g - mean if mode == "layer" else g) * inv
    elif mode == "rms":
        y = g / np.sqrt((g * g).mean(axis=axes, keepdims=True) + eps)
    else:
        with np.errstate(divide="ignore"):
            y = g * np.minimum(1.0 / np.sqrt((g * g).sum(axis=axes, keepdims=True)), 1.0 / eps)
    if "gamma" in w or "beta" in w:
        sb, sc, sd = a["param_index"]
        j = (np.arange(B)[:, None, None] * sb + np.arange(C)[None, :, None] * sc
             + np.arange(D)[None, None, :] * sd)
        if "gamma" in w:
            y = y * w["gamma"].astype(np.float64)[j]
        if "beta" in w:
            y = y + w["beta"].astype(np.float64)[j]
    return _clamp(y, a.get("clamp", (None, None))).reshape(x.shape)


identity = reshape

mean = avg_pool

RUN = {"conv2d": conv2d, "depthwise_conv2d": depthwise_conv2d, "conv3d": conv3d,
       "max_pool3d": max_pool3d, "avg_pool3d": avg_pool3d, "dense": dense, "max_pool": max_pool, "avg_pool": avg_pool, "mean": mean,
       "activation": activation, "add": add, "binary": binary, "copy": copy, "prelu": prelu,
       "resize_bilinear": resize_bilinear, "softmax": softmax, "reshape": reshape,
       "identity": identity, "embedding": embedding, "rnn": rnn,
       "norm": norm, "reduce": reduce, "matmul": matmul}


def run_node(node, inputs: list, frame_shapes, probes=None):
    """One node on a batch; a TimeDistributed node runs on every frame as if
    frames were samples."""
    batch = len(inputs[0])
    if node.attrs.get("frames"):
        inputs = [v.reshape((batch * node.attrs["frames"],) + shape)
                  for v, shape in zip(inputs, frame_shapes)]
    if node.op == "rnn":
        return rnn(node, *inputs, probes=probes)
    return RUN[node.op](node, *inputs)


def run(graph, xs, probes: dict | None = None) -> dict:
    """All tensors for a batch of model inputs (batch axis first): one array,
    or a list with one array per model input.  `probes` receives each
    recurrent node's internal values, keyed "<node>/<value>"."""
    xs = xs if isinstance(xs, (list, tuple)) else [xs]
    for node in graph.nodes:
        check_node(graph, node)
    values = {name: np.asarray(x, dtype=np.float64) for name, x in zip(graph.inputs, xs)}
    for name, (a, b) in graph.input_affine.items():  # folded into the input's int8
        values[name] = a * values[name] + b
    x = xs[0]
    for node in graph.nodes:
        frame_shapes = [graph.tensors[t].shape[1:] for t in node.inputs]
        inner = {} if probes is not None and node.op == "rnn" else None
        y = run_node(node, [values[t] for t in node.inputs], frame_shapes, inner)
        for key, v in (inner or {}).items():
            probes[f"{node.name}/{key}"] = v
        shape = graph.tensors[node.outputs[0]].shape
        values[node.outputs[0]] = np.asarray(y).reshape((x.shape[0],) + shape)
    return values
