"""The Cortex-M4 DSP paths of the int8 kernels against the portable
reference, bit for bit, on the emulated Cortex-M4.

Random cases (fixed seed) are written as const arrays into one C program
that runs every case and prints a per-case hash of the output.  It is built
with ../shared/tools/m4run (QEMU mps2-an386, a Cortex-M4 with the DSP
extension) three times: as is (DSP path, -O2), at -O0 (where the inline-asm
loops give way to their C twins) and with -DK2M_PORTABLE (the portable
loops, compiled for the M4); all three must match the hashes of
tests/kernel_ref.py, which is bit-exact to the portable C
(tests/test_kernels.py), and each other.  The program also checks that
nothing is written past the output or past the scratch bytes k2m.h
documents (the exporter allocates exactly those).

Cases, by kernel path:
- conv (int8 and int16 outputs): strides, dilations, explicit and 'same'
  padding, odd channel counts, 1x1 maps, K not a multiple of 4, kernels
  larger than the stride, and first layers (k_w * in_c not a multiple of 4:
  the gathered im2col); channels with a left (positive) requantization
  shift, dead channels (multiplier 0) and biases beyond the fast form's
  bound (the general requantization);
- fully connected (int8 and int16 outputs): odd feature counts, odd and even
  numbers of 4-input steps, and the channels above (left shift, dead, huge
  bias: the per-accumulator choice of the fast requantization);
- depthwise: the generic loops (any kernel, depth multiplier 2) and the
  3x3 row ring (horizontal stride 1 and 2, any vertical stride, widths and
  paddings of both parities, 1-17 channels: 4-channel groups and the tail);
- pools: max and average (the SIMD path and, beyond 256 taps, the scalar
  one), padding, dilation; mean;
- conv fused with its global pooling (k2m_conv2d_pool_s8, average and mean);
- add (TFLite's parameters, as exporter/quantize.py derives them; Subtract's
  negated multiplier), mul;
- in place: conv, depthwise and pool cases whose input starts D bytes after
  the output in one buffer, D as the exporter's planner computes it
  (exporter.planner.overlap) - the kernels' part of the in-place contract;
- a residual block streamed by rows (k2m_conv_pair_add_s8, in place over
  its input): geometries the planner accepts (exporter.planner's
  _streamable_rows) with 'same', explicit and uneven padding, even
  kernels, a strided or dilated first conv along the width, odd widths
  and channel counts, 1-row maps; scratch as the planner sizes it.

The int8 SimpleRNN / LSTM / GRU kernels get a program of their own (random
shapes with odd and small features and units, every flag combination, GRU
with and without reset_after, stateful and zero states, scratch and state at
odd addresses, scales that take the fast and the general requantization):
the hash of each case's output and final state must equal tests/rnn_ref.py's
(bit-exact to the portable C, tests/test_recurrent_kernels.py) for the DSP
path at -O2 and -O0 and the portable path, and nothing may be written past
the output, the state or the K2M_*_SCRATCH elements of scratch.

Needs ../shared/tools/m4run, arm-none-eabi-gcc (with newlib) and
qemu-system-arm: skipped without them, failed instead when $CI is set.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_ref as ref  # noqa: E402
import rnn_ref  # noqa: E402
from test_kernels import add_params  # noqa: E402

from exporter import planner  # noqa: E402
from exporter.ir import Graph, Node, Tensor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "c_runtime"
M4RUN = ROOT.parent / "shared" / "tools" / "m4run"
APT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
SEED = 20240611
N_CONV_S8, N_CONV_S16, N_FC, N_FC_S16, N_DW = 100, 60, 70, 30, 90
N_FIRST, N_RING, N_POOL, N_CONV_POOL, N_ADD, N_MUL = 30, 70, 60, 24, 24, 12
N_PAIR = 48  # k2m_conv_pair_add_s8: a residual block streamed by rows
INT32_MIN = -(2**31)
GUARD = 16  # guard elements after every output and scratch buffer
KERNEL_SOURCES = ("k2m_conv.c", "k2m_fully_connected.c", "k2m_depthwise.c", "k2m_pool.c",
                  "k2m_elementwise.c", "k2m_stream.c")
WINDOW_FIELDS = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
                 "stride_h", "stride_w", "dil_h", "dil_w", "pad_top", "pad_left")



# Guard bytes around every buffer a kernel writes: filled before each call,
# checked after, so a stray write fails the case.
GUARD_C = r"""
static void fill(void *buf, int32_t bytes)
{
    int32_t i;
    for (i = 0; i < bytes; ++i) ((uint8_t *)buf)[i] = 0xA5;
}

