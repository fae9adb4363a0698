"""Several exported models in one program: a wake-word-like int8 CNN, a
float32 Conv1D sensor model and the same CNN in float32, built into one
host executable (gcc) and into one Cortex-M4 ELF (firmware_example/ with
several MODEL_DIR folders, run on QEMU).

Each folder carries its own k2m_runtime/; the files are the same bytes for
one export-model version, so the program compiles each runtime file once
(the Makefile and model.cmake do the same).  Every model's raw outputs in
the shared program equal its own host build's (exporter.host), bit for
bit (float32 on QEMU within 1e-6 of the output's magnitude: newlib's
expf against glibc's): sharing the runtime changes nothing.
"""
from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STRICT, require_tool

APT_ARM = "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi"

# name, trained model (tests/trained_models.py), dtype
MODELS = [("wake", "digits_cnn", "int8"), ("cmd", "sensor_1d", "float32"),
          ("wake_f32", "digits_cnn", "float32")]
N = 6

APP = r"""/* Runs every model on its vectors and prints the raw outputs: int8 as
 * integers, float as the 8 hex digits of their bits. */
#include <stdio.h>
#include <string.h>
#include <stdint.h>
%(includes)s
#include "vectors.h"

static void print_raw(const char *name, int v, const void *out, int n, int is_int8)
{
    int i;
    printf("%%s %%d:", name, v);
    for (i = 0; i < n; ++i) {
        if (is_int8) {
            printf(" %%d", ((const int8_t *)out)[i]);
        } else {
            uint32_t bits;
            memcpy(&bits, (const float *)out + i, 4);
            printf(" %%08lx", (unsigned long)bits);
        }
    }
    printf("\n");
}

int main(void)
{
    int v;
%(calls)s
    printf("k2m-done\n");
    return 0;
}
"""

CALL = r"""    for (v = 0; v < %(n)d; ++v) {
        static %(p)s_output_t out[%(p)s_OUTPUT_SIZE];
        if (%(p)s_invoke(%(p)s_vectors[v], out) != 0) {
            return 1;
        }
        print_raw("%(p)s", v, out, %(p)s_OUTPUT_SIZE, sizeof(out[0]) == 1);
    }
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The exported folders, their raw vectors, each one's own host build
    outputs, and the shared application's sources."""
    from exporter import export_model, host
    from exporter.verify import quantize_like_c
    from trained_models import load
    base = tmp_path_factory.mktemp("two_models")
    folders, expected, vectors = {}, {}, []
    for name, trained, dtype in MODELS:
        model, data = load(trained)
        out = base / name
        export_model(model, out, dtype=dtype, name=name,
                     calibration_data=data["x_cal"] if dtype == "int8" else None)
        c = host.load(out, build_dir=base / f"{name}_host")
        x = data["x_test"][:N].reshape(N, -1)
        raw = quantize_like_c(x, c.input_scale, c.input_zero_point) if dtype == "int8" else x
        folders[name], expected[name] = out, c.invoke(raw)
        ctype = "int8_t" if dtype == "int8" else "float"
        rows = ",\n".join("    {" + ", ".join(str(int(v)) if dtype == "int8" else
                                               float(v).hex() + "f" for v in row) + "}"
                          for row in raw)
        vectors.append(f"static const {ctype} {name}_vectors[{N}][{name}_INPUT_SIZE] = {{\n"
                       f"{rows}\n}};")
    app = base / "app"
    app.mkdir()
    (app / "vectors.h").write_text("#include <stdint.h>\n" + "\n".join(vectors) + "\n")
    (app / "two_models.c").write_text(APP % {
        "includes": "\n".join(f'#include "{n}.h"' for n, _, _ in MODELS),
        "calls": "".join(CALL % {"p": n, "n": N} for n, _, _ in MODELS)})
    return {"folders": folders, "expected": expected, "app": app, "base": base}


def shared_runtime(folders) -> list:
    """Each runtime file once; every copy must be the same bytes."""
    chosen = {}
    for folder in folders:
        for f in sorted((folder / "k2m_runtime").glob("*")):
            if f.name in chosen:
                assert filecmp.cmp(chosen[f.name], f, shallow=False), f"{f.name} differs"
            else:
                chosen[f.name] = f
    return [f for f in chosen.values() if f.suffix == ".c"]


