"""The broadcasting binary, reduce and matmul kernels (k2m_broadcast.c,
k2m_reduce.c, k2m_matmul.c) against kernel_ref.py, as test_kernels.py does
for the others: int8 bit-exact, float within 1e-5 of the sum of |terms|
(the float binary ops are one float32 operation, so bit-exact too), guard
elements after every output, hundreds of random shapes.

Broadcast boxes come from the exporter's own codegen.broadcast_box, so the
tests cover its axis merging as well: every pattern (per channel either
operand first, scalar, per row, both sides broadcasting, rank mismatch,
same shape, random), plus raw boxes with strides the exporter never
emits.  Parameters come half from the exporter's quantize functions on
random scales and zero points, half raw (left shifts that must saturate,
extreme zero points)."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_ref as ref  # noqa: E402
from test_kernels import (Caller, assert_close, check_guard, f32, guarded, k2m,  # noqa: E402,F401
                          s8, sentinel)

from exporter import quantize  # noqa: E402
from exporter.codegen import broadcast_box  # noqa: E402
from exporter.ir import Quant, Tensor  # noqa: E402

N_BINARY = 60   # random cases per int8 op and for float
N_REDUCE = 80
N_MATMUL = 120
FUNCS_S8 = ["add", "sub", "avg", "mul", "max", "min", "div"]
F32_MAX = float(np.finfo(np.float32).max)

# ---- broadcast shapes ------------------------------------------------------

PATTERNS = ["per_channel", "per_channel_first", "scalar", "per_row", "both_sides",
            "rank_mismatch", "same", "random"]


def broadcast_pair(rng, i):
    """(pattern, shape1, shape2) of operands that broadcast."""
    pattern = PATTERNS[i % len(PATTERNS)]
    dim = lambda lo=1, hi=7: int(rng.integers(lo, hi))  # noqa: E731
    h, w, c = dim(), dim(), int(rng.choice([1, 2, 3, 5, 8, 16, 17, 33]))
    if pattern in ("per_channel", "per_channel_first"):
        small = (c,) if rng.integers(2) else (1, 1, c)
        pair = ((h, w, c), small)
        return pattern, *(pair if pattern == "per_channel" else pair[::-1])
    if pattern == "scalar":
        shape = tuple(dim() for _ in range(int(rng.integers(1, 5))))
        small = () if rng.integers(2) else (1,) * int(rng.integers(1, len(shape) + 1))
        return pattern, *((shape, small) if rng.integers(2) else (small, shape))
    if pattern == "per_row":
        return pattern, (h, w, c), (h, w, 1)
    if pattern == "both_sides":
        return pattern, (1, w, 1), (h, 1, c)
    if pattern == "rank_mismatch":
        full = tuple(dim() for _ in range(int(rng.integers(3, 6))))
        small = full[-int(rng.integers(1, len(full))):]
        small = tuple(1 if rng.random() < 0.3 else d for d in small)
        return pattern, *((full, small) if rng.integers(2) else (small, full))
    if pattern == "same":
        shape = tuple(dim(1, 9) for _ in range(int(rng.integers(1, 4))))
        return pattern, shape, shape
    rank = int(rng.integers(1, 7))
    out = [dim(1, 5) for _ in range(rank)]
    a = tuple(d if rng.random() < 0.6 else 1 for d in out)
    b = tuple(d if rng.random() < 0.6 else 1 for d in out)
    return pattern, a[int(rng.integers(0, rank)):], b


def dims_of(box):
    count, stride1, stride2 = box
    return {"count": count, "stride1": stride1, "stride2": stride2}


def test_broadcast_box_merges_axes():
    """The squeeze-and-excitation case is two axes whichever operand comes
    first; same shapes one axis; both-sides broadcasting keeps three."""
    assert broadcast_box((4, 5, 8), (1, 1, 8), (4, 5, 8)) == (
        [1, 1, 1, 1, 20, 8], [0, 0, 0, 0, 8, 1], [0, 0, 0, 0, 0, 1])
    assert broadcast_box((8,), (4, 5, 8), (4, 5, 8)) == (
        [1, 1, 1, 1, 20, 8], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 8, 1])
    assert broadcast_box((2, 3, 4), (2, 3, 4), (2, 3, 4))[0] == [1, 1, 1, 1, 1, 24]
    assert broadcast_box((4, 5, 1), (4, 5, 8), (4, 5, 8))[1][-2:] == [1, 0]
    assert broadcast_box((1, 5, 1), (4, 1, 8), (4, 5, 8)) == (
        [1, 1, 1, 4, 5, 8], [0, 0, 0, 0, 1, 0], [0, 0, 0, 8, 0, 1])
    assert broadcast_box((), (3,), (3,)) == ([1, 1, 1, 1, 1, 3], [0] * 6, [0, 0, 0, 0, 0, 1])


def test_broadcast_pairs_cover_every_pattern():
    seen = set()
    for i in range(N_BINARY):
        pattern, a, b = broadcast_pair(np.random.default_rng(31000 + i), i)
        out = np.broadcast_shapes(a, b)
        box = broadcast_box(a, b, out)
        assert np.prod(box[0]) == np.prod(out)
        seen.add(pattern)
        if len(a) != len(b):
            seen.add("ranks differ")
        if any(x < y for x, y in zip(a[::-1], out[::-1])) and any(
                x < y for x, y in zip(b[::-1], out[::-1])):
            seen.add("both broadcast")
    assert seen >= set(PATTERNS) | {"ranks differ", "both broadcast"}


# ---- int8 binary parameters -----------------------------------------------

def random_quant(rng, i):
    scale = float(np.float32(10 ** rng.uniform(-3, 1)))
    zp = [-128, 127, 0][i % 3] if i % 4 == 0 else int(rng.integers(-128, 128))
    return Quant(scale, zp)


def exporter_params(rng, i, func, clamp, x1, x2):
    """k2m_binary_s8_params as quantize.binary_params derives them from
    random input scales and the output's calibrated on the real result of
    x1 <func> x2 (after the clamp), as the exporter's calibration would."""
    q1, q2 = random_quant(rng, i), random_quant(rng, i + 1)
    r1, r2 = (q.scale * (x.astype(np.float64) - q.zero_point) for q, x in ((q1, x1), (q2, x2)))
    with np.errstate(all="ignore"):
        y = {"add": np.add, "sub": np.subtract, "avg": lambda a, b: (a + b) / 2,
             "mul": np.multiply, "div": np.divide, "max": np.maximum,
             "min": np.minimum}[func](r1, r2)
    y = np.clip(y[np.isfinite(y)], *[v if v is not None else np.inf * sign
                                      for v, sign in zip(clamp, (-1, 1))])
    shrink = float(rng.uniform(0.05, 1.0)) if i % 5 == 4 else 1.0  # a too-fine output: clamps bite
    qo = quantize.activation_quant(float(y.min(initial=0)) * shrink, float(y.max(initial=0)) * shrink)
    node = SimpleNamespace(attrs={"func": func, "clamp": clamp}, layer="test")
    t1, t2, to = (Tensor(n, (1,), "int8", q) for n, q in (("a", q1), ("b", q2), ("o", qo)))
    return quantize.binary_params(node, t1, to, t2)["params"]


