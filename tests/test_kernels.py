"""The C kernels in c_runtime/ against the numpy references in kernel_ref.py.

The runtime is compiled once per session with cffi, straight from k2m.h
(its declarations are the cdef, so a header/implementation mismatch fails
here).  int8 kernels must be bit-exact; float kernels agree to 1e-5 of the
sum of |terms| (the C accumulates in float32 in its own order).  Output
buffers carry guard elements so stray writes are caught too.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_ref as ref  # noqa: E402

RUNTIME = Path(__file__).resolve().parent.parent / "c_runtime"
N_CASES = 100         # random cases per kernel
GUARD = 8             # guard elements after every output buffer
F32_MAX = float(np.finfo(np.float32).max)

# Extra C compiled into the test module: the static inline helpers of
# k2m_math.h have no linkage, so expose array versions of them.
TEST_SHIMS = r"""
#include "k2m.h"
#include "k2m_math.h"
void t_sat_rdhm(const int32_t *a, const int32_t *b, int32_t *out, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) out[i] = k2m_sat_rdhm(a[i], b[i]); }
void t_rdbp(const int32_t *x, const int32_t *e, int32_t *out, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) out[i] = k2m_rdbp(x[i], e[i]); }
void t_requantize(const int32_t *acc, const int32_t *m, const int32_t *s,
                  int32_t *out, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) out[i] = k2m_requantize(acc[i], m[i], s[i]); }
void t_rq_apply(const int32_t *acc, const int32_t *m, const int32_t *s,
                int32_t *out, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) { k2m_rq r; k2m_rq_init(&r, m[i], s[i]);
  out[i] = k2m_rq_apply(&r, acc[i]); } }
"""
SHIM_CDEF = """
void t_sat_rdhm(const int32_t *a, const int32_t *b, int32_t *out, int32_t n);
void t_rdbp(const int32_t *x, const int32_t *e, int32_t *out, int32_t n);
void t_requantize(const int32_t *acc, const int32_t *m, const int32_t *s,
                  int32_t *out, int32_t n);
void t_rq_apply(const int32_t *acc, const int32_t *m, const int32_t *s,
                int32_t *out, int32_t n);
"""


def header_cdef(text: str) -> str:
    """k2m.h's declarations in a form cffi's parser accepts."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = text.replace("\\\n", " ")  # a macro's continued lines are one line
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.S)
    # preprocessor lines go, except integer #defines (array sizes in structs)
    keep = re.compile(r"\s*#define\s+K2M_\w+\s+\d+\s*$")
    return "\n".join(l for l in text.splitlines()
                     if not l.lstrip().startswith("#") or keep.match(l))


