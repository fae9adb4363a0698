"""The command line: exit codes, one-sentence errors, no tracebacks, no
half-written output, deterministic files, explanations."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_cli(*args, cwd=None):
    """The installed `export-model` entry point, run from a neutral folder."""
    exe = Path(sys.executable).parent / "export-model"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "exporter.cli"]
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                       cwd=cwd, env=ENV, timeout=300)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def one_sentence_error(r):
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("export-model: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_model(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    m = keras.Sequential([keras.Input((6, 4)), keras.layers.Conv1D(3, 2, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(2)])
    m.save(d / "small.keras")
    np.save(d / "cal.npy", np.random.default_rng(0).normal(size=(16, 6, 4)).astype(np.float32))
    return d


def test_export_from_any_folder(small_model, tmp_path):
    out = tmp_path / "out"
    r = run_cli(small_model / "small.keras", "--target", "cortex-m4", "--calibration",
                small_model / "cal.npy", "-o", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert {"small.h", "small.c", "small_weights.h", "k2m_runtime/k2m.h"} <= set(names)
    assert "total:" in r.stdout


def test_two_exports_are_byte_identical(small_model, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"o{k}"
        assert run_cli(small_model / "small.keras", "--calibration", small_model / "cal.npy",
                       "-o", out).returncode == 0
        outs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outs[0] == outs[1]


def test_int8_without_calibration_is_a_clear_error(small_model, tmp_path):
    r = run_cli(small_model / "small.keras", "-o", tmp_path / "out")
    assert r.returncode == 2
    assert "--calibration" in one_sentence_error(r)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04broken zip",
                                     b"\x89HDF\r\n\x1a\n truncated"])
def test_unreadable_file_exit_2(tmp_path, content):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(content)
    r = run_cli(bad, "--dtype", "float32", "-o", tmp_path / "out")
    assert r.returncode == 2
    assert "bad.h5" in one_sentence_error(r)
    assert not (tmp_path / "out").exists()


def test_missing_file_exit_2(tmp_path):
    r = run_cli(tmp_path / "nope.keras", "--dtype", "float32", "-o", tmp_path / "out")
    assert r.returncode == 2 and "no such file" in one_sentence_error(r)


def test_every_unsupported_layer_listed_exit_3(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((10, 4))
    x = L.Masking(name="mask")(inp)
    x = L.Lambda(lambda t: t * 2.0, name="doubler")(x)
    x = L.LayerNormalization(name="ln")(x)  # supported: not listed
    x = keras.ops.sort(x)  # an op node without a handler
    x = L.Flatten()(x)
    out = L.Dense(2)(x)
    keras.Model(inp, out).save(tmp_path / "bad.keras")
    r = run_cli(tmp_path / "bad.keras", "--dtype", "float32", "-o", tmp_path / "out")
    assert r.returncode == 3
    msg = one_sentence_error(r)
    assert "'ln'" not in msg
    for name in ("mask", "doubler", "'sort'", "Masking", "Lambda", "numpy.Sort"):
        assert name in msg
    assert "Dense" in msg  # the message says what is supported
    assert not (tmp_path / "out").exists()


def test_bad_calibration_shape_exit_2(small_model, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5, 5), np.float32))
    r = run_cli(small_model / "small.keras", "--calibration", tmp_path / "wrong.npy",
                "-o", tmp_path / "out")
    assert r.returncode == 2 and "(6, 4)" in one_sentence_error(r)
    assert not (tmp_path / "out").exists()


def test_existing_outdir_needs_force(small_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run_cli(small_model / "small.keras", "--dtype", "float32", "-o", out)
    assert r.returncode == 2 and "--force" in one_sentence_error(r)
    assert (out / "keep.txt").read_text() == "mine"
    r = run_cli(small_model / "small.keras", "--dtype", "float32", "-o", out, "--force")
    assert r.returncode == 0 and (out / "small.h").exists() and not (out / "keep.txt").exists()


def test_bad_name_exit_2(small_model, tmp_path):
    r = run_cli(small_model / "small.keras", "--dtype", "float32", "--name", "int", "-o", tmp_path / "o")
    assert r.returncode == 2 and "--name" in one_sentence_error(r)


def test_output_dimension_not_positive_exit_3(keras, tmp_path):
    """A model whose layer shrinks a dimension to <= 0 names the layer and shapes."""
    import json
    import zipfile
    m = keras.Sequential([keras.Input((8, 4)), keras.layers.Conv1D(2, 3, name="shrink")])
    m.save(tmp_path / "ok.keras")
    # Keras refuses to build such a model, so edit a saved file as a user's
    # hand-made or foreign-tool file would be: kernel 3 -> 9 on 8 steps.
    with zipfile.ZipFile(tmp_path / "ok.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    cfg["config"]["layers"][1]["config"]["kernel_size"] = [9]
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    r = run_cli(tmp_path / "bad.keras", "--dtype", "float32", "-o", tmp_path / "out")
    assert r.returncode in (2, 3), r.stderr
    one_sentence_error(r)
    assert not (tmp_path / "out").exists()


def test_explain_shows_layouts_and_warns_on_image_like_conv1d(keras, tmp_path):
    """The seed confusion: a 45×45 'image' fed to Conv1D(32, 5)."""
    L = keras.layers
    m = keras.Sequential([keras.Input((45, 45)), L.Conv1D(32, 5, name="conv1d_1"),
                          L.Flatten(), L.Dense(3)])
    m.save(tmp_path / "seed.keras")
    r = run_cli(tmp_path / "seed.keras", "--explain")
    assert r.returncode == 0, r.stderr
    assert "conv1d_1 Conv1D" in r.stdout
    assert "kernel (5, 45, 32) = 5·45·32 = 7200" in r.stdout
    assert "→ C (32, 1, 5, 45)" in r.stdout
    assert "looks like a 45×45 image" in r.stderr


def test_dense_on_nd_warns(keras, tmp_path):
    m = keras.Sequential([keras.Input((10, 3)), keras.layers.Dense(4)])
    m.save(tmp_path / "nd.keras")
    r = run_cli(tmp_path / "nd.keras", "--explain")
    assert r.returncode == 0 and "each of the 10 positions" in r.stderr


def test_verify_host_prints_metrics(small_model, tmp_path):
    r = run_cli(small_model / "small.keras", "--calibration", small_model / "cal.npy",
                "-o", tmp_path / "out", "--verify", "host", "--json", tmp_path / "r.json",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "C/host" in r.stdout and "cosine" in r.stdout
    assert "per layer" in r.stdout and "conv1d" in r.stdout
    import json
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verify"]["top1_agreement"] >= 0.9 and data["verify"]["max_steps"] <= 3
    assert [r["op"] for r in data["verify"]["layers"]] == ["conv2d", "dense"]


def test_verify_qemu_from_the_installed_package(small_model, tmp_path):
    """Runs the installed entry point from a neutral folder, so the firmware
    it builds is the one shipped inside the package."""
    from conftest import require_tool
    require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    require_tool("qemu-system-arm", "apt-get install qemu-system-arm")
    r = run_cli(small_model / "small.keras", "--calibration", small_model / "cal.npy",
                "-o", tmp_path / "out", "--verify", "qemu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "QEMU Cortex-M4 outputs are bit-exact with the host build" in r.stdout


def test_vgg16_backbone_is_over_budget_exit_4(keras, tmp_path):
    """14.7 M parameters cannot fit 1024 KB of flash: refused with the numbers
    and the largest layers, before any calibration work."""
    m = keras.applications.VGG16(weights=None, include_top=False, input_shape=(96, 96, 3))
    m.save(tmp_path / "vgg16.keras")
    np.save(tmp_path / "cal.npy", np.zeros((2, 96, 96, 3), np.float32))
    r = run_cli(tmp_path / "vgg16.keras", "--target", "cortex-m4", "--calibration",
                tmp_path / "cal.npy", "-o", tmp_path / "out")
    assert r.returncode == 4
    msg = one_sentence_error(r)
    assert "1024 KB" in msg and "block5_conv" in msg
    assert not (tmp_path / "out").exists()


def test_ram_budget_exit_4(small_model, tmp_path):
    r = run_cli(small_model / "small.keras", "--calibration", small_model / "cal.npy",
                "--ram-kb", "0", "-o", tmp_path / "out")
    assert r.returncode == 4 and "RAM" in one_sentence_error(r)


def test_explain_shows_recurrent_layouts(keras, tmp_path):
    """Both LSTM kernels, Keras's (in, 4·units) and (units, 4·units), and the
    transposed rows the C reads; no per-position warning for the Dense
    after return_sequences."""
    L = keras.layers
    m = keras.Sequential([keras.Input((20, 13)), L.LSTM(32, return_sequences=True, name="lstm_a"),
                          L.Dense(4)])
    m.save(tmp_path / "lstm.keras")
    r = run_cli(tmp_path / "lstm.keras", "--explain")
    assert r.returncode == 0, r.stderr
    assert "lstm_a LSTM" in r.stdout
    assert "kernel (13, 128) = 13·128 = 1664" in r.stdout and "→ C (128, 13)" in r.stdout
    assert "recurrent (32, 128)" in r.stdout and "→ C (128, 32)" in r.stdout
    assert "positions" not in r.stderr