static int guard_ok(const void *buf, int32_t from_byte, int32_t bytes)
{
    int32_t i;
    for (i = from_byte; i < from_byte + bytes; ++i)
        if (((const uint8_t *)buf)[i] != 0xA5) return 0;
    return 1;
}
"""

# out_hash in C: FNV-1a over the outputs as 16-bit patterns.
FNV_C = r"""
static uint32_t fnv(const void *out, int32_t n, int is16)
{
    uint32_t h = 2166136261u;
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t v = is16 ? ((const int16_t *)out)[i] : ((const int8_t *)out)[i];
        h = (h ^ ((uint32_t)v & 0xFFFFu)) * 16777619u;
    }
    return h;
}
"""


def _unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail(reason + " (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def m4run():
    if not M4RUN.exists():
        _unavailable(f"{M4RUN} not found (the shared m4run tool is not checked out)")
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed: {APT}")
    return M4RUN


# ---- case generation -----------------------------------------------------

def _axis(rng, theme):
    """(in, k, stride, dil, pad_before, out) along one axis."""
    if theme == "one_by_one_map":
        n, k, s, d = 1, int(rng.integers(1, 4)), 1, 1
    else:
        n = int(rng.integers(1, 13))
        k = int(rng.choice([1, 1, 2, 3, 3, 4, 5]))
        s = int(rng.choice([1, 1, 1, 2, 3]))
        d = int(rng.choice([1, 1, 1, 2, 3])) if theme not in ("big_kernel", "ring") else 1
        if theme == "big_kernel":
            k, s = int(rng.integers(4, 11)), int(rng.integers(1, 3))
        if theme == "ring":
            n, k = int(rng.integers(1, 18)), 3
    keff = (k - 1) * d + 1
    mode = rng.integers(3)
    if mode == 0:  # 'same' as TensorFlow resolves it
        out = -(-n // s)
        total = max((out - 1) * s + keff - n, 0)
        before = total // 2
    else:          # explicit padding, valid when 0
        before = 0 if mode == 1 else int(rng.integers(0, keff))
        after = 0 if mode == 1 else int(rng.integers(0, keff))
        while n + before + after < keff:
            after += 1
        out = (n + before + after - keff) // s + 1
    return n, k, s, d, before, out


def _window(h, w, in_c, out_c):
    return dict(in_h=h[0], in_w=w[0], in_c=in_c, out_h=h[5], out_w=w[5], out_c=out_c,
                k_h=h[1], k_w=w[1], stride_h=h[2], stride_w=w[2], dil_h=h[3], dil_w=w[3],
                pad_top=h[4], pad_left=w[4])


def random_window(rng, i):
    theme = ["plain", "one_by_one_map", "big_kernel", "plain", "pointwise"][i % 5]
    h = _axis(rng, theme)
    w = _axis(rng, theme)
    if theme == "pointwise":
        h = (h[0], 1, 1, 1, 0, h[0])
        w = (w[0], 1, 1, 1, 0, w[0])
    in_c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 16, 17]))
    out_c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 16]))
    return theme, _window(h, w, in_c, out_c)


def first_layer_window(rng):
    """k_w * in_c not a multiple of 4 and K <= 64: the gathered im2col."""
    while True:
        h, w = _axis(rng, "plain"), _axis(rng, "plain")
        in_c = int(rng.choice([1, 2, 3, 3]))
        k = int(rng.choice([3, 3, 5]))
        h = (h[0] + 2, k, h[2], 1, min(h[4], k - 1), 0)
        w = (w[0] + 2, k, w[2], 1, min(w[4], k - 1), 0)
        g = _window(h, w, in_c, int(rng.choice([1, 2, 3, 8, 16])))
        g["out_h"] = (g["in_h"] + 2 * g["pad_top"] - k) // g["stride_h"] + 1
        g["out_w"] = (g["in_w"] + 2 * g["pad_left"] - k) // g["stride_w"] + 1
        if (k * in_c) % 4 and k * k * in_c <= 64 and g["out_h"] > 0 and g["out_w"] > 0:
            return "first_layer", g


def random_quant(rng, n_out, k, s16):
    """Shifts centred on the accumulator's spread so that most outputs fall
    inside the clamp; now and then a channel with multiplier INT32_MIN
    (the saturating corner of the requantization)."""
    spread = np.log2(max(k, 1) ** 0.5 * 74 * 74) + 1
    target = 13 if s16 else 6
    base = int(round(target - spread))
    shift = rng.integers(base - 2, base + 3, n_out)
    if s16 and rng.integers(3) == 0:
        shift = rng.integers(0, 15, n_out)  # left shifts, as int16 layers get
    mult = rng.integers(2**30, 2**31, n_out).astype(np.int64)
    if rng.integers(8) == 0:
        mult[rng.integers(n_out)] = INT32_MIN
    if s16:
        lo, hi = (-32768, 32767) if rng.integers(2) else sorted(int(v) for v in rng.integers(-32768, 32768, 2))
        out_off = 0 if rng.integers(4) else int(rng.integers(-1000, 1000))
    else:
        kind = rng.integers(3)
        lo, hi = [(-128, 127), (-128 + int(rng.integers(0, 100)), 127),
                  tuple(sorted(int(v) for v in rng.integers(-128, 128, 2)))][kind]
        out_off = int(rng.integers(-128, 128))
    return dict(input_offset=int(rng.integers(-127, 129)), output_offset=out_off,
                act_min=lo, act_max=hi, multiplier=mult.astype(np.int32),
                shift=shift.astype(np.int32))


def quant_extras(rng, q, bias):
    """What trained layers have and the fast requantization must cover: a
    channel with a left shift (real multiplier > 1), a dead channel
    (multiplier 0: its scale underflowed) - and, rarely, a bias beyond the
    fast form's bound or a right shift of 22-30 (its rounding constant
    beyond it), which send the layer (or the channel) to the general form.
    Returns a label."""
    n = len(q["shift"])
    c = int(rng.integers(n))
    kind = int(rng.integers(6))
    if kind == 0:
        q["shift"][c] = int(rng.integers(1, 4))
        return "left_shift"
    if kind == 1:
        q["multiplier"][c], q["shift"][c] = 0, 0
        return "dead_channel"
    if kind == 2 and bias is not None:
        bias[c] = int(rng.choice([2**30 - 7, -(2**30) + 5]))
        return "huge_bias"
    if kind == 3:
        # a scale far below the accumulator's: 2^right * (1 + 2 * offset)
        # leaves int32 for the fast form's rounding constant
        q["shift"][c] = -int(rng.integers(22, 31))
        return "big_right_shift"
    return ""


def depthwise_window(rng, i):
    """mult 1 with in_c 4, 8, 12 (the 4-channel blocks only) and 5, 7 (blocks
    plus the scalar tail), or mult 2 (scalar loop); 1x1 maps, strides,
    dilations, 'same' and explicit padding from _axis."""
    theme = ["plain", "one_by_one_map", "plain", "big_kernel", "plain"][i % 5]
    h = _axis(rng, theme)
    w = _axis(rng, theme)
    if i % 6 == 5:
        in_c, mult = int(rng.choice([1, 2, 3, 4, 5])), 2
    else:
        in_c, mult = [4, 8, 12, 5, 7][i % 5 if i % 6 != 4 else int(rng.integers(5))], 1
    return f"dw_mult{mult}_{theme}", _window(h, w, in_c, in_c * mult)


def ring_window(rng):
    """3x3, depth multiplier 1, no dilation, horizontal stride 1 or 2."""
    h, w = _axis(rng, "ring"), _axis(rng, "ring")
    w = (w[0], w[1], int(rng.choice([1, 2])), 1, w[4], 0)
    keff_pad = w[4] + w[0] + (max((-(-w[0] // w[2]) - 1) * w[2] + 3 - w[0], 0) - w[4])
    w = (w[0], 3, w[2], 1, w[4], max((keff_pad - 3) // w[2] + 1, 1))
    c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 13, 16, 17]))
    return "dw_ring", _window(h, w, c, c)


def pool_case(rng, i):
    kind = ["max", "avg", "max", "avg", "mean", "global_avg"][i % 6]
    c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 16, 17]))
    lo, hi = [(-128, 127), (-128 + int(rng.integers(0, 100)), 127),
              tuple(sorted(int(v) for v in rng.integers(-128, 128, 2)))][int(rng.integers(3))]
    if kind in ("mean", "global_avg"):
        hh, ww = int(rng.integers(1, 19)), int(rng.integers(1, 19))
        x = rng.integers(-128, 128, (hh, ww, c)).astype(np.int8)
        if kind == "mean":
            q = dict(input_offset=int(rng.integers(-127, 129)), output_offset=int(rng.integers(-128, 128)),
                     act_min=lo, act_max=hi, multiplier=np.array([int(rng.integers(2**30, 2**31))], np.int32),
                     shift=np.array([-int(np.log2(hh * ww)) - int(rng.integers(0, 3))], np.int32))
            return dict(kind="mean", theme="mean", x=x, q=q, y=ref.mean_s8(q, x.reshape(-1, c)))
        g = _window((hh, hh, 1, 1, 0, 1), (ww, ww, 1, 1, 0, 1), c, c)  # > 256 taps: scalar
        return dict(kind="avg_pool", theme="global", g=g, x=x, act=(lo, hi),
                    y=ref.avg_pool_s8(g, lo, hi, x))
    theme = ["plain", "one_by_one_map", "plain"][i % 3]
    h, w = _axis(rng, theme), _axis(rng, theme)
    g = _window(h, w, c, c)
    x = rng.integers(-128, 128, (g["in_h"], g["in_w"], c)).astype(np.int8)
    fn = ref.max_pool_s8 if kind == "max" else ref.avg_pool_s8
    return dict(kind=f"{kind}_pool", theme=theme, g=g, x=x, act=(lo, hi), y=fn(g, lo, hi, x))


def planner_overlap(op, g, out_dtype="int8"):
    """D of exporter.planner.overlap for this window: the bytes the input may
    start after the output in one buffer (the planner's in-place choice)."""
    graph = Graph("case")
    graph.tensors["x"] = Tensor("x", (g["in_h"], g["in_w"], g["in_c"]), "int8")
    graph.tensors["y"] = Tensor("y", (g["out_h"], g["out_w"], g["out_c"]), out_dtype)
    node = Node("n", op, ["x"], ["y"], attrs=dict(
        kernel=(g["k_h"], g["k_w"]), strides=(g["stride_h"], g["stride_w"]),
        dilation=(g["dil_h"], g["dil_w"]), pad=(g["pad_top"], g["pad_left"]),
        in_hw=(g["in_h"], g["in_w"]), out_hw=(g["out_h"], g["out_w"])))
    return planner.overlap(graph, node)


def _conv_case(rng, theme, g, s16):
    k = g["k_h"] * g["k_w"] * g["in_c"]
    q = random_quant(rng, g["out_c"], k, s16)
    x = rng.integers(-128, 128, (g["in_h"], g["in_w"], g["in_c"])).astype(np.int8)
    w = rng.integers(-127, 128, (g["out_c"], g["k_h"], g["k_w"], g["in_c"])).astype(np.int8)
    bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, g["out_c"]).astype(np.int32)
    extra = quant_extras(rng, q, bias) if not s16 else ""
    y = (ref.conv2d_s8_s16 if s16 else ref.conv2d_s8)(g, q, x, w, bias)
    return dict(kind="conv", s16=s16, theme=" ".join(t for t in (theme, extra) if t), g=g, q=q,
                x=x, w=w, bias=bias, y=y)


