"""Shared fixtures: tiny real models with committed trained weights
(tests/trained_models.py), tool checks, and an export → compile → run helper."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]


def require_tool(tool: str, install: str) -> str:
    """A missing tool fails in CI and skips, saying what to install, elsewhere."""
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not found: install it with `{install}`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def _seeded(request):
    """Every test draws the same weights and data whatever runs before it."""
    import zlib
    seed = zlib.crc32(request.node.nodeid.encode())
    if "keras" in request.fixturenames:
        k = request.getfixturevalue("keras")  # created first, so it cannot reseed later
        k.utils.set_random_seed(seed % 2**31)
    np.random.seed(seed % 2**32)


@pytest.fixture(scope="session")
def keras():
    import keras as k
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    return k


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8×8 digits, scaled to [0, 1], split 75/25."""
    from trained_models import digits_split
    return digits_split()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_cnn(keras, model_dir):
    """A small CNN for digits with its committed trained weights
    (tests/trained_models.py), saved as .keras and .h5."""
    from trained_models import load, meets, score
    m, data = load("digits_cnn")
    assert meets("digits_cnn", score("digits_cnn", m, data))
    paths = {"keras": model_dir / "digits_cnn.keras", "h5": model_dir / "digits_cnn.h5",
             "logits": model_dir / "digits_cnn_logits.keras"}
    m.save(paths["keras"])
    m.save(paths["h5"])
    logits = keras.Model(m.inputs, m.get_layer("logits").output)
    logits.save(paths["logits"])
    return m, paths, logits


@pytest.fixture(scope="session")
def digits_mlp(keras, model_dir):
    """A dense-only classifier on the 64 pixels (logits out, no softmax),
    with its committed trained weights."""
    from trained_models import load, meets, score
    m, data = load("digits_mlp")
    assert meets("digits_mlp", score("digits_mlp", m, data))
    path = model_dir / "digits_mlp.h5"
    m.save(path)
    return m, path


def export_and_load(model_or_path, out_dir, **kw):
    """Export, then build the folder on the host through cffi."""
    from exporter import export_model, host
    report = export_model(model_or_path, out_dir, **kw)
    return report, host.load(out_dir, build_dir=Path(str(out_dir) + "_build"))


def quant_step_errors(c_out, keras_out, scale):
    """|C - Keras| in units of the output quantization step."""
    return np.abs(c_out.astype(np.float64) - keras_out.astype(np.float64)) / scale


def compile_strict(out_dir: Path, compiler: str = "gcc", extra=()):
    """Compile every .c of an emitted folder to objects with -Werror."""
    sources = sorted(out_dir.rglob("*.c"))
    objdir = Path(str(out_dir) + f"_obj_{Path(compiler).name}")
    objdir.mkdir(exist_ok=True)
    for src in sources:
        cmd = [compiler, *STRICT, "-O2", *extra, "-I", str(out_dir), "-c", str(src),
               "-o", str(objdir / (src.stem + ".o"))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return objdir