def raw_params(rng, func):
    """Random fields with left shifts and extreme offsets (the saturating
    requantization's corners)."""
    o1, o2, oo = (int(rng.integers(-128, 129)) for _ in range(3))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if rng.integers(3) == 0 else (-128, 127)
    m = lambda: int(rng.integers(2**30, 2**31))  # noqa: E731
    if func in ("add", "sub", "avg"):
        m1, m2 = m(), m()
        p = [o1, m1, int(rng.integers(-6, 1)), o2, -m2 if func == "sub" else m2,
             int(rng.integers(-6, 1)), 20, oo, m(), int(rng.integers(-24, 4)), lo, hi]
    elif func == "mul":
        p = [o1, 0, 0, o2, 0, 0, 0, oo, m(), int(rng.integers(-18, 22)), lo, hi]
    elif func == "div":
        p = [o1, 0, 0, o2, 0, 0, 22, oo, m(), int(rng.integers(-30, 1)), lo, hi]
    else:
        p = [o1, m(), int(rng.integers(-4, 26)), o2, m(), int(rng.integers(-4, 26)), 0, oo, 0, 0,
             lo, hi]
    return p


def binary_case(rng, i, func):
    pattern, a, b = broadcast_pair(rng, i)
    clamp = [(None, None), (0.0, None), (0.0, 6.0)][i % 3]
    x1, x2 = s8(rng, a), s8(rng, b)
    if i % 2:
        p = dict(zip(ref.ADD_FIELDS, raw_params(rng, func)))
    else:
        if func == "div":
            x2[x2 == 0] = 1  # calibration sees no zero divisor (the zero point is set below)
        p = dict(zip(ref.ADD_FIELDS, exporter_params(rng, i, func, clamp, x1, x2)))
    if func == "div" and x2.size:  # divisors at the zero point: n / 0
        flat = x2.reshape(-1)
        flat[rng.random(flat.size) < 0.15] = np.int8(-p["input2_offset"])
    return pattern, p, x1, x2