def _dw_case(rng, theme, g):
    q = random_quant(rng, g["out_c"], g["k_h"] * g["k_w"], False)
    x = rng.integers(-128, 128, (g["in_h"], g["in_w"], g["in_c"])).astype(np.int8)
    w = rng.integers(-127, 128, (g["k_h"], g["k_w"], g["out_c"])).astype(np.int8)
    bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, g["out_c"]).astype(np.int32)
    extra = quant_extras(rng, q, bias)
    y = ref.depthwise_conv2d_s8(g, q, x, w, bias)
    return dict(kind="dw", s16=False, theme=" ".join(t for t in (theme, extra) if t), g=g, q=q,
                x=x, w=w, bias=bias, y=y)


def _pair_axis(rng, n, horizontal):
    """One axis of a streamed pair: conv_a's (k, stride, dilation, pad
    before, out) and conv_b's (k, pad before), conv_b's output n long again."""
    while True:
        ka, kb = (int(rng.choice([1, 2, 3, 3, 3, 5])) for _ in range(2))
        sa = 2 if horizontal and rng.integers(4) == 0 else 1
        da = 2 if horizontal and ka > 1 and rng.integers(5) == 0 else 1
        keff = (ka - 1) * da + 1
        before, after = (int(rng.integers(0, keff)) for _ in range(2))
        na = (n + before + after - keff) // sa + 1
        total = n - na + kb - 1  # conv_b's padding, before + after
        if na >= 1 and 0 <= total <= 2 * (kb - 1):
            return (ka, sa, da, before, na), (kb, int(rng.integers(0, total + 1)))


def _attrs(g):
    """exporter IR attrs of a test window."""
    return dict(kernel=(g["k_h"], g["k_w"]), strides=(g["stride_h"], g["stride_w"]),
                dilation=(g["dil_h"], g["dil_w"]), pad=(g["pad_top"], g["pad_left"]),
                in_hw=(g["in_h"], g["in_w"]), out_hw=(g["out_h"], g["out_w"]))


def planner_pair_scratch(ga, gb):
    """exporter.planner.stream_scratch_bytes for this pair (the arena bytes
    the exporter gives k2m_conv_pair_add_s8)."""
    graph = Graph("case", dtype="int8")
    for t, shape in (("x", (ga["in_h"], ga["in_w"], ga["in_c"])),
                     ("ya", (ga["out_h"], ga["out_w"], ga["out_c"])), ("yb", (gb["out_h"], gb["out_w"], gb["out_c"]))):
        graph.tensors[t] = Tensor(t, shape, "int8")
    a = Node("a", "conv2d", ["x"], ["ya"], attrs=_attrs(ga))
    b = Node("b", "conv2d", ["ya"], ["yb"], attrs=_attrs(gb))
    return planner.stream_scratch_bytes(graph, a, b)[0]


def pair_case(rng, i):
    """x + conv_b(conv_a(x)) in a geometry k2m_conv_pair_add_s8 takes; every
    fourth case ResNet-8's own (3x3 'same', 16 channels)."""
    while True:
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 10))
        c, m = (int(rng.choice([1, 2, 3, 4, 5, 8, 16])) for _ in range(2))
        if i % 4 == 0:
            h, w, c, m = int(rng.integers(3, 9)), int(rng.integers(3, 10)), 16, 16
            va, vb = (3, 1, 1, 1, h), (3, 1)
            ua, ub = (3, 1, 1, 1, w), (3, 1)
        else:
            va, vb = _pair_axis(rng, h, False)
            ua, ub = _pair_axis(rng, w, True)
        ga = dict(in_h=h, in_w=w, in_c=c, out_h=va[4], out_w=ua[4], out_c=m, k_h=va[0], k_w=ua[0],
                  stride_h=va[1], stride_w=ua[1], dil_h=1, dil_w=ua[2], pad_top=va[3], pad_left=ua[3])
        gb = dict(in_h=va[4], in_w=ua[4], in_c=m, out_h=h, out_w=w, out_c=c, k_h=vb[0], k_w=ub[0],
                  stride_h=1, stride_w=1, dil_h=1, dil_w=1, pad_top=vb[1], pad_left=ub[1])
        if planner._streamable_rows(_attrs(ga), _attrs(gb)):
            break
    qa = random_quant(rng, m, ga["k_h"] * ga["k_w"] * c, False)
    qb = random_quant(rng, c, gb["k_h"] * gb["k_w"] * m, False)
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    wa = rng.integers(-127, 128, (m, ga["k_h"], ga["k_w"], c)).astype(np.int8)
    wb = rng.integers(-127, 128, (c, gb["k_h"], gb["k_w"], m)).astype(np.int8)
    ba = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, m).astype(np.int32)
    bb = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, c).astype(np.int32)
    extra = [quant_extras(rng, qa, ba), quant_extras(rng, qb, bb)]
    p = add_params(rng, i)
    ya = ref.conv2d_s8(ga, qa, x, wa, ba)
    y = ref.add_s8(p, x, ref.conv2d_s8(gb, qb, ya, wb, bb))
    return dict(kind="pair", s16=False, theme=" ".join(["pair"] + [e for e in extra if e]),
                ga=ga, gb=gb, qa=qa, qb=qb, wa=wa, wb=wb, ba=ba, bb=bb, p=p, x=x, y=y,
                scratch=planner_pair_scratch(ga, gb))


