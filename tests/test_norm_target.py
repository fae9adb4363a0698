"""The int8 norm kernel on the emulated Cortex-M4: the same bits as
tests/norm_ref.py (bit-exact to the host build, tests/test_norm_kernels.py)
for the DSP path (SMLAD sums, SMMULR, SSAT) at -O2 and -O0 and for the portable loop (-DK2M_PORTABLE),
compiled by arm-none-eabi-gcc and run under QEMU (mps2-an386) with
../shared/tools/m4run.

One C program holds every case as const arrays (the kernel tests' exported
and raw parameter cases, and groups of 4096 and 65536 saturated values),
runs each into a buffer between guard bytes, in place for every fifth case,
and prints a hash per case.  Skipped without the tools, failed when $CI is
set.  The same program also runs on the host under ASan and UBSan.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import norm_ref as ref  # noqa: E402
from conftest import require_tool  # noqa: E402
from test_dsp import GUARD_C, RUNTIME, _arr, m4run, out_hash, run_m4  # noqa: E402,F401
from test_fuzz_kernels import CFLAGS, SANITIZER_MARKS  # noqa: E402
from test_norm_kernels import exported_case, fake_node, raw_case  # noqa: E402

from exporter import quantize_norm  # noqa: E402
from exporter.ir import Quant, Tensor  # noqa: E402

GUARD = 16
SOURCES = ("k2m_norm.c",)


def big_cases():
    out = []
    for n, mode in ((4096, "layer"), (65536, "rms"), (65536, "layer")):
        rng = np.random.default_rng(n)
        dims = (1, n, 1, 1)
        x = rng.choice(np.array([-128, 127], np.int8), n, p=[0.97, 0.03]).reshape(dims)
        node = fake_node(mode, 1e-6, dims, (0, 0, 0), None, None)
        p = quantize_norm.params(node, Tensor("x", dims, "int8", Quant(0.05, 127)),
                                 Tensor("y", dims, "int8", Quant(0.04, -3)))
        out.append(dict(kind="big", mode=mode, dims=dims, x=x, p=p))
    return out


def make_cases():
    cases = [exported_case(np.random.default_rng(5000 + i), i) for i in range(0, 240, 2)]
    cases += [raw_case(np.random.default_rng(9000 + i), i) for i in range(0, 120, 2)]
    cases += big_cases()
    for c in cases:
        c["y"] = ref.norm_s8(c["dims"], c["p"], c["x"])
    return cases


def c_program(cases):
    biggest = max(c["x"].size for c in cases)
    src = ['#pragma GCC optimize("O1")\n',  # the driver only; the kernel keeps -O2 / -O0
           '#include <stdio.h>\n#include <stdint.h>\n#include <string.h>\n#include "k2m.h"\n\n',
           f"#define GUARD {GUARD}\nstatic int8_t out_buf[GUARD + {biggest} + GUARD];\n",
           r"""
static uint32_t fnv(const int8_t *out, int32_t n)
{
    uint32_t h = 2166136261u;
    int32_t i;
    for (i = 0; i < n; ++i) h = (h ^ ((uint32_t)(int32_t)out[i] & 0xFFFFu)) * 16777619u;
    return h;
}
""", GUARD_C]
    body = []
    for i, c in enumerate(cases):
        p, n = c["p"], c["x"].size
        src.append(_arr(f"x{i}", "int8_t", c["x"]))
        src.append(_arr(f"g{i}", "int32_t", p["gamma_multiplier"]))
        src.append(_arr(f"b{i}", "int32_t", p["beta"]))
        in_place = i % 5 == 0
        params = (f"K2M_NORM_{p['mode'].upper()}, {p['input_offset']}, {p['eps_bits']}, "
                  f"{p['eps']}ull, g{i}, {p['gamma_shift']}, b{i}, "
                  f"{{{', '.join(str(int(v)) for v in p['param_stride'])}}}, "
                  f"{p['output_offset']}, {p['act_min']}, {p['act_max']}")
        body.append("\n".join([
            f"    {{ /* case {i}: {c['kind']} {c['mode']} {c['dims']} */",
            f"        static const k2m_norm_dims d = {{{', '.join(str(v) for v in c['dims'])}}};",
            f"        static const k2m_norm_s8_params p = {{{params}}};",
            "        int8_t *out = out_buf + GUARD;",
            "        fill(out_buf, sizeof out_buf);",
            f"        memcpy(out, x{i}, {n});" if in_place else "",
            f"        k2m_norm_s8(&d, &p, {'out' if in_place else f'x{i}'}, out);",
            f'        printf("case {i} %08lx %d\\n", (unsigned long)fnv(out, {n}), '
            f"guard_ok(out_buf, 0, GUARD) && guard_ok(out, {n}, GUARD));",
            "    }"]))
    src.append("\nint main(void)\n{\n" + "\n".join(body) + '\n    printf("done\\n");\n    return 0;\n}\n')
    return "".join(src)


@pytest.fixture(scope="module")
def results(m4run, tmp_path_factory):
    cases = make_cases()
    src = tmp_path_factory.mktemp("norm_m4") / "norm_cases.c"
    src.write_text(c_program(cases))
    return cases, {"dsp": run_m4(m4run, src, False, sources=SOURCES),
                   "portable": run_m4(m4run, src, True, sources=SOURCES),
                   "dsp_O0": run_m4(m4run, src, False, "0", sources=SOURCES)}


def test_case_mix():
    cases = make_cases()
    assert len(cases) >= 180
    assert {c["mode"] for c in cases} == {"layer", "rms", "rms_scaling", "l2"}
    kinds = {c["kind"] for c in cases}
    assert {"last", "first", "group", "whole", "any", "big"} <= kinds
    assert any(c["dims"][3] % 4 for c in cases) and any(c["dims"][3] >= 32 for c in cases)


@pytest.mark.parametrize("path", ["dsp", "portable", "dsp_O0"])
def test_m4_bit_identical_to_reference(results, path):
    cases, got = results
    run, bad = got[path], []
    for i, c in enumerate(cases):
        what = f"case {i} {c['kind']} {c['mode']} {c['dims']}"
        if i not in run:
            bad.append(f"{what}: no output")
        elif run[i][0] != out_hash(c["y"]):
            bad.append(f"{what}: differs from the reference")
        elif not run[i][1]:
            bad.append(f"{what}: wrote outside its output")
    assert not bad, f"{len(bad)} of {len(cases)} cases fail ({path}):\n" + "\n".join(bad[:20])


def test_host_sanitizers(tmp_path):
    """The same program on the host under AddressSanitizer and
    UndefinedBehaviorSanitizer (portable loop, exactly sized inputs):
    no finding, the reference's bits."""
    gcc = require_tool("gcc", "apt-get install gcc")
    cases = make_cases()
    src, exe = tmp_path / "norm_cases.c", tmp_path / "norm_cases"
    src.write_text(c_program(cases))
    cmd = [gcc, *CFLAGS, "-I", str(RUNTIME), str(src), str(RUNTIME / "k2m_norm.c"), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and not any(m in run.stderr for m in SANITIZER_MARKS), run.stderr
    got = {int(m.group(1)): (int(m.group(2), 16), m.group(3) == "1")
           for m in re.finditer(r"^case (\d+) ([0-9a-f]{8}) (\d)$", run.stdout, re.M)}
    assert got == {i: (out_hash(c["y"]), True) for i, c in enumerate(cases)}