def binary_want(func, p, x1, x2):
    if func in ("add", "sub", "avg"):
        return ref.broadcast_add_s8(p, x1, x2)
    if func == "mul":
        return ref.broadcast_mul_s8(p, x1, x2)
    if func == "div":
        return ref.broadcast_div_s8(p, x1, x2)
    return ref.broadcast_max_min_s8(p, func == "max", x1, x2)


def call_binary_s8(k2m, func, p, x1, x2, in_place=False):
    out_shape = np.broadcast_shapes(x1.shape, x2.shape)
    c = Caller(k2m)
    d = c.new("k2m_broadcast_dims", dims_of(broadcast_box(x1.shape, x2.shape, out_shape)))
    params = c.new("k2m_binary_s8_params", p)
    if in_place:  # output == input1 of the output's shape
        x1 = x1.copy()
        full, out = x1, x1
    else:
        full, out = guarded(out_shape, np.int8)
    args = (c.ptr(x1, "int8_t"), c.ptr(x2, "int8_t"), c.ptr(full, "int8_t"))
    kernel = {"sub": "add", "avg": "add"}.get(func, func)
    if func in ("max", "min"):
        c.lib.k2m_broadcast_max_min_s8(d, params, int(func == "max"), *args)
    else:
        getattr(c.lib, f"k2m_broadcast_{kernel}_s8")(d, params, *args)
    if not in_place:
        check_guard(full)
    return out.reshape(out_shape)


@pytest.mark.parametrize("func", FUNCS_S8)
@pytest.mark.parametrize("i", range(N_BINARY))
def test_broadcast_s8(k2m, func, i):
    rng = np.random.default_rng(32000 + 1000 * FUNCS_S8.index(func) + i)
    pattern, p, x1, x2 = binary_case(rng, i, func)
    want = binary_want(func, p, x1, x2)
    in_place = i % 7 == 3 and x1.shape == want.shape
    got = call_binary_s8(k2m, func, p, x1, x2, in_place)
    np.testing.assert_array_equal(got, want, err_msg=f"{func} {pattern} {x1.shape} {x2.shape} {p}")


@pytest.mark.parametrize("func", FUNCS_S8)
def test_broadcast_s8_not_all_saturated(func):
    inside = []
    for i in range(0, N_BINARY, 6):  # the exporter-derived cases without a clamp
        rng = np.random.default_rng(32000 + 1000 * FUNCS_S8.index(func) + i)
        _, p, x1, x2 = binary_case(rng, i, func)
        y = binary_want(func, p, x1, x2).astype(np.int64)
        inside.append(((y > p["act_min"]) & (y < p["act_max"])).mean())
    assert np.mean(inside) > 0.4


