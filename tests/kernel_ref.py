"""numpy references for the C kernels in c_runtime/.

The int8 functions reproduce the C integer arithmetic exactly (int64 numpy,
C's truncating division, TFLite's rounding), so tests can demand bit-exact
agreement.  The float functions compute in float64 and return, where useful,
a per-element error scale for the tolerance (sum of |terms|), because the C
accumulates in float32 in its own order.

Geometry arguments mirror k2m_window as a dict with the same field names.
"""
from __future__ import annotations

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# ---- k2m_math.h ----------------------------------------------------------

def trunc_div(a, b):
    """C's integer division (toward zero) on int64 arrays."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def wrap_s32(x):
    """Two's-complement wrap to int32, as gcc converts uint32 -> int32."""
    x = np.asarray(x, np.int64) & 0xFFFFFFFF
    return np.where(x >= 2**31, x - 2**32, x).astype(np.int64)


def sat_rdhm(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    ab = a * b  # |ab| <= 2^62: fits in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    r = trunc_div(ab + nudge, 1 << 31)
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, r).astype(np.int64)


def rdbp(x, exponent):
    x, e = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(exponent, np.int64))
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)  # numpy >> is arithmetic


def requantize(acc, multiplier, shift):
    acc, m, s = np.broadcast_arrays(np.asarray(acc, np.int64),
                                    np.asarray(multiplier, np.int64),
                                    np.asarray(shift, np.int64))
    left = np.where(s > 0, s, 0)
    right = np.where(s > 0, 0, -s)
    # saturated to [-2^30, 2^30 - 1] like k2m_requantize (k2m_sat30)
    return np.clip(rdbp(sat_rdhm(wrap_s32(acc << left), m), right), -(1 << 30), (1 << 30) - 1)


# ---- sliding windows -----------------------------------------------------

def window_taps(g):
    """Input coordinates of every tap: iy[oy, ky], ix[ox, kx] (may be out of
    range) and their validity masks."""
    oy, ky = np.arange(g["out_h"])[:, None], np.arange(g["k_h"])[None, :]
    ox, kx = np.arange(g["out_w"])[:, None], np.arange(g["k_w"])[None, :]
    iy = oy * g["stride_h"] - g["pad_top"] + ky * g["dil_h"]
    ix = ox * g["stride_w"] - g["pad_left"] + kx * g["dil_w"]
    vy = (iy >= 0) & (iy < g["in_h"])
    vx = (ix >= 0) & (ix < g["in_w"])
    return iy, ix, vy, vx


def gather(x, g, fill):
    """x (in_h, in_w, c) -> patches (out_h, out_w, k_h, k_w, c) and a
    validity mask (out_h, out_w, k_h, k_w); invalid taps hold `fill`."""
    iy, ix, vy, vx = window_taps(g)
    cy, cx = np.clip(iy, 0, g["in_h"] - 1), np.clip(ix, 0, g["in_w"] - 1)
    p = x[cy[:, None, :, None], cx[None, :, None, :]]  # (oh, ow, kh, kw, c)
    valid = vy[:, None, :, None] & vx[None, :, None, :]
    p = np.where(valid[..., None], p, fill)
    return p, valid


# ---- convolution / dense -------------------------------------------------

def conv_s8_scratch_bytes(g):
    """Bytes of the im2col scratch buffer the int8 conv kernels take
    (K2M_CONV_S8_SCRATCH_BYTES in k2m.h: two int16 columns of
    k_h * k_w * in_c); the numpy references need none."""
    return 4 * g["k_h"] * g["k_w"] * g["in_c"]


def depthwise_s8_scratch_bytes(g):
    """K2M_DEPTHWISE_S8_SCRATCH_BYTES in k2m.h (the DSP path's ring of
    transposed rows), 0 where the kernel does not use it."""
    if not (g["k_h"] == g["k_w"] == 3 and g["in_c"] == g["out_c"] and g["dil_h"] == 1
            and g["dil_w"] == 1 and g["stride_w"] in (1, 2)):
        return 0
    row = (max(g["pad_left"] + g["in_w"], g["stride_w"] * g["out_w"] + 6) + 1) & ~1
    return 24 * row + 4 * ((g["out_w"] + 1) & ~1) + 312


