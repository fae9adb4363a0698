"""Instructions and cycles_est of the int8 kernels on the emulated Cortex-M4
(conv, depthwise, fully connected, pools, add, mul, recurrent, attention's
matmuls, the squeeze-and-excitation multiply, normalization), DSP path
against the portable path.

Run from the repository root:

    python benchmarks/kernels.py [--m4run ../shared/tools/m4run] [--markdown]
                                 [--only TEXT] [--hot N] [--mix]

For every shape it writes one C program (random operands from a fixed seed,
one call of the kernel between bench_begin()/bench_end()), builds it twice
with ../shared/tools/m4run (`m4run --cycles --work WORK -I c_runtime prog.c
c_runtime/<the kernel files>`, then the same with `-DK2M_PORTABLE`), checks
the two builds print the same output checksum, and prints: kernel, shape,
work (MACs for conv / depthwise / fully connected / recurrent layers, output
elements for pools, add and mul), instructions (exact) and cycles_est (m4run's
static Cortex-M4 model, zero wait states: an estimate) of each path, per
unit of work, and the speed-up in cycles.  Shapes marked "left shift" give
one output channel a positive (left) requantization shift, as trained
weights do.  Recurrent layers (SimpleRNN / LSTM / GRU over a whole sequence)
count MACs as steps * gates * units * (features + units): the input and the
recurrent matmuls; the per-step gate arithmetic (requantization, tables,
state update) is in the instructions but not in the MACs; the SE multiply
counts one unit per element, the normalization kernel (k2m_norm.c, its own
table) one per element.  --hot N / --mix
print m4run's hottest instructions / instruction mix of the DSP build of each
shape.  Needs arm-none-eabi-gcc and qemu-system-arm (see
../shared/tools/README-m4run.md).
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "c_runtime"
DEFAULT_M4RUN = ROOT.parent / "shared" / "tools" / "m4run"


def _window(in_h, in_w, in_c, out_c, k_h, k_w, stride, pad):
    if pad == "same":
        out_h, out_w = -(-in_h // stride), -(-in_w // stride)
        ph = max((out_h - 1) * stride + k_h - in_h, 0)
        pw = max((out_w - 1) * stride + k_w - in_w, 0)
        pad_top, pad_left = ph // 2, pw // 2
    else:
        out_h, out_w = (in_h - k_h) // stride + 1, (in_w - k_w) // stride + 1
        pad_top = pad_left = 0
    return dict(in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c,
                k_h=k_h, k_w=k_w, stride_h=stride, stride_w=stride, dil_h=1, dil_w=1,
                pad_top=pad_top, pad_left=pad_left)


def conv(name, in_h, in_w, in_c, out_c, k_h, k_w, stride=1, pad="same", s16=False,
         left=False):
    g = _window(in_h, in_w, in_c, out_c, k_h, k_w, stride, pad)
    # MACs as the layer defines them (padding taps included)
    macs = g["out_h"] * g["out_w"] * out_c * k_h * k_w * in_c
    return dict(kind="conv", name=name, g=g, work=macs, s16=s16, left=left)


def depthwise(name, in_h, in_w, ch, k_h, k_w, stride=1, pad="same", left=False):
    """Depth multiplier 1 (MobileNet / DS-CNN)."""
    s = conv(name, in_h, in_w, ch, ch, k_h, k_w, stride=stride, pad=pad, left=left)
    s["kind"] = "dw"
    s["work"] //= ch  # one input channel per output channel
    return s


def fc(name, n_in, n_out, batches=1):
    return dict(kind="fc", name=name, n_in=n_in, n_out=n_out, batches=batches,
                work=batches * n_in * n_out, s16=False, left=False)


def pool(name, op, in_h, in_w, ch, k, stride, pad="valid"):
    """max_pool / avg_pool (window k or (k_h, k_w)) or mean (global average)."""
    k_h, k_w = k if isinstance(k, tuple) else (k, k)
    g = _window(in_h, in_w, ch, ch, k_h, k_w, stride, pad)
    return dict(kind=op, name=name, g=g, work=g["out_h"] * g["out_w"] * ch, s16=False,
                left=False)


def elementwise(name, op, size):
    """add / mul of two int8 tensors of `size` elements."""
    return dict(kind=op, name=name, size=size, work=size, s16=False, left=False)


def rnn(name, cell, steps, features, units, flags=0):
    """SimpleRNN / LSTM / GRU over one sequence; flags as k2m_rnn_dims.flags
    (8: GRU reset_after)."""
    gates = {"simple_rnn": 1, "lstm": 4, "gru": 3}[cell]
    return dict(kind="rnn", name=name, cell=cell, steps=steps, features=features,
                units=units, flags=flags, gates=gates,
                work=steps * gates * units * (features + units), s16=False,
                left=False)


def matmul(which, t, heads, dk):
    """One of attention's matmuls over T = S tokens, `heads` heads of dk:
    "qk" the scores Q K^T (m = T, n = S, k = dk per head; int16 out, a
    softmax reads it), "av" P V^T (m = T, n = dk, k = S; P's zero point
    -128)."""
    s = t
    if which == "qk":
        d = dict(m=t, n=s, k=dk, a_row=heads * dk, b_row=heads * dk, c_row=s,
                 batch=(heads, dk, dk, t * s), n_a=t * heads * dk, n_b=s * heads * dk,
                 n_c=heads * t * s, a_offset=3, b_offset=-2)
    else:
        d = dict(m=t, n=dk, k=s, a_row=s, b_row=s, c_row=heads * dk,
                 batch=(heads, t * s, dk * s, dk), n_a=heads * t * s, n_b=heads * dk * s,
                 n_c=t * heads * dk, a_offset=128, b_offset=-2)
    name = f"matmul {which.upper()} T=S={t}, dk={dk}, H={heads}"
    return dict(kind="matmul", name=name, d=d, work=heads * t * s * dk, s16=which == "qk",
                left=False)


def se_multiply(name, positions, channels):
    """The squeeze-and-excitation multiply (H*W, C) x (C,): "MACs" are the
    elements (one product and one requantization each)."""
    return dict(kind="se", name=name, positions=positions, channels=channels,
                work=positions * channels, s16=False, left=False)


SHAPES = [
    conv("conv 3x3 16->32, 16x16, same", 16, 16, 16, 32, 3, 3),
    conv("conv 3x3 16->32, 16x16, same (s8_s16)", 16, 16, 16, 32, 3, 3, s16=True),
    conv("conv 3x3 16->16, 32x32, same (ResNet-8)", 32, 32, 16, 16, 3, 3),
    conv("conv 3x3 16->16, 32x32, same, left shift", 32, 32, 16, 16, 3, 3, left=True),
    conv("conv 1x1 64->64, 12x12", 12, 12, 64, 64, 1, 1),
    conv("conv 1x1 64->64, 12x12, left shift", 12, 12, 64, 64, 1, 1, left=True),
    conv("conv 1x1 64->64, 25x5 (DS-CNN)", 25, 5, 64, 64, 1, 1),
    conv("conv 1x1 8->16, 48x48 (MobileNet)", 48, 48, 8, 16, 1, 1),
    conv("conv 1x1 128->128, 6x6 (MobileNet)", 6, 6, 128, 128, 1, 1),
    conv("conv 10x4 1->64, 49x10, stride 2, same (KWS first)", 49, 10, 1, 64, 10, 4, stride=2),
    conv("conv 3x3 3->8, 96x96, stride 2, same (VWW first)", 96, 96, 3, 8, 3, 3, stride=2),
    conv("conv 3x3 3->16, 32x32, same (ResNet-8 first)", 32, 32, 3, 16, 3, 3),
    depthwise("depthwise 3x3 64ch, 25x5, same (DS-CNN)", 25, 5, 64, 3, 3),
    depthwise("depthwise 3x3 8ch, 48x48, same (MobileNet)", 48, 48, 8, 3, 3),
    depthwise("depthwise 3x3 16ch, 48x48, stride 2, same (MobileNet)", 48, 48, 16, 3, 3,
              stride=2),
    depthwise("depthwise 3x3 128ch, 6x6, same (MobileNet)", 6, 6, 128, 3, 3),
    depthwise("depthwise 3x3 128ch, 6x6, same, left shift", 6, 6, 128, 3, 3, left=True),
    depthwise("depthwise 3x3 256ch, 3x3, same (MobileNet)", 3, 3, 256, 3, 3),
    fc("fc 640->128 (AD)", 640, 128),
    fc("fc 128->128 (AD)", 128, 128),
    fc("fc 256->10", 256, 10),
    pool("max pool 2x2, 8x8x16", "max_pool", 8, 8, 16, 2, 2),
    pool("max pool 2x2, 32x32x16", "max_pool", 32, 32, 16, 2, 2),
    pool("avg pool 25x5 over 25x5x64 (DS-CNN)", "avg_pool", 25, 5, 64, (25, 5), 1),
    pool("avg pool 3x3, 12x12x32, same", "avg_pool", 12, 12, 32, 3, 1, "same"),
    pool("mean over 4x4x32", "mean", 4, 4, 32, 4, 1),
    elementwise("add 32x32x16 (ResNet-8)", "add", 32 * 32 * 16),
    elementwise("mul 16384", "mul", 16384),
    rnn("lstm 64 units, 49 steps x 10 (KWS)", "lstm", 49, 10, 64),
    rnn("gru 32 units, 50 steps x 3, reset_after", "gru", 50, 3, 32, flags=8),
    rnn("gru 32 units, 50 steps x 3, reset_before", "gru", 50, 3, 32),
    rnn("simple_rnn 32 units, 50 steps x 8", "simple_rnn", 50, 8, 32),
    rnn("lstm 128 units, 20 steps x 40, sequences", "lstm", 20, 40, 128, flags=2),
    *[matmul(which, t, heads, dk) for t, dk, heads in
      ((16, 8, 4), (32, 16, 2), (64, 16, 1), (64, 32, 4), (16, 64, 2), (64, 64, 1))
      for which in ("qk", "av")],
    se_multiply("SE multiply (16x16, 32) x (32,)", 256, 32),
    se_multiply("SE multiply (7x7, 96) x (96,)", 49, 96),
]

PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include "k2m.h"
#include "m4bench.h"

static uint32_t seed = 12345u;
static int32_t rnd(void) { seed = seed * 1664525u + 1013904223u; return (int32_t)(seed >> 8); }

static int8_t input[%(n_x)d], input2[%(n_x)d];
static int8_t weights[%(n_w)d];
static int32_t bias[%(n_b)d];
static int32_t mult[%(n_b)d], shift[%(n_b)d];
static %(out_t)s output[%(n_y)d];
static int32_t scratch[(%(n_s)d + 3) / 4];

int main(void)
{
    int32_t i;
    uint32_t sum = 0;
    k2m_quant_s8 q;
    for (i = 0; i < %(n_x)d; ++i) input[i] = (int8_t)(rnd() & 0xFF);
    for (i = 0; i < %(n_x)d; ++i) input2[i] = (int8_t)(rnd() & 0xFF);
    for (i = 0; i < %(n_w)d; ++i) weights[i] = (int8_t)((rnd() %% 255) - 127);
    for (i = 0; i < %(n_b)d; ++i) {
        bias[i] = (rnd() %% 20000) - 10000;
        mult[i] = 0x40000000 + (rnd() & 0x3FFFFFFF);
        shift[i] = -8 - (rnd() & 3);
    }
    if (%(left)d) shift[%(n_b)d / 2] = 1;  /* one channel with a left shift */
    q.input_offset = 5; q.output_offset = -3;
    q.act_min = %(act_min)d; q.act_max = %(act_max)d;
    q.multiplier = mult; q.shift = shift;
    (void)input2; (void)scratch; (void)q;
    {
        %(setup)s
        bench_begin();
        %(call)s;
        bench_end();
    }
    for (i = 0; i < %(n_y)d; ++i) sum = sum * 31u + (uint32_t)(uint16_t)output[i];
    printf("checksum %%08lx\n", (unsigned long)sum);
    return 0;
}
"""


