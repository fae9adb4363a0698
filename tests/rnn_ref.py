"""numpy references for the recurrent kernels in c_runtime/k2m_recurrent.c.

The int8 functions are bit-exact (int64 numpy, TFLite's requantize from
kernel_ref); the float ones compute in float64 and so show what the float32
kernels approximate.  Both mirror k2m.h's parameters: `flags` is
k2m_rnn_dims.flags, `x` the (steps, features) input, `state` h (LSTM: h
then c), and `p` a dict with the fields of the params struct (the int8
weights under p["w"], k2m_scale values as (multiplier, shift) pairs).  Every
function returns (output, final state) and leaves its arguments untouched.
"""
from __future__ import annotations

import numpy as np

from kernel_ref import asr, requantize

BACKWARDS, SEQUENCES, REVERSE_OUTPUT, GRU_RESET_AFTER = 1, 2, 4, 8
ACTS = ["tanh", "sigmoid", "hard_sigmoid", "relu", "linear"]  # k2m_rnn_act's order
SCRATCH = {"simple_rnn": lambda units: units, "lstm": lambda units: 4 * units,
           "gru": lambda units: 4 * units}  # K2M_*_SCRATCH, elements


def _steps(flags, x):
    """The input rows in the order the cell sees them."""
    return x[::-1] if flags & BACKWARDS else x


def _output(flags, hs, y):
    """hs: h after every step (h0 first, then each step's); y maps a row of h
    to its output type.  Only the last h without SEQUENCES."""
    if not flags & SEQUENCES:
        return y(hs[-1])
    rows = [y(h) for h in hs[1:]]
    if flags & REVERSE_OUTPUT:
        rows = rows[::-1]
    return np.array(rows).reshape(len(rows), hs[0].size)


# ---- int8 ----------------------------------------------------------------

def sat16(v):
    return np.clip(v, -32768, 32767)


def rq(v, scale):
    return requantize(v, scale[0], scale[1])


def lut16(v, t):
    """k2m_lut16: the 513-entry int16 table t at int16 v, interpolated over
    the 128 inputs between entries with the slope term floored."""
    t = np.asarray(t, np.int64)
    assert t.size == 513
    u = np.asarray(v, np.int64) + 32768
    i, f = u >> 7, u & 127
    return t[i] + asr((t[i + 1] - t[i]) * f + 64, 7)


def _input_term(w, rows, x):
    """rq(bias + kernel . x, kernel_scale) for a slice of rows."""
    acc = w["kernel"][rows].astype(np.int64) @ x.astype(np.int64)
    if w["bias"] is not None:
        acc = acc + w["bias"][rows]
    return requantize(acc, w["kernel_multiplier"][rows], w["kernel_shift"][rows])


def _recurrent_term(w, rows, h, bias=0):
    acc = w["recurrent"][rows].astype(np.int64) @ h.astype(np.int64) + bias
    return requantize(acc, w["recurrent_multiplier"][rows], w["recurrent_shift"][rows])


def _gate(w, rows, x, h, table):
    return lut16(sat16(_input_term(w, rows, x) + _recurrent_term(w, rows, h)), table)


def _y_s8(p):
    return lambda h: np.clip(rq(h, p["h_to_output"]) + p["output_offset"],
                             -128, 127).astype(np.int8)


def _units(w):
    return w["recurrent"].shape[1]


def simple_rnn_s8(flags, p, x, state):
    w, n = p["w"], _units(p["w"])
    hs = [state.astype(np.int64)]
    for xs in _steps(flags, x):
        hs.append(_gate(w, slice(0, n), xs, hs[-1], p["act_lut"]))
    return _output(flags, hs, _y_s8(p)), hs[-1].astype(np.int16)


def lstm_s8(flags, p, x, state):
    w, n = p["w"], _units(p["w"])
    hs, c = [state[:n].astype(np.int64)], state[n:].astype(np.int64)
    for xs in _steps(flags, x):
        i, f, g, o = (_gate(w, slice(k * n, (k + 1) * n), xs, hs[-1], p["gate_lut"][k])
                      for k in range(4))
        c = sat16(rq(f * c, p["forget"]) + rq(i * g, p["input"]))
        hs.append(sat16(rq(o * lut16(c, p["cell_lut"]), p["output_gate"])))
    return _output(flags, hs, _y_s8(p)), np.concatenate([hs[-1], c]).astype(np.int16)


