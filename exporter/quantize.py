"""int8 quantization, the TFLite / CMSIS-NN scheme (DESIGN.md).

- activations: asymmetric int8; scale and zero point from the min/max seen
  over the calibration samples, the range widened to include 0;
- conv and dense weights: symmetric int8 per output channel (zero point 0,
  range ±127);
- bias: int32 with scale input_scale × weight_scale[c];
- requantization: the real multiplier input_scale × weight_scale[c] /
  output_scale as a Q31 multiplier and a shift (TFLite's QuantizeMultiplier);
- max/average pools and reshapes keep their input's parameters; a global
  average (TFLite's MEAN) has its own and requantizes; sigmoid, tanh and softmax
  have TFLite's fixed output parameters; elementwise functions run through a
  256-entry table computed here;
- beyond TFLite: a conv/dense/matmul whose only reader is tanh, sigmoid or
  softmax keeps its output in int16 (symmetric, zero point 0), and the
  nonlinearity maps int16 to int8 (interpolated table, or a two-table exp
  for softmax).  int8 pre-activations cost TFLite several output steps on
  these layers (attention scores into their softmax among them);
- broadcasting binary ops: TFLite's ADD arithmetic for add/sub/avg, MUL's
  for mul, both inputs at the output's scale for max/min; a constant
  operand is int8 with its own per-tensor scale (a scalar is exact), x / c
  runs as x * (1/c), and the division of two tensors keeps 22 fraction bits
  of the quotient (k2m.h);
- reduce: mean and sum requantize the int32 sum to their own scale (as
  TFLite's MEAN / SUM), max and min keep the input's parameters;
- matmul: both operands asymmetric int8 with their own zero points, one
  multiplier s_a s_b / s_out.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from . import interpret
from .errors import ExportError
from .ir import Quant, Tensor

SIGMOID_Q = Quant(1.0 / 256, -128)
TANH_Q = Quant(1.0 / 128, 0)
SOFTMAX_Q = Quant(1.0 / 256, -128)
SAME_AS_INPUT = {"max_pool", "avg_pool", "max_pool3d", "avg_pool3d", "reshape", "identity",
                 "resize_bilinear"}
WIDE_READERS = {"sigmoid", "tanh", "softmax", "elu", "selu", "hard_sigmoid", "hard_swish",
                "swish", "gelu", "gelu_tanh", "softplus", "softsign", "exponential", "mish",
                "square", "sqrt", "rsqrt", "log", "log1p", "expm1", "reciprocal", "rdiv",
                "pow", "rpow", "erf", "sin", "cos", "chain"}
INT16_MAX = 32767
CHUNK = 64


def round_away(x):
    """Round half away from zero, as TFLite and the C runtime do."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(m: float):
    """A real multiplier as (Q31 multiplier, shift): m = q·2^shift / 2^31."""
    if m <= 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(round_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ExportError(f"requantization multiplier {m:g} is too large for int8; "
                          f"the calibration range of a layer is degenerate")
    return q_fixed, shift


MIN_SCALE = 1e-8  # a range under 2.6e-6 (a dead ReLU's float noise) is not resolved


def activation_quant(lo: float, hi: float) -> Quant:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return Quant(1.0 / 255, -128)
    # A floor on the scale keeps every requantization multiplier (input scale
    # x weight scale / output scale) within int32's shift range.
    scale = max((hi - lo) / 255.0, MIN_SCALE)
    zp = int(np.clip(round_away(-128 - lo / scale), -128, 127))
    return Quant(float(np.float32(scale)), zp)


# Calibration progress on stderr once it takes over a second: None = when
# stderr is a terminal or K2M_PROGRESS=1; False = never (the CLI's --quiet).
PROGRESS = None


def progress(done: int, total: int, started: float, shown: bool) -> bool:
    on = PROGRESS if PROGRESS is not None else (
        os.environ.get("K2M_PROGRESS", "") not in ("", "0") or sys.stderr.isatty())
    if on and (shown or time.monotonic() - started > 1.0):
        sys.stderr.write(f"\rcalibrating: {done}/{total} chunks" + ("\n" if done == total else ""))
        sys.stderr.flush()
        return True
    return shown


def calibrate(graph, samples) -> dict:
    """(min, max) of every tensor over the calibration samples."""
    samples = samples if isinstance(samples, (list, tuple)) else [samples]
    ranges: dict = {}
    total, started, shown = -(-len(samples[0]) // CHUNK), time.monotonic(), False
    for k, start in enumerate(range(0, len(samples[0]), CHUNK)):
        probes: dict = {}
        values = interpret.run(graph, [s[start:start + CHUNK] for s in samples], probes)
        for name, v in {**values, **probes}.items():
            if not np.all(np.isfinite(v)):
                node = graph.producer(name)
                raise ExportError(
                    f"layer '{node.layer if node else name}' computes NaN or Inf on the "
                    f"calibration samples, which int8 cannot represent; check the inputs "
                    f"(log or sqrt of negative values, division by zero)")
            lo, hi = float(v.min()), float(v.max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
        shown = progress(k + 1, total, started, shown)
    return ranges


def quantize(graph, samples):
    ranges = calibrate(graph, samples)
    compose_tables(graph)
    for name in graph.inputs:
        t = graph.tensors[name]  # Embedding indices stay whole numbers
        t.quant = Quant(1.0, 0) if t.dtype == "int32" else activation_quant(*ranges[name])
    for t in graph.tensors.values():
        t.dtype = "int32" if t.dtype == "int32" else "int8"
    for node in graph.nodes:
        tin = graph.tensors[node.inputs[0]]
        tout = graph.tensors[node.outputs[0]]
        if node.op in SPECIAL:
            node.attrs["int8"] = SPECIAL[node.op](node, tin, tout, ranges)
            continue
        if feeds_wide_reader(graph, node):
            tout.dtype, tout.quant = "int16", int16_quant(*ranges[tout.name])
        else:
            tout.quant = output_quant(node, tin, ranges[tout.name])
        extra = [graph.tensors[t] for t in node.inputs[1:]]
        node.attrs["int8"] = PARAMS.get(node.op, lambda *a: {})(node, tin, tout, *extra)
    graph.dtype = "int8"
    fold_input_affine(graph)
    return ranges


def compose_tables(graph) -> None:
    """Consecutive elementwise functions (activation nodes) map int8 to int8
    through one table each; composed, they are one table from the first
    input to the last output, with no rounding in between."""
    for node in list(graph.nodes):
        if node.op != "activation" or node not in graph.nodes:
            continue
        readers = graph.consumers(node.outputs[0])
        while (len(readers) == 1 and readers[0].op == "activation"
               and node.outputs[0] not in graph.outputs and not node.attrs.get("frames")
               and not readers[0].attrs.get("frames")):
            nxt = readers[0]
            steps = chain_of(node) + chain_of(nxt)
            node.attrs = {"func": "chain", "chain": steps,
                          "fused": node.attrs.get("fused", []) + [nxt.layer]}
            del graph.tensors[node.outputs[0]]
            node.outputs = list(nxt.outputs)
            graph.nodes.remove(nxt)
            readers = graph.consumers(node.outputs[0])


def chain_of(node) -> list:
    a = node.attrs
    if a["func"] == "chain":
        return list(a["chain"])
    return [{k: v for k, v in a.items() if k != "fused"}]


def fold_input_affine(graph) -> None:
    """An input's scalar affine y = a·x + b (Rescaling, Normalization of one
    value) costs nothing in int8 when b is a whole number of y's steps: the
    int8 of y is the int8 of x under scale s/a and zero point zp + b/s, so
    the node goes and only the input's boundary parameters change."""
    for k, name in enumerate(graph.inputs):
        readers = graph.consumers(name)
        if len(readers) != 1 or not readers[0].attrs.get("affine"):
            continue
        node = readers[0]
        a, b = node.weights["kernel"].ravel(), node.weights["bias"].ravel()
        out = graph.tensors[node.outputs[0]]
        if out.name in graph.outputs or np.ptp(a) or np.ptp(b) or a[0] <= 0:
            continue
        shift = float(b[0]) / out.quant.scale
        zp = out.quant.zero_point + round(shift)
        if abs(shift - round(shift)) > 1e-6 or not -128 <= zp <= 127:
            continue
        graph.nodes.remove(node)
        del graph.tensors[name]
        graph.inputs[k] = out.name
        graph.boundary_quant[out.name] = Quant(float(np.float32(out.quant.scale / a[0])), zp)
        graph.input_affine[out.name] = (float(a[0]), float(b[0]))


def feeds_wide_reader(graph, node) -> bool:
    out = node.outputs[0]
    readers = graph.consumers(out)
    return (node.op in ("conv2d", "conv3d", "dense", "matmul") and out not in graph.outputs
            and len(readers) == 1 and readers[0].op in ("activation", "softmax")
            and readers[0].attrs.get("func", "softmax") in WIDE_READERS)


def int16_quant(lo: float, hi: float) -> Quant:
    top = max(abs(lo), abs(hi))
    if top < 1e-12:  # a constant-zero tensor (a dead layer): any scale is exact
        return Quant(1.0 / INT16_MAX, 0)
    return Quant(float(np.float32(max(top / INT16_MAX, MIN_SCALE / 256))), 0)


# The largest left shift a requantization may take: int8 outputs any that
# int32 allows, int16 outputs +14 (k2m.h, k2m_conv2d_s8_s16).
MAX_SHIFT = {"int8": 30, "int16": 14}


def fitted_output(tout, bscale) -> Quant:
    """The output's parameters, coarsened where the finest one could not be
    reached by a requantization (an almost constant output: a dead ReLU's
    noise); a scale that coarse loses nothing such an output holds."""
    q = tout.quant
    floor = float(np.max(bscale)) / 2.0 ** MAX_SHIFT[tout.dtype] * 1.0001
    if q.scale >= floor:
        return q
    if tout.dtype == "int16":
        return Quant(float(np.float32(floor)), 0)
    lo = q.scale * (-128 - q.zero_point)
    zp = int(np.clip(round_away(-128 - lo / floor), -128, 127))
    return Quant(float(np.float32(floor)), zp)


def output_quant(node, tin, rng) -> Quant:
    if node.op in SAME_AS_INPUT or (node.op == "copy" and len(node.inputs) == 1):
        return tin.quant
    if node.op == "softmax":
        return SOFTMAX_Q
    if node.op == "activation" and node.attrs["func"] == "sigmoid":
        return SIGMOID_Q
    if node.op == "activation" and node.attrs["func"] == "tanh":
        return TANH_Q
    if node.op == "reduce" and node.attrs["func"] in ("max", "min"):
        return tin.quant  # exact: the largest / smallest input value
    return activation_quant(*rng)


def clamp_range(clamp, q: Quant, bits: int = 8):
    lo, hi = clamp
    top = (1 << (bits - 1)) - 1
    qmin = -top - 1 if lo is None else max(-top - 1, q.zero_point + int(round_away(lo / q.scale)))
    qmax = top if hi is None else min(top, q.zero_point + int(round_away(hi / q.scale)))
    return qmin, qmax


def weighted(node, tin, tout) -> dict:
    qin, qout = tin.quant, tout.quant
    w = node.weights["kernel"].astype(np.float64)
    depthwise = node.op == "depthwise_conv2d"  # channels last: (1, kh, kw, out)
    flat = w.reshape(-1, w.shape[-1]).T if depthwise else w.reshape(w.shape[0], -1)
    wscale = np.abs(flat).max(axis=1) / 127.0
    wscale = np.where(wscale > 0, wscale, 1.0).astype(np.float32).astype(np.float64)
    wq = np.clip(round_away(flat / wscale[:, None]), -127, 127).astype(np.int8)
    wq = wq.T.reshape(w.shape) if depthwise else wq.reshape(w.shape)
    bscale = qin.scale * wscale
    bias = node.weights.get("bias")
    bq = np.zeros(len(wscale)) if bias is None else round_away(bias / bscale)
    bq = np.clip(bq, -2**31, 2**31 - 1).astype(np.int32)
    tout.quant = qout = fitted_output(tout, bscale)
    mults = [quantize_multiplier(s / qout.scale) for s in bscale]
    return {"weight_scale": wscale, "kernel": wq, "bias": bq,
            "multiplier": np.array([m for m, _ in mults], dtype=np.int32),
            "shift": np.array([s for _, s in mults], dtype=np.int32),
            "act": clamp_range(node.attrs["clamp"], qout, 16 if tout.dtype == "int16" else 8)}


def pooled(node, tin, tout) -> dict:
    return {"act": clamp_range(node.attrs["clamp"], tout.quant)}


def mean(node, tin, tout) -> dict:
    """One multiplier for input_scale / (output_scale * positions averaged)."""
    kh, kw = node.attrs["kernel"]
    m, shift = quantize_multiplier(tin.quant.scale / (tout.quant.scale * kh * kw))
    return {"multiplier": np.array([m], np.int32), "shift": np.array([shift], np.int32),
            "act": clamp_range(node.attrs["clamp"], tout.quant)}


def add_params(node, tin, tout, tin2) -> dict:
    """TFLite's Add: both inputs to twice the larger scale, 20 bits headroom."""
    s1, s2, so = tin.quant.scale, tin2.quant.scale, tout.quant.scale
    twice = 2.0 * max(s1, s2)
    left_shift = 20
    m1, sh1 = quantize_multiplier(s1 / twice)
    m2, sh2 = quantize_multiplier(s2 / twice)
    mo, sho = quantize_multiplier(twice / ((1 << left_shift) * so))
    lo, hi = clamp_range(node.attrs["clamp"], tout.quant)
    return {"params": [-tin.quant.zero_point, m1, sh1, -tin2.quant.zero_point, m2, sh2,
                       left_shift, tout.quant.zero_point, mo, sho, lo, hi]}


def binary_params(node, tin, tout, tin2, func=None) -> dict:
    """The k2m_binary_s8_params fields for Add, Subtract/Average (as Add),
    Multiply, Divide and Maximum/Minimum, tin and tin2 in operand order."""
    func = func or node.attrs["func"]
    s1, s2, so = tin.quant.scale, tin2.quant.scale, tout.quant.scale
    o1, o2, oo = -tin.quant.zero_point, -tin2.quant.zero_point, tout.quant.zero_point
    lo, hi = clamp_range(node.attrs["clamp"], tout.quant)
    if func == "add":
        return add_params(node, tin, tout, tin2)
    if func == "div":
        # the quotient keeps DIV_FRACTION_BITS; beyond 1/2 the multiplier
        # saturates every nonzero quotient anyway (k2m.h)
        m, sh = quantize_multiplier(min(s1 / (s2 * so * 2.0 ** DIV_FRACTION_BITS), 0.5))
        return {"params": [o1, 0, 0, o2, 0, 0, DIV_FRACTION_BITS, oo, m, sh, lo, hi]}
    if func in ("sub", "avg"):
        p = add_params(node, tin, tout, tin2)["params"]
        if func == "sub":
            p[4] = -p[4]  # the second input's multiplier
        else:
            p[8], p[9] = quantize_multiplier(2.0 * max(s1, s2) / ((1 << 20) * so * 2.0))
        return {"params": p}
    if func == "mul":
        m, sh = quantize_multiplier(s1 * s2 / so)
        return {"params": [o1, 0, 0, o2, 0, 0, 0, oo, m, sh, lo, hi]}
    m1, sh1 = quantize_multiplier(s1 / so)
    m2, sh2 = quantize_multiplier(s2 / so)
    return {"params": [o1, m1, sh1, o2, m2, sh2, 0, oo, 0, 0, lo, hi]}


DIV_FRACTION_BITS = 22  # |q| <= 255, so 255 * 2^22 < 2^30 (k2m_div_nearest)


def const_operand(node):
    """The const form's constant as (int8 values, Tensor with its own
    quantization, func the kernel runs).  x / c runs as x * (1/c) when no c
    is 0: a multiply is exact where the integer division rounds, and the
    reciprocal of a scalar is exact in int8 like the scalar itself."""
    c = node.weights["const"].astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise ExportError(f"'{node.layer}': the constant operand of {node.attrs['func']} is "
                          f"not finite")
    func = node.attrs["func"]
    if func == "div" and not node.attrs.get("const_first") and np.all(c != 0):
        c, func = 1.0 / c, "mul"
    q = activation_quant(float(c.min()), float(c.max()))
    values = np.clip(round_away(c / q.scale) + q.zero_point, -128, 127).astype(np.int8)
    return values, Tensor(node.name + "/const", c.shape, "int8", q), func


def broadcast_binary_params(node, tin, tout, tin2=None) -> dict:
    """binary_params in operand order; the const form's constant is int8
    with its own per-tensor scale (activation_quant of its min/max, so a
    scalar constant is exact), stored as int8["const"]."""
    if tin2 is not None:
        return {**binary_params(node, tin, tout, tin2), "func": node.attrs["func"]}
    values, tc, func = const_operand(node)
    first, second = (tc, tin) if node.attrs.get("const_first") else (tin, tc)
    return {**binary_params(node, first, tout, second, func), "func": func, "const": values}


def reduce_params(node, tin, tout) -> dict:
    """mean/sum: one multiplier for input_scale / (output_scale * length)
    (mean) or input_scale / output_scale (sum); max/min share the input's
    parameters and need only the clamp."""
    a, b, c = node.attrs["dims"]
    act = clamp_range(node.attrs["clamp"], tout.quant)
    if node.attrs["func"] in ("max", "min"):
        return {"act": act}
    if 255 * b >= 2**31:
        raise ExportError(f"'{node.layer}': a {node.attrs['func']} over {b} values overflows "
                          f"the int8 kernel's int32 sum")
    divisor = b if node.attrs["func"] == "mean" else 1
    m, sh = quantize_multiplier(tin.quant.scale / (tout.quant.scale * divisor))
    return {"params": [-tin.quant.zero_point, tout.quant.zero_point, m, sh, *act]}


MATMUL_MAX_K = 32767  # k * 255 * 256 < 2^31: no partial sum overflows (k2m.h)


def matmul_params(node, tin, tout, tin2) -> dict:
    """Both operands asymmetric int8; one multiplier for
    s_a * s_b / s_out (int8, or int16 when a softmax alone reads it)."""
    if node.attrs["k"] > MATMUL_MAX_K:
        raise ExportError(f"'{node.layer}': a matmul over k = {node.attrs['k']} overflows the "
                          f"int8 kernel's int32 sums; at most {MATMUL_MAX_K} are supported")
    m, sh = quantize_multiplier(tin.quant.scale * tin2.quant.scale / tout.quant.scale)
    act = clamp_range(node.attrs.get("clamp", (None, None)), tout.quant,
                      16 if tout.dtype == "int16" else 8)
    return {"params": [-tin.quant.zero_point, -tin2.quant.zero_point, tout.quant.zero_point,
                       m, sh, *act]}


def copy_params(node, tin, tout, *others) -> dict:
    """Per input: None if it shares the output's scale, else a requantization."""
    rqs = []
    for t in (tin,) + others:
        if (t.quant.scale, t.quant.zero_point) == (tout.quant.scale, tout.quant.zero_point):
            rqs.append(None)
        else:
            m, shift = quantize_multiplier(t.quant.scale / tout.quant.scale)
            rqs.append([-t.quant.zero_point, m, shift, tout.quant.zero_point])
    return {"requant": rqs, "fill": tout.quant.zero_point}


def prelu_params(node, tin, tout) -> dict:
    alpha = node.weights["alpha"].astype(np.float64)
    s_a = max(float(np.abs(alpha).max()) / 127.0, 1e-12)
    aq = np.clip(round_away(alpha / s_a), -127, 127).astype(np.int8)
    mp, sp = quantize_multiplier(tin.quant.scale / tout.quant.scale)
    mn, sn = quantize_multiplier(tin.quant.scale * s_a / tout.quant.scale)
    return {"alpha": aq, "params": [-tin.quant.zero_point, tout.quant.zero_point, mp, sp, mn, sn]}


def lookup_table(node, tin, tout) -> dict:
    qin, qout = tin.quant, tout.quant
    if tin.dtype == "int16":
        # 257 points over the int16 range, in 1/256 output steps; the
        # kernel interpolates between them.
        real = qin.scale * (np.arange(257) * 256 - 32768)
        y = defined(interpret.activation(node, real))
        table = round_away(256 * (y / qout.scale + qout.zero_point))
        return {"table16": np.clip(table, -2**31, 2**31 - 1).astype(np.int32)}
    q = np.arange(-128, 128)
    real = qin.scale * (q - qin.zero_point)
    y = defined(interpret.activation(node, real))
    table = np.clip(round_away(y / qout.scale) + qout.zero_point, -128, 127)
    return {"table": table.astype(np.int8)}


def defined(y):
    """A table's values where the function is defined; where it is not (the
    sqrt or log of an input code below the calibrated range's zero, which the
    calibration samples never reached) the table holds 0.  ±inf saturates."""
    y = np.asarray(y, np.float64)
    return np.nan_to_num(y, nan=0.0, posinf=1e30, neginf=-1e30)


def softmax_table(node, tin, tout) -> dict:
    qin, cols = tin.quant, tin.shape[-1]
    if tin.dtype == "int16":
        if cols >= 65536:
            raise ExportError(f"softmax '{node.layer}' over {cols} values is too wide for int8")
        k = np.arange(256)
        hi = round_away(np.exp(-qin.scale * 256 * k) * 32768)
        lo = round_away(np.exp(-qin.scale * k) * 32768)
        return {"exp_hi": hi.astype(np.uint16), "exp_lo": lo.astype(np.uint16)}
    top = min(1 << 23, (2**31 - 1) // cols)
    table = round_away(np.exp(-qin.scale * np.arange(256)) * top)
    return {"exp_table": table.astype(np.uint32)}


def embedding_params(node, tin, tout, ranges) -> dict:
    """The table is quantized with the output's parameters, taken from the
    whole table (not from the rows calibration happened to look up), so
    every row is exact to half a step and rows copy unchanged."""
    table = node.weights["table"].astype(np.float64)
    tout.quant = activation_quant(float(table.min()), float(table.max()))
    q = np.clip(round_away(table / tout.quant.scale) + tout.quant.zero_point, -128, 127)
    return {"table": q.astype(np.int8)}


def rnn_params(node, tin, tout, ranges) -> dict:
    from . import quantize_recurrent
    tout.quant = activation_quant(*ranges[tout.name])
    return quantize_recurrent.params(node, tin.quant, tout.quant, ranges)


def norm_params(node, tin, tout) -> dict:
    from . import quantize_norm
    return quantize_norm.params(node, tin, tout)


# Ops whose quantization needs more than their input/output ranges.
SPECIAL = {"embedding": embedding_params, "rnn": rnn_params}

PARAMS = {"conv2d": weighted, "depthwise_conv2d": weighted, "conv3d": weighted,
          "dense": weighted, "max_pool3d": pooled, "avg_pool3d": pooled, "max_pool": pooled,
          "avg_pool": pooled, "mean": mean, "add": add_params, "copy": copy_params, "prelu": prelu_params,
          "activation": lookup_table,
          "softmax": softmax_table,
          "norm": norm_params, "binary": broadcast_binary_params, "reduce": reduce_params,
          "matmul": matmul_params}