RNN_PROGRAM = r"""
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include "k2m.h"
#include "m4bench.h"

#define STEPS %(steps)d
#define FEATURES %(features)d
#define UNITS %(units)d
#define ROWS (%(gates)d * UNITS)
#define N_STATE %(n_state)d
#define N_OUT %(n_out)d

static uint32_t seed = 12345u;
static int32_t rnd(void) { seed = seed * 1664525u + 1013904223u; return (int32_t)(seed >> 8); }

static int8_t input[STEPS * FEATURES];
static int8_t kernel[ROWS * FEATURES];
static int8_t recurrent[ROWS * UNITS];
static int32_t bias[ROWS], rec_bias[ROWS];
static int32_t kmult[ROWS], kshift[ROWS], rmult[ROWS], rshift[ROWS];
static int16_t lut[5][513];
static int8_t output[N_OUT];
static int16_t state[N_STATE];
static int16_t scratch[4 * UNITS];

/* t[i] = f(in_scale * (128 i - 32768)) at out_scale, i = 0..512 */
static void table(int16_t *t, int tanh_like, float in_scale)
{
    int32_t i;
    for (i = 0; i < 513; ++i) {
        const float v = in_scale * (float)(128 * i - 32768);
        const float y = tanh_like ? tanhf(v) : 1.0f / (1.0f + expf(-v));
        long q = lroundf(y * 32767.0f);
        t[i] = (int16_t)(q > 32767 ? 32767 : (q < -32768 ? -32768 : q));
    }
}

int main(void)
{
    int32_t i;
    uint32_t sum = 0;
    const k2m_rnn_dims d = {STEPS, FEATURES, UNITS, %(flags)d};
    k2m_rnn_weights_s8 w;
    for (i = 0; i < STEPS * FEATURES; ++i) input[i] = (int8_t)(rnd() & 0xFF);
    for (i = 0; i < ROWS * FEATURES; ++i) kernel[i] = (int8_t)((rnd() %% 255) - 127);
    for (i = 0; i < ROWS * UNITS; ++i) recurrent[i] = (int8_t)((rnd() %% 255) - 127);
    for (i = 0; i < ROWS; ++i) {
        bias[i] = (rnd() %% 20000) - 10000;
        rec_bias[i] = (rnd() %% 2000000) - 1000000;
        kmult[i] = 0x40000000 + (rnd() & 0x3FFFFFFF);
        kshift[i] = %(kshift)d + (rnd() & 1);
        rmult[i] = 0x40000000 + (rnd() & 0x3FFFFFFF);
        rshift[i] = %(rshift)d - (rnd() & 1);
    }
    table(lut[0], 0, 1.0f / 4096);  /* sigmoid, pre at 2^-12 */
    table(lut[1], 0, 1.0f / 4096);
    table(lut[2], 1, 1.0f / 4096);  /* tanh */
    table(lut[3], 0, 1.0f / 4096);
    table(lut[4], 1, 1.0f / 16384); /* tanh of the cell, c at 2^-14 */
    w.kernel = kernel; w.bias = bias; w.kernel_multiplier = kmult; w.kernel_shift = kshift;
    w.recurrent = recurrent; w.recurrent_bias = %(rec_bias)s;
    w.recurrent_multiplier = rmult; w.recurrent_shift = rshift;
    {
        %(setup)s
        bench_begin();
        %(call)s;
        bench_end();
    }
    for (i = 0; i < N_OUT; ++i) sum = sum * 31u + (uint32_t)(uint8_t)output[i];
    for (i = 0; i < N_STATE; ++i) sum = sum * 31u + (uint32_t)(uint16_t)state[i];
    printf("checksum %%08lx\n", (unsigned long)sum);
    return 0;
}
"""


