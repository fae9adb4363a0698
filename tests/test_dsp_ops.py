"""The DSP paths of the matmul and broadcasting binary kernels (SMLAD
matmul, SXTAB16/SMULxy squeeze-and-excitation multiply, SMMULR
requantization, SSAT clamps) against the portable loops, bit for bit, on
the emulated Cortex-M4, as tests/test_dsp.py does for conv / fc /
depthwise.

Random cases from tests/test_kernels_ops.py's generators (attention
layouts, k not a multiple of 4, n not a multiple of 4, zero points of
-128, left shifts that take the general requantization, int16 outputs,
clamps and none; every broadcast pattern of every int8 binary op; some
reductions) go into one C program that prints a hash per case.  It is
built with ../shared/tools/m4run as is (DSP, -O2 and -O0) and with
-DK2M_PORTABLE; every build's hashes must equal kernel_ref.py's, and
nothing may be written past an output or between a matmul's output rows.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_ref as ref  # noqa: E402
from test_dsp import (FNV_C, GUARD, GUARD_C, _arr, assert_bit_identical,  # noqa: E402,F401
                      assert_dsp_equals_portable, m4run, out_hash, run_m4)
from test_kernels_ops import (FUNCS_S8, binary_case, binary_want, dims_of,  # noqa: E402
                              matmul_case, matmul_params, reduce_case, reduce_want)

from exporter.codegen import broadcast_box  # noqa: E402

SEED = 20250301
N_MATMUL, N_BINARY, N_SE, N_REDUCE = 90, 16, 24, 12   # N_BINARY per op
SOURCES = ("k2m_matmul.c", "k2m_broadcast.c", "k2m_reduce.c")
FILL8, FILL16 = np.int8(-91), np.int16(-23131)  # the 0xA5 guard pattern


def make_cases():
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(N_MATMUL):
        theme, dims, a, b, c_size = matmul_case(rng, i)
        out16 = i % 3 == 2
        p = matmul_params(rng, i, dims["k"], out16)
        if i % 4 == 1:  # no fused clamp: the SSAT store
            p["act_min"], p["act_max"] = (-32768, 32767) if out16 else (-128, 127)
        y = np.full(c_size, FILL16 if out16 else FILL8)
        mask = np.zeros(c_size, bool)
        for _, _, off_c in ref.matmul_offsets(dims):
            mask[off_c + np.arange(dims["m"])[:, None] * dims["c_row"] + np.arange(dims["n"])] = True
        y[mask] = ref.matmul_s8(dims, p, a, b, c_size, out16)[mask]
        cases.append(dict(kind="matmul", theme=theme, dims=dims, p=p, a=a, b=b, s16=out16, y=y))
    for f, func in enumerate(FUNCS_S8):
        for i in range(N_BINARY):
            pattern, p, x1, x2 = binary_case(rng, i + 3 * f, func)
            y = binary_want(func, p, x1, x2)
            cases.append(dict(kind="binary", func=func, theme=pattern, p=p, x1=x1, x2=x2,
                              box=dims_of(broadcast_box(x1.shape, x2.shape, y.shape)),
                              s16=False, y=y))
    for j in range(N_SE):  # squeeze-and-excitation multiplies: the per-channel patterns
        pattern, p, x1, x2 = binary_case(rng, 8 * j + j % 2, "mul")
        y = binary_want("mul", p, x1, x2)
        cases.append(dict(kind="binary", func="mul", theme=pattern, p=p, x1=x1, x2=x2,
                          box=dims_of(broadcast_box(x1.shape, x2.shape, y.shape)),
                          s16=False, y=y))
    for i in range(N_REDUCE):
        func, p, x = reduce_case(rng, i)
        cases.append(dict(kind="reduce", func=func, theme=func, p=p, x=x, s16=False,
                          y=reduce_want(func, p, x)))
    return cases


def _list(v):
    return "{" + ", ".join(str(int(x)) for x in v) + "}"


def _call(i, c):
    """The C statements of case i: set-up and the kernel call."""
    out8, out16 = "(int8_t *)(void *)out_buf", "(int16_t *)(void *)out_buf"
    if c["kind"] == "matmul":
        d, p = c["dims"], c["p"]
        dims = ", ".join(str(d[k]) for k in ("m", "n", "k", "a_row", "b_row", "c_row"))
        lists = ", ".join(_list(d[k]) for k in ("batch_count", "a_batch", "b_batch", "c_batch"))
        fields = ("a_offset", "b_offset", "output_offset", "multiplier", "shift",
                  "act_min", "act_max")
        fn = "k2m_matmul_s8_s16" if c["s16"] else "k2m_matmul_s8"
        return [f"const k2m_matmul_dims d = {{{dims}, {lists}}};",
                f"const k2m_matmul_s8_params p = {{{', '.join(str(p[k]) for k in fields)}}};",
                f"{fn}(&d, &p, a{i}, b{i}, {out16 if c['s16'] else out8});"]
    if c["kind"] == "binary":
        box, p = c["box"], c["p"]
        kernel = {"sub": "add", "avg": "add"}.get(c["func"], c["func"])
        extra = f"{int(c['func'] == 'max')}, " if c["func"] in ("max", "min") else ""
        kernel = "max_min" if c["func"] in ("max", "min") else kernel
        return [f"const k2m_broadcast_dims d = {{{', '.join(_list(box[k]) for k in ('count', 'stride1', 'stride2'))}}};",
                f"const k2m_binary_s8_params p = {{{', '.join(str(p[k]) for k in ref.ADD_FIELDS)}}};",
                f"k2m_broadcast_{kernel}_s8(&d, &p, {extra}a{i}, b{i}, {out8});"]
    outer, length, inner = c["x"].shape
    p = c["p"]
    if c["func"] in ("max", "min"):
        return [f"const k2m_reduce_dims d = {{{outer}, {length}, {inner}}};",
                f"k2m_reduce_max_min_s8(&d, {int(c['func'] == 'max')}, {p['act_min']}, "
                f"{p['act_max']}, a{i}, {out8});"]
    fields = ("input_offset", "output_offset", "multiplier", "shift", "act_min", "act_max")
    return [f"const k2m_reduce_dims d = {{{outer}, {length}, {inner}}};",
            f"const k2m_reduce_s8_params p = {{{', '.join(str(p[k]) for k in fields)}}};",
            f"k2m_reduce_sum_s8(&d, &p, a{i}, {out8});"]


def c_program(cases):
    max_out = max(c["y"].size for c in cases)
    src = ['#pragma GCC optimize("O1")\n',
           '#include <stdio.h>\n#include <stdint.h>\n#include "k2m.h"\n\n',
           f"#define GUARD {GUARD}\n",
           f"static int16_t out_buf[{max_out} + GUARD];\n",
           FNV_C, GUARD_C]
    body = []
    for i, c in enumerate(cases):
        first, second = {"matmul": ("a", "b"), "binary": ("x1", "x2"), "reduce": ("x", None)}[c["kind"]]
        src.append(_arr(f"a{i}", "int8_t", c[first].ravel() if c[first].size else [0]))
        if second:
            src.append(_arr(f"b{i}", "int8_t", c[second].ravel() if c[second].size else [0]))
        n_out, es = c["y"].size, 2 if c["s16"] else 1
        body.append("\n".join(
            [f"    {{ /* case {i}: {c['kind']} {c['theme']} */",
             "        int ok;",
             "        fill(out_buf, sizeof out_buf);"]
            + ["        " + line for line in _call(i, c)]
            + [f"        ok = guard_ok(out_buf, {n_out * es}, 2 * GUARD);",
               f'        printf("case {i} %08lx %d\\n", (unsigned long)fnv(out_buf, {n_out}, '
               f'{int(c["s16"])}), ok);',
               "    }"]))
    src.append("\nint main(void)\n{\n" + "\n".join(body) + '\n    printf("done\\n");\n    return 0;\n}\n')
    return "".join(src)


@pytest.fixture(scope="module")
def results(m4run, tmp_path_factory):
    cases = make_cases()
    src = tmp_path_factory.mktemp("dsp_ops") / "dsp_ops_cases.c"
    src.write_text(c_program(cases))
    run = lambda portable, opt="2": run_m4(m4run, src, portable, opt, SOURCES)  # noqa: E731
    return cases, {"dsp": run(False), "portable": run(True), "dsp_O0": run(False, "0")}


def test_case_mix():
    """The cases reach every DSP path: full-range (SSAT) and clamped
    stores, int16 outputs, the small and the general requantization, tails
    of k and n, a zero point of -128, the contiguous multiply rows."""
    cases = make_cases()
    mm = [c for c in cases if c["kind"] == "matmul"]
    assert any(c["dims"]["k"] % 4 for c in mm) and any(c["dims"]["k"] % 4 == 0 for c in mm)
    assert any(c["dims"]["n"] % 4 for c in mm) and any(c["dims"]["n"] >= 4 for c in mm)
    assert any(c["s16"] for c in mm) and not all(c["s16"] for c in mm)
    assert any(c["p"]["act_min"] == -128 and c["p"]["act_max"] == 127 for c in mm)
    assert any(c["p"]["b_offset"] == 128 for c in mm)
    assert any(c["p"]["shift"] > 0 for c in mm) and any(c["p"]["shift"] < 0 for c in mm)
    assert {"attention_qk", "attention_av"} <= {c["theme"] for c in mm}
    mul = [c for c in cases if c["kind"] == "binary" and c["func"] == "mul"]
    contiguous = [c for c in mul if c["box"]["stride1"][5] == 1 and c["box"]["stride2"][5] == 1]
    assert len(contiguous) >= 20
    assert any(c["p"]["act_min"] == -128 and c["p"]["act_max"] == 127 for c in contiguous)
    assert any(c["box"]["count"][5] % 4 for c in contiguous)
    assert {c["func"] for c in cases if c["kind"] == "binary"} == set(FUNCS_S8)
    y = np.concatenate([c["y"].ravel().astype(np.int64) for c in mm])
    assert ((y > -128) & (y < 127)).mean() > 0.3


@pytest.mark.parametrize("path", ["dsp", "portable", "dsp_O0"])
def test_bit_identical(results, path):
    cases, got = results
    assert_bit_identical(cases, got[path], path, lambda i, c: f"case {i} {c['kind']} {c['theme']}" + (
        f" {c['dims']}" if c["kind"] == "matmul" else f" {c.get('func', '')}"))


def test_dsp_equals_portable(results):
    assert_dsp_equals_portable(*results)
