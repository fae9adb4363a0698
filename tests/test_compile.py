"""The emitted folder compiles warning-free as C99 on gcc and for the
Cortex-M4 with arm-none-eabi-gcc, and links with a user's app.c exactly as
DESIGN.md says: cc -std=c99 -O2 -I OUTDIR $(find OUTDIR -name '*.c') app.c -lm."""
import subprocess

import numpy as np
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


def sequence_model(keras, path):
    """Every sequence feature in one model: int32 Embedding input, a
    Bidirectional LSTM, a stateful GRU (PREFIX_reset_state and the static
    state block), TimeDistributed, SimpleRNN, softmax head."""
    L = keras.layers
    inp = keras.Input(batch_shape=(1, 12), dtype="int32")
    x = L.Embedding(30, 8)(inp)
    x = L.Bidirectional(L.LSTM(6, return_sequences=True))(x)
    x = L.GRU(5, reset_after=False, return_sequences=True, stateful=True)(x)
    x = L.TimeDistributed(L.Dense(4, activation="relu"))(x)
    x = L.SimpleRNN(3)(x)
    keras.Model(inp, L.Dense(10, activation="softmax")(x)).save(path)
    return np.random.default_rng(0).integers(0, 30, size=(20, 12)).astype(np.float32)


@pytest.fixture(scope="module", params=["cnn-int8", "cnn-float32", "seq-int8", "seq-float32"])
def emitted(request, keras, digits_cnn, digits, tmp_path_factory):
    from exporter import export_model
    kind, dtype = request.param.split("-")
    out = tmp_path_factory.mktemp("emit") / dtype
    if kind == "cnn":
        path, cal = digits_cnn[1]["h5"], digits[0][:50]
    else:
        path = out.parent / "seq.keras"
        cal = sequence_model(keras, path)
    export_model(path, out, dtype=dtype, calibration_data=cal, name="cnn")
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


@pytest.mark.parametrize("kind", ["cnn", "seq"])
def test_int8_links_without_libm(kind, keras, digits_cnn, digits, tmp_path):
    """DESIGN.md: no libm in the int8 path, so an int8 model links without
    -lm (the float kernels that need it live in their own files)."""
    from exporter import export_model
    if kind == "cnn":
        path, cal = digits_cnn[1]["h5"], digits[0][:50]
    else:
        path = tmp_path / "seq.keras"
        cal = sequence_model(keras, path)
    out = tmp_path / "int8"
    export_model(path, out, calibration_data=cal, name="cnn")
    app = tmp_path / "app.c"
    app.write_text(APP.format(p="cnn"))
    sources = sorted(str(p) for p in out.rglob("*.c"))
    r = subprocess.run(["cc", "-std=c99", "-O2", "-I", str(out), *sources, str(app),
                        "-o", str(tmp_path / "app")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not any(p.name.endswith("_f32.c") for p in out.rglob("*.c"))


def test_folder_has_no_main_and_no_heap(emitted):
    text = "\n".join(p.read_text() for p in emitted.rglob("*.[ch]"))
    for banned in ("main(", "malloc", "calloc", "free(", "printf", "#include <stdio.h>"):
        assert banned not in text, banned