def test_broadcast_s8_matches_same_shape_kernels(k2m):
    """Where nothing saturates, the broadcast kernels equal k2m_add_s8,
    k2m_mul_s8 and k2m_max_min_s8 on same-shape operands."""
    for i in range(40):
        rng = np.random.default_rng(33000 + i)
        func = ["add", "sub", "mul", "max"][i % 4]
        x1, x2 = s8(rng, (3, 7)), s8(rng, (3, 7))
        p = dict(zip(ref.ADD_FIELDS, exporter_params(rng, 2 * i, func, (None, None), x1, x2)))
        c = Caller(k2m)
        params = c.new("k2m_binary_s8_params", p)
        out = np.zeros(21, np.int8)
        args = (c.ptr(x1, "int8_t"), c.ptr(x2, "int8_t"), c.ptr(out, "int8_t"), 21)
        if func in ("add", "sub"):
            c.lib.k2m_add_s8(params, *args)
        elif func == "mul":
            c.lib.k2m_mul_s8(params, *args)
        else:
            c.lib.k2m_max_min_s8(params, 1, *args)
        np.testing.assert_array_equal(call_binary_s8(k2m, func, p, x1, x2).ravel(), out)


def test_broadcast_div_known_answer(k2m):
    """Scales 1 in and out (multiplier 2^-22: 2^30, shift -21): 7 / 2 = 3.5
    rounds to 4, -7 / 2 to -4, 1 / 3 to 0, 6 / -3 = -2; division by zero
    gives act_max / act_min, 0 / 0 the zero point (5 here, clamped)."""
    p = dict(zip(ref.ADD_FIELDS, [0, 0, 0, 0, 0, 0, 22, 5, 2**30, -21, -100, 100]))
    assert quantize.quantize_multiplier(2.0 ** -22) == (2**30, -21)
    x1 = np.array([7, -7, 1, 6, 9, -9, 0], np.int8)
    x2 = np.array([2, 2, 3, -3, 0, 0, 0], np.int8)
    assert list(call_binary_s8(k2m, "div", p, x1, x2)) == [9, 1, 5, 3, 100, -100, 5]
    assert list(ref.broadcast_div_s8(p, x1, x2)) == [9, 1, 5, 3, 100, -100, 5]
    # no fraction bits and a multiplier of 1: the quotient's own rounding
    p.update(left_shift=0, output_offset=0, output_multiplier=2**30, output_shift=1)
    x1 = np.array([2, -2, 5, -5, 1, 127], np.int8)
    x2 = np.array([3, 3, 2, 2, 3, -1], np.int8)
    assert list(call_binary_s8(k2m, "div", p, x1, x2)) == [1, -1, 3, -3, 0, -100]


def test_broadcast_mul_saturates_instead_of_wrapping(k2m):
    """A left shift of 20 on a product of 2^14: k2m_requantize would wrap
    (2^34 in int32); the broadcast kernel gives the clamp."""
    p = dict(zip(ref.ADD_FIELDS, [0, 0, 0, 0, 0, 0, 0, 0, 2**30, 20, -128, 127]))
    x1, x2 = np.array([127, -128, 1, 0], np.int8), np.array([127, 127, 1, 5], np.int8)
    assert list(call_binary_s8(k2m, "mul", p, x1, x2)) == [127, -128, 127, 0]


def test_broadcast_raw_strides(k2m):
    """Strides the exporter never emits (an inner stride of 3, a transposed
    second operand): the kernel follows any box."""
    rng = np.random.default_rng(34000)
    a = s8(rng, (4, 9))             # read as (4, 3) at stride 3
    b = s8(rng, (3, 4))             # read transposed
    p = dict(zip(ref.ADD_FIELDS, exporter_params(rng, 1, "mul", (None, None), a[:, ::3], b.T)))
    box = {"count": [1, 1, 1, 1, 4, 3], "stride1": [0, 0, 0, 0, 9, 3],
           "stride2": [0, 0, 0, 0, 1, 4]}
    c = Caller(k2m)
    full, out = guarded((4, 3), np.int8)
    c.lib.k2m_broadcast_mul_s8(c.new("k2m_broadcast_dims", box), c.new("k2m_binary_s8_params", p),
                               c.ptr(a, "int8_t"), c.ptr(b, "int8_t"), c.ptr(full, "int8_t"))
    check_guard(full)
    np.testing.assert_array_equal(out, ref.broadcast_mul_s8(p, a[:, ::3], b.T))