def conv_pool_s8_scratch_bytes(g):
    """K2M_CONV_POOL_S8_SCRATCH_BYTES in k2m.h: the conv's columns, one pixel
    pair's outputs (rounded to 4 bytes) and the int32 sums."""
    return conv_s8_scratch_bytes(g) + ((2 * g["out_c"] + 3) & ~3) + 4 * g["out_c"]


def conv2d_pool_s8(g, q, x, w, bias, mean_q=None, act=(-128, 127)):
    """k2m_conv2d_pool_s8: conv2d_s8, then its whole map pooled: mean_s8 with
    mean_q, or (mean_q None) avg_pool_s8 over the map clamped to act."""
    y = conv2d_s8(g, q, x, w, bias).reshape(-1, g["out_c"])
    if mean_q is not None:
        return mean_s8(mean_q, y)
    pg = dict(g, in_h=g["out_h"], in_w=g["out_w"], in_c=g["out_c"], out_h=1, out_w=1,
              k_h=g["out_h"], k_w=g["out_w"], stride_h=1, stride_w=1, dil_h=1, dil_w=1,
              pad_top=0, pad_left=0)
    return avg_pool_s8(pg, act[0], act[1], y.reshape(g["out_h"], g["out_w"], -1)).ravel()


def conv2d_s8(g, q, x, w, bias):
    """x (in_h, in_w, in_c) int8, w (out_c, k_h, k_w, in_c) int8."""
    xs = x.astype(np.int64) + q["input_offset"]
    p, _ = gather(xs, g, 0)  # a skipped tap is a real zero
    acc = np.einsum("yxhwc,ohwc->yxo", p, w.astype(np.int64))
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return _finish_s8(acc, q)


def fully_connected_s8(q, x, w, bias):
    """x (batches, in) int8, w (out, in) int8."""
    acc = (x.astype(np.int64) + q["input_offset"]) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return _finish_s8(acc, q)


def conv2d_s8_s16(g, q, x, w, bias):
    """As conv2d_s8 but the output is int16 (k2m_conv2d_s8_s16)."""
    xs = x.astype(np.int64) + q["input_offset"]
    p, _ = gather(xs, g, 0)
    acc = np.einsum("yxhwc,ohwc->yxo", p, w.astype(np.int64))
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return _finish(acc, q, np.int16)


def fully_connected_s8_s16(q, x, w, bias):
    acc = (x.astype(np.int64) + q["input_offset"]) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return _finish(acc, q, np.int16)


def _finish_s8(acc, q):
    return _finish(acc, q, np.int8)


def _finish(acc, q, dtype):
    # The C accumulates in int32: the tests must not generate overflowing sums.
    assert acc.min() >= INT32_MIN and acc.max() <= INT32_MAX, "int32 accumulator overflow"
    y = requantize(acc, q["multiplier"], q["shift"]) + q["output_offset"]
    info = np.iinfo(dtype)
    assert info.min <= q["act_min"] <= q["act_max"] <= info.max, "clamp outside the output type"
    return np.clip(y, q["act_min"], q["act_max"]).astype(dtype)


def _depthwise_patches(g, x, fill):
    """x (in_h, in_w, in_c) -> patches (out_h, out_w, k_h, k_w, out_c) where
    output channel o sees input channel o // mult (k2m.h's depthwise layout)."""
    mult = g["out_c"] // g["in_c"]
    assert mult * g["in_c"] == g["out_c"], "out_c must be a multiple of in_c"
    p, _ = gather(np.repeat(x, mult, axis=2), g, fill)
    return p


def depthwise_conv2d_s8(g, q, x, w, bias):
    """x (in_h, in_w, in_c) int8, w (k_h, k_w, out_c) int8 (the (1, kh, kw,
    out_c) layout without its leading 1)."""
    p = _depthwise_patches(g, x.astype(np.int64) + q["input_offset"], 0)  # skipped tap = real 0
    w = np.asarray(w, np.int64).reshape(g["k_h"], g["k_w"], g["out_c"])
    acc = np.einsum("yxhwo,hwo->yxo", p, w)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return _finish_s8(acc, q)