@pytest.fixture(scope="session")
def k2m(tmp_path_factory):
    import cffi
    ffi = cffi.FFI()
    ffi.cdef(header_cdef((RUNTIME / "k2m.h").read_text()) + SHIM_CDEF)
    ffi.set_source(
        "_k2m_kernels_test", TEST_SHIMS,
        sources=[str(p) for p in sorted(RUNTIME.glob("*.c"))],
        include_dirs=[str(RUNTIME)], libraries=["m"],
        extra_compile_args=["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror"])
    tmp = tmp_path_factory.mktemp("k2m_build")
    so = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location(
        "_k2m_kernels_test", so,
        loader=importlib.machinery.ExtensionFileLoader("_k2m_kernels_test", so))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def section_module(name: str, section: str, shims: str, shim_cdef: str, tmp):
    """A cffi module of one k2m.h section ("/* ---- <section>" up to the
    next "/* ---- ") and C shims that #include the kernel files themselves,
    so their static helpers can be tested directly."""
    import cffi
    text = (RUNTIME / "k2m.h").read_text()
    start = text.index("/* ---- " + section)
    ffi = cffi.FFI()
    ffi.cdef(header_cdef(text[start:text.index("/* ---- ", start + 1)]) + shim_cdef)
    ffi.set_source(name, shims, include_dirs=[str(RUNTIME)], libraries=["m"],
                   extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
    so = ffi.compile(tmpdir=str(tmp), verbose=False)
    spec = importlib.util.spec_from_file_location(
        name, so, loader=importlib.machinery.ExtensionFileLoader(name, so))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- marshalling ---------------------------------------------------------

class Caller:
    """Keeps the numpy buffers behind cffi pointers alive for one call."""

    def __init__(self, mod):
        self.ffi, self.lib, self.keep = mod.ffi, mod.lib, []

    def ptr(self, arr, ctype):
        if arr is None:
            return self.ffi.NULL
        assert arr.flags.c_contiguous
        self.keep.append(arr)
        return self.ffi.cast(ctype + " *", self.ffi.from_buffer(arr))

    def new(self, ctype, init):
        obj = self.ffi.new(ctype + " *", init)
        self.keep.append(obj)
        return obj

    def window(self, g):
        return self.new("k2m_window", g)

    def scratch(self, g):
        """The int8 conv im2col buffer, exactly the size the exporter
        allocates (4 * k_h * k_w * in_c bytes, two int16 columns)."""
        return self.ptr(np.zeros(ref.conv_s8_scratch_bytes(g) // 2, np.int16), "int16_t")

    def quant(self, q):
        return self.new("k2m_quant_s8", {
            "input_offset": q["input_offset"], "output_offset": q["output_offset"],
            "act_min": q["act_min"], "act_max": q["act_max"],
            "multiplier": self.ptr(q["multiplier"], "int32_t"),
            "shift": self.ptr(q["shift"], "int32_t")})


def sentinel(dtype):
    return 0x5A if np.issubdtype(dtype, np.integer) else 1234.5


def guarded(shape, dtype):
    """An output buffer plus guard elements; returns (full, view)."""
    n = int(np.prod(shape))
    full = np.empty(n + GUARD, dtype)
    full[:] = np.array(sentinel(dtype), dtype)
    return full, full[:n].reshape(shape)


def check_guard(full):
    n = full.size - GUARD
    assert np.all(full[n:] == sentinel(full.dtype)), "kernel wrote past the end of its output"


def assert_close(got, want, mag, what):
    err = np.abs(got.astype(np.float64) - want)
    tol = 1e-5 * np.maximum(mag, np.abs(want)) + 1e-30
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} elements off, "
                           f"worst err {err.max():.3g}, first at {np.argwhere(bad)[0]}")


# ---- random cases --------------------------------------------------------

CHANNELS = [1, 3, 5, 8]


def axis(rng, theme, size=None):
    """(in, k, stride, dil, pad_before, out) for one spatial axis."""
    k = int(rng.integers(1, 5))
    s = int(rng.integers(1, 4))
    d = 1
    if theme == "stride_gt_kernel":
        k, s = int(rng.integers(1, 3)), int(rng.integers(3, 5))
    elif theme == "kernel_gt_stride":
        k, s = int(rng.integers(3, 6)), int(rng.integers(1, 3))
    elif theme == "dilated":
        d = int(rng.integers(2, 4))
    elif theme == "pointwise":
        k = 1
    n = size if size is not None else int(rng.integers(1, 10))
    span = (k - 1) * d + 1
    pb = int(rng.integers(0, span))
    pa = int(rng.integers(0, span))
    pa = max(pa, span - n - pb)  # at least one output
    out = (n + pb + pa - span) // s + 1
    return n, k, s, d, pb, out


THEMES = ["generic", "stride_gt_kernel", "kernel_gt_stride", "dilated",
          "spatial_1x1", "height_1", "pointwise"]


def random_window(rng, i, same_channels=False):
    theme = THEMES[i % len(THEMES)]
    if theme == "height_1":
        h = (1, 1, 1, 1, 0, 1)
        w = axis(rng, "generic")
    elif theme == "spatial_1x1":
        h, w = axis(rng, "generic", size=1), axis(rng, "generic", size=1)
    else:
        h, w = axis(rng, theme), axis(rng, theme)
    in_c = CHANNELS[int(rng.integers(len(CHANNELS)))]
    out_c = in_c if same_channels else CHANNELS[int(rng.integers(len(CHANNELS)))]
    return theme, dict(in_h=h[0], in_w=w[0], in_c=in_c, out_h=h[5], out_w=w[5], out_c=out_c,
                       k_h=h[1], k_w=w[1], stride_h=h[2], stride_w=w[2],
                       dil_h=h[3], dil_w=w[3], pad_top=h[4], pad_left=w[4])


def random_quant(rng, n_out):
    out_off = int(rng.integers(-128, 128))
    kind = rng.integers(4)
    if kind == 0:
        lo, hi = max(-128, out_off), 127                       # fused ReLU
    elif kind == 1:
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    else:
        lo, hi = -128, 127
    return dict(input_offset=int(rng.integers(-127, 129)), output_offset=out_off,
                act_min=lo, act_max=hi,
                multiplier=rng.integers(2**30, 2**31, n_out).astype(np.int32),
                shift=rng.integers(-12, 3, n_out).astype(np.int32))


def random_f32_act(rng):
    return [(-F32_MAX, F32_MAX), (0.0, F32_MAX), (0.0, 6.0), (-0.5, 0.7)][int(rng.integers(4))]


def s8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def w8(rng, shape):
    return rng.integers(-127, 128, shape).astype(np.int8)  # symmetric weights


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---- k2m_math.h ----------------------------------------------------------

EDGE = np.array([0, 1, -1, 2, -2, 2**30, -(2**30), 2**31 - 1, -(2**31), -(2**31) + 1,
                 12345, -12345, 2**16, -(2**16)], np.int64)


def call_vec(k2m, name, *arrays):
    c = Caller(k2m)
    args = [np.ascontiguousarray(a, np.int32) for a in arrays]
    out = np.empty(args[0].size, np.int32)
    getattr(c.lib, name)(*[c.ptr(a, "int32_t") for a in args], c.ptr(out, "int32_t"), out.size)
    return out


def test_sat_rdhm(k2m):
    rng = np.random.default_rng(1)
    a = np.concatenate([np.repeat(EDGE, EDGE.size), rng.integers(-2**31, 2**31, 20000)])
    b = np.concatenate([np.tile(EDGE, EDGE.size), rng.integers(-2**31, 2**31, 20000)])
    np.testing.assert_array_equal(call_vec(k2m, "t_sat_rdhm", a, b), ref.sat_rdhm(a, b))
    assert ref.sat_rdhm(-(2**31), -(2**31)) == 2**31 - 1
    # hand-checked ties (2^30 * 1 * 2 / 2^32 = +-0.5): gemmlowp's nudge rounds
    # +0.5 up to 1 but -0.5 to 0, i.e. ties go toward +infinity
    assert ref.sat_rdhm(2**30, 1) == 1 and ref.sat_rdhm(-(2**30), 1) == 0
    assert ref.sat_rdhm(3 * 2**29, 1) == 1 and ref.sat_rdhm(-3 * 2**29, 1) == -1


def test_rdbp(k2m):
    rng = np.random.default_rng(2)
    x = np.concatenate([np.repeat(EDGE, 32), rng.integers(-2**31, 2**31, 20000),
                        rng.integers(-64, 64, 5000)])
    e = np.concatenate([np.tile(np.arange(32), EDGE.size), rng.integers(0, 32, 20000),
                        rng.integers(0, 5, 5000)])
    np.testing.assert_array_equal(call_vec(k2m, "t_rdbp", x, e), ref.rdbp(x, e))
    # hand-checked: ties away from zero
    assert list(ref.rdbp([5, -5, 6, -6, 7, -7], 1)) == [3, -3, 3, -3, 4, -4]


def test_requantize(k2m):
    rng = np.random.default_rng(3)
    n = 30000
    acc = np.concatenate([rng.integers(-2**31, 2**31, n // 3),
                          rng.integers(-2**20, 2**20, n - n // 3)])
    m = rng.integers(2**30, 2**31, n)
    s = rng.integers(-31, 8, n)
    got = call_vec(k2m, "t_requantize", acc, m, s)
    np.testing.assert_array_equal(got, ref.requantize(acc, m, s))
    # and the value it approximates, where it does not saturate
    small = (np.abs(acc) < 2**20) & (s <= 0)
    exact = acc[small] * (m[small] / 2**31) * 2.0 ** s[small]
    assert np.all(np.abs(got[small] - exact) <= 1.0)


def test_rq_apply_matches_requantize(k2m):
    """k2m_rq_init/k2m_rq_apply (the DSP kernels' requantization, hoisted
    per channel, no division) is k2m_requantize bit for bit, including any
    multiplier (INT32_MIN, negative, small) and the rounding ties."""
    rng = np.random.default_rng(4)
    n = 40000
    edge = np.array([0, 1, -1, 2**30, -2**30, 2**31 - 1, -2**31, 12345, -12345])
    acc = np.concatenate([rng.integers(-2**31, 2**31, n // 4), rng.integers(-2**20, 2**20, n // 4),
                          rng.choice(edge, n // 4), rng.integers(-64, 64, n - 3 * (n // 4))])
    m = np.concatenate([rng.integers(2**30, 2**31, n // 2), rng.integers(-2**31, 2**31, n // 4),
                        rng.choice(np.array([-2**31, 2**31 - 1, 2**30, 0, 1, -1]), n - 3 * (n // 4))])
    m = rng.permutation(m)
    s = rng.integers(-31, 8, n)
    got = call_vec(k2m, "t_rq_apply", acc, m, s)
    np.testing.assert_array_equal(got, call_vec(k2m, "t_requantize", acc, m, s))
    np.testing.assert_array_equal(got, ref.requantize(acc, m, s))


# ---- convolution ---------------------------------------------------------

@pytest.mark.parametrize("i", range(N_CASES))
def test_conv2d_s8(k2m, i):
    rng = np.random.default_rng(1000 + i)
    theme, g = random_window(rng, i)
    q = random_quant(rng, g["out_c"])
    x = s8(rng, (g["in_h"], g["in_w"], g["in_c"]))
    w = w8(rng, (g["out_c"], g["k_h"], g["k_w"], g["in_c"]))
    bias = None if i % 5 == 0 else rng.integers(-2**22, 2**22, g["out_c"]).astype(np.int32)
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.int8)
    c = Caller(k2m)
    c.lib.k2m_conv2d_s8(c.window(g), c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                        c.ptr(bias, "int32_t"), c.ptr(full, "int8_t"), c.scratch(g))
    np.testing.assert_array_equal(out, ref.conv2d_s8(g, q, x, w, bias), err_msg=f"{theme} {g}")
    check_guard(full)


def test_conv2d_s8_not_all_saturated(k2m):
    """The random requantization must leave room for real comparisons."""
    seen = []
    for i in range(N_CASES):
        rng = np.random.default_rng(1000 + i)
        _, g = random_window(rng, i)
        q = random_quant(rng, g["out_c"])
        x = s8(rng, (g["in_h"], g["in_w"], g["in_c"]))
        w = w8(rng, (g["out_c"], g["k_h"], g["k_w"], g["in_c"]))
        y = ref.conv2d_s8(g, q, x, w, None).astype(np.int64)
        seen.append(((y > q["act_min"]) & (y < q["act_max"])).mean())
    assert np.mean(seen) > 0.2


@pytest.mark.parametrize("i", range(N_CASES))
def test_conv2d_f32(k2m, i):
    rng = np.random.default_rng(2000 + i)
    theme, g = random_window(rng, i)
    lo, hi = random_f32_act(rng)
    x = f32(rng, (g["in_h"], g["in_w"], g["in_c"]))
    w = f32(rng, (g["out_c"], g["k_h"], g["k_w"], g["in_c"]))
    bias = None if i % 4 == 0 else f32(rng, g["out_c"])
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.float32)
    c = Caller(k2m)
    c.lib.k2m_conv2d_f32(c.window(g), lo, hi, c.ptr(x, "float"), c.ptr(w, "float"),
                         c.ptr(bias, "float"), c.ptr(full, "float"))
    want, mag = ref.conv2d_f32(g, np.float32(lo), np.float32(hi), x, w, bias)
    assert_close(out, want, mag, f"{theme} {g}")
    check_guard(full)


def test_conv2d_f32_known_answer(k2m):
    """4x4 input 1..16, 2x2 kernel [[1,2],[3,4]], valid, stride 1, by hand:
    out[y][x] = in[y][x] + 2 in[y][x+1] + 3 in[y+1][x] + 4 in[y+1][x+1]
              = 40y + 10x + 44 (cross-correlation; a flipped kernel would
              give 40y + 10x + 16)."""
    g = dict(in_h=4, in_w=4, in_c=1, out_h=3, out_w=3, out_c=1, k_h=2, k_w=2,
             stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0)
    x = np.arange(1, 17, dtype=np.float32).reshape(4, 4, 1)
    w = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 2, 2, 1)
    out = np.zeros((3, 3, 1), np.float32)
    c = Caller(k2m)
    c.lib.k2m_conv2d_f32(c.window(g), -F32_MAX, F32_MAX, c.ptr(x, "float"),
                         c.ptr(w, "float"), k2m.ffi.NULL,
                         c.ptr(out, "float"))
    expected = np.array([[44, 54, 64], [84, 94, 104], [124, 134, 144]], np.float32)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    # same with a bias and a ReLU6-style clamp at 100
    bias = np.array([0.5], np.float32)
    c.lib.k2m_conv2d_f32(c.window(g), 0.0, 100.0, c.ptr(x, "float"), c.ptr(w, "float"),
                         c.ptr(bias, "float"), c.ptr(out, "float"))
    np.testing.assert_array_equal(out[:, :, 0], np.minimum(expected + 0.5, 100.0))


def test_conv2d_s8_known_answer(k2m):
    """1x3 input [1, 2, 3] (zero point 1 -> real 0, 1, 2), kernel [1, -1],
    'same' padding on the right: accs 0*1 + 1*-1 = -1, 1 - 2 = -1, 2*1 = 2
    (the padded tap is real zero).  Multiplier 2^30, shift 1: x * 0.5 * 2 = x;
    output zero point 3."""
    g = dict(in_h=1, in_w=3, in_c=1, out_h=1, out_w=3, out_c=1, k_h=1, k_w=2,
             stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0)
    q = dict(input_offset=-1, output_offset=3, act_min=-128, act_max=127,
             multiplier=np.array([2**30], np.int32), shift=np.array([1], np.int32))
    x = np.array([1, 2, 3], np.int8)
    w = np.array([1, -1], np.int8)
    out = np.zeros(3, np.int8)
    c = Caller(k2m)
    c.lib.k2m_conv2d_s8(c.window(g), c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                        k2m.ffi.NULL, c.ptr(out, "int8_t"), c.scratch(g))
    assert list(out) == [2, 2, 5]


# ---- depthwise convolution -----------------------------------------------

DW_CHANNELS = [4, 8, 12, 16, 1, 2, 3, 5, 7]   # multiples of 4 take the 4-channel block
N_DW = 120


def depthwise_case(rng, i, dtype):
    """A random window with out_c = in_c * mult: every third case mult 2 or 3,
    the others mult 1 (half with in_c a multiple of 4, half not)."""
    theme, g = random_window(rng, i)
    mult = [1, 1, 2, 1, 1, 3][i % 6]
    if mult == 1:
        pool = DW_CHANNELS[:4] if i % 2 == 0 else DW_CHANNELS[4:]
    else:
        pool = DW_CHANNELS
    g["in_c"] = int(rng.choice(pool))
    g["out_c"] = g["in_c"] * mult
    shape_x, shape_w = (g["in_h"], g["in_w"], g["in_c"]), (g["k_h"], g["k_w"], g["out_c"])
    if dtype == np.int8:
        q = random_quant(rng, g["out_c"])
        q["shift"] = rng.integers(-10, 1, g["out_c"]).astype(np.int32)  # few taps: smaller accs
        x, w = s8(rng, shape_x), w8(rng, shape_w)
        bias = None if i % 5 == 0 else rng.integers(-2**16, 2**16, g["out_c"]).astype(np.int32)
        return theme, g, q, x, w, bias
    lo, hi = random_f32_act(rng)
    x, w = f32(rng, shape_x), f32(rng, shape_w)
    bias = None if i % 4 == 0 else f32(rng, g["out_c"])
    return theme, g, (lo, hi), x, w, bias


def test_depthwise_case_mix():
    gs = [depthwise_case(np.random.default_rng(20000 + i), i, np.int8)[1] for i in range(N_DW)]
    mults = [g["out_c"] // g["in_c"] for g in gs]
    assert {1, 2, 3} <= set(mults)
    assert any(m == 1 and g["in_c"] % 4 == 0 for m, g in zip(mults, gs))
    assert any(m == 1 and g["in_c"] % 4 and g["in_c"] > 4 for m, g in zip(mults, gs))
    assert any(g["stride_h"] > 1 or g["stride_w"] > 1 for g in gs)
    assert any(g["dil_h"] > 1 or g["dil_w"] > 1 for g in gs)
    assert any(g["pad_top"] > 0 or g["pad_left"] > 0 for g in gs)
    assert any(g["in_h"] == g["in_w"] == 1 for g in gs)


@pytest.mark.parametrize("i", range(N_DW))
def test_depthwise_conv2d_s8(k2m, i):
    rng = np.random.default_rng(20000 + i)
    theme, g, q, x, w, bias = depthwise_case(rng, i, np.int8)
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.int8)
    c = Caller(k2m)
    c.lib.k2m_depthwise_conv2d_s8(c.window(g), c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                                  c.ptr(bias, "int32_t"), c.ptr(full, "int8_t"), k2m.ffi.NULL)
    np.testing.assert_array_equal(out, ref.depthwise_conv2d_s8(g, q, x, w, bias),
                                  err_msg=f"{theme} {g}")
    check_guard(full)


def test_depthwise_conv2d_s8_not_all_saturated(k2m):
    seen = []
    for i in range(N_DW):
        _, g, q, x, w, bias = depthwise_case(np.random.default_rng(20000 + i), i, np.int8)
        y = ref.depthwise_conv2d_s8(g, q, x, w, bias).astype(np.int64)
        seen.append(((y > q["act_min"]) & (y < q["act_max"])).mean())
    assert np.mean(seen) > 0.2


@pytest.mark.parametrize("i", range(N_DW))
def test_depthwise_conv2d_f32(k2m, i):
    rng = np.random.default_rng(21000 + i)
    theme, g, (lo, hi), x, w, bias = depthwise_case(rng, i, np.float32)
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.float32)
    c = Caller(k2m)
    c.lib.k2m_depthwise_conv2d_f32(c.window(g), lo, hi, c.ptr(x, "float"), c.ptr(w, "float"),
                                   c.ptr(bias, "float"), c.ptr(full, "float"))
    want, mag = ref.depthwise_conv2d_f32(g, np.float32(lo), np.float32(hi), x, w, bias)
    assert_close(out, want, mag, f"{theme} {g}")
    check_guard(full)


def test_depthwise_known_answer(k2m):
    """1x2 map, channels (1, 10) and (2, 20), 1x1 kernel, mult 2, weights
    1, 2, 3, 4: output channel c * 2 + m reads input channel c, so the
    pixels give (1, 2, 30, 40) and (2, 4, 60, 80); int8 with multiplier
    2^30, shift 1 (x 1) and input zero point 0 gives the same numbers."""
    g = dict(in_h=1, in_w=2, in_c=2, out_h=1, out_w=2, out_c=4, k_h=1, k_w=1,
             stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0)
    want = [1, 2, 30, 40, 2, 4, 60, 80]
    c = Caller(k2m)
    x = np.array([1, 10, 2, 20], np.float32)
    w = np.array([1, 2, 3, 4], np.float32)
    out = np.zeros(8, np.float32)
    c.lib.k2m_depthwise_conv2d_f32(c.window(g), -F32_MAX, F32_MAX, c.ptr(x, "float"),
                                   c.ptr(w, "float"), k2m.ffi.NULL, c.ptr(out, "float"))
    assert list(out) == want
    q = dict(input_offset=0, output_offset=0, act_min=-128, act_max=127,
             multiplier=np.full(4, 2**30, np.int32), shift=np.ones(4, np.int32))
    outs = np.zeros(8, np.int8)
    c.lib.k2m_depthwise_conv2d_s8(c.window(g), c.quant(q), c.ptr(x.astype(np.int8), "int8_t"),
                                  c.ptr(w.astype(np.int8), "int8_t"), k2m.ffi.NULL,
                                  c.ptr(outs, "int8_t"), k2m.ffi.NULL)
    assert list(outs) == want


# ---- int8 -> int16 conv / dense (one shared loop with the s8 kernels) ----

def random_quant_s16(rng, n_out, small):
    """int16 output: symmetric (offset 0 except now and then, the kernel is
    generic), clamps anywhere in int16.  `small` cases (tiny accumulators,
    as a layer with an effective multiplier > 1 has) get left shifts up to
    +14, channel 0 exactly +14; the others [-20, 4]."""
    kind = rng.integers(4)
    if kind == 0:
        lo, hi = 0, 32767                                      # fused ReLU
    elif kind == 1:
        lo, hi = sorted(int(v) for v in rng.integers(-32768, 32768, 2))
    else:
        lo, hi = -32768, 32767
    shift = rng.integers(0, 15, n_out) if small else rng.integers(-20, 5, n_out)
    if small:
        shift[0] = 14
    return dict(input_offset=int(rng.integers(-127, 129)),
                output_offset=int(rng.integers(-1000, 1000)) if kind == 3 else 0,
                act_min=lo, act_max=hi,
                multiplier=rng.integers(2**30, 2**31, n_out).astype(np.int32),
                shift=shift.astype(np.int32))


def s16_operands(rng, q, x_shape, w_shape, n_out, small, no_bias):
    """int8 input and weights (tiny around the zero point when `small`)."""
    if small:
        x = np.clip(rng.integers(-1, 2, x_shape) - q["input_offset"], -128, 127).astype(np.int8)
        w = rng.integers(-1, 2, w_shape).astype(np.int8)
        bias = rng.integers(-2, 3, n_out).astype(np.int32)
    else:
        x, w = s8(rng, x_shape), w8(rng, w_shape)
        bias = rng.integers(-2**22, 2**22, n_out).astype(np.int32)
    return x, w, None if no_bias else bias


def conv_s16_case(rng, i):
    theme, g = random_window(rng, i)
    small = i % 3 == 0
    q = random_quant_s16(rng, g["out_c"], small)
    x, w, bias = s16_operands(rng, q, (g["in_h"], g["in_w"], g["in_c"]),
                              (g["out_c"], g["k_h"], g["k_w"], g["in_c"]), g["out_c"],
                              small, i % 5 == 1)
    return theme, g, q, x, w, bias


def call_conv(k2m, g, q, x, w, bias, dtype):
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), dtype)
    c = Caller(k2m)
    name, ctype = ("k2m_conv2d_s8_s16", "int16_t") if dtype == np.int16 else ("k2m_conv2d_s8", "int8_t")
    getattr(c.lib, name)(c.window(g), c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                         c.ptr(bias, "int32_t"), c.ptr(full, ctype), c.scratch(g))
    check_guard(full)
    return out


@pytest.mark.parametrize("i", range(N_CASES))
def test_conv2d_s8_s16(k2m, i):
    rng = np.random.default_rng(13000 + i)
    theme, g, q, x, w, bias = conv_s16_case(rng, i)
    out = call_conv(k2m, g, q, x, w, bias, np.int16)
    np.testing.assert_array_equal(out, ref.conv2d_s8_s16(g, q, x, w, bias),
                                  err_msg=f"{theme} {g} shifts {q['shift']}")


def test_conv2d_s8_s16_not_all_saturated(k2m):
    """Both regimes (left shifts up to +14 and right shifts) must produce
    values strictly inside the clamp, including outside the int8 range."""
    inside, wide = {True: [], False: []}, []
    for i in range(N_CASES):
        rng = np.random.default_rng(13000 + i)
        _, g, q, x, w, bias = conv_s16_case(rng, i)
        y = ref.conv2d_s8_s16(g, q, x, w, bias).astype(np.int64)
        inside[i % 3 == 0].append(((y > q["act_min"]) & (y < q["act_max"])).mean())
        wide.append(((np.abs(y) > 128) & (y > q["act_min"]) & (y < q["act_max"])).mean())
    assert np.mean(inside[True]) > 0.2 and np.mean(inside[False]) > 0.2
    assert np.mean(wide) > 0.05


@pytest.mark.parametrize("i", range(20))
def test_conv2d_s8_s16_matches_s8_on_int8_clamp(k2m, i):
    """The shared core: with an int8 clamp the two kernels agree exactly."""
    rng = np.random.default_rng(14000 + i)
    theme, g = random_window(rng, i)
    q = random_quant(rng, g["out_c"])
    x = s8(rng, (g["in_h"], g["in_w"], g["in_c"]))
    w = w8(rng, (g["out_c"], g["k_h"], g["k_w"], g["in_c"]))
    bias = rng.integers(-2**22, 2**22, g["out_c"]).astype(np.int32)
    o8 = call_conv(k2m, g, q, x, w, bias, np.int8)
    o16 = call_conv(k2m, g, q, x, w, bias, np.int16)
    np.testing.assert_array_equal(o16, o8.astype(np.int16), err_msg=f"{theme} {g}")


def test_conv2d_s8_s16_known_answer(k2m):
    """test_conv2d_s8_known_answer's accs -1, -1, 2 with multiplier 2^30 and
    shift +9 (x * 0.5 * 512 = 256 x), offset 0: -256, -256, 512, out of
    int8's reach; then a clamp at 300, and shift +14 (x * 8192: -8192,
    -8192, 16384) with the lower clamp at -8000."""
    g = dict(in_h=1, in_w=3, in_c=1, out_h=1, out_w=3, out_c=1, k_h=1, k_w=2,
             stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0)
    q = dict(input_offset=-1, output_offset=0, act_min=-32768, act_max=32767,
             multiplier=np.array([2**30], np.int32), shift=np.array([9], np.int32))
    x = np.array([1, 2, 3], np.int8)
    w = np.array([1, -1], np.int8)
    assert list(call_conv(k2m, g, q, x, w, None, np.int16).ravel()) == [-256, -256, 512]
    q["act_max"] = 300
    assert list(call_conv(k2m, g, q, x, w, None, np.int16).ravel()) == [-256, -256, 300]
    q["act_min"], q["act_max"], q["shift"] = -8000, 32767, np.array([14], np.int32)
    assert list(call_conv(k2m, g, q, x, w, None, np.int16).ravel()) == [-8000, -8000, 16384]


# ---- fully connected -----------------------------------------------------

def random_fc(rng, i):
    return (int(rng.integers(1, 5)), int(rng.integers(1, 70)),
            CHANNELS[i % 4] if i % 2 else int(rng.integers(1, 40)))


@pytest.mark.parametrize("i", range(N_CASES))
def test_fully_connected_s8(k2m, i):
    rng = np.random.default_rng(3000 + i)
    b, n_in, n_out = random_fc(rng, i)
    q = random_quant(rng, n_out)
    x, w = s8(rng, (b, n_in)), w8(rng, (n_out, n_in))
    bias = None if i % 6 == 0 else rng.integers(-2**22, 2**22, n_out).astype(np.int32)
    full, out = guarded((b, n_out), np.int8)
    c = Caller(k2m)
    d = c.new("k2m_fc_dims", {"batches": b, "in_features": n_in, "out_features": n_out})
    c.lib.k2m_fully_connected_s8(d, c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                                 c.ptr(bias, "int32_t"), c.ptr(full, "int8_t"))
    np.testing.assert_array_equal(out, ref.fully_connected_s8(q, x, w, bias))
    check_guard(full)


@pytest.mark.parametrize("i", range(N_CASES))
def test_fully_connected_f32(k2m, i):
    rng = np.random.default_rng(4000 + i)
    b, n_in, n_out = random_fc(rng, i)
    lo, hi = random_f32_act(rng)
    x, w = f32(rng, (b, n_in)), f32(rng, (n_out, n_in))
    bias = None if i % 6 == 0 else f32(rng, n_out)
    full, out = guarded((b, n_out), np.float32)
    c = Caller(k2m)
    d = c.new("k2m_fc_dims", {"batches": b, "in_features": n_in, "out_features": n_out})
    c.lib.k2m_fully_connected_f32(d, lo, hi, c.ptr(x, "float"), c.ptr(w, "float"),
                                  c.ptr(bias, "float"), c.ptr(full, "float"))
    want, mag = ref.fully_connected_f32(np.float32(lo), np.float32(hi), x, w, bias)
    assert_close(out, want, mag, f"{(b, n_in, n_out)}")
    check_guard(full)


def fc_s16_case(rng, i):
    b, n_in, n_out = random_fc(rng, i)
    small = i % 3 == 0
    q = random_quant_s16(rng, n_out, small)
    x, w, bias = s16_operands(rng, q, (b, n_in), (n_out, n_in), n_out, small, i % 6 == 1)
    return (b, n_in, n_out), q, x, w, bias


def call_fc(k2m, dims, q, x, w, bias, dtype):
    b, n_in, n_out = dims
    full, out = guarded((b, n_out), dtype)
    c = Caller(k2m)
    d = c.new("k2m_fc_dims", {"batches": b, "in_features": n_in, "out_features": n_out})
    name, ctype = (("k2m_fully_connected_s8_s16", "int16_t") if dtype == np.int16
                   else ("k2m_fully_connected_s8", "int8_t"))
    getattr(c.lib, name)(d, c.quant(q), c.ptr(x, "int8_t"), c.ptr(w, "int8_t"),
                         c.ptr(bias, "int32_t"), c.ptr(full, ctype))
    check_guard(full)
    return out


@pytest.mark.parametrize("i", range(N_CASES))
def test_fully_connected_s8_s16(k2m, i):
    rng = np.random.default_rng(15000 + i)
    dims, q, x, w, bias = fc_s16_case(rng, i)
    out = call_fc(k2m, dims, q, x, w, bias, np.int16)
    np.testing.assert_array_equal(out, ref.fully_connected_s8_s16(q, x, w, bias),
                                  err_msg=f"{dims} shifts {q['shift']}")


def test_fully_connected_s8_s16_not_all_saturated(k2m):
    inside = {True: [], False: []}
    for i in range(N_CASES):
        rng = np.random.default_rng(15000 + i)
        _, q, x, w, bias = fc_s16_case(rng, i)
        y = ref.fully_connected_s8_s16(q, x, w, bias).astype(np.int64)
        inside[i % 3 == 0].append(((y > q["act_min"]) & (y < q["act_max"])).mean())
    assert np.mean(inside[True]) > 0.2 and np.mean(inside[False]) > 0.2


@pytest.mark.parametrize("i", range(20))
def test_fully_connected_s8_s16_matches_s8_on_int8_clamp(k2m, i):
    rng = np.random.default_rng(16000 + i)
    dims = random_fc(rng, i)
    q = random_quant(rng, dims[2])
    x, w = s8(rng, (dims[0], dims[1])), w8(rng, (dims[2], dims[1]))
    bias = rng.integers(-2**22, 2**22, dims[2]).astype(np.int32)
    o8 = call_fc(k2m, dims, q, x, w, bias, np.int8)
    o16 = call_fc(k2m, dims, q, x, w, bias, np.int16)
    np.testing.assert_array_equal(o16, o8.astype(np.int16))


# ---- elementwise Add ------------------------------------------------------

N_ADD = 80


def quantize_multiplier(m):
    """TFLite's QuantizeMultiplier (the exporter's): m = q * 2^shift / 2^31."""
    if m <= 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(np.sign(frac) * np.floor(abs(frac) * 2**31 + 0.5))
    if q == 2**31:
        q, shift = q // 2, shift + 1
    return q, shift


def add_params(rng, i):
    """Parameters as TFLite (and exporter/quantize.py) derive them from three
    scales: inputs to twice the larger input scale (multipliers <= 1/2,
    shifts <= 0), left_shift 20, the output multiplier twice / (2^20 s_out).
    Every fourth case has a too-fine output scale, so the clamp bites."""
    s1, s2 = (float(10 ** rng.uniform(-3, 0)) for _ in range(2))
    if i % 7 == 0:
        s2 = s1                                   # equal scales
    so = (s1 + s2) * float(rng.uniform(0.6, 1.5))
    if i % 4 == 3:
        so *= float(rng.uniform(0.05, 0.3))
    twice, left_shift = 2.0 * max(s1, s2), 20
    m1, sh1 = quantize_multiplier(s1 / twice)
    m2, sh2 = quantize_multiplier(s2 / twice)
    mo, sho = quantize_multiplier(twice / ((1 << left_shift) * so))
    o1, o2 = int(rng.integers(-127, 129)), int(rng.integers(-127, 129))
    # output zero point where calibration would put it (the middle of the
    # sum's range), give or take; every fifth case anywhere
    centre = (s1 * (o1 - 0.5) + s2 * (o2 - 0.5)) / so
    zo = int(np.clip(round(-0.5 - centre) + int(rng.integers(-20, 21)), -128, 127))
    if i % 5 == 0:
        zo = int(rng.integers(-128, 128))
    kind = i % 3
    lo, hi = [(-128, 127), (max(-128, zo), 127), tuple(sorted(int(v) for v in rng.integers(-128, 128, 2)))][kind]
    return dict(input1_offset=o1, input1_multiplier=m1, input1_shift=sh1,
                input2_offset=o2, input2_multiplier=m2, input2_shift=sh2,
                left_shift=left_shift, output_offset=zo, output_multiplier=mo,
                output_shift=sho, act_min=lo, act_max=hi)


def call_add_s8(k2m, p, x1, x2, in_place=False):
    c = Caller(k2m)
    params = c.new("k2m_add_s8_params", p)
    if in_place:
        x1 = x1.copy()
        c.lib.k2m_add_s8(params, c.ptr(x1, "int8_t"), c.ptr(x2, "int8_t"), c.ptr(x1, "int8_t"),
                         x1.size)
        return x1
    full, out = guarded(x1.shape, np.int8)
    c.lib.k2m_add_s8(params, c.ptr(x1, "int8_t"), c.ptr(x2, "int8_t"), c.ptr(full, "int8_t"),
                     x1.size)
    check_guard(full)
    return out


@pytest.mark.parametrize("i", range(N_ADD))
def test_add_s8(k2m, i):
    rng = np.random.default_rng(22000 + i)
    p = add_params(rng, i)
    assert p["input1_shift"] <= 0 and p["input2_shift"] <= 0
    assert (2**30, 0) in [(p["input1_multiplier"], p["input1_shift"]),
                          (p["input2_multiplier"], p["input2_shift"])]  # the larger scale: 1/2
    n = int(rng.integers(1, 300))
    x1, x2 = s8(rng, n), s8(rng, n)
    x1[:4], x2[:4] = [-128, 127, -128, 127][:n], [-128, 127, 127, -128][:n]  # the corners
    want = ref.add_s8(p, x1, x2)
    np.testing.assert_array_equal(call_add_s8(k2m, p, x1, x2, in_place=i % 5 == 4), want,
                                  err_msg=str(p))
    # and it is the real sum, to a step or two, wherever the clamp does not bite
    real = ((x1.astype(np.int64) + p["input1_offset"]) * math.ldexp(p["input1_multiplier"], p["input1_shift"] - 31)
            + (x2.astype(np.int64) + p["input2_offset"]) * math.ldexp(p["input2_multiplier"], p["input2_shift"] - 31)) \
        * math.ldexp(p["output_multiplier"], p["output_shift"] - 31) * 2**20 + p["output_offset"]
    inside = (real > p["act_min"] + 1) & (real < p["act_max"] - 1)
    assert np.all(np.abs(want[inside] - real[inside]) <= 1.5)


def test_add_s8_clamps_and_not_all_saturated(k2m):
    inside, clamped = [], []
    for i in range(N_ADD):
        rng = np.random.default_rng(22000 + i)
        p = add_params(rng, i)
        n = int(rng.integers(1, 300))
        y = ref.add_s8(p, s8(rng, n), s8(rng, n)).astype(np.int64)
        inside.append(((y > p["act_min"]) & (y < p["act_max"])).mean())
        clamped.append(((y == p["act_min"]) | (y == p["act_max"])).mean())
    assert np.mean(inside) > 0.4 and np.mean(np.array(clamped) > 0.05) > 0.2


def test_add_s8_known_answer(k2m):
    """Equal scales everywhere, zero points 0: out = clamp(x1 + x2).  The
    parameters are what TFLite derives: input multipliers 1/2 (2^30, shift
    0), output 2 / 2^20 = 2^30 * 2^-18 / 2^31."""
    p = add_params(np.random.default_rng(0), 0)
    p.update(input1_offset=0, input1_multiplier=2**30, input1_shift=0,
             input2_offset=0, input2_multiplier=2**30, input2_shift=0,
             output_offset=0, output_multiplier=2**30, output_shift=-18,
             act_min=-128, act_max=127)
    assert quantize_multiplier(2.0 / 2**20) == (2**30, -18)
    x1 = np.array([1, -1, 100, -100, 5, 0], np.int8)
    x2 = np.array([2, -3, 100, -100, -5, 0], np.int8)
    assert list(call_add_s8(k2m, p, x1, x2)) == [3, -4, 127, -128, 0, 0]
    p.update(output_offset=10, act_min=0, act_max=20)  # fused ReLU-like clamp
    assert list(call_add_s8(k2m, p, x1, x2)) == [13, 6, 20, 0, 10, 10]


@pytest.mark.parametrize("i", range(40))
def test_add_f32(k2m, i):
    rng = np.random.default_rng(23000 + i)
    n = int(rng.integers(1, 300))
    x1 = f32(rng, n) * np.float32(10 ** rng.uniform(-3, 3))
    x2 = f32(rng, n) * np.float32(10 ** rng.uniform(-3, 3))
    lo, hi = random_f32_act(rng)
    want = ref.add_f32(x1, x2, lo, hi)
    c = Caller(k2m)
    if i % 4 == 3:  # in place
        c.lib.k2m_add_f32(c.ptr(x1, "float"), c.ptr(x2, "float"), c.ptr(x1, "float"), n, lo, hi)
        np.testing.assert_array_equal(x1, want)
    else:
        full, out = guarded((n,), np.float32)
        c.lib.k2m_add_f32(c.ptr(x1, "float"), c.ptr(x2, "float"), c.ptr(full, "float"), n, lo, hi)
        np.testing.assert_array_equal(out, want)
        check_guard(full)


# ---- pooling -------------------------------------------------------------

def pool_case(rng, i, dtype):
    theme, g = random_window(rng, i, same_channels=True)
    shape = (g["in_h"], g["in_w"], g["in_c"])
    if dtype == np.int8:
        x = s8(rng, shape)
        lo, hi = (-128, 127) if i % 3 else sorted(int(v) for v in rng.integers(-128, 128, 2))
    else:
        x = f32(rng, shape)
        lo, hi = random_f32_act(rng)
    return theme, g, x, lo, hi


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("i", range(N_CASES))
def test_pool_s8(k2m, kind, i):
    rng = np.random.default_rng(5000 + i)
    theme, g, x, lo, hi = pool_case(rng, i, np.int8)
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.int8)
    c = Caller(k2m)
    getattr(c.lib, f"k2m_{kind}_pool_s8")(c.window(g), lo, hi, c.ptr(x, "int8_t"),
                                          c.ptr(full, "int8_t"))
    want = getattr(ref, f"{kind}_pool_s8")(g, lo, hi, x)
    np.testing.assert_array_equal(out, want, err_msg=f"{theme} {g}")
    check_guard(full)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("i", range(N_CASES))
def test_pool_f32(k2m, kind, i):
    rng = np.random.default_rng(6000 + i)
    theme, g, x, lo, hi = pool_case(rng, i, np.float32)
    full, out = guarded((g["out_h"], g["out_w"], g["out_c"]), np.float32)
    c = Caller(k2m)
    getattr(c.lib, f"k2m_{kind}_pool_f32")(c.window(g), lo, hi, c.ptr(x, "float"),
                                           c.ptr(full, "float"))
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if kind == "max":
        np.testing.assert_array_equal(out, ref.max_pool_f32(g, lo32, hi32, x).astype(np.float32),
                                      err_msg=f"{theme} {g}")
    else:
        want, mag = ref.avg_pool_f32(g, lo32, hi32, x)
        assert_close(out, want, mag, f"{theme} {g}")
    check_guard(full)


def test_avg_pool_known_answer(k2m):
    """2x2 input [[1, 2], [3, 4]], 2x2 window, stride 1, 'same' (the pad goes
    bottom/right): padding is not counted, so the outputs are the means of
    {1,2,3,4}, {2,4}, {3,4}, {4}.  int8 rounding: ties away from zero."""
    g = dict(in_h=2, in_w=2, in_c=1, out_h=2, out_w=2, out_c=1, k_h=2, k_w=2,
             stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=0, pad_left=0)
    c = Caller(k2m)
    x = np.array([1, 2, 3, 4], np.float32)
    out = np.zeros(4, np.float32)
    c.lib.k2m_avg_pool_f32(c.window(g), -F32_MAX, F32_MAX, c.ptr(x, "float"), c.ptr(out, "float"))
    assert list(out) == [2.5, 3.0, 3.5, 4.0]
    xs = np.array([1, 2, 3, 4], np.int8)
    outs = np.zeros(4, np.int8)
    c.lib.k2m_avg_pool_s8(c.window(g), -128, 127, c.ptr(xs, "int8_t"), c.ptr(outs, "int8_t"))
    assert list(outs) == [3, 3, 4, 4]
    xs = -xs
    c.lib.k2m_avg_pool_s8(c.window(g), -128, 127, c.ptr(xs, "int8_t"), c.ptr(outs, "int8_t"))
    assert list(outs) == [-3, -3, -4, -4]


# ---- mean (global average pooling) --------------------------------------

N_MEAN = 48


def mean_case(rng, i):
    spatial = [1, 2, 49, 1024][i % 4] if i % 3 == 0 else int(rng.integers(1, 200))
    channels = int(rng.integers(1, 40))
    in_off = int(rng.integers(-127, 129))
    out_off = int(rng.integers(-128, 128))
    if i % 4 == 1:   # raw random requantization, clamps anywhere
        m, sh = int(rng.integers(2**30, 2**31)), int(rng.integers(-14, 1))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    else:            # as the exporter: input_scale / (output_scale * spatial),
        ratio = float(rng.uniform(0.3, 1.5))   # output zero point near the mean's
        m, sh = quantize_multiplier(ratio / spatial)
        out_off = int(np.clip(round(-ratio * in_off) + int(rng.integers(-30, 31)), -128, 127))
        lo, hi = (max(-128, out_off), 127) if i % 4 == 2 else (-128, 127)
    q = dict(input_offset=in_off, output_offset=out_off,
             act_min=lo, act_max=hi, multiplier=np.array([m], np.int32),
             shift=np.array([sh], np.int32))
    x = s8(rng, (spatial, channels))
    if i % 6 == 5:
        x[:] = np.int8(-128 if i % 12 == 5 else 127)   # extreme maps
    return q, x


def call_mean(k2m, q, x):
    spatial, channels = x.shape
    full, out = guarded((channels,), np.int8)
    c = Caller(k2m)
    c.lib.k2m_mean_s8(spatial, channels, c.quant(q), c.ptr(x, "int8_t"), c.ptr(full, "int8_t"))
    check_guard(full)
    return out


@pytest.mark.parametrize("i", range(N_MEAN))
def test_mean_s8(k2m, i):
    q, x = mean_case(np.random.default_rng(24000 + i), i)
    np.testing.assert_array_equal(call_mean(k2m, q, x), ref.mean_s8(q, x),
                                  err_msg=f"{x.shape} {q}")


def test_mean_s8_not_all_saturated():
    inside = []
    for i in range(N_MEAN):
        q, x = mean_case(np.random.default_rng(24000 + i), i)
        y = ref.mean_s8(q, x).astype(np.int64)
        inside.append(((y > q["act_min"]) & (y < q["act_max"])).mean())
    assert np.mean(inside) > 0.5


def test_mean_s8_known_answer(k2m):
    """Four pixels 1, 2, 3, 4 and their negatives, same scale in and out
    (multiplier for 1/4: 2^30, shift -1): means 2.5 and -2.5 round away
    from zero to 3 and -3; input zero point -1 (offset +1) gives 3.5 -> 4."""
    q = dict(input_offset=0, output_offset=0, act_min=-128, act_max=127,
             multiplier=np.array([2**30], np.int32), shift=np.array([-1], np.int32))
    assert quantize_multiplier(0.25) == (2**30, -1)
    x = np.array([[1, -1], [2, -2], [3, -3], [4, -4]], np.int8)
    assert list(call_mean(k2m, q, x)) == [3, -3]
    q["input_offset"] = 1
    assert list(call_mean(k2m, q, x)) == [4, -2]


# ---- activations ---------------------------------------------------------

@pytest.mark.parametrize("i", range(N_CASES))
def test_lut_s8(k2m, i):
    rng = np.random.default_rng(7000 + i)
    n = int(rng.integers(1, 300))
    x, table = s8(rng, n), s8(rng, 256)
    want = ref.lut_s8(x, table)
    c = Caller(k2m)
    if i % 2:  # in place
        c.lib.k2m_lut_s8(c.ptr(x, "int8_t"), c.ptr(x, "int8_t"), n, c.ptr(table, "int8_t"))
        np.testing.assert_array_equal(x, want)
    else:
        full, out = guarded((n,), np.int8)
        c.lib.k2m_lut_s8(c.ptr(x, "int8_t"), c.ptr(full, "int8_t"), n, c.ptr(table, "int8_t"))
        np.testing.assert_array_equal(out, want)
        check_guard(full)


def exp_table(scale, cols):
    """As exporter/quantize.py builds it."""
    top = min(1 << 23, (2**31 - 1) // cols)
    t = np.exp(-scale * np.arange(256)) * top
    return np.floor(t + 0.5).astype(np.uint32)


@pytest.mark.parametrize("i", range(N_CASES))
def test_softmax_s8(k2m, i):
    rng = np.random.default_rng(8000 + i)
    rows = int(rng.integers(1, 6))
    cols = [1, 2, 10, 1000][i % 4] if i % 3 == 0 else int(rng.integers(1, 60))
    scale = float(10 ** rng.uniform(-3, 0))
    x = s8(rng, (rows, cols))
    if i % 5 == 0:
        x[:, :] = x[:, :1]  # a flat row: every output 1/cols
    table = exp_table(scale, cols)
    full, out = guarded((rows, cols), np.int8)
    c = Caller(k2m)
    c.lib.k2m_softmax_s8(c.ptr(x, "int8_t"), c.ptr(full, "int8_t"), rows, cols,
                         c.ptr(table, "uint32_t"))
    want = ref.softmax_s8(x, table)
    np.testing.assert_array_equal(out, want)
    check_guard(full)
    # and it is a softmax: within a couple of output steps of the real one
    real = ref.softmax_f32(x.astype(np.float64) * scale)
    assert np.all(np.abs((out.astype(np.float64) + 128) / 256 - np.minimum(real, 255 / 256))
                  <= 2.5 / 256)


# int16 -> int8 tables, built the way k2m.h describes them: 256 x the int8
# output (zero point included) at input -32768 + 256 k, k = 0..256.
LUT_FUNCS = {
    # name: (function, output scale, output zero point)
    "tanh": (np.tanh, 1 / 128, 0),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), 1 / 256, -128),
    "swish": (lambda v: v / (1 + np.exp(-v)), 1 / 16, -20),          # dips, then rises
    "gauss": (lambda v: np.exp(-v * v), 1 / 200, -100),              # up then down
    "neg_tanh": (lambda v: -np.tanh(v), 1 / 128, 0),                 # falling
    "sin": (np.sin, 1 / 100, 10),                                    # oscillates
}


def lut_table(func, in_scale):
    f, out_scale, zp = LUT_FUNCS[func]
    real_in = in_scale * (-32768.0 + 256.0 * np.arange(257))
    return np.round(256 * (f(real_in) / out_scale + zp)).astype(np.int32)


ALL_S16 = np.arange(-32768, 32768).astype(np.int16)


def call_lut_s16(k2m, x, table):
    full, out = guarded(x.shape, np.int8)
    c = Caller(k2m)
    c.lib.k2m_lut_s16_s8(c.ptr(x, "int16_t"), c.ptr(full, "int8_t"), x.size,
                         c.ptr(np.ascontiguousarray(table, np.int32), "int32_t"))
    check_guard(full)
    return out


@pytest.mark.parametrize("func", sorted(LUT_FUNCS))
@pytest.mark.parametrize("i", range(5))
def test_lut_s16_s8_real_functions(k2m, func, i):
    """Every int16 input once, bit-exact; and within the rounding (+ a bit of
    interpolation error) of the real function."""
    rng = np.random.default_rng(17000 + 10 * i + sorted(LUT_FUNCS).index(func))
    in_scale = float(10 ** rng.uniform(-1, 1.2)) / 32768  # int16 range +-0.1 .. +-16
    table = lut_table(func, in_scale)
    out = call_lut_s16(k2m, ALL_S16, table)
    np.testing.assert_array_equal(out, ref.lut_s16_s8(ALL_S16, table))
    f, out_scale, zp = LUT_FUNCS[func]
    real = np.clip(f(in_scale * ALL_S16.astype(np.float64)) / out_scale + zp, -128, 127)
    assert np.abs(out - real).max() <= 1.0, func


@pytest.mark.parametrize("i", range(N_CASES))
def test_lut_s16_s8_random_tables(k2m, i):
    """Random tables (random walks: non-monotone, steep steps, values beyond
    int8 to exercise the clamp) over all inputs, then a random-length call."""
    rng = np.random.default_rng(18000 + i)
    step = [256, 4096, 2**20][i % 3]
    table = np.cumsum(rng.integers(-step, step + 1, 257)) + int(rng.integers(-40000, 40000))
    table = np.clip(table, -2**29, 2**29).astype(np.int32)
    if i % 4 == 0:
        table = np.sort(table)  # monotone
    np.testing.assert_array_equal(call_lut_s16(k2m, ALL_S16, table),
                                  ref.lut_s16_s8(ALL_S16, table))
    x = rng.integers(-32768, 32768, int(rng.integers(1, 300))).astype(np.int16)
    np.testing.assert_array_equal(call_lut_s16(k2m, x, table), ref.lut_s16_s8(x, table))


def test_lut_s16_s8_known_answer(k2m):
    """table[k] = 256 (k - 128) interpolates to y = x exactly, so the output
    is floor((x + 128) / 256); the falling table -256 (k - 128) gives y = -x
    only if the negative slope term is floored (truncation would give
    -x + 1 whenever f > 0)."""
    k = np.arange(257, dtype=np.int64)
    x = np.array([-32768, -32641, -32640, -129, -128, -1, 0, 127, 128, 383, 384, 32767],
                 np.int16)
    up = call_lut_s16(k2m, x, 256 * (k - 128))
    assert list(up) == [-128, -128, -127, -1, 0, 0, 0, 0, 1, 1, 2, 127]
    down = call_lut_s16(k2m, x, -256 * (k - 128))
    # floor((128 - x) / 256), clamped: 32768 + 128 -> 128 -> 127 at the
    # bottom, floor(-32639 / 256) = floor(-127.5) = -128 at the top
    assert list(down) == [127, 127, 127, 1, 1, 0, 0, 0, 0, -1, -1, -128]


def softmax_s16_tables(s):
    k = np.arange(256)
    hi = np.round(np.exp(-s * 256 * k) * 32768).astype(np.uint16)
    lo = np.round(np.exp(-s * k) * 32768).astype(np.uint16)
    return hi, lo


def call_softmax_s16(k2m, x, hi, lo):
    rows, cols = x.shape
    full, out = guarded((rows, cols), np.int8)
    c = Caller(k2m)
    c.lib.k2m_softmax_s16_s8(c.ptr(x, "int16_t"), c.ptr(full, "int8_t"), rows, cols,
                             c.ptr(hi, "uint16_t"), c.ptr(lo, "uint16_t"))
    check_guard(full)
    return out


@pytest.mark.parametrize("i", range(N_CASES))
def test_softmax_s16_s8(k2m, i):
    rng = np.random.default_rng(19000 + i)
    rows = int(rng.integers(1, 6))
    cols = [1, 2, 300][i % 3] if i % 4 == 0 else int(rng.integers(1, 301))
    s = float(rng.uniform(1e-4, 0.05))
    # spread of the logits: the whole int16 range, or a real-world 5..30
    spread = 65535 if i % 3 == 0 else min(65535, int(rng.uniform(5, 30) / s))
    base = int(rng.integers(-32768, 32768 - spread + 1))
    x = (base + rng.integers(0, spread + 1, (rows, cols))).astype(np.int16)
    if i % 7 == 0:
        x[:, :] = x[:, :1]  # a flat row: every output 1/cols
    hi, lo = softmax_s16_tables(s)
    out = call_softmax_s16(k2m, x, hi, lo)
    np.testing.assert_array_equal(out, ref.softmax_s16_s8(x, hi, lo))
    # and it is a softmax: within a few output steps of the real one
    real = ref.softmax_f32(x.astype(np.float64) * s)
    err = np.abs((out.astype(np.float64) + 128) / 256 - np.minimum(real, 255 / 256))
    assert err.max() <= 2.5 / 256, f"cols {cols} s {s}: {err.max() * 256:.2f} steps"


def test_softmax_s16_s8_known_answer(k2m):
    """Two equal logits and one 65535 below (exp underflows to 0): 1/2 each
    -> 128 - 128 = 0, and the third 0 - 128; a single column is 1 -> 255
    clamped to 127."""
    hi, lo = softmax_s16_tables(0.01)
    x = np.array([[32767, -32768, 32767]], np.int16)
    assert list(call_softmax_s16(k2m, x, hi, lo).ravel()) == [0, -128, 0]
    assert list(call_softmax_s16(k2m, np.array([[-5]], np.int16), hi, lo).ravel()) == [127]


@pytest.mark.parametrize("i", range(N_CASES))
def test_softmax_f32(k2m, i):
    rng = np.random.default_rng(9000 + i)
    rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 80))
    x = f32(rng, (rows, cols)) * np.float32(10 ** rng.uniform(-1, 2))
    full, out = guarded((rows, cols), np.float32)
    c = Caller(k2m)
    c.lib.k2m_softmax_f32(c.ptr(x, "float"), c.ptr(full, "float"), rows, cols)
    want = ref.softmax_f32(x)
    assert_close(out, want, want + 1e-30, "softmax")
    check_guard(full)


@pytest.mark.parametrize("func", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("i", range(N_CASES))
def test_elementwise_f32(k2m, func, i):
    rng = np.random.default_rng(10000 + i)
    n = int(rng.integers(1, 300))
    x = f32(rng, n) * np.float32(10 ** rng.uniform(-3, 2))
    if i == 0:
        x = np.concatenate([x, np.array([0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30], np.float32)])
        n = x.size
    full, out = guarded((n,), np.float32)
    c = Caller(k2m)
    if func == "relu":
        lo, hi = random_f32_act(rng)
        c.lib.k2m_relu_f32(c.ptr(x, "float"), c.ptr(full, "float"), n, lo, hi)
        want = ref.relu_f32(x, np.float32(lo), np.float32(hi))
        np.testing.assert_array_equal(out, want.astype(np.float32))
    else:
        getattr(c.lib, f"k2m_{func}_f32")(c.ptr(x, "float"), c.ptr(full, "float"), n)
        want = getattr(ref, f"{func}_f32")(x)
        assert_close(out, want, np.abs(want), func)
    check_guard(full)


# ---- quantize / dequantize -----------------------------------------------

@pytest.mark.parametrize("i", range(N_CASES))
def test_quantize_f32_s8(k2m, i):
    rng = np.random.default_rng(11000 + i)
    n = int(rng.integers(1, 400))
    scale = np.float32(10 ** rng.uniform(-3, 0))
    zp = int(rng.integers(-128, 128))
    x = (f32(rng, n) * scale * np.float32(rng.uniform(1, 100))).astype(np.float32)
    # exact ties (k + 0.5) * scale, out-of-range values and non-finite ones
    ties = ((rng.integers(-200, 200, n) + 0.5) * scale).astype(np.float32)
    x = np.where(rng.random(n) < 0.3, ties, x).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0,
                        0.5 * scale, -0.5 * scale], np.float32)
    x[:min(n, special.size)] = special[:min(n, special.size)]
    full, out = guarded((n,), np.int8)
    c = Caller(k2m)
    c.lib.k2m_quantize_f32_s8(c.ptr(x, "float"), c.ptr(full, "int8_t"), n, float(scale), zp)
    np.testing.assert_array_equal(out, ref.quantize_f32_s8(x, scale, zp))
    check_guard(full)


def test_quantize_known_answer(k2m):
    """Ties round away from zero; NaN maps to the zero point; saturation."""
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.4, -2.6, np.nan, 1000, -1000], np.float32)
    out = np.zeros(x.size, np.int8)
    c = Caller(k2m)
    c.lib.k2m_quantize_f32_s8(c.ptr(x, "float"), c.ptr(out, "int8_t"), x.size, 1.0, 3)
    assert list(out) == [4, 2, 5, 1, 5, 0, 3, 127, -128]


@pytest.mark.parametrize("i", range(N_CASES))
def test_dequantize_s8_f32(k2m, i):
    rng = np.random.default_rng(12000 + i)
    n = int(rng.integers(1, 400))
    scale = np.float32(10 ** rng.uniform(-4, 1))
    zp = int(rng.integers(-128, 128))
    q = s8(rng, n)
    full, out = guarded((n,), np.float32)
    c = Caller(k2m)
    c.lib.k2m_dequantize_s8_f32(c.ptr(q, "int8_t"), c.ptr(full, "float"), n, float(scale), zp)
    np.testing.assert_array_equal(out, ref.dequantize_s8_f32(q, scale, zp))
    check_guard(full)