# ---- float binary ----------------------------------------------------------

FUNCS_F32 = ["add", "sub", "mul", "div", "max", "min", "avg"]


@pytest.mark.parametrize("func", FUNCS_F32)
@pytest.mark.parametrize("i", range(N_BINARY // 2))
def test_broadcast_f32(k2m, func, i):
    rng = np.random.default_rng(35000 + 1000 * FUNCS_F32.index(func) + i)
    _, a, b = broadcast_pair(rng, i)
    x1, x2 = f32(rng, a) * np.float32(10 ** rng.uniform(-2, 2)), f32(rng, b)
    if func == "div" and x2.size:
        x2.reshape(-1)[rng.random(x2.size) < 0.2] = 0.0  # x / 0: inf, 0 / 0: NaN
        x1.reshape(-1)[rng.random(x1.size) < 0.1] = 0.0
    lo, hi = [(-F32_MAX, F32_MAX), (0.0, F32_MAX), (0.0, 6.0), (-0.5, 0.7)][i % 4]
    out_shape = np.broadcast_shapes(a, b)
    c = Caller(k2m)
    full, out = guarded(out_shape, np.float32)
    enum = getattr(c.lib, f"K2M_BINARY_{func.upper()}")
    c.lib.k2m_broadcast_f32(enum, c.new("k2m_broadcast_dims", dims_of(broadcast_box(a, b, out_shape))),
                            c.ptr(x1, "float"), c.ptr(x2, "float"), c.ptr(full, "float"), lo, hi)
    check_guard(full)
    np.testing.assert_array_equal(out, ref.broadcast_f32(func, x1, x2, lo, hi))


# ---- reduce ----------------------------------------------------------------

def reduce_case(rng, i):
    outer, inner = int(rng.choice([1, 1, 2, 3, 7])), int(rng.choice([1, 1, 3, 8, 17]))
    length = [1, 2, 49, 1000][i % 4] if i % 3 == 0 else int(rng.integers(1, 60))
    func = ["mean", "sum", "max", "min"][(i // 2) % 4]
    x = s8(rng, (outer, length, inner))
    if i % 10 == 9:
        x[:] = np.int8(-128 if i % 20 == 9 else 127)  # extreme maps
    q_in = random_quant(rng, i)
    lo, hi = (-128, 127)
    if i % 2:   # as the exporter: the output calibrated on the real result
        real = q_in.scale * (x.astype(np.float64) - q_in.zero_point)
        y = real.mean(axis=1) if func == "mean" else real.sum(axis=1)
        q_out = quantize.activation_quant(float(y.min()), float(y.max()))
        m, sh = quantize.quantize_multiplier(
            q_in.scale / (q_out.scale * (length if func == "mean" else 1)))
        out_off = q_out.zero_point
        if i % 5 == 2:
            lo = max(-128, out_off)                   # a fused ReLU
    else:       # raw, left shifts included (saturating)
        m, sh = int(rng.integers(2**30, 2**31)), int(rng.integers(-16, 8))
        out_off = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if i % 4 == 0 else (lo, hi)
    p = dict(input_offset=-q_in.zero_point, output_offset=out_off, multiplier=m, shift=sh,
             act_min=lo, act_max=hi)
    return func, p, x


def call_reduce_s8(k2m, func, p, x):
    outer, length, inner = x.shape
    c = Caller(k2m)
    d = c.new("k2m_reduce_dims", {"outer": outer, "length": length, "inner": inner})
    full, out = guarded((outer, inner), np.int8)
    if func in ("max", "min"):
        c.lib.k2m_reduce_max_min_s8(d, int(func == "max"), p["act_min"], p["act_max"],
                                    c.ptr(x, "int8_t"), c.ptr(full, "int8_t"))
    else:
        c.lib.k2m_reduce_sum_s8(d, c.new("k2m_reduce_s8_params", p), c.ptr(x, "int8_t"),
                                c.ptr(full, "int8_t"))
    check_guard(full)
    return out


def reduce_want(func, p, x):
    if func in ("max", "min"):
        return ref.reduce_max_min_s8(func == "max", p["act_min"], p["act_max"], x)
    return ref.reduce_sum_s8(p, x)


@pytest.mark.parametrize("i", range(N_REDUCE))
def test_reduce_s8(k2m, i):
    func, p, x = reduce_case(np.random.default_rng(36000 + i), i)
    np.testing.assert_array_equal(call_reduce_s8(k2m, func, p, x), reduce_want(func, p, x),
                                  err_msg=f"{func} {x.shape} {p}")


def test_reduce_s8_not_all_saturated():
    inside = []
    for i in range(1, N_REDUCE, 2):  # exporter-like mean and sum
        func, p, x = reduce_case(np.random.default_rng(36000 + i), i)
        if func not in ("mean", "sum") or i % 10 == 9:
            continue
        y = reduce_want(func, p, x).astype(np.int64)
        inside.append(((y > p["act_min"]) & (y < p["act_max"])).mean())
    assert np.mean(inside) > 0.5


def test_reduce_mean_equals_k2m_mean_s8(k2m):
    """outer == 1 mean is the global average pooling kernel, bit for bit."""
    for i in range(1, 40, 2):
        func, p, x = reduce_case(np.random.default_rng(36000 + i), i)
        if func != "mean":
            continue
        x = x.reshape(1, -1, x.shape[2])
        q = dict(input_offset=p["input_offset"], output_offset=p["output_offset"],
                 act_min=p["act_min"], act_max=p["act_max"],
                 multiplier=np.array([p["multiplier"]], np.int32),
                 shift=np.array([p["shift"]], np.int32))
        c = Caller(k2m)
        out = np.zeros(x.shape[2], np.int8)
        c.lib.k2m_mean_s8(x.shape[1], x.shape[2], c.quant(q), c.ptr(x[0], "int8_t"),
                          c.ptr(out, "int8_t"))
        np.testing.assert_array_equal(call_reduce_s8(k2m, "mean", p, x)[0], out)


@pytest.mark.parametrize("func", ["mean", "sum", "max", "min"])
@pytest.mark.parametrize("i", range(20))
def test_reduce_f32(k2m, func, i):
    rng = np.random.default_rng(37000 + i)
    outer, length, inner = (int(rng.integers(1, 5)), int(rng.integers(1, 300)),
                            int(rng.integers(1, 9)))
    x = f32(rng, (outer, length, inner)) * np.float32(10 ** rng.uniform(-3, 3))
    lo, hi = [(-F32_MAX, F32_MAX), (0.0, F32_MAX), (-0.5, 0.7)][i % 3]
    c = Caller(k2m)
    full, out = guarded((outer, inner), np.float32)
    c.lib.k2m_reduce_f32(getattr(c.lib, f"K2M_REDUCE_{func.upper()}"),
                         c.new("k2m_reduce_dims", {"outer": outer, "length": length, "inner": inner}),
                         lo, hi, c.ptr(x, "float"), c.ptr(full, "float"))
    check_guard(full)
    want, mag = ref.reduce_f32(func, x, lo, hi)
    assert_close(out, want, mag, f"reduce {func} {x.shape}")


# ---- matmul ----------------------------------------------------------------

def packed_layout(levels, rows, row, pad):
    """Batch strides of an operand stored level by level, rows of `row`
    elements, `pad` elements between batches."""
    strides, step = [], rows * row + pad
    for count in reversed(levels):
        strides.append(step)
        step = step * count + pad
    return strides[::-1], step


def matmul_case(rng, i):
    """dims dict, a, b (flat int8) and the size of c."""
    theme = ["attention_qk", "attention_av", "packed", "padded", "broadcast_b", "vector"][i % 6]
    if theme.startswith("attention"):
        t, s, h = int(rng.integers(1, 20)), int(rng.integers(1, 20)), int(rng.integers(1, 5))
        dk = int(rng.choice([1, 3, 4, 5, 8, 13, 16]))
        if theme == "attention_qk":   # Q (T, H dk), K (S, H dk) -> (H, T, S)
            d = dict(m=t, n=s, k=dk, a_row=h * dk, b_row=h * dk, c_row=s,
                     levels=[(h, dk, dk, t * s)])
            sizes = (t * h * dk, s * h * dk, h * t * s)
        else:                         # P (H, T, S), V^T (H, dk, S) -> (T, H dk)
            d = dict(m=t, n=dk, k=s, a_row=s, b_row=s, c_row=h * dk,
                     levels=[(h, t * s, dk * s, dk)])
            sizes = (h * t * s, h * dk * s, t * h * dk)
    else:
        m, n = int(rng.integers(1, 10)), int(rng.integers(1, 12))
        k = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 64, 70]))
        if theme == "vector":
            m = 1
        counts = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 4)))]
        pad = int(rng.integers(0, 4)) if theme == "padded" else 0
        a_row, b_row = k + pad, k + (pad if rng.integers(2) else 0)
        a_st, size_a = packed_layout(counts, m, a_row, pad)
        b_st, size_b = packed_layout(counts, n, b_row, pad)
        c_st, size_c = packed_layout(counts, m, n + pad, pad)
        if theme == "broadcast_b" and counts:
            b_st, size_b = [0] * len(counts), n * b_row
        d = dict(m=m, n=n, k=k, a_row=a_row, b_row=b_row, c_row=n + pad,
                 levels=[(cnt, sa, sb, sc) for cnt, sa, sb, sc in zip(counts, a_st, b_st, c_st)])
        sizes = (size_a, size_b, size_c)
    levels = [(1, 0, 0, 0)] * (3 - len(d["levels"])) + d["levels"]
    dims = {key: d[key] for key in ("m", "n", "k", "a_row", "b_row", "c_row")}
    for r, key in enumerate(("batch_count", "a_batch", "b_batch", "c_batch")):
        dims[key] = [lv[r] for lv in levels]
    a, b = s8(rng, sizes[0]), s8(rng, sizes[1])
    return theme, dims, a, b, sizes[2]


