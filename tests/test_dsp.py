"""The Cortex-M4 DSP (SMLAD) paths of the int8 conv / fully connected kernels
(and the depthwise conv kernel) against the portable reference, bit for bit,
on the emulated Cortex-M4.

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

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "c_runtime"
M4RUN = ROOT.parent / "shared" / "tools" / "m4run"
APT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
SEED = 20240611
N_CONV_S8, N_CONV_S16, N_FC, N_DW = 100, 60, 70, 90
INT32_MIN = -(2**31)
GUARD = 16  # guard elements after every output and scratch buffer
KERNEL_SOURCES = ("k2m_conv.c", "k2m_fully_connected.c", "k2m_depthwise.c")


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
    max_scr = max(2 * c["g"]["k_h"] * c["g"]["k_w"] * c["g"]["in_c"]
                  for c in cases if c["kind"] == "conv")
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
"""]
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
            lines += [f"        const k2m_window g = {{{', '.join(str(g[f]) for f in fields)}}};",
                      f"        k2m_depthwise_conv2d_s8(&g, &q, x{i}, w{i}, {bias}, "
                      "(int8_t *)(void *)out_buf);"]
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


def run_m4(m4run, src, portable, opt="2"):
    cmd = [str(m4run), "--timeout", "120", "-I", str(RUNTIME), "-O", opt]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    cmd += [str(src)] + [str(RUNTIME / f) for f in KERNEL_SOURCES]
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