def depthwise_conv2d_f32(g, act_min, act_max, x, w, bias):
    """Returns (result, error scale)."""
    p = _depthwise_patches(g, x.astype(np.float64), 0.0)
    w = np.asarray(w, np.float64).reshape(g["k_h"], g["k_w"], g["out_c"])
    acc = np.einsum("yxhwo,hwo->yxo", p, w)
    mag = np.einsum("yxhwo,hwo->yxo", np.abs(p), np.abs(w))
    if bias is not None:
        acc = acc + bias
        mag = mag + np.abs(bias)
    return np.clip(acc, act_min, act_max), mag


def conv2d_f32(g, act_min, act_max, x, w, bias):
    """Returns (result, error scale)."""
    p, _ = gather(x.astype(np.float64), g, 0.0)
    w = w.astype(np.float64)
    acc = np.einsum("yxhwc,ohwc->yxo", p, w)
    mag = np.einsum("yxhwc,ohwc->yxo", np.abs(p), np.abs(w))
    if bias is not None:
        acc = acc + bias
        mag = mag + np.abs(bias)
    return np.clip(acc, act_min, act_max), mag


def fully_connected_f32(act_min, act_max, x, w, bias):
    x, w = x.astype(np.float64), w.astype(np.float64)
    acc, mag = x @ w.T, np.abs(x) @ np.abs(w).T
    if bias is not None:
        acc, mag = acc + bias, mag + np.abs(bias)
    return np.clip(acc, act_min, act_max), mag


# ---- elementwise ---------------------------------------------------------

ADD_FIELDS = ("input1_offset", "input1_multiplier", "input1_shift",
              "input2_offset", "input2_multiplier", "input2_shift", "left_shift",
              "output_offset", "output_multiplier", "output_shift", "act_min", "act_max")