def matmul_params(rng, i, k, s16):
    a_off = [128, -127, 0][i % 3] if i % 4 == 0 else int(rng.integers(-127, 129))
    b_off = 128 if i % 5 == 0 else int(rng.integers(-127, 129))  # 128: a softmax's output
    spread = np.log2(max(k, 1) ** 0.5 * 148 * 148) + 1
    shift = int(round((13 if s16 else 6) - spread)) + int(rng.integers(-2, 3))
    if i % 9 == 8:
        shift = int(rng.integers(1, 12))   # left shifts: saturating requantization
    if s16:
        lo, hi = (-32768, 32767) if rng.integers(2) else sorted(int(v) for v in rng.integers(-32768, 32768, 2))
        out_off = 0
    else:
        lo, hi = [(-128, 127), (int(rng.integers(-128, 0)), 127),
                  tuple(sorted(int(v) for v in rng.integers(-128, 128, 2)))][i % 3]
        out_off = int(rng.integers(-128, 128))
    return dict(a_offset=a_off, b_offset=b_off, output_offset=out_off,
                multiplier=int(rng.integers(2**30, 2**31)), shift=shift, act_min=lo, act_max=hi)


def call_matmul(k2m, dims, p, a, b, c_size, out16):
    dtype, ctype = (np.int16, "int16_t") if out16 else (np.int8, "int8_t")
    c = Caller(k2m)
    full, out = guarded((c_size,), dtype)
    fn = c.lib.k2m_matmul_s8_s16 if out16 else c.lib.k2m_matmul_s8
    fn(c.new("k2m_matmul_dims", dims), c.new("k2m_matmul_s8_params", p), c.ptr(a, "int8_t"),
       c.ptr(b, "int8_t"), c.ptr(full, ctype))
    check_guard(full)
    return out


