"""The Cortex-M4 DSP (SMLAD) paths of the int8 conv / fully connected kernels
(and the depthwise conv and the recurrent kernels) against the portable
reference, bit for bit, on the emulated Cortex-M4.

Random layer shapes (fixed seed: strides, dilations, explicit and 'same'
padding, odd channel and feature counts, 1x1 maps, kernels larger than the
stride, K not a multiple of 4, ...) are written as const arrays into one C
program that runs every case and prints a per-case hash of the output.  It is
built twice with ../shared/tools/m4run (QEMU mps2-an386, a Cortex-M4 with the
DSP extension): as is (DSP path) and with -DK2M_PORTABLE (the portable
loops, compiled for the M4); both must match the hashes of tests/kernel_ref.py,
which is bit-exact to the portable C (tests/test_kernels.py).  The program
also checks that nothing is written past the output or past the
4 * k_h * k_w * in_c scratch bytes the exporter allocates.

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

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "c_runtime"
M4RUN = ROOT.parent / "shared" / "tools" / "m4run"
APT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
SEED = 20240611
N_CONV_S8, N_CONV_S16, N_FC, N_DW = 100, 60, 70, 90
INT32_MIN = -(2**31)
GUARD = 16  # guard elements after every output and scratch buffer
KERNEL_SOURCES = ("k2m_conv.c", "k2m_fully_connected.c", "k2m_depthwise.c")



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
        d = int(rng.choice([1, 1, 1, 2, 3])) if theme != "big_kernel" else 1
        if theme == "big_kernel":
            k, s = int(rng.integers(4, 11)), int(rng.integers(1, 3))
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


def random_window(rng, i):
    theme = ["plain", "one_by_one_map", "big_kernel", "plain", "pointwise"][i % 5]
    h = _axis(rng, theme)
    w = _axis(rng, theme)
    if theme == "pointwise":
        h = (h[0], 1, 1, 1, 0, h[0])
        w = (w[0], 1, 1, 1, 0, w[0])
    in_c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 16, 17]))
    out_c = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 16]))
    g = dict(in_h=h[0], in_w=w[0], in_c=in_c, out_h=h[5], out_w=w[5], out_c=out_c,
             k_h=h[1], k_w=w[1], stride_h=h[2], stride_w=w[2], dil_h=h[3], dil_w=w[3],
             pad_top=h[4], pad_left=w[4])
    return theme, g


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
    g = dict(in_h=h[0], in_w=w[0], in_c=in_c, out_h=h[5], out_w=w[5], out_c=in_c * mult,
             k_h=h[1], k_w=w[1], stride_h=h[2], stride_w=w[2], dil_h=h[3], dil_w=w[3],
             pad_top=h[4], pad_left=w[4])
    return f"dw_mult{mult}_{theme}", g


def make_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(N_CONV_S8 + N_CONV_S16):
        s16 = i >= N_CONV_S8
        theme, g = random_window(rng, i)
        k = g["k_h"] * g["k_w"] * g["in_c"]
        q = random_quant(rng, g["out_c"], k, s16)
        x = rng.integers(-128, 128, (g["in_h"], g["in_w"], g["in_c"])).astype(np.int8)
        w = rng.integers(-127, 128, (g["out_c"], g["k_h"], g["k_w"], g["in_c"])).astype(np.int8)
        bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, g["out_c"]).astype(np.int32)
        y = (ref.conv2d_s8_s16 if s16 else ref.conv2d_s8)(g, q, x, w, bias)
        cases.append(dict(kind="conv", s16=s16, theme=theme, g=g, q=q, x=x, w=w, bias=bias, y=y))
    for i in range(N_FC):
        b = int(rng.integers(1, 4))
        n_in = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 31, 64, 100, 127, 256, 301]))
        n_out = int(rng.integers(1, 18))
        q = random_quant(rng, n_out, n_in, False)
        x = rng.integers(-128, 128, (b, n_in)).astype(np.int8)
        w = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
        bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, n_out).astype(np.int32)
        y = ref.fully_connected_s8(q, x, w, bias)
        cases.append(dict(kind="fc", s16=False, theme="fc", dims=(b, n_in, n_out), q=q, x=x,
                          w=w, bias=bias, y=y))
    for i in range(N_DW):
        theme, g = depthwise_window(rng, i)
        q = random_quant(rng, g["out_c"], g["k_h"] * g["k_w"], False)
        x = rng.integers(-128, 128, (g["in_h"], g["in_w"], g["in_c"])).astype(np.int8)
        w = rng.integers(-127, 128, (g["k_h"], g["k_w"], g["out_c"])).astype(np.int8)
        bias = None if rng.integers(6) == 0 else rng.integers(-2**16, 2**16, g["out_c"]).astype(np.int32)
        y = ref.depthwise_conv2d_s8(g, q, x, w, bias)
        cases.append(dict(kind="dw", s16=False, theme=theme, g=g, q=q, x=x, w=w, bias=bias, y=y))
    return cases


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


def c_program(cases):
    max_out = max(int(np.asarray(c["y"]).size) for c in cases)
    max_scr = max(ref.conv_s8_scratch_bytes(c["g"]) if c["kind"] == "conv"
                  else ref.depthwise_s8_scratch_bytes(c["g"])
                  for c in cases if c["kind"] in ("conv", "dw")) // 2
    # The driver (hundreds of call blocks in one main) needs no optimisation
    # and takes gcc ~15 s at -O2; the kernels are other translation units
    # and keep m4run's -O2.
    src = ['#pragma GCC optimize("O1")\n',
           '#include <stdio.h>\n#include <stdint.h>\n#include "k2m.h"\n\n',
           f"#define GUARD {GUARD}\n",
           f"static int16_t out_buf[{max_out} + GUARD];\n",
           # int32 storage: the scratch is 4-byte aligned, as the arena's is
           f"static int32_t scratch_buf[({max_scr} + GUARD + 1) / 2];\n",
           r"""
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
""", GUARD_C]
    body = []
    for i, c in enumerate(cases):
        q = c["q"]
        src.append(_arr(f"x{i}", "int8_t", c["x"]))
        src.append(_arr(f"w{i}", "int8_t", c["w"]))
        src.append(_arr(f"m{i}", "int32_t", q["multiplier"]))
        src.append(_arr(f"s{i}", "int32_t", q["shift"]))
        has_bias = c["bias"] is not None
        if has_bias:
            src.append(_arr(f"b{i}", "int32_t", c["bias"]))
        bias = f"b{i}" if has_bias else "NULL"
        n_out = int(np.asarray(c["y"]).size)
        es = 2 if c["s16"] else 1
        lines = [f"    {{ /* case {i}: {c['kind']} {c['theme']} */",
                 f"        const k2m_quant_s8 q = {{{q['input_offset']}, {q['output_offset']}, "
                 f"{q['act_min']}, {q['act_max']}, m{i}, s{i}}};",
                 "        int ok = 1;",
                 "        fill(out_buf, sizeof out_buf); fill(scratch_buf, sizeof scratch_buf);"]
        fields = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
                  "stride_h", "stride_w", "dil_h", "dil_w", "pad_top", "pad_left")
        if c["kind"] == "dw":
            g = c["g"]
            scr = ref.depthwise_s8_scratch_bytes(g)
            lines += [f"        const k2m_window g = {{{', '.join(str(g[f]) for f in fields)}}};",
                      f"        k2m_depthwise_conv2d_s8(&g, &q, x{i}, w{i}, {bias}, "
                      "(int8_t *)(void *)out_buf, "
                      + ("(int16_t *)(void *)scratch_buf);" if scr else "NULL);"),
                      f"        ok &= guard_ok(scratch_buf, {scr}, 2 * GUARD);"]
        elif c["kind"] == "conv":
            g = c["g"]
            fields = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
                      "stride_h", "stride_w", "dil_h", "dil_w", "pad_top", "pad_left")
            scr = 4 * g["k_h"] * g["k_w"] * g["in_c"]
            fn, ot = (("k2m_conv2d_s8_s16", "int16_t") if c["s16"] else ("k2m_conv2d_s8", "int8_t"))
            lines += [f"        const k2m_window g = {{{', '.join(str(g[f]) for f in fields)}}};",
                      f"        {fn}(&g, &q, x{i}, w{i}, {bias}, ({ot} *)(void *)out_buf, "
                      "(int16_t *)(void *)scratch_buf);",
                      f"        ok &= guard_ok(scratch_buf, {scr}, 2 * GUARD);"]
        else:
            b, n_in, n_o = c["dims"]
            lines += [f"        const k2m_fc_dims d = {{{b}, {n_in}, {n_o}}};",
                      f"        k2m_fully_connected_s8(&d, &q, x{i}, w{i}, {bias}, "
                      "(int8_t *)(void *)out_buf);"]
        lines += [f"        ok &= guard_ok(out_buf, {n_out * es}, 2 * GUARD);",
                  f'        printf("case {i} %08lx %d\\n", (unsigned long)fnv(out_buf, {n_out}, {int(c["s16"])}), ok);',
                  "    }"]
        body.append("\n".join(lines))
    src.append("\nint main(void)\n{\n" + "\n".join(body) + '\n    printf("done\\n");\n    return 0;\n}\n')
    return "".join(src)


def run_m4(m4run, src, portable, opt="2", sources=KERNEL_SOURCES):
    cmd = [str(m4run), "--timeout", "120", "-I", str(RUNTIME), "-O", opt]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    cmd += [str(src)] + [str(RUNTIME / f) for f in sources]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
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
    assert len(cases) >= 200
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
    assert any(c["dims"][1] % 4 for c in cases if c["kind"] == "fc")
    dw = [c["g"] for c in cases if c["kind"] == "dw"]
    assert len(dw) >= 80
    mult1 = {g["in_c"] for g in dw if g["out_c"] == g["in_c"]}
    assert {4, 8, 12, 5, 7} <= mult1
    assert any(g["out_c"] == 2 * g["in_c"] for g in dw)
    assert any(g["stride_h"] > 1 or g["stride_w"] > 1 for g in dw)
    assert any(g["dil_h"] > 1 or g["dil_w"] > 1 for g in dw)
    assert any(g["pad_top"] > 0 or g["pad_left"] > 0 for g in dw)
    assert any(g["in_h"] == g["in_w"] == 1 for g in dw)
    # the requantization must not saturate everything
    inside = [((np.asarray(c["y"]) > c["q"]["act_min"]) & (np.asarray(c["y"]) < c["q"]["act_max"])).mean()
              for c in cases]
    assert np.mean(inside) > 0.3


@pytest.mark.parametrize("path", ["dsp", "portable", "dsp_O0"])
def test_bit_identical(results, path):
    cases, got = results
    run = got[path]
    bad = []
    for i, c in enumerate(cases):
        if i not in run:
            bad.append(f"case {i}: no output")
            continue
        h, ok = run[i]
        what = f"case {i} {c['kind']}{'_s16' if c['s16'] else ''} {c['theme']} " + (
            str(c["g"]) if c["kind"] in ("conv", "dw") else str(c["dims"]))
        if h != out_hash(c["y"]):
            bad.append(what + ": output differs from the reference")
        if not ok:
            bad.append(what + ": wrote past the output or the scratch buffer")
    assert not bad, f"{len(bad)} of {len(cases)} cases fail ({path}):\n" + "\n".join(bad[:20])


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