def add_s8(p, x1, x2, out_rq=None):
    """k2m_add_s8 (TFLite's int8 Add); p has k2m_add_s8_params's fields.
    out_rq: the output requantization (requantize_sat for the broadcast
    kernel); the operands may be numpy-broadcast."""
    a = (x1.astype(np.int64) + p["input1_offset"]) * (1 << p["left_shift"])
    b = (x2.astype(np.int64) + p["input2_offset"]) * (1 << p["left_shift"])
    # the C computes these in int32: the parameters must keep them in range
    assert np.abs(a).max(initial=0) < 2**31 and np.abs(b).max(initial=0) < 2**31
    s = (requantize(a, p["input1_multiplier"], p["input1_shift"])
         + requantize(b, p["input2_multiplier"], p["input2_shift"]))
    assert s.min(initial=0) >= INT32_MIN and s.max(initial=0) <= INT32_MAX
    y = (out_rq or requantize)(s, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def mul_s8(p, x1, x2):
    """k2m_mul_s8 (TFLite's int8 Mul): the offset inputs' product requantized."""
    prod = (x1.astype(np.int64) + p["input1_offset"]) * (x2.astype(np.int64) + p["input2_offset"])
    y = requantize(prod, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def add_f32(x1, x2, act_min, act_max):
    """Bit-exact: one float32 add, then the clamp."""
    v = (np.asarray(x1, np.float32) + np.asarray(x2, np.float32)).astype(np.float32)
    lo, hi = np.float32(act_min), np.float32(act_max)
    v = np.where(v < lo, lo, v)  # the C's comparisons, NaN passes through
    return np.where(v > hi, hi, v).astype(np.float32)


# ---- pooling -------------------------------------------------------------

def max_pool_s8(g, act_min, act_max, x):
    p, _ = gather(x.astype(np.int64), g, -128)  # empty window -> INT8_MIN
    return np.clip(p.max(axis=(2, 3)), act_min, act_max).astype(np.int8)


def avg_pool_s8(g, act_min, act_max, x):
    p, valid = gather(x.astype(np.int64), g, 0)
    total = p.sum(axis=(2, 3))
    count = valid.sum(axis=(2, 3))[..., None].astype(np.int64)
    safe = np.maximum(count, 1)
    half = safe // 2
    avg = np.where(total > 0, trunc_div(total + half, safe), trunc_div(total - half, safe))
    avg = np.where(count > 0, avg, 0)
    return np.clip(avg, act_min, act_max).astype(np.int8)


def mean_s8(q, x):
    """k2m_mean_s8: x (spatial, channels) int8; the channel sums plus
    spatial * input_offset, requantized once with multiplier[0], shift[0]."""
    x = np.asarray(x, np.int64)
    s = x.sum(axis=0) + x.shape[0] * q["input_offset"]
    assert s.min() >= INT32_MIN and s.max() <= INT32_MAX, "int32 sum overflow"
    y = requantize(s, q["multiplier"][0], q["shift"][0]) + q["output_offset"]
    return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)


def max_pool_f32(g, act_min, act_max, x):
    lowest = -np.finfo(np.float32).max
    p, _ = gather(x.astype(np.float64), g, lowest)
    return np.clip(p.max(axis=(2, 3)), act_min, act_max)


def avg_pool_f32(g, act_min, act_max, x):
    """Returns (result, error scale)."""
    p, valid = gather(x.astype(np.float64), g, 0.0)
    count = valid.sum(axis=(2, 3))[..., None]
    safe = np.maximum(count, 1)
    avg = np.where(count > 0, p.sum(axis=(2, 3)) / safe, 0.0)
    mag = np.abs(p).sum(axis=(2, 3)) / safe
    return np.clip(avg, act_min, act_max), mag


# ---- activations ---------------------------------------------------------

def lut_s8(x, table):
    return np.asarray(table, np.int8)[x.astype(np.int64) + 128]


def softmax_s8(x, exp_table):
    """x (rows, cols) int8, exp_table 256 uint32."""
    x = x.astype(np.int64)
    t = np.asarray(exp_table, np.int64)
    e = t[x.max(axis=1, keepdims=True) - x]
    s = e.sum(axis=1, keepdims=True)
    assert s.max() < 2**31 and t[0] <= 2**23, "exp_table violates k2m.h's bounds"
    p = ((e << 8) + s // 2) // s  # all non-negative: floor == truncation
    return np.clip(p - 128, -128, 127).astype(np.int8)


def asr(x, n):
    """k2m_asr: floor(x / 2^n) (numpy's >> on signed ints is arithmetic)."""
    return np.asarray(x, np.int64) >> n


def lut_s16_s8(x, table):
    """x int16, table 257 int32 (256 x int8 output units): interpolation
    with every step floored, as k2m_lut_s16_s8."""
    t = np.asarray(table, np.int64)
    assert t.size == 257
    assert np.abs(np.diff(t)).max() < 2**23 and np.abs(t).max() < 2**30, "table outside k2m.h's bounds"
    u = x.astype(np.int64) + 32768
    i, f = u >> 8, u & 255
    y = t[i] + asr((t[i + 1] - t[i]) * f + 128, 8)
    return np.clip(asr(y + 128, 8), -128, 127).astype(np.int8)


def softmax_s16_s8(x, exp_hi, exp_lo):
    """x (rows, cols) int16, exp_hi/exp_lo 256 uint16 Q15 factor tables."""
    hi, lo = np.asarray(exp_hi, np.int64), np.asarray(exp_lo, np.int64)
    assert hi[0] == lo[0] == 32768 and hi.max() <= 65535 and lo.max() <= 65535
    x = x.astype(np.int64)
    d = x.max(axis=1, keepdims=True) - x  # 0..65535
    e = (hi[d >> 8] * lo[d & 255] + (1 << 14)) >> 15
    s = e.sum(axis=1, keepdims=True)
    assert s.max() < 2**31 and e.max() <= 2**15
    p = ((e << 8) + s // 2) // s  # all non-negative: floor == truncation
    return np.clip(p - 128, -128, 127).astype(np.int8)


def softmax_f32(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def relu_f32(x, act_min, act_max):
    return np.clip(x.astype(np.float64), act_min, act_max)


def sigmoid_f32(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def tanh_f32(x):
    return np.tanh(x.astype(np.float64))


# ---- quantize / dequantize -----------------------------------------------

def quantize_f32_s8(x, scale, zero_point):
    """Bit-exact: every step is the same float32 operation the C performs."""
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        v = x / np.float32(scale)
        nan = np.isnan(v)
        v = np.clip(np.where(nan, np.float32(0), v), np.float32(-512), np.float32(512))
        half = np.float32(0.5)
        r = np.trunc(np.where(v >= 0, v + half, v - half)).astype(np.int64) + zero_point
    r = np.where(nan, zero_point, r)
    return np.clip(r, -128, 127).astype(np.int8)


def dequantize_s8_f32(q, scale, zero_point):
    d = (q.astype(np.int64) - zero_point).astype(np.float32)
    return (np.float32(scale) * d).astype(np.float32)


# ---- broadcasting binary ops, reduce, matmul (k2m_broadcast.c,
# k2m_reduce.c, k2m_matmul.c) ------------------------------------------------

def requantize_sat(acc, multiplier, shift):
    """k2m_rq_apply_sat: requantize, except that an accumulator whose left
    shift would leave int32 gives the sat30 bound of its sign."""
    acc, m, s = np.broadcast_arrays(np.asarray(acc, np.int64), np.asarray(multiplier, np.int64),
                                    np.asarray(shift, np.int64))
    left = np.where(s > 0, s, 0)
    lim = INT32_MAX >> left
    y = requantize(np.clip(acc, INT32_MIN, INT32_MAX), m, s)
    y = np.where((left > 0) & (acc > lim), (1 << 30) - 1, y)
    return np.where((left > 0) & (acc < -lim - 1), -(1 << 30), y)


def _clamp_s8(y, p):
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def broadcast_add_s8(p, x1, x2):
    """k2m_broadcast_add_s8: add_s8 with the output requantization
    saturating (requantize_sat)."""
    return add_s8(p, x1, x2, out_rq=requantize_sat)


def broadcast_mul_s8(p, x1, x2):
    prod = ((np.asarray(x1, np.int64) + p["input1_offset"])
            * (np.asarray(x2, np.int64) + p["input2_offset"]))
    return _clamp_s8(requantize_sat(prod, p["output_multiplier"], p["output_shift"])
                     + p["output_offset"], p)


def broadcast_max_min_s8(p, is_max, x1, x2):
    a = requantize_sat(np.asarray(x1, np.int64) + p["input1_offset"],
                       p["input1_multiplier"], p["input1_shift"])
    b = requantize_sat(np.asarray(x2, np.int64) + p["input2_offset"],
                       p["input2_multiplier"], p["input2_shift"])
    return _clamp_s8((np.maximum(a, b) if is_max else np.minimum(a, b)) + p["output_offset"], p)


def div_nearest(num, den):
    """k2m_div_nearest: num / den to nearest, ties away from zero (den != 0)."""
    num, den = np.asarray(num, np.int64), np.asarray(den, np.int64)
    a, b = np.abs(num), np.abs(den)
    q = (a + (b >> 1)) // b
    return np.where((num < 0) != (den < 0), -q, q)


def broadcast_div_s8(p, x1, x2):
    """k2m_broadcast_div_s8: the quotient with left_shift fraction bits,
    requantized; a zero divisor gives act_max / act_min / the clamped zero
    point for n > 0 / n < 0 / n == 0."""
    n, d = np.broadcast_arrays(np.asarray(x1, np.int64) + p["input1_offset"],
                               np.asarray(x2, np.int64) + p["input2_offset"])
    safe = np.where(d == 0, 1, d)
    t = div_nearest(n * (1 << p["left_shift"]), safe)
    assert np.abs(t).max(initial=0) <= 2**30
    y = requantize_sat(t, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    zero = np.where(n > 0, p["act_max"], np.where(n < 0, p["act_min"], p["output_offset"]))
    return _clamp_s8(np.where(d == 0, zero, y), p)


BROADCAST_F32 = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                 "max": np.maximum, "min": np.minimum}


def broadcast_f32(func, x1, x2, act_min, act_max):
    """k2m_broadcast_f32, bit-exact: one float32 operation, then the C's
    clamp comparisons."""
    a, b = np.asarray(x1, np.float32), np.asarray(x2, np.float32)
    with np.errstate(all="ignore"):
        v = ((a + b) * np.float32(0.5) if func == "avg" else BROADCAST_F32[func](a, b))
    v = v.astype(np.float32)
    lo, hi = np.float32(act_min), np.float32(act_max)
    v = np.where(v < lo, lo, v)
    return np.where(v > hi, hi, v).astype(np.float32)


def reduce_sum_s8(p, x):
    """k2m_reduce_sum_s8: x (outer, length, inner) int8 -> (outer, inner)."""
    x = np.asarray(x, np.int64)
    s = x.sum(axis=1) + x.shape[1] * p["input_offset"]
    assert s.min() >= INT32_MIN and s.max() <= INT32_MAX, "int32 sum overflow"
    return _clamp_s8(requantize_sat(s, p["multiplier"], p["shift"]) + p["output_offset"], p)


def reduce_max_min_s8(is_max, act_min, act_max, x):
    x = np.asarray(x, np.int64)
    y = x.max(axis=1) if is_max else x.min(axis=1)
    return np.clip(y, act_min, act_max).astype(np.int8)


def reduce_f32(func, x, act_min, act_max):
    """Returns (result, error scale): float64 reduction of x (outer, length,
    inner) over the middle axis, clamped."""
    x = np.asarray(x, np.float64)
    y = {"mean": np.mean, "sum": np.sum, "max": np.max, "min": np.min}[func](x, axis=1)
    mag = np.abs(x).sum(axis=1) / (x.shape[1] if func == "mean" else 1)
    return np.clip(y, act_min, act_max), mag


def matmul_offsets(d):
    """(off_a, off_b, off_c) per batch, outermost level first (k2m_matmul_dims
    as a dict with batch_count, a_batch, b_batch, c_batch lists of 3)."""
    out = []
    for i0 in range(d["batch_count"][0]):
        for i1 in range(d["batch_count"][1]):
            for i2 in range(d["batch_count"][2]):
                idx = (i0, i1, i2)
                out.append(tuple(sum(i * s for i, s in zip(idx, d[key]))
                                 for key in ("a_batch", "b_batch", "c_batch")))
    return out


def _matmul_acc(d, a, b, a_offset=0, b_offset=0):
    """Yields (output indices (m, n), exact sums (m, n)) per batch."""
    i, j, t = np.arange(d["m"])[:, None], np.arange(d["n"])[:, None], np.arange(d["k"])[None, :]
    for off_a, off_b, off_c in matmul_offsets(d):
        rows_a = a[off_a + i * d["a_row"] + t] + a_offset
        rows_b = b[off_b + j * d["b_row"] + t] + b_offset
        yield off_c + i * d["c_row"] + j.T, rows_a @ rows_b.T


def matmul_s8(d, p, a, b, c_size, out16=False):
    """k2m_matmul_s8 (out16: _s8_s16) on flat int8 a, b; returns the flat c
    with every element the matmul writes (others stay 0)."""
    c = np.zeros(c_size, np.int16 if out16 else np.int8)
    for idx, acc in _matmul_acc(d, np.asarray(a, np.int64), np.asarray(b, np.int64),
                                p["a_offset"], p["b_offset"]):
        assert np.abs(acc).max() < 2**31
        y = requantize_sat(acc, p["multiplier"], p["shift"]) + p["output_offset"]
        c[idx] = np.clip(y, p["act_min"], p["act_max"])
    return c


def matmul_f32(d, a, b, c_size, act_min, act_max):
    """Returns (result, error scale) as flat arrays."""
    c, mag = np.zeros(c_size), np.zeros(c_size)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    for (idx, acc), (_, m) in zip(_matmul_acc(d, a, b), _matmul_acc(d, np.abs(a), np.abs(b))):
        c[idx], mag[idx] = np.clip(acc, act_min, act_max), m
    return c, mag
