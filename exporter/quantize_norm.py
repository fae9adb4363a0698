"""int8 parameters of a normalization node (docs/norm_int8.md).

The kernel (k2m.h, "normalization") computes each group's variance as an
exact int64 V in units of s_in^2 / n^2 (L2: s_in^2) and its numerator
m v - t in units of s_in / n (L2: s_in); here epsilon is put into those
units with as many fractional bits as the 64-bit sum leaves, gamma / s_out
becomes one signed Q31 multiplier per parameter with a shared shift, and
beta / s_out a fixed-point offset in 1/256 output steps.  What the integer
form cannot hold is refused by name.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .errors import UnsupportedModelError
from .ir import check_norm
from .quantize import clamp_range, round_away

MAX_GROUP = 65536           # K2M_NORM_MAX_GROUP: sum of v^2 < 65025 * 65536 < 2^32
BETA_BITS = 8               # K2M_NORM_BETA_BITS
MAX_EPS_BITS = 62
MAX_BETA = 2**29


def _refuse(node, why: str):
    raise UnsupportedModelError(f"layer '{node.layer}' ({node.keras_class}): {why}; "
                                f"export it with --dtype float32")


def epsilon_fixed(node, n: int, s_in: float) -> tuple:
    """(f, E * 2^f): epsilon in the variance's integer units with the most
    fractional bits f (even, <= 62) for which V_max << f plus it stays below
    2^63.  V_max bounds V: 65025 n^2 (L2: 65025 n)."""
    mode, eps = node.attrs["mode"], Fraction(node.attrs["epsilon"])
    s = Fraction(s_in)
    e = (eps / s) ** 2 if mode == "l2" else eps * n * n / (s * s)
    v_max = 65025 * n * (1 if mode == "l2" else n)
    for f in range(MAX_EPS_BITS, -1, -2):
        e_f = math.floor(e * 2**f + Fraction(1, 2))
        if (v_max << f) + e_f < 2**63:
            break
    else:
        _refuse(node, f"epsilon {float(eps):g} is too large against its input's int8 scale "
                      f"{s_in:g} (epsilon / scale^2 = {float(eps / (s * s)):.3g}) for the "
                      f"kernel's 64-bit variance")
    if mode == "rms_scaling" and eps > 0 and e_f == 0:
        # a constant group divides x by sqrt(epsilon): 0 would be a guess
        _refuse(node, f"epsilon {float(eps):g} is below the int8 kernel's resolution at "
                      f"input scale {s_in:g}")
    return f, e_f


def affine(node, s_out: float) -> tuple:
    """(gamma multipliers, shared shift, beta in 1/256 output steps, strides)."""
    w = node.weights
    count = max([w[k].size for k in ("gamma", "beta") if k in w] or [1])
    gamma = w["gamma"].astype(np.float64) if "gamma" in w else np.ones(count)
    beta = w["beta"].astype(np.float64) if "beta" in w else np.zeros(count)
    g = gamma / s_out
    top = float(np.abs(g).max())
    shift = math.frexp(top)[1] if top > 0 else 0
    mult = round_away(g * 2.0 ** (31 - shift))
    if np.abs(mult).max() >= 2**31:  # the largest rounded up to 2^31
        shift += 1
        mult = round_away(g * 2.0 ** (31 - shift))
    b = round_away(beta / s_out * 2**BETA_BITS)
    if np.abs(b).max() > MAX_BETA:
        _refuse(node, f"beta up to {float(np.abs(beta).max()):g} is over 2^21 steps of its "
                      f"output's int8 scale {s_out:g}")
    strides = tuple(node.attrs["param_index"]) if ("gamma" in w or "beta" in w) else (0, 0, 0)
    return mult.astype(np.int32), shift, b.astype(np.int32), strides


def params(node, tin, tout) -> dict:
    check_norm(node, tin.size // max(node.attrs.get("frames", 0), 1))  # one frame's
    if tin.dtype != "int8":
        _refuse(node, f"its input is {tin.dtype}; the int8 kernel reads int8")
    _, b, _, d = node.attrs["dims"]
    n = b * d
    if n > MAX_GROUP:
        _refuse(node, f"it normalizes groups of {n} values; the int8 kernel's sums are exact "
                      f"up to {MAX_GROUP}")
    eps_bits, eps = epsilon_fixed(node, n, tin.quant.scale)
    mult, shift, beta, strides = affine(node, tout.quant.scale)
    lo, hi = clamp_range(node.attrs.get("clamp", (None, None)), tout.quant)
    return {"mode": node.attrs["mode"], "input_offset": -tin.quant.zero_point,
            "eps_bits": eps_bits, "eps": eps, "gamma_multiplier": mult, "gamma_shift": shift,
            "beta": beta, "param_stride": strides, "output_offset": tout.quant.zero_point,
            "act_min": lo, "act_max": hi}