def gru_s8(flags, p, x, state):
    w, n = p["w"], _units(p["w"])
    cand = slice(2 * n, 3 * n)
    hs = [state.astype(np.int64)]
    for xs in _steps(flags, x):
        h = hs[-1]
        z = _gate(w, slice(0, n), xs, h, p["gate_lut"][0])
        r = _gate(w, slice(n, 2 * n), xs, h, p["gate_lut"][1])
        if flags & GRU_RESET_AFTER:
            rb = 0 if w["recurrent_bias"] is None else w["recurrent_bias"][cand]
            a = sat16(_input_term(w, cand, xs))
            q = sat16(_recurrent_term(w, cand, h, rb))
            pre = sat16(a + rq(r * q, p["reset"]))
        else:
            rh = sat16(rq(r * h, p["reset"]))
            pre = sat16(_input_term(w, cand, xs) + _recurrent_term(w, cand, rh))
        hh = lut16(pre, p["gate_lut"][2])
        hs.append(sat16(rq(z * h, p["keep"]) + rq((p["one"] - z) * hh, p["update"])))
    return _output(flags, hs, _y_s8(p)), hs[-1].astype(np.int16)


# ---- float (float64) -----------------------------------------------------

ACT_F64 = {
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "hard_sigmoid": lambda v: np.clip(v + 3, 0, 6) / 6,  # Keras 3
    "relu": lambda v: np.maximum(v, 0),
    "linear": lambda v: v,
}


def _f64(p):
    """kernel, recurrent and bias (zeros for None) in float64, and the two
    activations as functions."""
    k, r = p["kernel"].astype(np.float64), p["recurrent"].astype(np.float64)
    rows = k.shape[0]
    b = np.zeros(rows) if p["bias"] is None else p["bias"].astype(np.float64)
    return k, r, b, ACT_F64[p["act"]], ACT_F64[p["recurrent_act"]]


def simple_rnn_f32(flags, p, x, state):
    k, r, b, act, _ = _f64(p)
    hs = [state.astype(np.float64)]
    for xs in _steps(flags, x.astype(np.float64)):
        hs.append(act(b + k @ xs + r @ hs[-1]))
    return _output(flags, hs, lambda h: h), hs[-1]


def lstm_f32(flags, p, x, state):
    k, r, b, act, rec_act = _f64(p)
    n = r.shape[1]
    hs, c = [state[:n].astype(np.float64)], state[n:].astype(np.float64)
    for xs in _steps(flags, x.astype(np.float64)):
        pre = (b + k @ xs + r @ hs[-1]).reshape(4, n)
        i, f, o = rec_act(pre[0]), rec_act(pre[1]), rec_act(pre[3])
        c = f * c + i * act(pre[2])
        hs.append(o * act(c))
    return _output(flags, hs, lambda h: h), np.concatenate([hs[-1], c])


def gru_f32(flags, p, x, state):
    """With GRU_RESET_AFTER the bias is 2 x 3 units (input, then recurrent),
    as Keras keeps it."""
    k, r, b, act, rec_act = _f64(p)
    n = r.shape[1]
    split = flags & GRU_RESET_AFTER and p["bias"] is not None
    b_in, b_rec = (b[:3 * n], b[3 * n:]) if split else (b, np.zeros(3 * n))
    hs = [state.astype(np.float64)]
    for xs in _steps(flags, x.astype(np.float64)):
        h = hs[-1]
        px, ph = b_in + k @ xs, b_rec[:2 * n] + r[:2 * n] @ h
        z, rr = rec_act(px[:n] + ph[:n]), rec_act(px[n:2 * n] + ph[n:])
        if flags & GRU_RESET_AFTER:
            hh = act(px[2 * n:] + rr * (b_rec[2 * n:] + r[2 * n:] @ h))
        else:
            hh = act(px[2 * n:] + r[2 * n:] @ (rr * h))
        hs.append(z * h + (1 - z) * hh)
    return _output(flags, hs, lambda h: h), hs[-1]