def rnn_program(s):
    cell, units = s["cell"], s["units"]
    if cell == "simple_rnn":
        setup = ("k2m_simple_rnn_s8_params p;\n"
                 "        p.w = w; p.act_lut = lut[2];\n"
                 "        p.h_to_output.multiplier = 0x40000000; p.h_to_output.shift = -7;\n"
                 "        p.output_offset = 3;")
    elif cell == "lstm":
        setup = ("k2m_lstm_s8_params p;\n"
                 "        p.w = w; p.gate_lut[0] = lut[0]; p.gate_lut[1] = lut[1];\n"
                 "        p.gate_lut[2] = lut[2]; p.gate_lut[3] = lut[3]; p.cell_lut = lut[4];\n"
                 "        p.forget.multiplier = 0x40010000; p.forget.shift = -14;\n"
                 "        p.input.multiplier = 0x40020000; p.input.shift = -15;\n"
                 "        p.output_gate.multiplier = 0x40030000; p.output_gate.shift = -14;\n"
                 "        p.h_to_output.multiplier = 0x40000000; p.h_to_output.shift = -7;\n"
                 "        p.output_offset = 3;")
    else:
        setup = ("k2m_gru_s8_params p;\n"
                 "        p.w = w; p.gate_lut[0] = lut[0]; p.gate_lut[1] = lut[1];\n"
                 "        p.gate_lut[2] = lut[2];\n"
                 "        p.reset.multiplier = 0x40010000; p.reset.shift = -14;\n"
                 "        p.keep.multiplier = 0x40020000; p.keep.shift = -14;\n"
                 "        p.update.multiplier = 0x40030000; p.update.shift = -14;\n"
                 "        p.one = 32767;\n"
                 "        p.h_to_output.multiplier = 0x40000000; p.h_to_output.shift = -7;\n"
                 "        p.output_offset = 3;")
    call = f"k2m_{cell}_s8(&d, &p, input, output, state, scratch)"
    # kernel sums ~ sqrt(F) * 74^2, recurrent ~ sqrt(U) * 74 * 16000: both to
    # a few thousand at the pre-activation's scale
    kshift = int(round(12 - math.log2(max(s["features"], 1) ** 0.5 * 5500)))
    rshift = int(round(12 - math.log2(units ** 0.5 * 74 * 16000)))
    return RNN_PROGRAM % dict(
        steps=s["steps"], features=s["features"], units=units, gates=s["gates"],
        n_state=2 * units if cell == "lstm" else units,
        n_out=s["steps"] * units if s["flags"] & 2 else units, flags=s["flags"],
        kshift=kshift, rshift=rshift,
        rec_bias="rec_bias" if cell == "gru" and s["flags"] & 8 else "NULL",
        setup=setup, call=call)