def written(dims, c_size):
    mask = np.zeros(c_size, bool)
    for _, _, off_c in ref.matmul_offsets(dims):
        mask[off_c + np.arange(dims["m"])[:, None] * dims["c_row"] + np.arange(dims["n"])] = True
    return mask


@pytest.mark.parametrize("i", range(N_MATMUL))
def test_matmul_s8(k2m, i):
    rng = np.random.default_rng(38000 + i)
    theme, dims, a, b, c_size = matmul_case(rng, i)
    out16 = i % 3 == 2
    p = matmul_params(rng, i, dims["k"], out16)
    got = call_matmul(k2m, dims, p, a, b, c_size, out16)
    want = ref.matmul_s8(dims, p, a, b, c_size, out16)
    mask = written(dims, c_size)
    what = f"{theme} {dims} {p}"
    np.testing.assert_array_equal(got[mask], want[mask], err_msg=what)
    assert np.all(got[~mask] == sentinel(got.dtype)), "wrote between the output rows: " + what


def test_matmul_case_mix():
    ks, inside, offsets = set(), [], set()
    for i in range(N_MATMUL):
        rng = np.random.default_rng(38000 + i)
        theme, dims, a, b, c_size = matmul_case(rng, i)
        p = matmul_params(rng, i, dims["k"], i % 3 == 2)
        ks.add(dims["k"] % 4)
        offsets.add((p["a_offset"] == 128, p["b_offset"] == 128))
        y = ref.matmul_s8(dims, p, a, b, c_size, i % 3 == 2)[written(dims, c_size)].astype(np.int64)
        inside.append(((y > p["act_min"]) & (y < p["act_max"])).mean())
    assert ks == {0, 1, 2, 3} and len(offsets) >= 3
    assert np.mean(inside) > 0.5