def make_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(N_CONV_S8 + N_CONV_S16):
        cases.append(_conv_case(rng, *random_window(rng, i), i >= N_CONV_S8))
    for i in range(N_FIRST):
        cases.append(_conv_case(rng, *first_layer_window(rng), False))
    for i in range(N_FC + N_FC_S16):
        s16 = i >= N_FC
        b = int(rng.integers(1, 4))
        n_in = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 31, 64, 100, 127, 256, 301]))
        n_out = int(rng.integers(1, 18))
        q = random_quant(rng, n_out, n_in, s16)
        x = rng.integers(-128, 128, (b, n_in)).astype(np.int8)
        w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
        bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, n_out).astype(np.int32)
        extra = quant_extras(rng, q, bias) if not s16 else ""
        y = (ref.fully_connected_s8_s16 if s16 else ref.fully_connected_s8)(q, x, w, bias)
        cases.append(dict(kind="fc", s16=s16, theme=" ".join(t for t in ("fc", extra) if t),
                          dims=(b, n_in, n_out), q=q, x=x, w=w, bias=bias, y=y))
    for i in range(N_DW):
        cases.append(_dw_case(rng, *depthwise_window(rng, i)))
    for i in range(N_RING):
        cases.append(_dw_case(rng, *ring_window(rng)))
    for i in range(N_POOL):
        cases.append(dict(pool_case(rng, i), s16=False))
    for i in range(N_CONV_POOL):
        c = _conv_case(rng, *random_window(rng, i), False)
        g = c["g"]
        n = g["out_h"] * g["out_w"]
        mean_q = None
        if i % 2:
            mean_q = dict(input_offset=int(rng.integers(-127, 129)),
                          output_offset=int(rng.integers(-128, 128)), act_min=-128, act_max=127,
                          multiplier=np.array([int(rng.integers(2**30, 2**31))], np.int32),
                          shift=np.array([-int(np.log2(n)) - 1], np.int32))
        act = (-128, 127) if i % 4 < 2 else (int(rng.integers(-128, 0)), 127)
        y = ref.conv2d_pool_s8(g, c["q"], c["x"], c["w"], c["bias"], mean_q, act)
        cases.append(dict(c, kind="conv_pool", theme=c["theme"] + (" mean" if mean_q else " avg"),
                          mean_q=mean_q, act=act, y=y))
    for i in range(N_ADD + N_MUL):
        n = int(rng.integers(1, 200))
        x1 = rng.integers(-128, 128, n).astype(np.int8)
        x2 = rng.integers(-128, 128, n).astype(np.int8)
        p = add_params(rng, i)
        if i >= N_ADD:
            kind = "mul"
            m, sh = ref_quantize_multiplier(float(10 ** rng.uniform(-4, -1)))
            p.update(input1_multiplier=0, input1_shift=0, input2_multiplier=0, input2_shift=0,
                     left_shift=0, output_multiplier=m, output_shift=sh)
            y = ref.mul_s8(p, x1, x2)
        else:
            kind = "add"
            if i % 5 == 4:
                p["input2_multiplier"] = -p["input2_multiplier"]  # Subtract
            y = ref.add_s8(p, x1, x2)
        cases.append(dict(kind=kind, s16=False, theme="in place" if i % 4 == 1 else "", p=p,
                          x=x1, x2=x2, y=y, inplace=0 if i % 4 == 1 else None))
    # in place: every third sliding-window case, at the planner's offset
    for i, c in enumerate(cases):
        if c["kind"] in ("conv", "dw", "max_pool", "avg_pool") and i % 3 == 0 and "g" in c:
            op = {"conv": "conv2d", "dw": "depthwise_conv2d"}.get(c["kind"], c["kind"])
            d = planner_overlap(op, c["g"], "int16" if c["s16"] else "int8")
            if d is not None:
                c["inplace"] = d
                c["theme"] += " in place"
    cases += [pair_case(rng, i) for i in range(N_PAIR)]
    return cases


def ref_quantize_multiplier(m):
    from exporter.quantize import quantize_multiplier
    return quantize_multiplier(m)


def out_hash(y):
    """FNV-1a over the outputs as 16-bit patterns (the C program's hash)."""
    h = 2166136261
    for v in np.asarray(y).ravel().astype(np.int64):
        h = ((h ^ (int(v) & 0xFFFF)) * 16777619) & 0xFFFFFFFF
    return h


# ---- the C program -------------------------------------------------------

def _arr(name, ctype, a):
    vals = ",".join(str(int(v)) for v in np.asarray(a).ravel())
    return f"static const {ctype} {name}[] = {{{vals}}};\n"


def _quant(name, q):
    return (f"const k2m_quant_s8 {name} = {{{q['input_offset']}, {q['output_offset']}, "
            f"{q['act_min']}, {q['act_max']}, m_{name}, s_{name}}};")


def scratch_bytes(c):
    g = c.get("g")
    return {"conv": lambda: ref.conv_s8_scratch_bytes(g),
            "conv_pool": lambda: ref.conv_pool_s8_scratch_bytes(g),
            "dw": lambda: ref.depthwise_s8_scratch_bytes(g),
            "pair": lambda: c["scratch"]}.get(c["kind"], lambda: 0)()


def case_bytes(c):
    """Bytes of the output buffer the case needs: the output, or in place
    the span of input and output."""
    out = int(np.asarray(c["y"]).size) * (2 if c["s16"] else 1)
    if c.get("inplace") is None or c["kind"] == "pair":
        return out
    return max(out, c["inplace"] + c["x"].size)