# attention matmuls and the SE multiply: random int8 operands, scales as
# an exporter would pick them (outputs mostly inside the int8 range)
MATMUL_PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include "k2m.h"
#include "m4bench.h"

static uint32_t seed = 12345u;
static int32_t rnd(void) { seed = seed * 1664525u + 1013904223u; return (int32_t)(seed >> 8); }

static int8_t a[%(n_a)d], b[%(n_b)d];
static %(out_t)s c[%(n_c)d];

int main(void)
{
    int32_t i;
    uint32_t sum = 0;
    for (i = 0; i < %(n_a)d; ++i) a[i] = (int8_t)(rnd() & 0xFF);
    for (i = 0; i < %(n_b)d; ++i) b[i] = (int8_t)(rnd() & 0xFF);
    {
        %(setup)s
        bench_begin();
        %(call)s;
        bench_end();
    }
    for (i = 0; i < %(n_c)d; ++i) sum = sum * 31u + (uint32_t)(uint16_t)c[i];
    printf("checksum %%08lx\n", (unsigned long)sum);
    return 0;
}
"""


def matmul_program(s):
    if s["kind"] == "se":
        n, ch = s["positions"], s["channels"]
        setup = ("const k2m_broadcast_dims d = {{1, 1, 1, 1, %d, %d}, {0, 0, 0, 0, %d, 1}, "
                 "{0, 0, 0, 0, 0, 1}};\n"
                 "        const k2m_binary_s8_params p = {3, 0, 0, 128, 0, 0, 0, -5, "
                 "0x50000000, -8, -128, 127};" % (n, ch, ch))
        return MATMUL_PROGRAM % dict(n_a=n * ch, n_b=ch, n_c=n * ch, out_t="int8_t", setup=setup,
                                     call="k2m_broadcast_mul_s8(&d, &p, a, b, c)")
    d = s["d"]
    # accumulators ~ sqrt(k) * 74 * 74 (|offset| 128: ~148): a few hundred
    # (int8) or thousands (int16) of output steps
    spread = math.log2(d["k"] ** 0.5 * (148 if d["a_offset"] == 128 else 74) * 74)
    shift = int(round((13 if s["s16"] else 6) - spread))
    act = "-32768, 32767" if s["s16"] else "-128, 127"
    h, sa, sb, sc = d["batch"]
    setup = ("const k2m_matmul_dims d = {%d, %d, %d, %d, %d, %d, {1, 1, %d}, {0, 0, %d}, "
             "{0, 0, %d}, {0, 0, %d}};\n"
             "        const k2m_matmul_s8_params p = {%d, %d, %d, 0x5A000000, %d, %s};"
             % (d["m"], d["n"], d["k"], d["a_row"], d["b_row"], d["c_row"], h, sa, sb, sc,
                d["a_offset"], d["b_offset"], 0 if s["s16"] else -3, shift, act))
    fn = "k2m_matmul_s8_s16" if s["s16"] else "k2m_matmul_s8"
    return MATMUL_PROGRAM % dict(n_a=d["n_a"], n_b=d["n_b"], n_c=d["n_c"],
                                 out_t="int16_t" if s["s16"] else "int8_t", setup=setup,
                                 call=f"{fn}(&d, &p, a, b, c)")


# Normalization (k2m_norm.c): the work unit is an element, the figure
# instructions and m4run's cycles_est per element.  A time-series
# transformer's LayerNormalization: 64 steps of 128 features, per-feature
# gamma/beta, epsilon as the exporter puts it for scale 0.05 (1e-6 * 128^2
# / 0.05^2 with 20 fractional bits).
NORM_SHAPES = [
    dict(name="layernorm (64, 128), last axis", mode="K2M_NORM_LAYER", dims=(64, 1, 1, 128),
         params=128, stride=(0, 0, 1), eps_bits=20, eps=6871948),
    dict(name="groupnorm 8x8x32, 8 groups", mode="K2M_NORM_LAYER", dims=(1, 64, 8, 4),
         params=32, stride=(0, 4, 1), eps_bits=20, eps=27487791),
    dict(name="rmsnorm (64, 128)", mode="K2M_NORM_RMS", dims=(64, 1, 1, 128),
         params=128, stride=(0, 0, 1), eps_bits=20, eps=6871948),
]

NORM_PROGRAM = r"""
#include <stdio.h>
#include <stdint.h>
#include "k2m.h"
#include "m4bench.h"

