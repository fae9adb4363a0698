"""numpy reference of c_runtime/k2m_norm.c (int8) and k2m_norm_f32.c.

The int8 function is the C's integer arithmetic step for step (k2m.h,
"normalization"): exact sums, the int64 variance, the table + Newton
inverse square root, one 64-bit product per element and the final
rounding; tests demand bit-exact agreement.  Group-level values are Python
integers (no overflow to reason about), per-element ones int64 numpy.  The
float function is the Keras formula in float64.

`dims` is (a, b, c, d); `p` mirrors k2m_norm_s8_params as a dict with the
same field names, mode as a string ("layer", "rms", "rms_scaling", "l2").
"""
from __future__ import annotations

import math

import numpy as np

BETA_BITS = 8
RSQRT_TABLE = [round(2**30 / math.sqrt((i + 16.5) / 64)) for i in range(48)]
INT32_MAX = 2**31 - 1


def even_clz64(w: int) -> int:
    return (64 - w.bit_length()) & ~1


def rsqrt(w: int):
    """(R, z): 1 / sqrt(w) ~= R / 2^31 * 2^(z/2 - 31), as k2m_norm_rsqrt."""
    z = even_clz64(w)
    m = ((w << z) & (2**64 - 1)) >> 32
    r = RSQRT_TABLE[(m >> 26) - 16]
    for _ in range(2):
        r2 = (r * r) >> 30
        xr2 = (m * r2) >> 32
        r = (r * ((3 << 30) - xr2)) >> 31
    return min(r, INT32_MAX), z


def grouped(dims, x):
    """x viewed as (a, b, c, d) -> (a, c, b, d): one group per (a, c)."""
    return np.asarray(x).reshape(dims).transpose(0, 2, 1, 3)


def param_index(dims, strides):
    """j for every element, in the (a, c, b, d) group order."""
    a, b, c, d = dims
    sb, sc, sd = strides
    j = (np.arange(b)[None, :, None] * sb + np.arange(c)[:, None, None] * sc
         + np.arange(d)[None, None, :] * sd)
    return np.broadcast_to(j[None], (a, c, b, d))


def round_shift(p, k: int):
    """k2m_norm_round_shift on an int64 array."""
    if k > 0:
        k = min(k, 62)
        y = (p + (1 << (k - 1))) >> k
    else:
        y = np.clip(p, -2**31, 2**31) * (1 << min(-k, 31))
    return np.clip(y, -2**30, 2**30 - 1)


def group_stats(mode: str, n: int, s1: int, s2: int, p):
    """(R, k, m, t) of one group: its inverse square root, the final shift,
    and the numerator m v - t."""
    m = 1 if mode == "l2" else n
    var = m * s2 if mode in ("rms", "l2") else n * s2 - s1 * s1
    w = var << p["eps_bits"]
    w = max(w, p["eps"]) if mode == "l2" else w + p["eps"]
    r, z = rsqrt(max(w, 1))
    k = 61 - z // 2 - p["eps_bits"] // 2 - p["gamma_shift"] - BETA_BITS
    return r, k, m, (s1 if mode == "layer" else 0)


def norm_s8(dims, p, x):
    """int8 output of k2m_norm_s8, shaped like x."""
    g = grouped(dims, x).astype(np.int64)
    j = param_index(dims, p["param_stride"])
    gm = np.asarray(p["gamma_multiplier"], np.int64)[j]
    beta = np.asarray(p["beta"], np.int64)[j]
    v = g + p["input_offset"]
    n = dims[1] * dims[3]
    out = np.empty_like(g)
    for a in range(dims[0]):
        for c in range(dims[2]):
            vg = v[a, c]
            r, k, m, t = group_stats(p["mode"], n, int(vg.sum()), int((vg * vg).sum()), p)
            cj = (r * gm[a, c]) >> 32
            acc = round_shift((m * vg - t) * cj, k)
            y = ((acc + beta[a, c] + (1 << (BETA_BITS - 1))) >> BETA_BITS) + p["output_offset"]
            out[a, c] = np.clip(y, p["act_min"], p["act_max"])
    return out.transpose(0, 2, 1, 3).reshape(np.shape(x)).astype(np.int8)


def norm_float(dims, mode, eps, x, gamma=None, beta=None, strides=(0, 0, 0)):
    """Keras's formula in float64, shaped like x."""
    g = grouped(dims, x).astype(np.float64)
    axes = (2, 3)
    if mode in ("layer", "rms_scaling"):
        mean = g.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(((g - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
        y = ((g - mean) if mode == "layer" else g) * inv
    elif mode == "rms":
        y = g / np.sqrt((g * g).mean(axis=axes, keepdims=True) + eps)
    else:
        ss = (g * g).sum(axis=axes, keepdims=True)
        with np.errstate(divide="ignore"):
            y = g * np.minimum(1.0 / np.sqrt(ss), 1.0 / eps)
    j = param_index(dims, strides)
    if gamma is not None:
        y = y * np.asarray(gamma, np.float64)[j]
    if beta is not None:
        y = y + np.asarray(beta, np.float64)[j]
    return y.transpose(0, 2, 1, 3).reshape(np.shape(x))