def c_program(cases):
    max_out = max(case_bytes(c) for c in cases)
    max_scr = max(scratch_bytes(c) for c in cases)
    # The driver (hundreds of call blocks in one main) needs no optimisation
    # and takes gcc ~15 s at -O2; the kernels are other translation units
    # and keep m4run's -O2.
    src = ['#pragma GCC optimize("O1")\n',
           '#include <stdio.h>\n#include <stdint.h>\n#include <string.h>\n#include "k2m.h"\n\n',
           f"#define GUARD {GUARD}\n",
           # int32 storage: 4-byte aligned, as the arena's tensors are
           f"static int32_t out_buf[({max_out} + 2 * GUARD + 3) / 4];\n",
           f"static int32_t scratch_buf[({max_scr} + 2 * GUARD + 3) / 4];\n",
           FNV_C, GUARD_C]
    body = []
    for i, c in enumerate(cases):
        src.append(_arr(f"x{i}", "int8_t", c["x"]))
        q, lines = c.get("q"), [f"    {{ /* case {i}: {c['kind']} {c['theme']} */", "        int ok = 1;"]
        if q is not None:
            src.append(_arr(f"m_q{i}", "int32_t", q["multiplier"]))
            src.append(_arr(f"s_q{i}", "int32_t", q["shift"]))
            lines.append("        " + _quant(f"q{i}", q))
        if "w" in c:
            src.append(_arr(f"w{i}", "int8_t", c["w"]))
        bias = "NULL"
        if c.get("bias") is not None:
            src.append(_arr(f"b{i}", "int32_t", c["bias"]))
            bias = f"b{i}"
        if "g" in c:
            g = c["g"]
            lines.append(f"        const k2m_window g = {{{', '.join(str(g[f]) for f in WINDOW_FIELDS)}}};")
        n_out = int(np.asarray(c["y"]).size)
        es = 2 if c["s16"] else 1
        scr = scratch_bytes(c)
        lines.append("        fill(out_buf, sizeof out_buf); fill(scratch_buf, sizeof scratch_buf);")
        x = f"x{i}"
        if c.get("inplace") is not None:  # the input D bytes into the output's buffer
            lines.append(f"        memcpy((uint8_t *)out_buf + {c['inplace']}, x{i}, sizeof x{i});")
            x = f"(const int8_t *)((const uint8_t *)out_buf + {c['inplace']})"
        out = "(int16_t *)(void *)out_buf" if c["s16"] else "(int8_t *)(void *)out_buf"
        scratch = "(int16_t *)(void *)scratch_buf" if scr else "NULL"
        kind = c["kind"]
        if kind == "pair":  # in place over its input
            lines += pair_call(i, c, src)
        elif kind == "conv":
            fn = "k2m_conv2d_s8_s16" if c["s16"] else "k2m_conv2d_s8"
            lines.append(f"        {fn}(&g, &q{i}, {x}, w{i}, {bias}, {out}, {scratch});")
        elif kind == "conv_pool":
            mq = "NULL"
            if c["mean_q"] is not None:
                src.append(_arr(f"m_mq{i}", "int32_t", c["mean_q"]["multiplier"]))
                src.append(_arr(f"s_mq{i}", "int32_t", c["mean_q"]["shift"]))
                lines.append("        " + _quant(f"mq{i}", c["mean_q"]))
                mq = f"&mq{i}"
            lines += [f"        const k2m_global_pool_s8 pool = {{{mq}, {c['act'][0]}, {c['act'][1]}}};",
                      f"        k2m_conv2d_pool_s8(&g, &q{i}, {x}, w{i}, {bias}, &pool, {out}, {scratch});"]
        elif kind == "dw":
            lines.append(f"        k2m_depthwise_conv2d_s8(&g, &q{i}, {x}, w{i}, {bias}, {out}, {scratch});")
        elif kind == "fc":
            b, n_in, n_o = c["dims"]
            fn = "k2m_fully_connected_s8_s16" if c["s16"] else "k2m_fully_connected_s8"
            lines += [f"        const k2m_fc_dims d = {{{b}, {n_in}, {n_o}}};",
                      f"        {fn}(&d, &q{i}, {x}, w{i}, {bias}, {out});"]
        elif kind in ("max_pool", "avg_pool"):
            lines.append(f"        k2m_{kind}_s8(&g, {c['act'][0]}, {c['act'][1]}, {x}, {out});")
        elif kind == "mean":
            hh, ww, ch = c["x"].shape
            lines.append(f"        k2m_mean_s8({hh * ww}, {ch}, &q{i}, {x}, {out});")
        else:  # add, mul
            p = c["p"]
            src.append(_arr(f"x2_{i}", "int8_t", c["x2"]))
            lines += ["        const k2m_add_s8_params p = {"
                      + ", ".join(str(int(p[f])) for f in ref.ADD_FIELDS) + "};",
                      f"        k2m_{kind}_s8(&p, {x}, x2_{i}, {out}, {c['x'].size});"]
        if scr:
            lines.append(f"        ok &= guard_ok(scratch_buf, {scr}, 2 * GUARD);")
        lines += [f"        ok &= guard_ok(out_buf, {case_bytes(c)}, 2 * GUARD);",
                  f'        printf("case {i} %08lx %d\\n", (unsigned long)fnv(out_buf, {n_out}, {int(c["s16"])}), ok);',
                  "    }"]
        body.append("\n".join(lines))
    src.append("\nint main(void)\n{\n" + "\n".join(body) + '\n    printf("done\\n");\n    return 0;\n}\n')
    return "".join(src)


def pair_call(i, c, src):
    """The C lines of a k2m_conv_pair_add_s8 case (its arrays into src)."""
    lines = []
    for k in ("a", "b"):
        q, g = c["q" + k], c["g" + k]
        src.append(_arr(f"m_q{k}{i}", "int32_t", q["multiplier"]))
        src.append(_arr(f"s_q{k}{i}", "int32_t", q["shift"]))
        src.append(_arr(f"w{k}{i}", "int8_t", c["w" + k]))
        if c["b" + k] is not None:
            src.append(_arr(f"b{k}{i}", "int32_t", c["b" + k]))
        lines += ["        " + _quant(f"q{k}{i}", q),
                  f"        const k2m_window g{k} = {{{', '.join(str(g[f]) for f in WINDOW_FIELDS)}}};"]
    bias = [f"b{k}{i}" if c["b" + k] is not None else "NULL" for k in ("a", "b")]
    p = c["p"]
    return lines + [
        "        const k2m_add_s8_params p = {" + ", ".join(str(int(p[f])) for f in ref.ADD_FIELDS) + "};",
        f"        const k2m_conv_pair_add_s8_params sp = {{&ga, &gb, &qa{i}, &qb{i}, wa{i}, wb{i}, "
        f"{bias[0]}, {bias[1]}, &p}};",
        f"        memcpy(out_buf, x{i}, sizeof x{i});",
        "        k2m_conv_pair_add_s8(&sp, (int8_t *)(void *)out_buf, (int8_t *)(void *)scratch_buf);"]


