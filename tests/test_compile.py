"""The emitted folder compiles warning-free as C99 on gcc and for the
Cortex-M4 with arm-none-eabi-gcc, and links with a user's app.c exactly as
DESIGN.md says: cc -std=c99 -O2 -I OUTDIR $(find OUTDIR -name '*.c') app.c -lm."""
import subprocess

import pytest

from conftest import ARM_FLAGS, compile_strict, require_tool

APP = r"""
#include <stdio.h>
#include "{p}.h"
int main(void) {{
    static float in[{p}_INPUT_SIZE], out[{p}_OUTPUT_SIZE];
    int i;
    for (i = 0; i < {p}_INPUT_SIZE; ++i) in[i] = (float)(i % 7) / 7.0f;
    if ({p}_predict(in, out) != 0) return 1;
    for (i = 0; i < {p}_OUTPUT_SIZE; ++i) printf("%.6f\n", out[i]);
    return 0;
}}
"""


@pytest.fixture(scope="module", params=["int8", "float32"])
def emitted(request, digits_cnn, digits, tmp_path_factory):
    from exporter import export_model
    _, paths, _ = digits_cnn
    out = tmp_path_factory.mktemp("emit") / request.param
    export_model(paths["h5"], out, dtype=request.param, calibration_data=digits[0][:50],
                 name="cnn")
    return out


def test_host_gcc_strict(emitted):
    compile_strict(emitted, "gcc", extra=["-pedantic"])


@pytest.mark.parametrize("opt", ["-O0", "-Os", "-O2", "-O3"])
def test_arm_none_eabi_gcc_strict(emitted, opt):
    """Issue 2's command has no -O (so -O0, where inline asm has fewest
    registers); firmware uses -Os/-O2/-O3."""
    cc = require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    compile_strict(emitted, cc, extra=ARM_FLAGS + [opt])


def test_builds_with_the_documented_command(emitted, tmp_path):
    app = tmp_path / "app.c"
    app.write_text(APP.format(p="cnn"))
    sources = sorted(str(p) for p in emitted.rglob("*.c"))
    exe = tmp_path / "app"
    r = subprocess.run(["cc", "-std=c99", "-O2", "-I", str(emitted), *sources, str(app),
                        "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0
    probs = [float(v) for v in run.stdout.split()]
    assert len(probs) == 10 and abs(sum(probs) - 1.0) < 0.05


def test_folder_has_no_main_and_no_heap(emitted):
    text = "\n".join(p.read_text() for p in emitted.rglob("*.[ch]"))
    for banned in ("main(", "malloc", "calloc", "free(", "printf", "#include <stdio.h>"):
        assert banned not in text, banned