def parse(text: str, expected: dict, float_rtol: float = 0.0) -> None:
    """Every model's printed raw outputs equal its own host build's (float
    outputs within float_rtol of the sample's largest output: on the M4,
    newlib's expf may differ from glibc's by an ulp)."""
    got = {}
    for line in text.splitlines():
        head, _, values = line.partition(":")
        if " " in head and head.split()[0] in expected:
            got.setdefault(head.split()[0], []).append(values.split())
    assert "k2m-done" in text, text[-2000:]
    for name, want in expected.items():
        rows = got.get(name)
        assert rows is not None and len(rows) == N, (name, text[-2000:])
        if want.dtype == np.int8:
            mine = np.array([[int(v) for v in r] for r in rows], np.int8)
            np.testing.assert_array_equal(mine, want, err_msg=name)
            continue
        mine = np.array([[int(v, 16) for v in r] for r in rows], np.uint32).view(np.float32)
        scale = np.abs(want).max(axis=1, keepdims=True)
        assert np.all(np.abs(mine - want) <= float_rtol * scale), (name, mine - want)


def test_runtime_files_are_the_same_bytes(program):
    runtime = shared_runtime(program["folders"].values())
    names = {f.name for f in runtime}
    assert {"k2m_conv.c", "k2m_activation.c", "k2m_activation_f32.c"} <= names


def test_one_host_program(program, tmp_path):
    folders = list(program["folders"].values())
    sources = [f / f"{n}.c" for n, f in program["folders"].items()] + shared_runtime(folders)
    exe = tmp_path / "two_models"
    cmd = ["gcc", *STRICT, "-O2", *(f"-I{f}" for f in folders), f"-I{program['app']}",
           *map(str, sources), str(program["app"] / "two_models.c"), "-lm", "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    parse(r.stdout, program["expected"])


@pytest.mark.target
def test_one_firmware_on_qemu(program, tmp_path):
    """firmware_example/Makefile with MODEL_DIR="wake cmd wake_f32" APP=...:
    one ELF, every runtime file compiled once, run on QEMU's Cortex-M4."""
    require_tool("make", "apt-get install -y make")
    require_tool("arm-none-eabi-gcc", APT_ARM)
    require_tool("qemu-system-arm", "apt-get install -y qemu-system-arm")
    dirs = " ".join(str(f) for f in program["folders"].values())
    build = tmp_path / "fw"
    r = subprocess.run(["make", "-C", str(ROOT / "firmware_example"), "run", f"MODEL_DIR={dirs}",
                        f"APP={program['app'] / 'two_models.c'}", f"BUILD={build}",
                        f"EXTRA_CFLAGS=-I{program['app']}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    objects = sorted(p.name for p in (build / "model" / "k2m_runtime").glob("*.o"))
    assert objects == sorted({p.stem + ".o" for p in shared_runtime(program["folders"].values())})
    parse(r.stdout + r.stderr, program["expected"], float_rtol=1e-6)


def test_makefile_refuses_copies_from_different_versions(program, tmp_path):
    require_tool("make", "apt-get install -y make")
    import shutil
    other = tmp_path / "other"
    shutil.copytree(program["folders"]["cmd"], other)
    with open(other / "k2m_runtime" / "k2m_quantize.c", "a") as f:
        f.write("/* another version */\n")
    dirs = f"{program['folders']['wake']} {other}"
    r = subprocess.run(["make", "-C", str(ROOT / "firmware_example"), "all",
                        f"MODEL_DIR={dirs}", f"APP={program['app'] / 'two_models.c'}",
                        f"BUILD={tmp_path / 'fw'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "k2m_quantize.c" in r.stderr and "versions" in r.stderr


def test_one_host_program_with_model_cmake(program, tmp_path):
    """firmware_example/model.cmake: k2m_add_model once per folder adds each
    runtime file once."""
    require_tool("cmake", "apt-get install -y cmake")
    lines = ["cmake_minimum_required(VERSION 3.13)", "project(two_models C)",
             "set(CMAKE_C_STANDARD 99)", f"include({ROOT / 'firmware_example' / 'model.cmake'})",
             f"add_executable(app {program['app'] / 'two_models.c'})",
             f"target_include_directories(app PRIVATE {program['app']})",
             "target_compile_options(app PRIVATE -Wall -Wextra -Werror -O2)"]
    lines += [f"k2m_add_model(app {f})" for f in program["folders"].values()]
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("\n".join(lines) + "\n")
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(src), "-B", str(build)], ["cmake", "--build", str(build)]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = subprocess.run([str(build / "app")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    parse(r.stdout, program["expected"])