def run_m4(m4run, src, portable, opt="2", sources=KERNEL_SOURCES):
    cmd = [str(m4run), "--timeout", "240", "-I", str(RUNTIME), "-O", opt]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    cmd += [str(src)] + [str(RUNTIME / f) for f in sources]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "\ndone" in r.stdout or r.stdout.startswith("done"), r.stdout[-2000:]
    got = {}
    for m in re.finditer(r"^case (\d+) ([0-9a-f]{8}) (\d)$", r.stdout, re.M):
        got[int(m.group(1))] = (int(m.group(2), 16), m.group(3) == "1")
    return got


@pytest.fixture(scope="module")
def results(m4run, tmp_path_factory):
    cases = make_cases()
    tmp = tmp_path_factory.mktemp("dsp")
    src = tmp / "dsp_cases.c"
    src.write_text(c_program(cases))
    # -O0 too: there the inline-asm loops fall back to intrinsics (no registers)
    return cases, {"dsp": run_m4(m4run, src, False), "portable": run_m4(m4run, src, True),
                   "dsp_O0": run_m4(m4run, src, False, "0")}


def test_case_mix():
    cases = make_cases()
    assert len(cases) >= 500
    conv = [c for c in cases if c["kind"] == "conv"]
    gs = [c["g"] for c in conv]
    assert any(g["stride_h"] > 1 or g["stride_w"] > 1 for g in gs)
    assert any(g["dil_h"] > 1 or g["dil_w"] > 1 for g in gs)
    assert any(g["pad_top"] > 0 or g["pad_left"] > 0 for g in gs)
    assert any(g["out_c"] % 2 for g in gs) and any(g["in_c"] % 4 for g in gs)
    assert any(g["in_h"] == g["in_w"] == 1 for g in gs)
    assert any(g["k_h"] > g["stride_h"] for g in gs)
    assert any((g["out_h"] * g["out_w"]) % 2 for g in gs)
    assert any(c["s16"] for c in conv)
    assert sum((g["k_w"] * g["in_c"]) % 4 != 0 and g["k_h"] * g["k_w"] * g["in_c"] <= 64
               for g in gs) >= 30
    assert any(c["dims"][1] % 4 for c in cases if c["kind"] == "fc")
    assert {(c["dims"][1] // 4) % 2 for c in cases if c["kind"] == "fc"} == {0, 1}
    fc_themes = " ".join(c["theme"] for c in cases if c["kind"] == "fc")
    assert all(t in fc_themes for t in ("left_shift", "dead_channel", "huge_bias",
                                        "big_right_shift"))
    assert any(c["s16"] for c in cases if c["kind"] == "fc")
    assert {c["x"].size % 2 for c in cases if c["kind"] == "add"} == {0, 1}
    dw = [c["g"] for c in cases if c["kind"] == "dw"]
    assert len(dw) >= 150
    mult1 = {g["in_c"] for g in dw if g["out_c"] == g["in_c"]}
    assert {4, 8, 12, 5, 7} <= mult1
    assert any(g["out_c"] == 2 * g["in_c"] for g in dw)
    assert any(g["stride_h"] > 1 or g["stride_w"] > 1 for g in dw)
    assert any(g["dil_h"] > 1 or g["dil_w"] > 1 for g in dw)
    assert any(g["pad_top"] > 0 or g["pad_left"] > 0 for g in dw)
    assert any(g["in_h"] == g["in_w"] == 1 for g in dw)
    ring = [g for g in dw if ref.depthwise_s8_scratch_bytes(g)]
    assert len(ring) >= 70 and {g["stride_w"] for g in ring} == {1, 2}
    assert {g["pad_left"] % 2 for g in ring} == {0, 1} and {g["in_w"] % 2 for g in ring} == {0, 1}
    assert {g["in_c"] % 4 for g in ring} == {0, 1, 2, 3} and any(g["in_c"] < 4 for g in ring)
    themes = " ".join(c["theme"] for c in cases)
    for t in ("left_shift", "dead_channel", "huge_bias", "big_right_shift", "in place", "mean", "avg",
              "global"):
        assert themes.count(t) >= 3, t
    kinds = {c["kind"] for c in cases}
    assert {"max_pool", "avg_pool", "mean", "conv_pool", "add", "mul"} <= kinds
    inplace = {c["kind"] for c in cases if c.get("inplace") is not None}
    assert {"conv", "dw", "max_pool", "avg_pool", "add"} <= inplace
    assert any(c.get("inplace") and c["kind"] == "dw" and ref.depthwise_s8_scratch_bytes(c["g"])
               for c in cases)
    pairs = [c for c in cases if c["kind"] == "pair"]
    assert len(pairs) == N_PAIR
    assert any(c["ga"]["stride_w"] == 2 for c in pairs) and any(c["ga"]["dil_w"] == 2 for c in pairs)
    assert any(c["ga"]["k_h"] % 2 == 0 or c["gb"]["k_h"] % 2 == 0 for c in pairs)
    assert any(c["ga"]["out_h"] != c["ga"]["in_h"] for c in pairs)  # explicit padding
    assert any(c["ga"]["in_h"] == 1 for c in pairs) and any(c["ga"]["in_w"] % 2 for c in pairs)
    pair_themes = " ".join(c["theme"] for c in pairs)
    assert "left_shift" in pair_themes and "dead_channel" in pair_themes
    # the requantization must not saturate everything
    inside = [((np.asarray(c["y"]) > c["q"]["act_min"]) & (np.asarray(c["y"]) < c["q"]["act_max"])).mean()
              for c in cases if "q" in c]
    assert np.mean(inside) > 0.3


def assert_bit_identical(cases, run, path, describe, overrun="wrote past the output"):
    """Every case's output hash in `run` equals its reference's."""
    bad = []
    for i, c in enumerate(cases):
        if i not in run:
            bad.append(f"case {i}: no output")
            continue
        h, ok = run[i]
        if h != out_hash(c["y"]):
            bad.append(describe(i, c) + ": output differs from the reference")
        if not ok:
            bad.append(describe(i, c) + ": " + overrun)
    assert not bad, f"{len(bad)} of {len(cases)} cases fail ({path}):\n" + "\n".join(bad[:20])


def assert_dsp_equals_portable(cases, got):
    """The DSP builds (-O2, -O0) against the portable build directly."""
    for path in ("dsp", "dsp_O0"):
        diff = [i for i in range(len(cases)) if got[path].get(i) != got["portable"].get(i)]
        assert not diff, f"{path} differs from portable in cases {diff[:20]}"


@pytest.mark.parametrize("path", ["dsp", "portable", "dsp_O0"])
def test_bit_identical(results, path):
    cases, got = results
    assert_bit_identical(
        cases, got[path], path,
        lambda i, c: f"case {i} {c['kind']}{'_s16' if c['s16'] else ''} {c['theme']} " + (
            str(c["g"]) if "g" in c else str(c.get("dims", c["x"].shape))),
        "wrote past the output or the scratch buffer")


def test_dsp_equals_portable(results):
    assert_dsp_equals_portable(*results)


# ---- recurrent kernels -----------------------------------------------------

RNN_SEED = 20240917
RNN_GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
RNN_SOURCES = ("k2m_recurrent.c",)


def _rnn_scales(rng, n, lo, hi):
    return (rng.integers(2**30, 2**31, n).astype(np.int32),
            rng.integers(lo, hi + 1, n).astype(np.int32))


def _rnn_lut(rng):
    """513 int16 entries: tanh / sigmoid-like, rising or falling walks."""
    kind = rng.integers(4)
    v = -32768.0 + 128.0 * np.arange(513)
    scale = 10 ** rng.uniform(-1, 1.2) / 32768
    if kind == 0:
        t = np.tanh(scale * v) * 32767
    elif kind == 1:
        t = 32767 / (1 + np.exp(-scale * v))
    else:
        step = int(rng.choice([16, 256, 8192]))
        t = np.cumsum(rng.integers(-step, step + 1, 513)) + int(rng.integers(-9999, 9999))
        t = np.sort(t) if kind == 2 else t
    return np.clip(np.round(t), -32768, 32767).astype(np.int16)


def random_rnn_case(rng, cell, flags, theme):
    """theme: "fast" (the exporter's kind of scales), "left" (left-shifted
    kernel terms), "general" (a row or a scale outside the fast form's
    bounds), "wide" (>= 128 units: the per-row bound from the weights)."""
    units = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 23, 32, 33]))
    features = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 16, 19]))
    steps = int(rng.integers(1, 6))
    if theme == "wide":
        units, features, steps = (130 if cell == "simple_rnn" else 128), int(rng.choice([3, 9])), 2
    rows = RNN_GATES[cell] * units
    km, ks = _rnn_scales(rng, rows, -4, 0)
    rm, rs = _rnn_scales(rng, rows, -12, -4)
    bias = rng.integers(-2**15, 2**15, rows).astype(np.int32)
    if theme == "left":
        ks = rng.integers(1, 4, rows).astype(np.int32)
        bias //= 64
    elif theme == "general":
        what = rng.integers(3)
        r = int(rng.integers(rows))
        if what == 0:
            ks[r] = 15     # sum << 15 beyond 2^29
        elif what == 1:
            rs[r] = -30    # e > 29
        else:
            bias[r] = 2**29
    w = dict(kernel=rng.integers(-127, 128, (rows, features)).astype(np.int8),
             bias=None if rng.integers(5) == 0 else bias,
             kernel_multiplier=km, kernel_shift=ks,
             recurrent=rng.integers(-127, 128, (rows, units)).astype(np.int8),
             recurrent_bias=(rng.integers(-2**22, 2**22, rows).astype(np.int32)
                             if cell == "gru" and rng.integers(3) else None),
             recurrent_multiplier=rm, recurrent_shift=rs)
    m, sh = _rnn_scales(rng, 1, -10, -6)
    p = dict(w=w, h_to_output=(int(m[0]), int(sh[0])),
             output_offset=int(rng.integers(-128, 128)))
    if theme == "general" and rng.integers(2):
        p["h_to_output"] = (int(m[0]), int(rng.integers(14, 17)))  # left shift: general form
    scale = lambda: tuple(int(v[0]) for v in _rnn_scales(rng, 1, -17, -13))  # noqa: E731
    if cell == "simple_rnn":
        p["act_lut"] = _rnn_lut(rng)
    elif cell == "lstm":
        p.update(gate_lut=[_rnn_lut(rng) for _ in range(4)], cell_lut=_rnn_lut(rng),
                 forget=scale(), input=scale(), output_gate=scale())
    else:
        p.update(gate_lut=[_rnn_lut(rng) for _ in range(3)], reset=scale(), keep=scale(),
                 update=scale(), one=int(rng.choice([32767, 32768, int(rng.integers(0, 32769))])))
    x = rng.integers(-128, 128, (steps, features)).astype(np.int8)
    n_state = 2 * units if cell == "lstm" else units
    state = (rng.integers(-32768, 32768, n_state) if rng.integers(2)
             else np.zeros(n_state)).astype(np.int16)
    y, final = getattr(rnn_ref, f"{cell}_s8")(flags, p, x, state)
    return dict(kind="rnn", cell=cell, flags=flags, theme=theme, units=units,
                features=features, steps=steps, p=p, x=x, state=state,
                y=np.asarray(y), final=np.asarray(final),
                odd=bool(rng.integers(2)))  # scratch and state at 2 mod 4


