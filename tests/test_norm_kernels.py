"""The normalization kernels (c_runtime/k2m_norm.c int8, k2m_norm_f32.c)
against tests/norm_ref.py.

Built with cffi from k2m.h's normalization section; the module includes the
two kernel files, so the static integer inverse square root is tested
directly.  int8 must be bit-exact on every dims pattern the IR uses (last
axis, first axis, groups, whole sample, arbitrary), all four modes, group
sizes 1 to 65536, constant groups, extreme scales and zero points, epsilon
from 1e-12 to 10 and extreme raw parameters; float agrees with the float64
Keras formula to 1e-5 of the output's magnitude.  Outputs sit between guard
elements.  The int8 kernel's accuracy against the float formula is measured
in output steps on realistic inputs.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import norm_ref as ref  # noqa: E402
from test_kernels import GUARD, Caller, section_module, sentinel  # noqa: E402

from exporter.errors import UnsupportedModelError  # noqa: E402
from exporter.ir import Node, Quant, Tensor  # noqa: E402
from exporter.quantize import activation_quant  # noqa: E402
from exporter import quantize_norm  # noqa: E402

MODES = ["layer", "rms", "rms_scaling", "l2"]
N_CASES = 240

SHIMS = r"""
#include "k2m_norm.c"
#include "k2m_norm_f32.c"
void t_rsqrt(const uint64_t *w, int32_t *r, int32_t *z, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) r[i] = k2m_norm_rsqrt(w[i], &z[i]); }
"""
SHIM_CDEF = "void t_rsqrt(const uint64_t *w, int32_t *r, int32_t *z, int32_t n);"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return section_module("_k2m_norm_test", "normalization", SHIMS, SHIM_CDEF,
                          tmp_path_factory.mktemp("k2m_norm_build"))


# ---- calls ---------------------------------------------------------------

def padded(n, dtype):
    """A buffer of n elements between GUARD sentinels: (full, view)."""
    full = np.full(n + 2 * GUARD, sentinel(dtype), dtype)
    return full, full[GUARD:-GUARD]


def check_padding(full):
    s = sentinel(full.dtype)
    assert np.all(full[:GUARD] == s) and np.all(full[-GUARD:] == s), \
        "the kernel wrote outside its output"


def s8_params(c, p):
    c.keep += [p["gamma_multiplier"], p["beta"]]
    return c.new("k2m_norm_s8_params", {
        "mode": mode_enum(c, p["mode"]), "input_offset": p["input_offset"],
        "eps_bits": p["eps_bits"], "eps": p["eps"],
        "gamma_multiplier": c.ptr(np.ascontiguousarray(p["gamma_multiplier"], np.int32), "int32_t"),
        "gamma_shift": p["gamma_shift"],
        "beta": c.ptr(np.ascontiguousarray(p["beta"], np.int32), "int32_t"),
        "param_stride": list(p["param_stride"]), "output_offset": p["output_offset"],
        "act_min": p["act_min"], "act_max": p["act_max"]})


def mode_enum(c, mode):
    return getattr(c.lib, "K2M_NORM_" + mode.upper())


def run_s8(lib, dims, p, x, in_place=False):
    c = Caller(lib)
    d = c.new("k2m_norm_dims", dict(zip("abcd", dims)))
    full, out = padded(x.size, np.int8)
    if in_place:
        out[:] = x.ravel()
        src = c.ptr(full[GUARD:-GUARD], "int8_t")
    else:
        src = c.ptr(np.ascontiguousarray(x.ravel()), "int8_t")
    lib.lib.k2m_norm_s8(d, s8_params(c, p), src, c.ptr(full[GUARD:-GUARD], "int8_t"))
    check_padding(full)
    return out.reshape(x.shape).copy()


def run_f32(lib, dims, mode, eps, x, gamma, beta, strides, clamp=(-3.4e38, 3.4e38)):
    c = Caller(lib)
    d = c.new("k2m_norm_dims", dict(zip("abcd", dims)))
    arr = lambda v: c.ptr(np.ascontiguousarray(v, np.float32), "float") if v is not None \
        else lib.ffi.NULL  # noqa: E731
    p = c.new("k2m_norm_f32_params", {"mode": mode_enum(c, mode), "epsilon": eps,
                                      "gamma": arr(gamma), "beta": arr(beta),
                                      "param_stride": list(strides), "act_min": clamp[0],
                                      "act_max": clamp[1]})
    full, out = padded(x.size, np.float32)
    lib.lib.k2m_norm_f32(d, p, c.ptr(np.ascontiguousarray(x.ravel(), np.float32), "float"),
                         c.ptr(full[GUARD:-GUARD], "float"))
    check_padding(full)
    return out.reshape(x.shape).copy()


# ---- the inverse square root ----------------------------------------------

def test_rsqrt_bit_exact_and_accurate(lib):
    rng = np.random.default_rng(7)
    edge = [1, 2, 3, 4, 5, 2**31, 2**32 - 1, 2**32, 2**62 - 1, 2**62, 2**62 + 1,
            2**63 - 1, 2**63, 2**64 - 1]
    edge += [(1 << b) + o for b in range(64) for o in (-1, 0, 1) if 0 < (1 << b) + o < 2**64]
    bits = rng.integers(1, 65, 20000)
    rand = [int(rng.integers(0, 2**62)) >> (64 - int(b)) | (1 << (int(b) - 1)) for b in bits]
    w = np.array(sorted(set(edge + rand)), np.uint64)
    c = Caller(lib)
    r, z = np.empty(w.size, np.int32), np.empty(w.size, np.int32)
    lib.lib.t_rsqrt(c.ptr(w, "uint64_t"), c.ptr(r, "int32_t"), c.ptr(z, "int32_t"), w.size)
    want = [ref.rsqrt(int(v)) for v in w]
    assert [(int(a), int(b)) for a, b in zip(r, z)] == want
    got = r.astype(np.float64) / 2**31 * 2.0 ** (z / 2 - 31)
    rel = np.abs(got * np.sqrt(w.astype(np.float64)) - 1)
    assert rel.max() < 3e-7, f"worst relative error {rel.max():.3g} at w = {w[rel.argmax()]}"
    assert r.max() < 2**31 and r.min() > 2**29


# ---- random cases ---------------------------------------------------------

def dims_case(rng, i):
    """(pattern, dims, param strides, parameter count) as the IR lowers each
    Keras layer."""
    kind = ["last", "first", "group", "whole", "any"][i % 5]
    if kind == "last":      # LayerNormalization over trailing axes of F values
        rows, f = int(rng.integers(1, 9)), int(rng.choice([1, 2, 3, 7, 16, 33, 128]))
        return kind, (rows, 1, 1, f), (0, 0, 1), f
    if kind == "first":     # over axis 0 of (T, F), gamma of shape (T,)
        t, f = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        return kind, (1, t, f, 1), (1, 0, 0), t
    if kind == "group":     # GroupNormalization, per-channel gamma
        hw, g, cg = int(rng.integers(1, 17)), int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 3, 8]))
        return kind, (1, hw, g, cg), (0, cg, 1), g * cg
    if kind == "whole":
        n = int(rng.integers(1, 300))
        return kind, (1, n, 1, 1), (1, 0, 0), n
    dims = tuple(int(v) for v in rng.integers(1, 6, 4))
    strides = tuple(int(v) for v in rng.integers(0, 3, 3))
    return kind, dims, strides, 1 + sum((n - 1) * s for n, s in zip(dims[1:], strides))


def input_case(rng, i, dims):
    """int8 input and its zero point: gaussian, uniform, constant groups,
    saturated extremes, a tiny spread."""
    theme = ["gauss", "uniform", "constant", "extreme", "narrow"][(i // 5) % 5]
    n = int(np.prod(dims))
    zp = int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))]))
    if theme == "gauss":
        x = rng.normal(zp + rng.normal(0, 20), rng.uniform(1, 60), n)
    elif theme == "uniform":
        x = rng.integers(-128, 128, n)
    elif theme == "constant":   # every group one value: variance 0
        a, b, c, d = dims
        x = np.broadcast_to(rng.integers(-128, 128, (a, 1, c, 1)), dims).ravel()
    elif theme == "extreme":
        x = rng.choice([-128, 127], n)
    else:
        x = zp + rng.integers(-1, 2, n)
    return theme, np.clip(np.round(x), -128, 127).astype(np.int8).reshape(dims), zp


def fake_node(mode, eps, dims, strides, gamma, beta):
    weights = {k: v for k, v in (("gamma", gamma), ("beta", beta)) if v is not None}
    return Node("n", "norm", ["x"], ["y"], attrs={"dims": dims, "mode": mode, "epsilon": eps,
                                                "param_index": strides},
                weights=weights, layer="norm_test", keras_class="LayerNormalization")


def exported_case(rng, i):
    """Parameters as the exporter computes them from real scales, epsilon and
    gamma/beta, with the output scale calibrated on the float result."""
    kind, dims, strides, count = dims_case(rng, i)
    mode = MODES[(i // 25) % 4]
    theme, x, zp = input_case(rng, i, dims)
    s_in = float(np.float32(10 ** rng.uniform(-4, 1)))
    eps = 1e-12 if mode == "l2" else float(rng.choice([1e-6, 1e-3, 1e-5, 0.1, 10.0, 1e-12]))
    has_g, has_b = rng.integers(2, size=2)
    gamma = rng.normal(1, 0.5, count).astype(np.float32) if has_g else None
    beta = rng.normal(0, 0.5, count).astype(np.float32) if has_b else None
    node = fake_node(mode, eps, dims, strides, gamma, beta)
    real = s_in * (x.astype(np.float64) - zp)
    y = ref.norm_float(dims, mode, eps, real, gamma, beta, strides)
    qout = activation_quant(float(y.min()), float(y.max()))
    p = quantize_norm.params(node, Tensor("x", dims, "int8", Quant(s_in, zp)),
                             Tensor("y", dims, "int8", qout))
    return dict(kind=kind, theme=theme, mode=mode, dims=dims, x=x, p=p, s_in=s_in, zp=zp,
                eps=eps, gamma=gamma, beta=beta, strides=strides, qout=qout, y=y)


def raw_case(rng, i):
    """Parameters drawn directly inside the kernel's contract, extremes
    included: shared shifts that make the final shift negative or beyond 62,
    random epsilon words, clamps."""
    kind, dims, strides, count = dims_case(rng, i)
    mode = MODES[i % 4]
    _, x, zp = input_case(rng, i + 3, dims)
    n = dims[1] * dims[3]
    v_max = 65025 * n * (1 if mode == "l2" else n)
    f = int(rng.choice(range(0, 63, 2)))
    while (v_max << f) >= 2**62:
        f -= 2
    eps = int(rng.integers(0, 2**63 - (v_max << f))) >> int(rng.integers(0, 63))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if i % 7 == 0 else (-128, 127)
    extreme = i % 3 == 0   # else shifts and offsets that keep outputs inside int8
    top = 2**29 if extreme else 2**14
    gm = rng.integers(-2**31 + 1, 2**31, count)
    if extreme:  # some parameters far below the largest: small products
        gm = gm >> rng.integers(0, 31, count)
    gm = gm.astype(np.int32)
    p = {"mode": mode, "input_offset": -zp, "eps_bits": f, "eps": eps,
         "gamma_multiplier": gm,
         "gamma_shift": int(rng.integers(-45, 45) if extreme else rng.integers(2, 9)),
         "beta": rng.integers(-top, top + 1, count).astype(np.int32),
         "param_stride": strides, "output_offset": int(rng.integers(-128, 128)),
         "act_min": lo, "act_max": hi}
    return dict(kind=kind, mode=mode, dims=dims, x=x, p=p)


@pytest.mark.parametrize("i", range(N_CASES))
def test_norm_s8_exported_params(lib, i):
    case = exported_case(np.random.default_rng(5000 + i), i)
    got = run_s8(lib, case["dims"], case["p"], case["x"])
    want = ref.norm_s8(case["dims"], case["p"], case["x"])
    np.testing.assert_array_equal(got, want, err_msg=f"{case['kind']} {case['theme']} "
                                  f"{case['mode']} {case['dims']} eps {case['eps']}")


@pytest.mark.parametrize("i", range(N_CASES // 2))
def test_norm_s8_raw_params(lib, i):
    case = raw_case(np.random.default_rng(9000 + i), i)
    got = run_s8(lib, case["dims"], case["p"], case["x"])
    np.testing.assert_array_equal(got, ref.norm_s8(case["dims"], case["p"], case["x"]),
                                  err_msg=f"{case['kind']} {case['mode']} {case['dims']}")


def kernel_form(k: int, m: int, t: int) -> str:
    """Which of k2m_norm_run's loops a group takes (k2m_norm_group_init)."""
    k = min(k, 62)
    if k <= 0:
        return "general, left shift"
    if k < 32 and (256 * m + abs(t)) << (32 - k) >= 2**31:
        return "general, wide numerator"
    return "high word, rounded" if k <= 32 else "high word, shifted"


