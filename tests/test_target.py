"""On-target: the exported folder built into Cortex-M4 firmware (firmware_example/)
and run on QEMU's mps2-an386, against the host build and Keras.

Parity: QEMU's raw outputs equal the host build's bit for bit (int8) or within
1e-6 relative (float32: only libm's expf may differ by an ulp), and meet the
issue's tolerances against Keras (int8 top-1 agreement >= 99%, float32 1e-5
relative).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, require_tool

pytestmark = pytest.mark.target

FIRMWARE = ROOT / "firmware_example"
APT_ARM = "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi"
APT_QEMU = "apt-get install -y qemu-system-arm"


@pytest.fixture
def arm():
    require_tool("make", "apt-get install -y make")
    require_tool("arm-none-eabi-gcc", APT_ARM)


@pytest.fixture
def qemu(arm):
    require_tool("qemu-system-arm", APT_QEMU)


@pytest.fixture(scope="module")
def exported(digits_cnn, digits, tmp_path_factory):
    """The digits CNN exported once as int8 and as float32."""
    from exporter import export_model
    _, paths, _ = digits_cnn
    x_train = digits[0]
    base = tmp_path_factory.mktemp("target_models")
    dirs = {"int8": base / "int8", "float32": base / "float32"}
    export_model(paths["keras"], dirs["int8"], dtype="int8", calibration_data=x_train[:300])
    export_model(paths["keras"], dirs["float32"], dtype="float32")
    return dirs


def make(*args, timeout=300):
    return subprocess.run(["make", "-C", str(FIRMWARE), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def listing(folder: Path) -> dict:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*")}


def qemu_vs_host(q, h):
    """Raw QEMU vs host outputs: int8 identical; float32 bit patterns equal or
    within 1e-6 relative."""
    if q.dtype == np.int8:
        np.testing.assert_array_equal(q, h)
        return
    assert q.dtype == h.dtype == np.float32
    differ = q.view(np.uint32) != h.view(np.uint32)
    q64, h64 = q.astype(np.float64), h.astype(np.float64)
    rel = np.abs(q64 - h64) / np.maximum(np.maximum(np.abs(q64), np.abs(h64)), 1e-30)
    assert np.all(rel[differ] <= 1e-6), f"max relative difference {rel.max():.3g}"


def quantize(c, x):
    from exporter.verify import quantize_like_c
    return quantize_like_c(np.asarray(x).reshape(len(x), -1), c.input_scale, c.input_zero_point)


# ---------------------------------------------------------------- (a) build and run


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_make_builds_strict_and_runs(exported, dtype, tmp_path, qemu):
    from exporter import host
    from exporter.target import elf_sizes
    out = exported[dtype]
    before = listing(out)
    build = tmp_path / "fw"
    r = make("all", f"MODEL_DIR={out}", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-Werror" in r.stdout and "-mfloat-abi=hard" in r.stdout
    assert re.search(r"text\s+data\s+bss", r.stdout), r.stdout   # arm-none-eabi-size
    sizes = elf_sizes(build / "app.elf")
    assert sizes["text"] > 0 and sizes["bss"] > 0
    # No heap: nothing in the firmware can reach malloc.
    nm = subprocess.run(["arm-none-eabi-nm", str(build / "app.elf")], capture_output=True, text=True)
    assert "malloc" not in nm.stdout

    r = make("run", f"MODEL_DIR={out}", f"BUILD={build}", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    c = host.load(out, build_dir=tmp_path / "host")
    assert f"k2m-model digits_cnn {dtype} input 64 output 10 arena {c.arena_bytes} bytes" in r.stdout
    assert "k2m-done 1 synthetic input" in r.stdout
    # The synthetic input main.c builds, through the host build's _predict.
    x = (np.arange(64) * 37 % 101).astype(np.float32) / np.float32(101.0)
    want = c.predict(x[None])[0]
    got = np.array([int(h, 16) for h in re.findall(r"^k2m-predict \d+: \S+ \(0x([0-9a-f]{8})\)",
                                                    r.stdout, re.M)], np.uint32).view(np.float32)
    assert len(got) == 10
    qemu_vs_host(got[None], want[None])
    assert listing(out) == before, "the build wrote into the model folder"


def test_startup_fault_handler_exits_134(tmp_path, qemu):
    """The mps2-an386 startup: a CPU fault prints its name and exits 134."""
    board = FIRMWARE / "boards" / "mps2-an386"
    src = tmp_path / "fault.c"
    src.write_text('#include "board.h"\n'
                   'int main(void) { board_write("before\\n", 7); '
                   '__asm__ volatile("udf #0"); return 0; }\n')
    elf = tmp_path / "fault.elf"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
           "-mfloat-abi=hard", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
           f"-I{FIRMWARE}", "-nostartfiles", "--specs=nano.specs", "--specs=rdimon.specs",
           f"-T{board / 'mps2-an386.ld'}", str(src), str(board / "startup.c"), "-o", str(elf)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from exporter.target import run_elf
    code, text = run_elf(elf, timeout=30)
    assert code == 134 and "before" in text and "k2m-fault: HardFault" in text, (code, text)


# ---------------------------------------------------------------- (b) on-target parity


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_qemu_parity_digits(exported, digits_cnn, digits, dtype, tmp_path, qemu):
    from exporter import host, target
    model = digits_cnn[0]
    x_test = digits[1]
    out = exported[dtype]
    c = host.load(out, build_dir=tmp_path / "host")
    raw_in = quantize(c, x_test) if dtype == "int8" else x_test.reshape(len(x_test), -1)
    before = listing(out)
    got = target.run_on_qemu(out, raw_in, build_dir=tmp_path / "qemu")
    assert listing(out) == before, "run_on_qemu wrote into the model folder"
    assert (tmp_path / "qemu" / "vectors.h").is_file()
    assert got.shape == (len(x_test), 10) and got.dtype == raw_in.dtype
    want = c.invoke(raw_in)
    qemu_vs_host(got[:30], want[:30])   # the 30 digits ...
    qemu_vs_host(got, want)             # ... and the rest of the test split
    ref = model.predict(x_test, verbose=0)
    if dtype == "int8":
        from exporter.verify import dequantize_like_c
        y = dequantize_like_c(got, c.output_scale, c.output_zero_point)
        np.testing.assert_array_equal(y[:30], c.predict(x_test[:30]))
        agree = np.mean(y.argmax(1) == ref.argmax(1))
        assert agree >= 0.99, f"top-1 agreement {agree:.4f}"
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- (c) Conv1D model


@pytest.fixture(scope="module")
def conv1d_model(keras):
    """Conv1D same + causal (dilated) + strided, pooling, Dense, trained on a
    synthetic 3-channel sensor task (4 frequencies); committed weights
    (tests/trained_models.py)."""
    from trained_models import load, meets, score
    m, d = load("sensor_1d")
    assert meets("sensor_1d", score("sensor_1d", m, d))
    return m, d["x_cal"], d["x_test"]


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_qemu_parity_conv1d(conv1d_model, dtype, tmp_path, qemu):
    from exporter import export_model, host, target
    model, cal, x = conv1d_model
    out = tmp_path / "sensor"
    export_model(model, out, dtype=dtype, calibration_data=cal if dtype == "int8" else None)
    c = host.load(out, build_dir=tmp_path / "host")
    raw_in = quantize(c, x) if dtype == "int8" else x.reshape(len(x), -1)
    got = target.run_on_qemu(out, raw_in, build_dir=tmp_path / "qemu")
    qemu_vs_host(got, c.invoke(raw_in))
    ref = model.predict(x, verbose=0)
    if dtype == "int8":
        from exporter.verify import dequantize_like_c
        y = dequantize_like_c(got, c.output_scale, c.output_zero_point)
        steps = np.abs(y - ref) / c.output_scale
        assert np.mean(steps <= 2.0) >= 0.99, f"max {steps.max():.2f} steps"
        assert np.mean(y.argmax(1) == ref.argmax(1)) >= 0.99
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# ---------------------------------------------------------------- (d) a real board


def test_nucleo_f446re_builds(exported, tmp_path, arm):
    from exporter.target import elf_sizes
    build = tmp_path / "nucleo"
    r = make("all", f"MODEL_DIR={exported['int8']}", "BOARD=nucleo-f446re", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    elf = build / "app.elf"
    sizes = elf_sizes(elf)
    assert sizes["text"] + sizes["data"] <= 512 * 1024
    assert sizes["data"] + sizes["bss"] <= 128 * 1024
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True).stdout
    assert re.search(r"^08000000 \w vector_table$", nm, re.M), "vector table not at flash start"
    assert re.search(r"^2000\w{4} \w \w*arena\w*$", nm, re.M), "arena not in SRAM"
    r = make("run", f"MODEL_DIR={exported['int8']}", "BOARD=nucleo-f446re", f"BUILD={build}")
    assert r.returncode != 0 and "does not run under QEMU" in r.stderr


def test_makefile_errors_are_clear(tmp_path, arm):
    r = make("all")
    assert r.returncode != 0 and "MODEL_DIR is required" in r.stderr
    r = make("all", f"MODEL_DIR={tmp_path}")
    assert r.returncode != 0 and "holds no exported model" in r.stderr
    r = make("all", f"MODEL_DIR={tmp_path}", "BOARD=nope")
    assert r.returncode != 0 and "unknown BOARD" in r.stderr


# ---------------------------------------------------------------- (e) verify()


def test_verify_host_and_qemu(exported, digits_cnn, digits, tmp_path, qemu):
    from exporter.verify import verify
    _, paths, _ = digits_cnn
    x = digits[1][:40]
    np.save(tmp_path / "samples.npy", x)   # a file of samples, as the CLI passes them
    m = verify(exported["int8"], paths["keras"], tmp_path / "samples.npy", where="host",
               build_dir=tmp_path / "a")
    assert m["where"] == "host" and m["samples"] == 40 and m["dtype"] == "int8"
    assert m["cosine"] > 0.99 and m["top1_agreement"] >= 0.95
    assert 0 <= m["max_abs"] < 0.2 and 0 <= m["rmse"] <= m["max_abs"]
    assert m["within_2_steps"] >= 0.9 and m["max_steps"] == pytest.approx(m["max_abs"] * 256, rel=1e-3)
    q = verify(exported["int8"], paths["keras"], x, where="qemu", build_dir=tmp_path / "b")
    assert q["qemu_bit_exact"] and q["qemu_mismatches"] == 0
    for k in ("max_abs", "rmse", "cosine", "top1_agreement", "max_steps", "within_2_steps"):
        assert q[k] == pytest.approx(m[k]), k   # QEMU == host, so the same metrics
    f = verify(exported["float32"], digits_cnn[0], x, where="qemu", build_dir=tmp_path / "c")
    assert f["qemu_max_rel"] <= 1e-6 and f["max_abs"] < 1e-5 and f["top1_agreement"] == 1.0
    assert "max_steps" not in f


def test_quantize_like_c_matches_predict(exported, digits, tmp_path):
    """The numpy quantizer is k2m_quantize_f32_s8: invoke on it == predict."""
    from exporter import host
    from exporter.verify import dequantize_like_c, quantize_like_c
    c = host.load(exported["int8"], build_dir=tmp_path / "host")
    rng = np.random.default_rng(0)
    x = np.concatenate([digits[1][:20].reshape(20, -1),
                        rng.uniform(-0.5, 1.5, (20, 64)).astype(np.float32),
                        # exact halves of a step: round half away from zero
                        ((np.arange(64) - 32 + 0.5) * np.float32(c.input_scale))[None]
                        .astype(np.float32)])
    raw = quantize_like_c(x, c.input_scale, c.input_zero_point)
    y = dequantize_like_c(c.invoke(raw), c.output_scale, c.output_zero_point)
    np.testing.assert_array_equal(y.view(np.uint32), c.predict(x).view(np.uint32))


# ---------------------------------------------------------------- errors


def test_missing_tools_name_the_install_command(exported, monkeypatch):
    from exporter import target
    from exporter.errors import ExportError
    monkeypatch.setattr(target.shutil, "which", lambda tool: None)
    with pytest.raises(ExportError, match="apt-get install -y"):
        target.run_on_qemu(exported["int8"], np.zeros((1, 64), np.int8))


def test_missing_firmware_folder_is_a_clear_error(monkeypatch, tmp_path):
    from exporter import target
    from exporter.errors import ExportError
    monkeypatch.setattr(target, "__file__", str(tmp_path / "pkg" / "exporter" / "target.py"))
    monkeypatch.delenv("K2M_FIRMWARE_DIR", raising=False)
    with pytest.raises(ExportError, match="firmware_example/ .* was not found"):
        target.firmware_dir()


def test_run_on_qemu_refuses_bad_input(exported, tmp_path, qemu):
    from exporter import target
    from exporter.errors import ExportError
    with pytest.raises(ExportError, match="int8 model"):
        target.run_on_qemu(exported["int8"], np.zeros((2, 64), np.float32))
    with pytest.raises(ExportError, match="INPUT_SIZE"):
        target.run_on_qemu(exported["int8"], np.zeros((2, 63), np.int8))
    with pytest.raises(ExportError, match="inside the model folder"):
        target.run_on_qemu(exported["int8"], np.zeros((1, 64), np.int8),
                           build_dir=exported["int8"] / "build")