def make_rnn_cases():
    rng = np.random.default_rng(RNN_SEED)
    cases = []
    for cell in ("simple_rnn", "lstm", "gru"):
        for flags in range(16 if cell == "gru" else 8):
            for theme in ("fast", "left" if flags % 2 else "general"):
                cases.append(random_rnn_case(rng, cell, flags, theme))
        cases.append(random_rnn_case(rng, cell, int(rng.integers(8)) | (8 if cell == "gru" else 0),
                                     "wide"))
    return cases


def rnn_hash(c):
    """out_hash of the int8 output then the int16 final state."""
    return out_hash(np.concatenate([np.asarray(c["y"], np.int64).ravel(),
                                    np.asarray(c["final"], np.int64).ravel()]))


def _rnn_params(i, c):
    """C initialiser of the case's k2m_<cell>_s8_params (arrays named by i)."""
    p, w = c["p"], c["p"]["w"]
    pair = lambda v: f"{{{v[0]}, {v[1]}}}"  # noqa: E731
    bias = f"b{i}" if w["bias"] is not None else "NULL"
    rb = f"rb{i}" if w["recurrent_bias"] is not None else "NULL"
    ws = f"{{k{i}, {bias}, km{i}, ks{i}, r{i}, {rb}, rm{i}, rs{i}}}"
    tail = f"{pair(p['h_to_output'])}, {p['output_offset']}"
    if c["cell"] == "simple_rnn":
        return f"{{{ws}, t{i}_0, {tail}}}"
    if c["cell"] == "lstm":
        return (f"{{{ws}, {{t{i}_0, t{i}_1, t{i}_2, t{i}_3}}, t{i}_4, {pair(p['forget'])}, "
                f"{pair(p['input'])}, {pair(p['output_gate'])}, {tail}}}")
    return (f"{{{ws}, {{t{i}_0, t{i}_1, t{i}_2}}, {pair(p['reset'])}, {pair(p['keep'])}, "
            f"{pair(p['update'])}, {p['one']}, {tail}}}")