static uint32_t seed = 12345u;
static int32_t rnd(void) { seed = seed * 1664525u + 1013904223u; return (int32_t)(seed >> 8); }

static int8_t input[%(n)d], output[%(n)d];
static int32_t gamma_mult[%(params)d], beta[%(params)d];

int main(void)
{
    int32_t i;
    uint32_t sum = 0;
    static const k2m_norm_dims d = {%(dims)s};
    const k2m_norm_s8_params p = {%(mode)s, 5, %(eps_bits)d, %(eps)dull, gamma_mult, 5, beta,
                                  {%(stride)s}, -3, -128, 127};
    for (i = 0; i < %(n)d; ++i) input[i] = (int8_t)((rnd() %% 61) - 30);
    for (i = 0; i < %(params)d; ++i) {
        gamma_mult[i] = 0x40000000 + (rnd() & 0x3FFFFFFF);
        beta[i] = (rnd() %% 4096) - 2048;
    }
    bench_begin();
    k2m_norm_s8(&d, &p, input, output);
    bench_end();
    for (i = 0; i < %(n)d; ++i) sum = sum * 31u + (uint32_t)(uint8_t)output[i];
    printf("checksum %%08lx\n", (unsigned long)sum);
    return 0;
}
"""


def norm_program(s):
    n = math.prod(s["dims"])
    return NORM_PROGRAM % dict(n=n, params=s["params"], dims=", ".join(map(str, s["dims"])),
                               mode=s["mode"], eps_bits=s["eps_bits"], eps=s["eps"],
                               stride=", ".join(map(str, s["stride"])))


def run_norm(m4run, src, elements, portable):
    """(instructions, cycles_est, checksum) of one k2m_norm_s8 call."""
    cmd = [str(m4run), "--work", str(elements), "--cycles", "-I", str(RUNTIME)]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    cmd += [str(src), str(RUNTIME / "k2m_norm.c")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"m4run failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    instr = int(re.search(r"instructions:\s*(\d+)", out.stdout).group(1))
    cycles = int(re.search(r"cycles_est:\s*(\d+)", out.stdout).group(1))
    return instr, cycles, re.search(r"checksum (\w+)", out.stdout).group(1)


def norm_rows(m4run, tmp, only):
    rows = []
    for i, s in enumerate(sh for sh in NORM_SHAPES if only in sh["name"]):
        src = Path(tmp) / f"norm_{i}.c"
        src.write_text(norm_program(s))
        n = math.prod(s["dims"])
        dsp, dsp_cyc, c1 = run_norm(m4run, src, n, portable=False)
        port, port_cyc, c2 = run_norm(m4run, src, n, portable=True)
        if c1 != c2:
            sys.exit(f"{s['name']}: DSP and portable outputs differ ({c1} != {c2})")
        rows.append((s["name"], n, dsp, dsp / n, dsp_cyc / n, port, port / n, port_cyc / n))
    return rows


def print_norm(rows, markdown):
    head = ("norm shape", "elements", "instr DSP", "instr/elem DSP", "cycles_est/elem DSP",
            "instr portable", "instr/elem portable", "cycles_est/elem portable")
    if markdown:
        print("\n| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]} | {r[6]:.2f} "
                  f"| {r[7]:.2f} |")
    else:
        print(f"\n{'norm shape':36} {'elements':>8} {'DSP':>9} {'/elem':>6} {'cyc/elem':>8} "
              f"{'portable':>9} {'/elem':>6} {'cyc/elem':>8}")
        for r in rows:
            print(f"{r[0]:36} {r[1]:8d} {r[2]:9d} {r[3]:6.2f} {r[4]:8.2f} {r[5]:9d} "
                  f"{r[6]:6.2f} {r[7]:8.2f}")


WINDOW_FIELDS = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
                 "stride_h", "stride_w", "dil_h", "dil_w", "pad_top", "pad_left")
# Add parameters of ResNet-8's first residual add (as the exporter gives them);
# mul: scales 0.05 * 0.04 / 0.01 (multiplier 0.2), zero points -3 and 7.
ADD_PARAMS = "128, 1528642219, -2, 13, 1073741824, 0, 20, -128, 1504313327, -18, -128, 127"
MUL_PARAMS = "3, 0, 0, -7, 0, 0, 0, 5, 1717986918, -2, -128, 127"
SOURCES = ("k2m_conv.c", "k2m_depthwise.c", "k2m_fully_connected.c", "k2m_recurrent.c",
           "k2m_pool.c", "k2m_elementwise.c", "k2m_matmul.c", "k2m_broadcast.c")


def program(s):
    if s["kind"] == "rnn":
        return rnn_program(s)
    if s["kind"] in ("matmul", "se"):
        return matmul_program(s)
    kind, g = s["kind"], s.get("g")
    window = ("const k2m_window g = {%s};" % ", ".join(str(g[k]) for k in WINDOW_FIELDS)
              if g else "")
    n = dict(n_w=1, n_b=1, n_s=4)
    if kind == "dw":
        call = ("k2m_depthwise_conv2d_s8(&g, &q, input, weights, bias, output, "
                "(int16_t *)(void *)scratch)")
        # more than K2M_DEPTHWISE_S8_SCRATCH_BYTES(g) for every shape here
        n.update(n_x=g["in_h"] * g["in_w"] * g["in_c"], n_w=g["k_h"] * g["k_w"] * g["out_c"],
                 n_b=g["out_c"], n_y=g["out_h"] * g["out_w"] * g["out_c"], n_s=8192)
    elif kind == "conv":
        fn = "k2m_conv2d_s8_s16" if s["s16"] else "k2m_conv2d_s8"
        call = f"{fn}(&g, &q, input, weights, bias, output, (int16_t *)(void *)scratch)"
        n.update(n_x=g["in_h"] * g["in_w"] * g["in_c"],
                 n_w=g["out_c"] * g["k_h"] * g["k_w"] * g["in_c"], n_b=g["out_c"],
                 n_y=g["out_h"] * g["out_w"] * g["out_c"],
                 n_s=4 * g["k_h"] * g["k_w"] * g["in_c"])
    elif kind == "fc":
        window = "const k2m_fc_dims d = {%d, %d, %d};" % (s["batches"], s["n_in"], s["n_out"])
        call = "k2m_fully_connected_s8(&d, &q, input, weights, bias, output)"
        n.update(n_x=s["batches"] * s["n_in"], n_w=s["n_in"] * s["n_out"], n_b=s["n_out"],
                 n_y=s["batches"] * s["n_out"])
    elif kind in ("max_pool", "avg_pool"):
        call = f"k2m_{kind}_s8(&g, -128, 127, input, output)"
        n.update(n_x=g["in_h"] * g["in_w"] * g["in_c"], n_y=s["work"])
    elif kind == "mean":
        # one multiplier for 1 / (spatial positions), output scale as the input's
        window += "\n        mult[0] = 0x40000000; shift[0] = -%d;" % (
            (g["in_h"] * g["in_w"]).bit_length() - 1)
        call = f"k2m_mean_s8({g['in_h'] * g['in_w']}, {g['in_c']}, &q, input, output)"
        n.update(n_x=g["in_h"] * g["in_w"] * g["in_c"], n_y=g["in_c"])
    else:
        window = "const k2m_add_s8_params p = {%s};" % (
            ADD_PARAMS if kind == "add" else MUL_PARAMS)
        call = f"k2m_{kind}_s8(&p, input, input2, output, {s['size']})"
        n.update(n_x=s["size"], n_y=s["size"])
    out_t = "int16_t" if s["s16"] else "int8_t"
    act = (-32768, 32767) if s["s16"] else (-128, 127)
    return PROGRAM % dict(n, out_t=out_t, setup=window, call=call, left=int(s["left"]),
                          act_min=act[0], act_max=act[1])


def run(m4run, src, work, portable, extra=()):
    cmd = [str(m4run), "--cycles", "--work", str(work), "-I", str(RUNTIME), *extra]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    cmd += [str(src)] + [str(RUNTIME / f) for f in SOURCES]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"m4run failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    instr = int(re.search(r"instructions:\s*(\d+)", out.stdout).group(1))
    cycles = int(re.search(r"cycles_est:\s*(\d+)", out.stdout).group(1))
    checksum = re.search(r"checksum (\w+)", out.stdout).group(1)
    return instr, cycles, checksum, out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m4run", default=str(DEFAULT_M4RUN))
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--only", default="", help="only the shapes whose name contains this")
    ap.add_argument("--hot", type=int, default=0, help="show the N hottest instructions (DSP)")
    ap.add_argument("--mix", action="store_true", help="show the instruction mix (DSP)")
    args = ap.parse_args()
    extra = (["--hot", str(args.hot)] if args.hot else []) + (["--mix"] if args.mix else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(sh for sh in SHAPES if args.only in sh["name"]):
            src = Path(tmp) / f"bench_{i}.c"
            src.write_text(program(s))
            dsp, dsp_c, c1, text = run(args.m4run, src, s["work"], False, extra)
            port, port_c, c2, _ = run(args.m4run, src, s["work"], True)
            if c1 != c2:
                sys.exit(f"{s['name']}: DSP and portable outputs differ ({c1} != {c2})")
            if extra:
                print(f"== {s['name']}\n" + text[text.index("--- m4run region"):])
            w = s["work"]
            rows.append((s["kind"], s["name"], w, dsp, dsp_c, dsp_c / w, port, port_c,
                         port_c / w, port_c / dsp_c))
        norms = norm_rows(args.m4run, tmp, args.only)
    head = ("kernel", "shape", "work", "instr DSP", "cycles_est DSP", "cycles/work DSP",
            "instr portable", "cycles_est portable", "cycles/work portable", "speed-up")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|---|" + "---:|" * (len(head) - 2))
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:,} | {r[4]:,} | {r[5]:.3f} | {r[6]:,} | "
                  f"{r[7]:,} | {r[8]:.3f} | {r[9]:.2f}x |")
    else:
        print(f"{'kernel':8} {'shape':56} {'work':>9} {'instr':>10} {'cycles':>10} {'c/work':>7} "
              f"{'instr port':>10} {'cyc port':>10} {'c/work':>7} {'speed-up':>8}")
        for r in rows:
            print(f"{r[0]:8} {r[1]:56} {r[2]:9d} {r[3]:10d} {r[4]:10d} {r[5]:7.3f} {r[6]:10d} "
                  f"{r[7]:10d} {r[8]:7.3f} {r[9]:7.2f}x")
    if norms:
        print_norm(norms, args.markdown)


if __name__ == "__main__":
    main()
