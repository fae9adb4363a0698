"""int8 parameters of a recurrent layer (docs/recurrent_int8.md).

int8 input and output tensors and int8 weights, per row (one scale per unit
of each gate, zero point 0); the state, the gate pre-activations and the
gates themselves are int16, symmetric, as in TFLite's int8 LSTM.  Scales:

- a pre-activation feeding tanh, sigmoid or hard_sigmoid: 2^-12 (Q3.12,
  ±8, where these functions are flat to within 4e-4, TFLite's choice); one
  feeding relu/linear: its calibrated max |value| / 32767;
- a gate or activation output: 1/32767 for the bounded functions (1.0 is
  exactly 32767), max(calibrated max, 1) / 32767 for relu/linear;
- the LSTM cell state: a power of two covering the calibrated max |c|
  (at least 2x headroom, as TFLite's power-of-two cell scale);
- h: 1/32767 where the cell equations bound it by 1, else calibrated;
- the GRU's r·(R_h h + b) or r·h intermediates: calibrated.
Every activation is a 513-point int16 table, interpolated by the kernel.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import UnsupportedModelError
from .frontends.layers_recurrent import MAX_UNITS
from .interpret import RNN_ACTS
from .quantize import quantize_multiplier, round_away

Q15 = 32767.0
BOUNDED = {"tanh", "sigmoid", "hard_sigmoid"}     # |f(x)| <= 1
IN_UNIT_RANGE = {"sigmoid", "hard_sigmoid"}       # 0 <= f(x) <= 1
SATURATING_PRE_SCALE = 2.0 ** -12
LUT_POINTS = 513


def _absmax(ranges, key: str) -> float:
    lo, hi = ranges[key]
    return max(abs(lo), abs(hi))


def pre_scale(func: str, ranges, key: str) -> float:
    if func in BOUNDED:
        return SATURATING_PRE_SCALE
    return max(_absmax(ranges, key), 1e-6) / Q15


def out_scale(func: str, ranges, key: str) -> float:
    if func in BOUNDED:
        return 1.0 / Q15
    return max(_absmax(ranges, key), 1.0) / Q15  # 1.0 stays representable (GRU's 1 - z)


def lut(func: str, s_in: float, s_out: float) -> np.ndarray:
    """func at the 513 int16 inputs -32768 + 128 k, in output steps."""
    real = s_in * (np.arange(LUT_POINTS) * 128.0 - 32768.0)
    y = RNN_ACTS[func](real) / s_out
    return np.clip(round_away(y), -32768, 32767).astype(np.int16)


def scale(real: float) -> tuple:
    return quantize_multiplier(real)


def _per_row(w):
    ws = np.abs(w).max(axis=1) / 127.0
    ws = np.where(ws > 0, ws, 1.0).astype(np.float32).astype(np.float64)
    return np.clip(round_away(w / ws[:, None]), -127, 127).astype(np.int8), ws


def _multipliers(reals) -> tuple:
    pairs = [quantize_multiplier(float(m)) for m in reals]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


def _check_sums(node, q) -> None:
    """The kernels sum in int32 (k2m.h); refuse the rare layer that could
    overflow rather than emit one that might wrap."""
    rb = q["recurrent_bias"] if q["recurrent_bias"] is not None else 0
    worst = max(
        (np.abs(q["bias"].astype(np.int64)) + 128 * np.abs(q["kernel"].astype(np.int64)).sum(1)).max(),
        (np.abs(np.int64(1) * rb) + 32768 * np.abs(q["recurrent"].astype(np.int64)).sum(1)).max())
    if worst >= 2**31:
        raise UnsupportedModelError(
            f"layer '{node.layer}' ({node.keras_class}): its int8 sums could overflow 32 bits "
            f"(a bias very large against its weights); export it with --dtype float32")


def params(node, qin, qout, ranges) -> dict:
    a, w = node.attrs, node.weights
    cell, units, gates = a["cell"], a["units"], a["gates"]
    if units > MAX_UNITS:
        raise UnsupportedModelError(
            f"layer '{node.layer}' ({node.keras_class}) has {units} units; int8 recurrent "
            f"layers support up to {MAX_UNITS} (use --dtype float32)")
    key = lambda name: f"{node.name}/{name}"  # noqa: E731
    act, rec = a["act"], a["rec_act"]
    funcs = {"simple": [act], "lstm": [rec, rec, act, rec], "gru": [rec, rec, act]}[cell]
    s_pre = [pre_scale(f, ranges, key(f"pre{g}")) for g, f in enumerate(funcs)]
    s_gate = [out_scale(f, ranges, key(f"gate{g}")) for g, f in enumerate(funcs)] \
        if cell != "simple" else []

    if cell == "simple":
        s_h = out_scale(act, ranges, key("h"))
    elif cell == "lstm":
        bounded = act in BOUNDED and rec in BOUNDED
        s_h = 1.0 / Q15 if bounded else max(_absmax(ranges, key("h")), 1e-6) / Q15
    else:
        bounded = act in BOUNDED and rec in IN_UNIT_RANGE  # h: convex mix of h and tanh
        s_h = 1.0 / Q15 if bounded else max(_absmax(ranges, key("h")), 1e-6) / Q15

    s_x, zp_x = qin.scale, qin.zero_point
    row_gate = np.repeat(np.arange(gates), units)
    target = np.array(s_pre)[row_gate]             # where each row's sum goes
    rec_in = np.full(gates * units, s_h)           # what the recurrent matmul reads
    rec_target = target.copy()
    out: dict = {}
    if cell == "gru" and a["reset_after"]:
        s_q = max(_absmax(ranges, key("q")), 1e-6) / Q15
        rec_target[2 * units:] = s_q
    elif cell == "gru":
        s_rh = max(_absmax(ranges, key("rh")), 1e-6) / Q15
        rec_in[2 * units:] = s_rh

    wq, sw = _per_row(w["kernel"].astype(np.float64))
    bias = w.get("bias", np.zeros(gates * units)).astype(np.float64).copy()
    rbias = w.get("recurrent_bias")
    if rbias is not None:  # z and r add both biases; the candidate's waits for r
        bias[:2 * units] += rbias[:2 * units]
    bq = round_away(bias / (s_x * sw)) - zp_x * wq.astype(np.int64).sum(axis=1)
    rq, sr = _per_row(w["recurrent"].astype(np.float64))
    out.update(kernel=wq, bias=np.clip(bq, -2**31, 2**31 - 1).astype(np.int32),
               recurrent=rq, recurrent_bias=None)
    out["kernel_multiplier"], out["kernel_shift"] = _multipliers(s_x * sw / target)
    out["recurrent_multiplier"], out["recurrent_shift"] = _multipliers(rec_in * sr / rec_target)
    if rbias is not None:
        rb = np.zeros(gates * units)
        rb[2 * units:] = round_away(rbias[2 * units:] / (s_h * sr[2 * units:]))
        out["recurrent_bias"] = np.clip(rb, -2**31, 2**31 - 1).astype(np.int32)

    _check_sums(node, out)
    if cell == "simple":
        out["luts"] = [lut(act, s_pre[0], s_h)]
    else:
        out["luts"] = [lut(f, s_pre[g], s_gate[g]) for g, f in enumerate(funcs)]
    if cell == "lstm":
        s_c = 2.0 ** math.ceil(math.log2(max(_absmax(ranges, key("c")), 1.0 / 256))) / 32768.0
        s_cell = out_scale(act, ranges, key("cell"))
        out["cell_lut"] = lut(act, s_c, s_cell)
        out["forget"] = scale(s_gate[1])
        out["input"] = scale(s_gate[0] * s_gate[2] / s_c)
        out["output_gate"] = scale(s_gate[3] * s_cell / s_h)
    elif cell == "gru":
        out["reset"] = scale(s_gate[1] * s_q / s_pre[2] if a["reset_after"]
                             else s_gate[1] * s_h / s_rh)
        out["keep"] = scale(s_gate[0])
        out["update"] = scale(s_gate[0] * s_gate[2] / s_h)
        out["one"] = int(round_away(1.0 / s_gate[0]))
    out["h_to_output"] = scale(s_h / qout.scale)
    out["output_offset"] = qout.zero_point
    out["h_scale"] = s_h
    return out