def rnn_c_program(cases):
    max_out = max(c["y"].size for c in cases)
    max_state = max(c["state"].size for c in cases)
    max_scr = max(rnn_ref.SCRATCH[c["cell"]](c["units"]) for c in cases)
    src = ['#pragma GCC optimize("O1")\n',
           '#include <stdio.h>\n#include <stdint.h>\n#include <string.h>\n#include "k2m.h"\n\n',
           f"#define GUARD {GUARD}\n",
           f"static int8_t out_buf[{max_out} + GUARD];\n",
           # int32 storage: 4-byte aligned; a case may start state/scratch 1 element in
           f"static int32_t state_buf[({max_state} + GUARD + 2) / 2];\n",
           f"static int32_t scratch_buf[({max_scr} + GUARD + 2) / 2];\n",
           r"""
static uint32_t fnv(uint32_t h, const void *p, int32_t n, int is16)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t v = is16 ? ((const int16_t *)p)[i] : ((const int8_t *)p)[i];
        h = (h ^ ((uint32_t)v & 0xFFFFu)) * 16777619u;
    }
    return h;
}
""", GUARD_C]
    body = []
    for i, c in enumerate(cases):
        p, w = c["p"], c["p"]["w"]
        for name, key, ct in (("k", "kernel", "int8_t"), ("r", "recurrent", "int8_t"),
                              ("b", "bias", "int32_t"), ("rb", "recurrent_bias", "int32_t"),
                              ("km", "kernel_multiplier", "int32_t"), ("ks", "kernel_shift", "int32_t"),
                              ("rm", "recurrent_multiplier", "int32_t"),
                              ("rs", "recurrent_shift", "int32_t")):
            if w[key] is not None:
                src.append(_arr(f"{name}{i}", ct, w[key]))
        luts = [p["act_lut"]] if c["cell"] == "simple_rnn" else (
            p["gate_lut"] + ([p["cell_lut"]] if c["cell"] == "lstm" else []))
        for j, t in enumerate(luts):
            src.append(_arr(f"t{i}_{j}", "int16_t", t))
        src.append(_arr(f"x{i}", "int8_t", c["x"]))
        src.append(_arr(f"s0_{i}", "int16_t", c["state"]))
        off = 1 if c["odd"] else 0
        n_out, n_state = c["y"].size, c["state"].size
        n_scr = rnn_ref.SCRATCH[c["cell"]](c["units"])
        body.append("\n".join([
            f"    {{ /* case {i}: {c['cell']} flags {c['flags']} {c['theme']} */",
            f"        const k2m_rnn_dims d = {{{c['steps']}, {c['features']}, {c['units']}, {c['flags']}}};",
            f"        const k2m_{c['cell']}_s8_params p = {_rnn_params(i, c)};",
            f"        int16_t *state = (int16_t *)(void *)state_buf + {off};",
            f"        int16_t *scratch = (int16_t *)(void *)scratch_buf + {off};",
            "        int ok = 1;",
            "        fill(out_buf, sizeof out_buf); fill(state_buf, sizeof state_buf);",
            "        fill(scratch_buf, sizeof scratch_buf);",
            f"        memcpy(state, s0_{i}, sizeof s0_{i});",
            f"        k2m_{c['cell']}_s8(&d, &p, x{i}, out_buf, state, scratch);",
            f"        ok &= guard_ok(out_buf, {n_out}, GUARD);",
            f"        ok &= guard_ok(state_buf, 2 * ({n_state} + {off}), 2 * GUARD);",
            f"        ok &= guard_ok(scratch_buf, 2 * ({n_scr} + {off}), 2 * GUARD);",
            f"        ok &= guard_ok(state_buf, 0, 2 * {off}) && guard_ok(scratch_buf, 0, 2 * {off});",
            f'        printf("case {i} %08lx %d\\n", (unsigned long)fnv(fnv(2166136261u, out_buf, '
            f'{n_out}, 0), state, {n_state}, 1), ok);',
            "    }"]))
    src.append("\nint main(void)\n{\n" + "\n".join(body) + '\n    printf("done\\n");\n    return 0;\n}\n')
    return "".join(src)


@pytest.fixture(scope="module")
def rnn_results(m4run, tmp_path_factory):
    cases = make_rnn_cases()
    tmp = tmp_path_factory.mktemp("dsp_rnn")
    src = tmp / "dsp_rnn_cases.c"
    src.write_text(rnn_c_program(cases))
    run = lambda portable, opt="2": run_m4(m4run, src, portable, opt, RNN_SOURCES)  # noqa: E731
    return cases, {"dsp": run(False), "portable": run(True), "dsp_O0": run(False, "0")}


def test_rnn_case_mix():
    cases = make_rnn_cases()
    for cell, n_flags in (("simple_rnn", 8), ("lstm", 8), ("gru", 16)):
        assert {c["flags"] for c in cases if c["cell"] == cell} == set(range(n_flags))
    assert {"fast", "left", "general", "wide"} == {c["theme"] for c in cases}
    assert any(c["units"] % 4 for c in cases) and any(c["units"] % 4 == 0 for c in cases)
    assert any(c["features"] % 4 for c in cases) and any(c["features"] < 4 for c in cases)
    assert any(c["odd"] for c in cases) and not all(c["odd"] for c in cases)
    assert any(c["state"].any() for c in cases) and not all(c["state"].any() for c in cases)
    # the outputs are not all saturated
    y = np.concatenate([c["y"].ravel() for c in cases])
    assert ((y > -128) & (y < 127)).mean() > 0.3


@pytest.mark.parametrize("path", ["dsp", "portable", "dsp_O0"])
def test_rnn_bit_identical(rnn_results, path):
    cases, got = rnn_results
    run = got[path]
    bad = []
    for i, c in enumerate(cases):
        what = (f"case {i} {c['cell']} flags={c['flags']} {c['theme']} units={c['units']} "
                f"features={c['features']} steps={c['steps']} odd={c['odd']}")
        if i not in run:
            bad.append(what + ": no output")
            continue
        h, ok = run[i]
        if h != rnn_hash(c):
            bad.append(what + ": output or state differs from the reference")
        if not ok:
            bad.append(what + ": wrote outside the output, the state or the scratch")
    assert not bad, f"{len(bad)} of {len(cases)} cases fail ({path}):\n" + "\n".join(bad[:20])


def test_rnn_dsp_equals_portable(rnn_results):
    """The DSP builds (-O2, -O0) against the portable build directly."""
    cases, got = rnn_results
    for path in ("dsp", "dsp_O0"):
        diff = [i for i in range(len(cases)) if got[path].get(i) != got["portable"].get(i)]
        assert not diff, f"{path} differs from portable in cases {diff[:20]}"