def test_matmul_known_answer(k2m):
    """[[1, 2], [3, 4]] (zero point -1: offset +1 -> [[2, 3], [4, 5]]) times
    B rows [1, 0], [0, 1] (zero point 0): C = [[2, 3], [4, 5]] at scale 1
    (multiplier 2^30 shift 1); output zero point 10."""
    dims = dict(m=2, n=2, k=2, a_row=2, b_row=2, c_row=2, batch_count=[1, 1, 1],
                a_batch=[0, 0, 0], b_batch=[0, 0, 0], c_batch=[0, 0, 0])
    p = dict(a_offset=1, b_offset=0, output_offset=10, multiplier=2**30, shift=1,
             act_min=-128, act_max=127)
    a, b = np.array([1, 2, 3, 4], np.int8), np.array([1, 0, 0, 1], np.int8)
    assert list(call_matmul(k2m, dims, p, a, b, 4, False)) == [12, 13, 14, 15]


@pytest.mark.parametrize("i", range(40))
def test_matmul_f32(k2m, i):
    rng = np.random.default_rng(39000 + i)
    theme, dims, a8, b8, c_size = matmul_case(rng, i)
    a, b = f32(rng, a8.size), f32(rng, b8.size) * np.float32(10 ** rng.uniform(-2, 2))
    lo, hi = [(-F32_MAX, F32_MAX), (0.0, F32_MAX), (-0.5, 0.7)][i % 3]
    c = Caller(k2m)
    full, out = guarded((c_size,), np.float32)
    c.lib.k2m_matmul_f32(c.new("k2m_matmul_dims", dims), lo, hi, c.ptr(a, "float"),
                         c.ptr(b, "float"), c.ptr(full, "float"))
    check_guard(full)
    want, mag = ref.matmul_f32(dims, a, b, c_size, lo, hi)
    mask = written(dims, c_size)
    assert_close(out[mask], want[mask], mag[mask], f"matmul {theme} {dims}")
    assert np.all(out[~mask] == sentinel(np.float32))