def test_cases_reach_every_kernel_form():
    """Between them the exported and raw cases take each of the kernel's
    loops (general with a left or a 64-bit right shift, the two high-word
    forms), a final shift past 62, and outputs away from the clamps."""
    forms, inside = set(), []
    cases = [raw_case(np.random.default_rng(9000 + i), i) for i in range(N_CASES // 2)]
    cases += [exported_case(np.random.default_rng(5000 + i), i) for i in range(N_CASES)]
    for case in cases:
        p, dims = case["p"], case["dims"]
        g = ref.grouped(dims, case["x"]).astype(np.int64) + p["input_offset"]
        for grp in g.reshape(dims[0] * dims[2], -1):
            _, k, m, t = ref.group_stats(p["mode"], dims[1] * dims[3], int(grp.sum()),
                                         int((grp * grp).sum()), p)
            forms.add(kernel_form(k, m, t))
            if k > 62:
                forms.add("past 62")
        y = ref.norm_s8(dims, p, case["x"])
        inside.append(((y > p["act_min"]) & (y < p["act_max"])).mean())
    assert forms == {"general, left shift", "general, wide numerator", "high word, rounded",
                     "high word, shifted", "past 62"}
    assert np.mean(inside) > 0.2


@pytest.mark.parametrize("mode", MODES)
def test_norm_s8_in_place(lib, mode):
    case = exported_case(np.random.default_rng(77), 1 + 25 * MODES.index(mode))
    np.testing.assert_array_equal(run_s8(lib, case["dims"], case["p"], case["x"], in_place=True),
                                  ref.norm_s8(case["dims"], case["p"], case["x"]))


@pytest.mark.parametrize("n, theme", [(4096, "gauss"), (4096, "extreme"), (65536, "extreme"),
                                      (65536, "gauss"), (1, "gauss")])
@pytest.mark.parametrize("mode", MODES)
def test_norm_s8_group_sizes(lib, n, theme, mode):
    """Groups of one value, of 4096 and of the largest size the sums allow,
    with every value at -128 or 127 against zero point 127 (the sum of
    squares near 65025 n, just under 2^32)."""
    rng = np.random.default_rng(n + len(theme) + MODES.index(mode))
    rows = 2 if n <= 4096 else 1
    dims = (rows, 1, 1, n) if n <= 4096 else (1, n, 1, 1)
    x = (rng.choice([-128, 127], (rows, n), p=[0.97, 0.03]) if theme == "extreme"
         else np.clip(np.round(rng.normal(0, 40, (rows, n))), -128, 127)).astype(np.int8)
    zp = 127 if theme == "extreme" else 3
    node = fake_node(mode, 1e-12 if mode == "l2" else 1e-6, dims, (0, 0, 0), None, None)
    p = quantize_norm.params(node, Tensor("x", dims, "int8", Quant(0.05, zp)),
                             Tensor("y", dims, "int8", Quant(0.04, -3)))
    x = x.reshape(dims)
    np.testing.assert_array_equal(run_s8(lib, dims, p, x), ref.norm_s8(dims, p, x))


# ---- accuracy against the float formula -----------------------------------

def test_norm_s8_within_one_step_of_float(lib):
    """On realistic inputs (gaussian activations, calibrated scales, Keras's
    epsilons, trained-looking gamma/beta) the int8 kernel is within one
    output step of the float formula applied to the same int8 input (the
    kernel's own error; the input's quantization is common to both), and
    within 0.51 steps on 99.9% of outputs."""
    errs = []
    for i in range(N_CASES):
        case = exported_case(np.random.default_rng(5000 + i), i)
        if case["theme"] not in ("gauss", "uniform", "narrow"):
            continue
        got = run_s8(lib, case["dims"], case["p"], case["x"]).astype(np.float64)
        q = case["qout"]
        exact = np.clip(case["y"] / q.scale + q.zero_point, -128, 127)
        errs.append(np.abs(got - exact).ravel())
    errs = np.concatenate(errs)
    print(f"int8 norm vs float on the same input: max {errs.max():.3f} steps, "
          f"99.9% {np.quantile(errs, 0.999):.3f}, mean {errs.mean():.3f} ({errs.size} outputs)")
    assert errs.max() <= 1.0
    assert np.quantile(errs, 0.999) <= 0.51


# ---- float ----------------------------------------------------------------

@pytest.mark.parametrize("i", range(N_CASES // 2))
def test_norm_f32(lib, i):
    rng = np.random.default_rng(12000 + i)
    kind, dims, strides, count = dims_case(rng, i)
    mode = MODES[(i // 5) % 4]
    n = int(np.prod(dims))
    x = (rng.normal(rng.normal(0, 3), 10 ** rng.uniform(-2, 2), n) if i % 3
         else np.repeat(rng.normal(0, 1), n)).astype(np.float32).reshape(dims)
    eps = 1e-12 if mode == "l2" else float(rng.choice([1e-6, 1e-3, 0.1]))
    gamma = rng.normal(1, 0.5, count).astype(np.float32) if i % 2 else None
    beta = rng.normal(0, 0.5, count).astype(np.float32) if i % 4 < 2 else None
    got = run_f32(lib, dims, mode, eps, x, gamma, beta, strides)
    want = ref.norm_float(dims, mode, eps, x, gamma, beta, strides)
    mag = np.abs(want).max() + 1e-30
    assert np.abs(got - want).max() <= 1e-5 * mag, f"{kind} {mode} {dims}"


@pytest.mark.parametrize("mode", MODES)
def test_norm_f32_long_groups_and_clamp(lib, mode):
    """4096 values with a mean 20x their spread (the blocked sums keep the
    mean exact enough), and the output clamp."""
    rng = np.random.default_rng(3)
    x = rng.normal(20.0, 1.0, (3, 4096)).astype(np.float32)
    dims = (3, 1, 1, 4096)
    eps = 1e-12 if mode == "l2" else 1e-6
    want = ref.norm_float(dims, mode, eps, x)
    got = run_f32(lib, dims, mode, eps, x, None, None, (0, 0, 0))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    lo, hi = (float(np.float32(v)) for v in np.quantile(want, [0.25, 0.75]))
    got = run_f32(lib, dims, mode, eps, x, None, None, (0, 0, 0), clamp=(lo, hi))
    assert np.abs(got - np.clip(want, lo, hi)).max() <= 1e-5 * np.abs(want).max()
    assert got.min() == np.float32(lo) and got.max() == np.float32(hi)


def test_norm_f32_zero_groups(lib):
    """All-zero groups: layer/rms give beta, L2 gives 0 (Keras's
    min(rsqrt(0), 1/eps) = 1/eps times 0)."""
    x = np.zeros((2, 1, 1, 5), np.float32)
    beta = np.arange(5, dtype=np.float32)
    for mode in MODES:
        got = run_f32(lib, x.shape, mode, 1e-12 if mode == "l2" else 1e-3, x, None, beta,
                      (0, 0, 1))
        np.testing.assert_array_equal(got, np.broadcast_to(beta, x.shape))


# ---- what the int8 form cannot hold is refused ------------------------------

def refused(mode, eps, dims, s_in, s_out=0.05, beta=None):
    node = fake_node(mode, eps, dims, (0, 0, 1), None, beta)
    with pytest.raises(UnsupportedModelError, match="norm_test.*--dtype float32"):
        quantize_norm.params(node, Tensor("x", dims, "int8", Quant(s_in, 0)),
                             Tensor("y", dims, "int8", Quant(s_out, 0)))


def test_int8_refusals():
    refused("layer", 1.0, (1, 1, 1, 4096), 1e-9)                       # eps / s^2 too big
    refused("layer", 1e-3, (1, 1, 1, 65537), 0.1)                      # sums not exact
    refused("layer", 1e-3, (1, 1, 1, 4), 0.1, s_out=1e-7,
            beta=np.array([1.0, 0, 0, 0], np.float32))                 # beta over 2^21 steps
    refused("rms_scaling", 1e-30, (1, 1, 1, 4), 100.0)                 # eps below resolution


def test_epsilon_units_tiny_and_huge():
    """eps n^2 / s^2 keeps its fractional bits when tiny and drops them (f
    smaller) when huge, never overflowing the 63-bit sum."""
    for eps, s in [(1e-6, 1.0), (1e-3, 1e-6), (10.0, 1e-5), (1e-12, 0.02)]:
        node = fake_node("layer", eps, (1, 1, 1, 1024), (0, 0, 0), None, None)
        f, e = quantize_norm.epsilon_fixed(node, 1024, s)
        assert f % 2 == 0 and 0 <= f <= 62
        assert (65025 * 1024 * 1024 << f) + e < 2**63
        exact = eps * 1024**2 / s**2 * 2**f
        assert abs(e - exact) <= 0.5 + 1e-12 * exact
    assert quantize_norm.epsilon_fixed(fake_node("layer", 1e-6, (1, 1, 1, 8), (0, 0, 0),
                                                 None, None), 8, 1.0)[0] == 40
    assert quantize_norm.epsilon_fixed(fake_node("layer", 10.0, (1, 1, 1, 1024), (0, 0, 0),
                                                 None, None), 1024, 1e-5)[0] < 16


def test_known_answer(lib):
    """Hand-checked: one row [0, 2, 4, 6] (zero point 0, scale 1), layer
    mode, eps 0: mean 3, variance 5, so y = (x - 3) / sqrt(5) =
    [-1.342, -0.447, 0.447, 1.342]; at output scale 1/64 that is
    [-86, -29, 29, 86]."""
    dims = (1, 1, 1, 4)
    node = fake_node("layer", 0.0, dims, (0, 0, 0), None, None)
    p = quantize_norm.params(node, Tensor("x", dims, "int8", Quant(1.0, 0)),
                             Tensor("y", dims, "int8", Quant(1 / 64, 0)))
    x = np.array([0, 2, 4, 6], np.int8).reshape(dims)
    assert run_s8(lib, dims, p, x).ravel().tolist() == [-86, -29, 29, 86]
    assert math.isclose(1 / math.sqrt(5) * 64, 28.62, rel_tol=1e-3)
