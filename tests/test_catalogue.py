"""A catalogue of bad inputs, each run through the installed `export-model`.

Every case asserts what DESIGN.md ("Exit codes") promises: the documented
exit code (2 bad usage or unreadable input, 3 unsupported model, 4 over
budget), exactly one `export-model: error:` line naming the layer, file or
argument concerned, no Python traceback, and no OUTDIR (nor a temporary
`.OUTDIR.*` sibling) left behind.

The Keras models are built once per module.  Most cases fail before Keras is
imported and take well under a second; those that load a model with
TensorFlow take several seconds each, so the module fixture starts every
selected case's subprocess at once on a small thread pool and each test only
waits for its own result.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import hostile_files as H
from test_cli import ENV, one_sentence_error

EXE = Path(sys.executable).parent / "export-model"
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "exporter.cli"]


@dataclass
class Spec:
    """What a case runs and expects; `out` must not exist afterwards unless
    `keep` maps the files it held before the run (checked untouched)."""
    args: list
    code: int
    names: tuple
    out: Path | None = None
    keep: dict | None = None
    env: dict = field(default_factory=dict)
    check: Callable | None = None  # extra assertions on (result, case folder)
    cwd: Path | None = None        # where it runs (default: the case folder)
    peak_mb: int | None = None     # the run's peak resident memory must stay below


CASES: dict = {}


def case(case_id: str, only_if: bool = True):
    def register(fn):
        assert case_id not in CASES, case_id
        if only_if:
            CASES[case_id] = fn
        return fn
    return register


# ---- the models, built once ---------------------------------------------------

def rewrite_zip(src: Path, dst: Path, edit_config=None, replace=None, drop=()):
    """Copy a .keras zip, editing its config.json (a function of the parsed
    config) or replacing members' bytes."""
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    if edit_config is not None:
        cfg = json.loads(files["config.json"])
        edit_config(cfg)
        files["config.json"] = json.dumps(cfg).encode()
    for name, data in (replace or {}).items():
        files[name] = data
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in files.items():
            if n not in drop:
                z.writestr(n, b)
    return dst


def member_offset(path: Path, member: str) -> tuple:
    """(offset, size) of a stored zip member's data in the file."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
        assert info.compress_type == zipfile.ZIP_STORED
    raw = path.read_bytes()
    h = info.header_offset
    name_len = int.from_bytes(raw[h + 26:h + 28], "little")
    extra_len = int.from_bytes(raw[h + 28:h + 30], "little")
    return h + 30 + name_len + extra_len, info.compress_size


def flip(data: bytes, positions) -> bytes:
    b = bytearray(data)
    for p in positions:
        b[p] ^= 0xFF
    return bytes(b)


def set_layer(cfg: dict, index: int, **values):
    """Change layer `index` of a saved Sequential's config (0 is the InputLayer)."""
    cfg["config"]["layers"][index]["config"].update(values)


def set_input_shape(cfg: dict, shape: list):
    """The input shape of a saved Sequential, everywhere Keras stores it."""
    batch = [None] + list(shape)
    cfg["config"]["layers"][0]["config"]["batch_shape"] = batch
    cfg["config"]["build_input_shape"] = batch
    if isinstance(cfg.get("build_config"), dict):
        cfg["build_config"]["input_shape"] = batch
    for layer in cfg["config"]["layers"][1:]:
        layer.pop("build_config", None)


@pytest.fixture(scope="module")
def models(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogue_models")
    L = keras.layers

    small = keras.Sequential([keras.Input((6, 4)), L.Conv1D(3, 2, activation="relu", name="conv"),
                              L.Flatten(name="flat"), L.Dense(2, name="head")])
    small.save(d / "small.keras")
    small.save(d / "small.h5")
    small.save_weights(d / "small.weights.h5")
    shutil.copy(d / "small.weights.h5", d / "weights_only.h5")
    rng = np.random.default_rng(0)
    np.save(d / "cal.npy", rng.normal(size=(8, 6, 4)).astype(np.float32))

    for what, value in (("nan", np.nan), ("inf", np.inf)):
        m = keras.models.clone_model(small)
        m.set_weights(small.get_weights())
        k, b = m.get_layer("head").get_weights()
        k[3, 1] = value
        m.get_layer("head").set_weights([k, b])
        m.save(d / f"{what}_weights.keras")

    # Over budget in float32: ~460 KB of weights, a ~30 KB arena.
    big = keras.Sequential([keras.Input((32, 32, 1)), L.Conv2D(8, 3, name="wide_conv"),
                            L.Flatten(), L.Dense(16, name="big_dense")])
    big.save(d / "big.keras")

    # Unsupported layers: refused from the config, before Keras builds anything.
    inp = keras.Input((10, 4))
    x = L.Lambda(lambda t: t * 2.0, name="times_two")(inp)
    keras.Model(inp, L.Dense(2)(L.Flatten()(x))).save(d / "lambda.keras")

    with warnings.catch_warnings():  # Keras: the Lambda drops Masking's mask
        warnings.simplefilter("ignore", UserWarning)
        inp = keras.Input((10, 4))
        x = L.Masking(name="my_mask")(inp)
        x = L.LSTM(8, return_sequences=True, name="my_lstm")(x)
        x = L.Bidirectional(L.GRU(4, return_sequences=True, name="inner_gru"), name="my_bidi")(x)
        x = L.AdditiveAttention(name="my_attn")([x, x])
        x = L.Lambda(lambda t: t + 1.0, name="plus_one")(x)
        x = L.Flatten()(x)
        keras.Model(inp, L.Dense(2, name="out")(x)).save(d / "many.keras")

    inner = keras.Sequential([keras.Input((8,)), L.Lambda(lambda t: -t, name="nested_neg")],
                             name="inner")
    inp = keras.Input((8,))
    keras.Model(inp, L.Dense(2)(inner(inp))).save(d / "nested.keras")

    inp = keras.Input((5,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, name="emb")(inp)
    x = L.SimpleRNN(4, name="rnn")(x)
    keras.Model(inp, L.Dense(2)(x)).save(d / "embedding_masked.keras")
    inp = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(20, 4, name="emb")(inp)
    keras.Model(inp, L.Dense(2)(L.SimpleRNN(4)(x))).save(d / "embedding.keras")

    # Recurrent layers the C cannot reproduce, or not in int8.
    inp = keras.Input((10, 4))
    out, _, _ = L.LSTM(4, return_state=True, name="with_states")(inp)
    keras.Model(inp, L.Dense(2)(out)).save(d / "return_state.keras")
    inp = keras.Input((10, 4))
    halves = L.Bidirectional(L.GRU(4), merge_mode=None, name="bidi_none")(inp)
    keras.Model(inp, halves).save(d / "bidi_none.keras")
    keras.Sequential([keras.Input((10, 4)), L.LSTM(600, name="wide_lstm")]).save(d / "wide_lstm.keras")
    np.save(d / "cal_seq.npy", rng.normal(size=(4, 10, 4)).astype(np.float32))

    # Custom layers, from a module of "user code" that writes a marker if run
    # (tests/hostile_files.py).  Every export-model started with it on its
    # path imports it at start-up (so Keras *could* find the registered
    # classes and run them): only the exporter's checks stop it.
    H.user_lib(d)
    sys.path.insert(0, str(d / "userlib"))
    try:
        import evil_layers
    finally:
        sys.path.remove(str(d / "userlib"))
    inp = keras.Input((6,))
    keras.Model(inp, L.Dense(2)(evil_layers.Doubler(name="doubler")(inp))).save(d / "custom.keras")
    inp = keras.Input((6,))
    keras.Model(inp, evil_layers.Dense(2, name="fake_dense")(inp)).save(d / "fake_dense.keras")

    # Shapes: an unknown and a zero-size non-batch dimension.
    keras.Sequential([keras.Input((None, 4)), L.Conv1D(2, 2, name="conv"),
                      L.GlobalAveragePooling1D(), L.Dense(2)]).save(d / "none_dim.keras")
    keras.Sequential([keras.Input((0, 4)), L.Flatten(), L.Dense(2)]).save(d / "zero_dim.keras")

    keras.Sequential([keras.Input((8, 4)), L.Conv1D(2, 3, name="shrink")]).save(d / "conv1d.keras")
    keras.Sequential([keras.Input((1, 1, 1, 8)), L.Conv3D(1, 1, name="seed3d")]).save(d / "conv3d.keras")
    keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense_units")]).save(d / "dense.keras")
    keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense_units")]).save(d / "dense.h5")

    # A functional model (Keras 3 inbound nodes) and a nested Sequential.
    inp = keras.Input((6,), name="x")
    keras.Model(inp, L.Dense(2, name="head")(L.Dense(4, name="body")(inp))).save(d / "func.keras")
    inner = keras.Sequential([keras.Input((6,)), L.Dense(3, name="inner_dense")], name="inner")
    inp = keras.Input((6,))
    keras.Model(inp, L.Dense(2, name="outer")(inner(inp))).save(d / "nested_ok.keras")

    # BatchNormalization folded into a Dense, and alone (an affine).
    bn = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense"),
                           L.BatchNormalization(name="bn")])
    bn.save(d / "bn.keras")
    keras.Sequential([keras.Input((4,)), L.BatchNormalization(name="bn")]).save(d / "bn_alone.keras")
    for what, weights in (("negvar", lambda k, g, b, mu, v: (k, g, b, mu, v - 2.0)),
                          ("gamma", lambda k, g, b, mu, v: (k, g * 0 + 3e38, b, mu, v * 0)),
                          ("fold", lambda k, g, b, mu, v: (k * 0 + 1e35, g * 0 + 1e5, b, mu,
                                                           v * 0 + 1.0 - 1e-3))):
        m2 = keras.models.clone_model(bn)
        k, bias = bn.get_layer("dense").get_weights()
        g, b, mu, v = bn.get_layer("bn").get_weights()
        k, g, b, mu, v = weights(k, g, b, mu, v)
        m2.get_layer("dense").set_weights([k, bias])
        m2.get_layer("bn").set_weights([g, b, mu, v])
        m2.save(d / f"bn_{what}.keras")
    np.save(d / "cal4.npy", rng.normal(size=(8, 4)).astype(np.float32))

    keras.Sequential([keras.Input((6,)), L.Dense(4, name="d"), L.LeakyReLU(name="leaky"),
                      L.ELU(name="elu"), L.ReLU(max_value=6.0, name="relu_cap")]
                     ).save(d / "acts.keras")
    np.save(d / "cal6.npy", rng.normal(size=(8, 6)).astype(np.float32))
    return d


# ---- files that are not (whole) models ----------------------------------------

def _truncated(kind: str, fraction: float):
    def build(m, cwd):
        src = m / f"small.{kind}"
        data = src.read_bytes()
        dst = cwd / f"cut.{kind}"
        dst.write_bytes(data[:max(1, int(len(data) * fraction))])
        return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("cut." + kind,))
    return build


for _kind in ("keras", "h5"):
    for _fraction in (0.01, 0.3, 0.6, 0.97):
        case(f"truncated-{_kind}-{int(_fraction * 100)}pct")(_truncated(_kind, _fraction))


@case("keras-config-bytes-flipped")
def _(m, cwd):
    src = m / "small.keras"
    off, size = member_offset(src, "config.json")
    dst = cwd / "flipped.keras"
    dst.write_bytes(flip(src.read_bytes(), [off + 10, off + size // 2, off + size - 3]))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("flipped.keras",))


@case("keras-weights-bytes-flipped")
def _(m, cwd):
    src = m / "small.keras"
    off, size = member_offset(src, "model.weights.h5")
    dst = cwd / "flipped.keras"
    dst.write_bytes(flip(src.read_bytes(), range(off + size // 2, off + size // 2 + 16)))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("flipped.keras",))


@case("keras-config-not-json")
def _(m, cwd):
    dst = rewrite_zip(m / "small.keras", cwd / "notjson.keras",
                      replace={"config.json": b"{'class_name': Sequential, oops"})
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("notjson.keras",))


@case("keras-config-json-not-an-object")
def _(m, cwd):
    dst = rewrite_zip(m / "small.keras", cwd / "list.keras", replace={"config.json": b"[1, 2, 3]"})
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("list.keras",))


@case("keras-config-layers-not-objects")
def _(m, cwd):
    def edit(cfg):
        cfg["config"]["layers"] = ["conv", 3, None]
    dst = rewrite_zip(m / "small.keras", cwd / "garbled.keras", edit_config=edit)
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("garbled.keras",))


@case("keras-without-config")
def _(m, cwd):
    dst = rewrite_zip(m / "small.keras", cwd / "noconfig.keras", drop=("config.json",))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("noconfig.keras",))


@case("keras-without-weights")
def _(m, cwd):
    dst = rewrite_zip(m / "small.keras", cwd / "noweights.keras", drop=("model.weights.h5",))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("noweights.keras",))


@case("zip-that-is-not-a-model")
def _(m, cwd):
    dst = cwd / "archive.keras"
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("readme.txt", "hello")
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("archive.keras",))


@case("h5-weights-bytes-flipped-to-nan")
def _(m, cwd):
    import h5py
    src = m / "small.h5"
    with h5py.File(src, "r") as f:
        found = []
        f.visititems(lambda n, o: found.append(o.id.get_offset()) if (
            isinstance(o, h5py.Dataset) and n.endswith("head/kernel")) else None)
    assert len(found) == 1 and found[0] is not None
    dst = cwd / "flipped.h5"
    data = bytearray(src.read_bytes())
    data[found[0]:found[0] + 8] = b"\xff" * 8  # two float32 NaNs in the kernel
    dst.write_bytes(bytes(data))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 3, ("head", "NaN"))


@case("h5-header-bytes-flipped")
def _(m, cwd):
    src = m / "small.h5"
    dst = cwd / "flipped.h5"
    dst.write_bytes(flip(src.read_bytes(), range(0, 8)))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("flipped.h5",))


@case("h5-weights-only")
def _(m, cwd):
    return Spec([m / "weights_only.h5", "--dtype", "float32", "-o", cwd / "out"], 2,
                ("weights_only.h5", "model.save"))


@case("h5-without-keras-content")
def _(m, cwd):
    import h5py
    dst = cwd / "data.h5"
    with h5py.File(dst, "w") as f:
        f["x"] = np.arange(4)
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("data.h5",))


@case("h5-model-config-not-json")
def _(m, cwd):
    import h5py
    dst = cwd / "badcfg.h5"
    shutil.copy(m / "small.h5", dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["model_config"] = "{not json"
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("badcfg.h5",))


@case("h5-model-config-a-number")
def _(m, cwd):
    import h5py
    dst = cwd / "numcfg.h5"
    shutil.copy(m / "small.h5", dst)
    with h5py.File(dst, "r+") as f:
        f.attrs["model_config"] = "42"
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("numcfg.h5",))


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
       b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")


def _not_a_model(filename: str, content: bytes):
    def build(m, cwd):
        dst = cwd / filename
        dst.write_bytes(content)
        return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, (filename,))
    return build


case("png-as-model")(_not_a_model("photo.png", PNG))
case("png-named-keras")(_not_a_model("photo.keras", PNG))
case("text-file-as-model")(_not_a_model("notes.txt", b"this is not a model\n"))
case("empty-file-as-model")(_not_a_model("empty.keras", b""))


@case("directory-as-model")
def _(m, cwd):
    d = cwd / "model_dir.keras"
    d.mkdir()
    return Spec([d, "--dtype", "float32", "-o", cwd / "out"], 2, ("model_dir.keras", "directory"))


@case("missing-model-file")
def _(m, cwd):
    return Spec([cwd / "nope.keras", "--dtype", "float32", "-o", cwd / "out"], 2,
                ("nope.keras", "no such file"))


# ---- unsupported models (exit 3) ------------------------------------------------

@case("lambda-layer")
def _(m, cwd):
    return Spec([m / "lambda.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("times_two", "Lambda"))


@case("many-unsupported-layers-in-one-message")
def _(m, cwd):
    return Spec([m / "many.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("my_mask", "Masking", "my_attn", "AdditiveAttention", "plus_one", "Lambda"))


@case("lambda-in-nested-model")
def _(m, cwd):
    return Spec([m / "nested.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("nested_neg", "Lambda"))


@case("embedding-mask-zero")
def _(m, cwd):
    return Spec([m / "embedding_masked.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("emb", "Embedding", "mask_zero"))


@case("lstm-return-state")
def _(m, cwd):
    return Spec([m / "return_state.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("with_states", "LSTM", "return_state"))


@case("bidirectional-merge-mode-none")
def _(m, cwd):
    return Spec([m / "bidi_none.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("bidi_none", "Bidirectional", "merge_mode"))


@case("int8-lstm-over-512-units")
def _(m, cwd):
    return Spec([m / "wide_lstm.keras", "--calibration", m / "cal_seq.npy", "--flash-kb", "4096",
                 "-o", cwd / "out"],
                3, ("wide_lstm", "LSTM", "512", "float32"))


def user_env(m: Path, marker: Path) -> dict:
    """The user's module on the path (before the exporter's own path) and
    the marker its code writes if it runs."""
    path = os.pathsep.join(p for p in (str(m / "userlib"), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "K2M_MARKER": str(marker)}


def _custom(model_file: str, names: tuple):
    def build(m, cwd):
        marker = cwd / "user_code_ran.txt"

        def never_ran(r, cwd):
            assert not marker.exists(), marker.read_text()
        return Spec([m / model_file, "--dtype", "float32", "-o", cwd / "out"], 3, names,
                    env=user_env(m, marker), check=never_ran)
    return build


case("custom-registered-layer-not-run")(_custom("custom.keras", ("doubler", "Doubler", "custom")))
case("custom-layer-named-like-a-builtin-not-run")(
    _custom("fake_dense.keras", ("fake_dense", "Dense", "custom")))


@case("custom-activation-module-in-config")
def _(m, cwd):
    """A built-in layer whose activation is a user's registered object."""
    def edit(cfg):
        set_layer(cfg, 3, activation={"module": "evil_layers", "class_name": "Doubler",
                                      "config": {}, "registered_name": "evil>Doubler"})
    dst = rewrite_zip(m / "small.keras", cwd / "act.keras", edit_config=edit)
    marker = cwd / "user_code_ran.txt"

    def never_ran(r, cwd):
        assert not marker.exists(), marker.read_text()
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 3, ("head",),
                env=user_env(m, marker), check=never_ran)


def _hostile(filename: str, make, names: tuple, code: int = 3, fmt_args=("--dtype", "float32")):
    """A file made by make(m, dst) from the catalogue's models, run with the
    user's registered objects importable; their code must never run."""
    def build(m, cwd):
        marker = cwd / "user_code_ran.txt"

        def never_ran(r, cwd):
            assert not marker.exists(), marker.read_text()
        dst = make(m, cwd / filename)
        return Spec([dst, *fmt_args, "-o", cwd / "out"], code, names,
                    env=user_env(m, marker), check=never_ran)
    return build


def _edit_keras(src: str, edit):
    return lambda m, dst: rewrite_zip(m / src, dst, edit_config=edit)


def _edit_h5(src: str, edit):
    return lambda m, dst: H.edit_h5_config(m / src, dst, edit)


EVIL_INIT = {"module": "keras.initializers", "class_name": "evil>EvilInit", "config": {}}


def _initializer(cfg):
    set_layer(cfg, 3, kernel_initializer=dict(EVIL_INIT))


def _polyglot(m, dst):
    """An .h5 whose model is the user's layer, with a harmless .keras zip
    appended: a zip reader sees one model, HDF5 the other."""
    hostile = H.edit_h5_config(m / "small.h5", dst.with_suffix(".base.h5"),
                               lambda c: H.h5_layers(c)[3].update(class_name="evil>Dense"))
    dst.write_bytes(hostile.read_bytes() + (m / "small.keras").read_bytes())
    return dst


# The three examples ...
case("user-code-registered-name-on-builtin-layer")(_hostile(
    "reg.keras", _edit_keras("small.keras", lambda c: c["config"]["layers"][3].update(
        registered_name="evil>Dense")), ("head", "evil>Dense")))
case("user-code-initializer-package-name-keras")(_hostile(
    "init.keras", _edit_keras("small.keras", _initializer), ("head", "kernel_initializer",
                                                             "evil>EvilInit")))
case("user-code-initializer-package-name-h5")(_hostile(
    "init.h5", _edit_h5("small.h5", lambda c: H.h5_layers(c)[3]["config"].update(
        kernel_initializer=dict(EVIL_INIT))), ("head", "kernel_initializer", "evil>EvilInit")))
case("user-code-polyglot-h5-with-zip")(_hostile("poly.h5", _polyglot, ("poly.h5", "both"), 2))
# ... and more of the same class.
case("user-code-polyglot-named-keras")(_hostile("poly.keras", _polyglot, ("poly.keras", "both"), 2))
case("user-code-activation-function-object")(_hostile(
    "fn.keras", _edit_keras("small.keras", lambda c: set_layer(c, 3, activation={
        "module": "builtins", "class_name": "function", "config": "evil>evil_act",
        "registered_name": "function"})), ("head", "activation")))
case("user-code-activation-string")(_hostile(
    "str.keras", _edit_keras("small.keras", lambda c: set_layer(c, 3, activation="evil>evil_act")),
    ("head", "activation", "evil>evil_act")))
case("user-code-function-found-by-suffix")(_hostile(  # Keras <= 3.6 names: 'evil_act' finds 'evil>evil_act'
    "suffix.keras", _edit_keras("small.keras", lambda c: set_layer(c, 3, activation={
        "module": "builtins", "class_name": "function", "config": "evil_act",
        "registered_name": "function"})), ("head", "activation")))
case("user-code-regularizer-registered-name")(_hostile(
    "reg2.keras", _edit_keras("small.keras", lambda c: set_layer(c, 1, kernel_regularizer={
        "module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.01},
        "registered_name": "evil>EvilReg"})), ("conv", "kernel_regularizer", "evil>EvilReg")))
case("user-code-constraint-foreign-module")(_hostile(
    "constraint.h5", _edit_h5("small.h5", lambda c: H.h5_layers(c)[1]["config"].update(
        kernel_constraint={"module": "evil_layers", "class_name": "EvilConstraint",
                           "config": {}})), ("conv", "kernel_constraint", "EvilConstraint")))
case("user-code-dtype-policy")(_hostile(
    "policy.keras", _edit_keras("small.keras", lambda c: set_layer(c, 3, dtype={
        "module": "keras", "class_name": "evil>EvilPolicy", "config": {"name": "float32"},
        "registered_name": None})), ("head", "dtype", "evil>EvilPolicy")))
case("user-code-in-nested-model")(_hostile(
    "nested.keras", _edit_keras("nested_ok.keras", lambda c: next(
        e for e in c["config"]["layers"] if e["class_name"] == "Sequential"
    )["config"]["layers"][1].update(registered_name="evil>Dense")), ("inner_dense", "evil>Dense")))
case("user-code-in-a-node-argument")(_hostile(
    "kwargs.keras", _edit_keras("func.keras", lambda c: next(
        e for e in c["config"]["layers"] if e["name"] == "head"
    )["inbound_nodes"][0]["kwargs"].update(training="evil>evil_act")), ("head", "evil>evil_act")))
case("user-code-lambda-as-initializer")(_hostile(
    "lambda_init.keras", _edit_keras("small.keras", lambda c: set_layer(c, 3, kernel_initializer={
        "class_name": "__lambda__", "config": {"value": "ZXZpbA==", "defaults": None,
                                               "closure": None}})), ("head", "lambda")))


# ---- --force and OUTDIR ---------------------------------------------------------

def _user_folder(folder: Path, files=None) -> dict:
    """A folder of the user's files (the model and calibration among them)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {"notes.txt": b"my notes", "data/run1.csv": b"1,2,3\n"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def _model_folder(m, cwd):
    """cwd/proj holds the model, its calibration and notes: the user's folder."""
    proj = cwd / "proj"
    _user_folder(proj)
    shutil.copy(m / "small.keras", proj / "small.keras")
    shutil.copy(m / "cal.npy", proj / "cal.npy")
    return proj


@case("force-outdir-dot-in-the-models-folder")
def _(m, cwd):
    proj = _model_folder(m, cwd)
    return Spec(["small.keras", "--calibration", "cal.npy", "-o", ".", "--force"], 2,
                ("current folder",), out=proj, keep=_snapshot(proj), cwd=proj)


@case("force-outdir-pwd-absolute")
def _(m, cwd):
    proj = _model_folder(m, cwd)
    return Spec([proj / "small.keras", "--calibration", proj / "cal.npy", "-o", proj, "--force"],
                2, ("current folder",), out=proj, keep=_snapshot(proj), cwd=proj)


@case("force-outdir-the-models-folder")
def _(m, cwd):
    proj = _model_folder(m, cwd)
    return Spec([proj / "small.keras", "--dtype", "float32", "-o", proj, "--force"], 2,
                ("small.keras", "input"), out=proj, keep=_snapshot(proj))


@case("force-outdir-holds-the-calibration-file")
def _(m, cwd):
    proj = _model_folder(m, cwd)
    return Spec([m / "small.keras", "--calibration", proj / "cal.npy", "-o", proj, "--force"],
                2, ("cal.npy", "input"), out=proj, keep=_snapshot(proj))


@case("force-outdir-ancestor-of-the-current-folder")
def _(m, cwd):
    proj = cwd / "proj"
    files = _user_folder(proj)
    (proj / "sub").mkdir()
    return Spec([m / "small.keras", "--dtype", "float32", "-o", "..", "--force"], 2,
                ("ancestor",), out=proj, keep=files, cwd=proj / "sub")


@case("force-outdir-home-folder")
def _(m, cwd):
    home = cwd / "home"
    files = _user_folder(home)
    return Spec([m / "small.keras", "--dtype", "float32", "-o", home, "--force"], 2,
                ("home",), out=home, keep=files, env={"HOME": str(home)})


@case("force-outdir-users-folder")
def _(m, cwd):
    out = cwd / "out"
    files = _user_folder(out)
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out, "--force"], 2,
                ("no earlier k2m export",), out=out, keep=files)


def _earlier_export(m, out: Path, change) -> dict:
    from exporter import export_model
    export_model(m / "small.keras", out, dtype="float32")
    change(out)
    return _snapshot(out)


for _label, _file, _why in (("with-the-users-file-added", "main.c", "did not write"),
                            ("the-user-edited", "small.c", "changed")):
    @case(f"force-over-an-export-{_label}")
    def _(m, cwd, file=_file, why=_why):
        out = cwd / "out"
        keep = _earlier_export(m, out, lambda o: (o / file).write_text("/* mine now */\n"))
        return Spec([m / "small.keras", "--dtype", "float32", "-o", out, "--force"], 2,
                    (file, why), out=out, keep=keep)


@case("outdir-symlink-to-a-folder")
def _(m, cwd):
    real = cwd / "real"
    files = _user_folder(real)
    (cwd / "out").symlink_to(real)

    def untouched(r, cwd):
        assert (cwd / "out").is_symlink() and _snapshot(real) == files
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--force"], 2,
                ("symbolic link",), out=cwd / "out", keep=files, check=untouched)


@case("outdir-dangling-symlink")
def _(m, cwd):
    (cwd / "out").symlink_to(cwd / "elsewhere")

    def nothing_created(r, cwd):
        assert (cwd / "out").is_symlink() and not (cwd / "elsewhere").exists()
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out"], 2,
                ("symbolic link",), out=cwd / "out", keep={}, check=nothing_created)


# ---- bounded resources -------------------------------------------------------------

PEAK_MB = 1024


def _dense_30000(cfg):
    set_input_shape(cfg, [30000])
    set_layer(cfg, 1, units=30000)
    cfg["config"]["layers"][1]["build_config"] = {"input_shape": [None, 30000]}


@case("resources-config-json-inflates-to-4.5-GiB")
def _(m, cwd):
    members = H.zip_members(m / "small.keras")
    del members["config.json"]
    dst = H.deflate_bomb(cwd / "bomb.keras", members, "config.json", 288 << 24)
    assert dst.stat().st_size < 6 << 20
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 4,
                ("config.json", "4831838208"), peak_mb=PEAK_MB)


@case("resources-dense-30000x30000")
def _(m, cwd):
    dst = rewrite_zip(m / "dense.keras", cwd / "huge.keras", edit_config=_dense_30000)
    assert dst.stat().st_size < 16 << 10
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 4,
                ("flash", "900030000", "dense_units", "1024 KB"), peak_mb=PEAK_MB)


@case("resources-dense-60000x60000-h5-config-without-shapes")
def _(m, cwd):
    """A legacy .h5 states no layer's input shape: Keras would allocate the
    kernel while building; the weight is refused before it is allocated."""
    def edit(cfg):
        H.h5_layers(cfg)[0]["config"]["batch_shape"] = [None, 60000]
        H.h5_layers(cfg)[1]["config"]["units"] = 60000
    dst = H.edit_h5_config(m / "dense.h5", cwd / "huge.h5", edit)
    return Spec([dst, "--dtype", "float32", "--target", "host", "-o", cwd / "out"], 4,
                ("dense_units", "(60000, 60000)"), peak_mb=PEAK_MB)


@case("resources-embedding-a-billion-rows")
def _(m, cwd):
    def edit(cfg):
        for e in cfg["config"]["layers"]:
            if e["class_name"] == "Embedding":
                e["config"]["input_dim"] = 10 ** 9
    dst = rewrite_zip(m / "embedding.keras", cwd / "vocab.keras", edit_config=edit)
    return Spec([dst, "--dtype", "float32", "--target", "host", "-o", cwd / "out"], 4,
                ("emb", "4000000000", "limit"), peak_mb=PEAK_MB)


@case("resources-input-of-10-giga-values")
def _(m, cwd):
    def edit(cfg):
        set_input_shape(cfg, [100000, 100000])
    dst = rewrite_zip(m / "dense.keras", cwd / "wide_input.keras", edit_config=edit)
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 4,
                ("RAM", "(100000, 100000)"), peak_mb=PEAK_MB)


@case("resources-h5-weight-dataset-bomb")
def _(m, cwd):
    """A gzip-compressed, never written (fill value) 30000x30000 dataset:
    a few KB on disk, 3.6 GB once read."""
    import h5py
    dst = cwd / "dataset_bomb.h5"
    shutil.copy(m / "dense.h5", dst)
    with h5py.File(dst, "r+") as f:
        found = []
        f["model_weights"].visititems(lambda n, o: found.append(n) if n.endswith("kernel") else None)
        del f["model_weights"][found[0]]
        f["model_weights"].create_dataset(found[0], shape=(30000, 30000), dtype="f4",
                                          chunks=(1000, 1000), compression="gzip")
    assert dst.stat().st_size < 1 << 20
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 4,
                ("900000003", "weights"), peak_mb=PEAK_MB)


@case("resources-weights-member-inflates-to-1-GiB")
def _(m, cwd):
    members = H.zip_members(m / "small.keras")
    del members["model.weights.h5"]
    dst = H.deflate_bomb(cwd / "wbomb.keras", members, "model.weights.h5", 64 << 24)
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 4,
                ("model.weights.h5", "1073741824"), peak_mb=PEAK_MB)


@case("resources-zip-of-5000-members")
def _(m, cwd):
    members = H.zip_members(m / "small.keras")
    members.update({f"assets/{k}.txt": b"x" for k in range(5000)})
    dst = H.write_zip(cwd / "many.keras", members)
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("5003 members",))


# ---- every accepted model compiles: no NaN or Inf in a constant ---------------------

def _bn(what: str, names: tuple, edit=None, dtype=("--dtype", "float32")):
    def build(m, cwd):
        src = m / f"bn_{what}.keras"
        dst = rewrite_zip(src, cwd / "bn.keras", edit_config=edit) if edit else src
        args = [m / "cal4.npy" if a == "CAL4" else a for a in dtype]
        return Spec([dst, *args, "-o", cwd / "out"], 3, names)
    return build


def _zero_epsilon(cfg):
    set_layer(cfg, 2, epsilon=0.0)


case("bn-variance-below-minus-epsilon")(_bn("negvar", ("bn", "moving_variance")))
case("bn-zero-variance-zero-epsilon")(_bn("gamma", ("bn", "epsilon"), edit=_zero_epsilon))
case("bn-gamma-over-variance-overflows-float32")(_bn("gamma", ("bn", "Inf")))
case("bn-folded-into-a-kernel-overflows")(_bn("fold", ("dense", "bn", "Inf")))
case("bn-negative-variance-int8")(
    _bn("negvar", ("bn", "moving_variance"), dtype=("--calibration", "CAL4")))


def _act(names: tuple, index: int, dtype=("--dtype", "float32"), **values):
    def build(m, cwd):
        dst = rewrite_zip(m / "acts.keras", cwd / "acts.keras",
                          edit_config=lambda c: set_layer(c, index, **values))
        args = [m / "cal6.npy" if a == "CAL6" else a for a in dtype]
        return Spec([dst, *args, "-o", cwd / "out"], 3, names)
    return build


case("json-nan-leaky-relu-slope")(_act(("leaky", "NaN"), 2, negative_slope=float("nan")))
case("json-nan-elu-alpha")(_act(("elu", "NaN"), 3, alpha=float("nan")))
case("json-infinity-relu-max-value")(_act(("relu_cap", "Infinity"), 4, max_value=float("inf")))
case("json-minus-infinity-relu-threshold-int8")(
    _act(("relu_cap", "-Infinity"), 4, dtype=("--calibration", "CAL6"), threshold=float("-inf")))
case("leaky-relu-slope-past-float32")(_act(("leaky", "Inf"), 2, negative_slope=1e39))
case("elu-alpha-past-float32-int8")(_act(("elu", "Inf"), 3, dtype=("--calibration", "CAL6"),
                                         alpha=-1e39))


# ---- weights and shapes -----------------------------------------------------------

@case("nan-weights")
def _(m, cwd):
    return Spec([m / "nan_weights.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("head", "NaN"))


@case("inf-weights")
def _(m, cwd):
    return Spec([m / "inf_weights.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("head", "Inf"))


@case("unknown-non-batch-dimension")
def _(m, cwd):
    return Spec([m / "none_dim.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("None", "input"))


@case("zero-size-dimension")
def _(m, cwd):
    return Spec([m / "zero_dim.keras", "--dtype", "float32", "-o", cwd / "out"], 3,
                ("0", "input"))


@case("conv1d-kernel-larger-than-input")
def _(m, cwd):
    dst = rewrite_zip(m / "conv1d.keras", cwd / "bigkernel.keras",
                      edit_config=lambda c: set_layer(c, 1, kernel_size=[9]))
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 3, ("shrink", "Conv1D"))


@case("conv3d-seed-1904211-channels-kernel-3")
def _(m, cwd):
    def edit(cfg):
        set_input_shape(cfg, [1, 1, 1, 1904211])
        set_layer(cfg, 1, kernel_size=[3, 3, 3])
    dst = rewrite_zip(m / "conv3d.keras", cwd / "seed.keras", edit_config=edit)
    # --target host: no RAM budget, so the 7.6 MB input is not what refuses it.
    return Spec([dst, "--dtype", "float32", "--target", "host", "-o", cwd / "out"], 3,
                ("seed3d", "Conv3D"))


@case("dense-zero-units")
def _(m, cwd):
    dst = rewrite_zip(m / "dense.keras", cwd / "zerounits.keras",
                      edit_config=lambda c: set_layer(c, 1, units=0))
    # Keras refuses the config itself: a damaged file (exit 2), named by layer.
    return Spec([dst, "--dtype", "float32", "-o", cwd / "out"], 2, ("dense_units", "units"))


# ---- calibration samples --------------------------------------------------------

def _calibration(filename: str, make, names=(), code=2):
    def build(m, cwd):
        path = cwd / filename
        make(path)
        return Spec([m / "small.keras", "--calibration", path, "-o", cwd / "out"], code,
                    (filename,) + tuple(names))
    return build


def _save(array, **kw):
    return lambda p: np.save(p, array, **kw)


case("calibration-wrong-shape")(
    _calibration("wrong.npy", _save(np.zeros((4, 5, 5), np.float32)), ("(6, 4)",)))
case("calibration-strings")(
    _calibration("strings.npy", _save(np.array([["a"] * 4] * 6 * 2).reshape(2, 6, 4)), ("dtype",)))
case("calibration-object-array")(
    _calibration("objects.npy", _save(np.array([{"x": 1}, None], dtype=object), allow_pickle=True)))
case("calibration-nan")(
    _calibration("nan.npy", _save(np.full((3, 6, 4), np.nan, np.float32)), ("NaN",)))
case("calibration-inf")(
    _calibration("inf.npy", _save(np.where(np.eye(6, 4)[None] > 0, np.inf, 0.0).astype(np.float32)),
                 ("Inf",)))
case("calibration-zero-samples")(
    _calibration("empty.npy", _save(np.zeros((0, 6, 4), np.float32)), ("empty",)))
case("calibration-scalar")(_calibration("scalar.npy", _save(np.float32(1.5))))
case("calibration-complex")(
    _calibration("complex.npy", _save(np.zeros((2, 6, 4), np.complex64)), ("dtype",)))
case("calibration-empty-file")(_calibration("zero_bytes.npy", lambda p: p.write_bytes(b"")))
case("calibration-text-file")(_calibration("samples.npy", lambda p: p.write_text("1,2,3\n")))
case("calibration-npz-without-arrays")(_calibration("none.npz", lambda p: np.savez(p)))
case("calibration-missing-file")(_calibration("absent.npy", lambda p: None, ("no such file",)))
case("calibration-directory")(_calibration("cal_dir.npy", lambda p: p.mkdir()))


def _tokens(filename: str, array, names):
    def build(m, cwd):
        np.save(cwd / filename, array)
        return Spec([m / "embedding.keras", "--calibration", cwd / filename, "-o", cwd / "out"],
                    2, (filename, "tokens", "Embedding") + names)
    return build


case("calibration-tokens-not-whole-numbers")(
    _tokens("fractions.npy", np.full((3, 5), 2.5), ("whole numbers",)))
case("calibration-tokens-outside-vocabulary")(
    _tokens("oov.npy", np.arange(15).reshape(3, 5) * 2, ("[0, 20)", "28")))


@case("int8-without-calibration")
def _(m, cwd):
    return Spec([m / "small.keras", "-o", cwd / "out"], 2, ("--calibration",))


# ---- names, output folders, budgets, usage ---------------------------------------

for _name, _label, _why in (
        ("int", "int", ()), ("3x", "3x", ()), ("my-model", "my-model", ()),
        ("static", "static", ()), ("", "empty", ()), ("k2m_model", "k2m_model", ()),
        # the issue's: '$' matched before a trailing newline; headers shadowed
        ("abc\n", "abc-newline", ()), ("stdint", "stdint", ("<stdint.h>",)),
        ("math", "math", ("<math.h>",)), ("k2m", "k2m", ("<k2m.h>",)),
        # and more of the class
        ("Stdio", "Stdio", ("<stdio.h>",)), ("model_weights", "ends-in-_weights", ("_weights",)),
        ("_model", "leading-underscore", ()), ("arm_acle", "arm_acle", ("<arm_acle.h>",))):
    def _bad_name(m, cwd, name=_name, why=_why):
        return Spec([m / "small.keras", "--dtype", "float32", "--name", name, "-o", cwd / "out"],
                    2, ("--name", repr(name)) + why)
    case(f"name-{_label}")(_bad_name)


@case("outdir-parents-made-for-it-are-removed-on-failure")
def _(m, cwd):
    def no_parents(r, cwd):
        assert not (cwd / "a").exists(), list((cwd / "a").rglob("*"))
    return Spec([m / "small.keras", "-o", cwd / "a" / "b" / "out"], 2, ("--calibration",),
                out=cwd / "a" / "b" / "out", check=no_parents)


@case("outdir-exists-not-empty")
def _(m, cwd):
    out = cwd / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out], 2, ("out", "--force"),
                out=out, keep={"keep.txt": b"mine"})


@case("outdir-is-a-file")
def _(m, cwd):
    out = cwd / "out"
    out.write_text("a file")
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out], 2, ("out",),
                out=out, keep={"": b"a file"})


@case("outdir-parent-is-a-file")
def _(m, cwd):
    # Tests run as root in CI, and root ignores a chmod 0o500 parent, so the
    # "cannot create the folder" path is reached with a file where the parent
    # folder should be (and with /proc below).
    (cwd / "parent").write_text("a file")
    out = cwd / "parent" / "out"
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out], 2, ("parent",), out=out)


@case("outdir-under-proc")
def _(m, cwd):
    # /proc refuses new entries even to root.
    out = Path("/proc/k2m_catalogue_out")
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out], 2, ("/proc",), out=out)


# Root ignores directory permissions (CI runs as root): there the case is
# not collected at all, and outdir-under-proc covers an unwritable place.
@case("outdir-parent-read-only", only_if=os.geteuid() != 0)
def _(m, cwd):
    parent = cwd / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    out = parent / "out"
    return Spec([m / "small.keras", "--dtype", "float32", "-o", out], 2, ("ro",), out=out)


@case("over-flash-budget")
def _(m, cwd):
    def numbers(r, cwd):
        line = one_sentence_error(r)
        assert any(ch.isdigit() for ch in line.replace("--flash-kb", "")), line
    return Spec([m / "big.keras", "--dtype", "float32", "--flash-kb", "1", "-o", cwd / "out"],
                4, ("flash",), check=numbers)


for _ram in ("0", "1"):
    @case(f"over-ram-budget-{_ram}kb")
    def _(m, cwd, ram=_ram):
        return Spec([m / "big.keras", "--dtype", "float32", "--ram-kb", ram, "-o", cwd / "out"],
                    4, ("RAM", f"{ram} KB" if ram != "0" else "0"))


@case("negative-flash-budget")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "--flash-kb", "-5", "-o", cwd / "out"],
                2, ("--flash-kb",))


@case("non-numeric-ram-budget")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "--ram-kb", "lots", "-o", cwd / "out"],
                2, ("--ram-kb",))


@case("unknown-target")
def _(m, cwd):
    return Spec([m / "small.keras", "--target", "cortex-m7", "-o", cwd / "out"], 2,
                ("--target", "cortex-m7"))


@case("unknown-dtype")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "int4", "-o", cwd / "out"], 2, ("--dtype", "int4"))


@case("verify-without-outdir")
def _(m, cwd):
    return Spec([m / "small.keras", "--verify", "host", "--calibration", m / "cal.npy"], 2,
                ("-o",), out=cwd / "out")


@case("verify-with-explain-without-outdir")
def _(m, cwd):
    return Spec([m / "small.keras", "--explain", "--verify", "host", "--calibration",
                 m / "cal.npy"], 2, ("--verify", "-o"), out=cwd / "out")


@case("no-outdir-no-explain")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32"], 2, ("-o",), out=cwd / "out")


# ---- outputs checked before anything is written; bad samples are exit 2 ----------

def _nothing_written(*paths):
    def check(r, cwd):
        for p in paths:
            assert not Path(str(p).replace("CWD", str(cwd))).exists(), p
    return check


@case("json-is-the-outdir")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--json",
                 cwd / "out"], 2, ("--json", "inside OUTDIR"))


@case("json-in-an-unwritable-place")
def _(m, cwd):
    # /proc refuses new files even to root, whom access() lets through.
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--json",
                 "/proc/k2m_report.json"], 2, ("--json", "/proc/k2m_report.json"),
                check=_nothing_written("/proc/k2m_report.json"))


@case("report-in-a-missing-folder")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--report",
                 cwd / "nope" / "r.html"], 2, ("report", "does not exist"))


@case("json-and-report-the-same-file")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--json",
                 cwd / "r.txt", "--report", cwd / "r.txt"], 2, ("r.txt", "also"),
                check=_nothing_written("CWD/r.txt"))


@case("json-would-overwrite-the-calibration-file")
def _(m, cwd):
    shutil.copy(m / "cal.npy", cwd / "cal.npy")
    keep = (cwd / "cal.npy").read_bytes()

    def kept(r, cwd):
        assert (cwd / "cal.npy").read_bytes() == keep
    return Spec([m / "small.keras", "--calibration", cwd / "cal.npy", "-o", cwd / "out",
                 "--json", cwd / "cal.npy"], 2, ("calibration file",), check=kept)


@case("verify-host-without-a-c-compiler")
def _(m, cwd):
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--verify", "host",
                 "--verify-samples", m / "cal.npy"], 2, ("C compiler", "k2m-no-such-cc"),
                env={"CC": "/nonexistent/k2m-no-such-cc"})


def _npz_flipped(path: Path):
    np.savez(path, x=np.zeros((8, 6, 4), np.float32))
    off, size = H.npz_member_offset(path, "x.npy")
    path.write_bytes(flip(path.read_bytes(), [off + size - 5]))


def _npz_pickled(path: Path):
    np.savez(path, x=np.array([{"x": 1}, None], dtype=object))


def _npz_truncated_member(path: Path):
    buf = io.BytesIO()
    np.save(buf, np.zeros((8, 6, 4), np.float32))
    H.write_zip(path, {"x.npy": buf.getvalue()[:100]})


case("calibration-npz-bad-crc")(_calibration("crc.npz", _npz_flipped))
case("calibration-npz-pickled-member")(_calibration("pickled.npz", _npz_pickled, ("Python objects",)))
case("calibration-npz-truncated-member")(_calibration("cut.npz", _npz_truncated_member))
case("calibration-npz-not-a-zip")(_calibration("junk.npz", lambda p: p.write_bytes(b"PK\x03\x04junk")))
case("calibration-same-count-other-layout")(
    _calibration("transposed.npy", _save(np.zeros((8, 4, 6), np.float32)), ("(8, 4, 6)", "(6, 4)")))
case("calibration-same-count-three-axes")(
    _calibration("reshaped.npy", _save(np.zeros((8, 3, 8), np.float32)), ("(8, 3, 8)", "(6, 4)")))


@case("verify-samples-same-count-other-layout")
def _(m, cwd):
    np.save(cwd / "t.npy", np.zeros((8, 4, 6), np.float32))
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--verify", "host",
                 "--verify-samples", cwd / "t.npy"], 2, ("t.npy", "(8, 4, 6)", "(6, 4)"))



@case("json-path-is-a-directory")
def _(m, cwd):
    (cwd / "report.json").mkdir()
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--json",
                 cwd / "report.json"], 2, ("report.json",))


@case("verify-samples-wrong-shape")
def _(m, cwd):
    np.save(cwd / "few.npy", np.zeros((2, 3), np.float32))
    return Spec([m / "small.keras", "--dtype", "float32", "-o", cwd / "out", "--verify", "host",
                 "--verify-samples", cwd / "few.npy"], 2, ("few.npy", "(6, 4)"))


# ---- running ---------------------------------------------------------------------

# Runs a command and reports its peak resident memory (its own rusage of
# children: only that command), as the last line of stderr.
PEAK = ("import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(f'k2m-peak-rss-kb {kb}', file=sys.stderr)\n"
        "sys.exit(code)\n")
PEAKS: dict = {}   # case -> measured MB, printed at the end of the module


def run(spec: Spec, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(ENV, **spec.env)
    cmd = CMD + [str(a) for a in spec.args]
    if spec.peak_mb:
        cmd = [sys.executable, "-c", PEAK] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, cwd=spec.cwd or cwd, env=env,
                          timeout=600)


def peak_mb(r) -> float:
    lines = [l for l in r.stderr.splitlines() if l.startswith("k2m-peak-rss-kb ")]
    assert lines, r.stderr
    return int(lines[-1].split()[1]) / 1024


@pytest.fixture(scope="module")
def catalogue(request, models, tmp_path_factory):
    """Build and start every selected case at once; tests wait for their own."""
    wanted = {item.callspec.params["case_id"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")
              and "case_id" in item.callspec.params}
    pool = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) + 1))
    started = {}
    for case_id in sorted(wanted):
        cwd = tmp_path_factory.mktemp(f"case-{case_id}"[:60])
        spec = CASES[case_id](models, cwd)
        started[case_id] = (spec, cwd, pool.submit(run, spec, cwd))
    yield started
    pool.shutdown(wait=True)


@pytest.mark.parametrize("case_id", [
    c for c in sorted(CASES)])
def test_bad_input(catalogue, case_id):
    spec, cwd, future = catalogue[case_id]
    r = future.result()
    both = r.stdout + r.stderr
    assert "Traceback" not in both, both
    assert r.returncode == spec.code, both
    line = one_sentence_error(r)
    for name in spec.names:
        assert str(name) in line, (name, line)
    out = spec.out or cwd / "out"
    leftovers = list(out.parent.glob(f".{out.name}.*")) if out.parent.is_dir() else []
    assert not leftovers, leftovers
    if spec.keep is None:
        assert not out.exists() and not out.is_symlink(), out
    elif "" in spec.keep:
        assert out.read_bytes() == spec.keep[""]
    else:
        now = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert now == spec.keep
    if spec.check is not None:
        spec.check(r, cwd)
    if spec.peak_mb:
        PEAKS[case_id] = peak_mb(r)
        print(f"{case_id}: peak resident memory {PEAKS[case_id]:.0f} MB")
        assert PEAKS[case_id] < spec.peak_mb, (case_id, PEAKS[case_id])


def test_catalogue_is_large_enough():
    assert len(CASES) >= 45


# ---- the same classes, where a case is not one refused command ----------------

def test_registered_objects_in_this_process(models, tmp_path, monkeypatch):
    """The library API in a process where the user's objects are registered,
    two of them under the plain built-in names GlorotUniform and relu: a
    hostile file is refused, a legacy .h5 (whose configs Keras resolves by
    those plain names first) loads Keras's built-ins, and no user code runs."""
    import evil_layers
    from exporter import UnsupportedModelError, export_model, host
    marker = tmp_path / "user_code_ran.txt"
    monkeypatch.setenv("K2M_MARKER", str(marker))
    hostile = rewrite_zip(models / "small.keras", tmp_path / "init.keras", edit_config=_initializer)
    evil_layers.shadow()
    try:
        with pytest.raises(UnsupportedModelError, match="evil>EvilInit"):
            export_model(hostile, tmp_path / "out_hostile", dtype="float32")
        m = export_model(models / "small.h5", tmp_path / "out", dtype="float32")
        import keras
        assert keras.saving.get_custom_objects()["relu"] is evil_layers.evil_act  # restored
    finally:
        evil_layers.shadow(False)
    assert not marker.exists(), marker.read_text()
    assert not (tmp_path / "out_hostile").exists()
    ref = keras.models.load_model(models / "small.keras", compile=False)
    x = np.load(models / "cal.npy")
    got = host.load(tmp_path / "out", m.prefix).predict(x)
    np.testing.assert_allclose(got, ref.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


STEPS = ("write", "marker", "aside", "swap", "cleanup")


@pytest.mark.parametrize("failing", STEPS)
def test_force_replacement_fails_at_every_step(models, tmp_path, monkeypatch, failing):
    """--force over an earlier export with a failure injected at each step:
    OUTDIR afterwards is the old export or the new one, whole, and no
    temporary folder is left but the old export a failed cleanup names."""
    from exporter import ExportError, codegen, export_model, outdir
    out = tmp_path / "out"
    export_model(models / "small.keras", out, dtype="float32", name="old")
    old = _snapshot(out)
    real_write = codegen.write

    def write(ctx, folder):
        real_write(ctx, folder)
        if failing == "write":  # after some files are written
            raise OSError(28, "No space left on device")

    def step(name):
        if name == failing:
            raise OSError(5, f"injected at {name}")
    monkeypatch.setattr(codegen, "write", write)
    monkeypatch.setattr(outdir, "step", step)
    if failing == "cleanup":
        report = export_model(models / "small.keras", out, dtype="float32", name="new", force=True)
        assert (out / "new.h").exists() and not (out / "old.h").exists()
        aside = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
        assert len(aside) == 1 and any(str(aside[0]) in w for w in report.warnings)
        assert _snapshot(aside[0] / "old") == old
        return
    with pytest.raises(ExportError):
        export_model(models / "small.keras", out, dtype="float32", name="new", force=True)
    assert _snapshot(out) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_outdir_filled_while_exporting_is_not_replaced(models, tmp_path, monkeypatch):
    """OUTDIR did not exist at the start; something made it, with a file,
    before the export moved in: it stays as it is."""
    from exporter import ExportError, export_model, outdir
    out = tmp_path / "out"

    def step(name):
        if name == "swap":
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    monkeypatch.setattr(outdir, "step", step)
    with pytest.raises(ExportError, match="appeared"):
        export_model(models / "small.keras", out, dtype="float32", force=True)
    assert _snapshot(out) == {"theirs.txt": b"theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signals_leave_no_temporary_folder(models, tmp_path, signame):
    """Sent while the model loads (the temporary folder exists by then): the
    exit status is 128 + the signal, nothing is left beside OUTDIR."""
    import signal
    import time
    out = tmp_path / "out"
    p = subprocess.Popen(CMD + [str(models / "small.keras"), "--dtype", "float32", "-o", str(out)],
                         stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.*")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the export ended before the signal"
    time.sleep(0.3)  # inside the model load
    p.send_signal(getattr(signal, signame))
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + getattr(signal, signame), err
    assert "interrupted by " + signame in err and "nothing was written" in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_failure_after_writing_says_what_was_written(models, tmp_path, monkeypatch, capsys):
    """A step after OUTDIR is in place fails (here --verify): the message
    names OUTDIR as written and nothing else (the --json file is not)."""
    from exporter import ExportError, cli, verify
    def broken(*a, **kw):
        raise ExportError("QEMU did not finish within 120 s")
    monkeypatch.setattr(verify, "verify", broken)
    code = cli.main([str(models / "small.keras"), "--dtype", "float32", "-o", str(tmp_path / "out"),
                     "--verify", "host", "--verify-samples", str(models / "cal.npy"),
                     "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"written before it stopped: {tmp_path / 'out'}; nothing else was written" in err
    assert (tmp_path / "out" / "small.h").exists() and not (tmp_path / "r.json").exists()


def _named_model(keras, names):
    L = keras.layers
    inp = keras.Input((6, 3))
    x = L.Conv1D(4, 2, name=names[0])(inp)
    y = L.Conv1D(4, 2, name=names[1])(inp)
    z = L.Add(name=names[2])([x, y])
    seq = L.SimpleRNN(5, name=names[3])(z)
    flat = L.Flatten(name=names[4])(z)
    return keras.Model(inp, [L.Dense(2, name=names[5])(seq), L.Dense(2, name=names[6])(flat)])


@pytest.mark.parametrize("names", [
    ("a-b", "a_b", "*", "x", "?", "x_w", "1abc"),          # the issue's
    ("_1abc", "1abc", "x_w_mult", "x", "ünï??=", "??)", "a$b$"),  # C comments, mathtext too
])
def test_names_c_cannot_tell_apart(keras, models, tmp_path, names):
    """Layer names that differ only in characters C cannot hold, or that a
    constant's role suffix would make equal (a Dense x_w next to an RNN x),
    give distinct identifiers; the C compiles with -Werror in float32 and
    int8, the same bytes every time, and the --report draws the names."""
    from conftest import compile_strict
    from exporter import cli
    path = tmp_path / "names.keras"
    _named_model(keras, names).save(path)
    np.save(tmp_path / "cal.npy", np.random.default_rng(0).normal(size=(16, 6, 3)).astype(np.float32))
    for dtype in ("float32", "int8"):
        out = tmp_path / dtype
        args = [str(path), "-o", str(out), "--report", str(tmp_path / f"{dtype}.html"), "-q"]
        args += ["--dtype", "float32"] if dtype == "float32" else ["--calibration", str(tmp_path / "cal.npy")]
        assert cli.main(args) == 0
        compile_strict(out)
        text = (out / "names_weights.h").read_text()
        defined = [l.split("[")[0].split()[-1] for l in text.splitlines() if l.startswith("static const")]
        assert len(defined) == len(set(defined)), defined
        again = tmp_path / f"{dtype}_again"
        assert cli.main(args[:1] + ["-o", str(again)] + args[5:]) == 0
        assert _snapshot(out) == _snapshot(again)


def test_model_file_named_like_a_header(models, tmp_path):
    """math.keras: the default prefix is math_model, so math_model.h never
    shadows <math.h> (a float32 model's kernels include it)."""
    from conftest import compile_strict
    from exporter import export_model
    shutil.copy(models / "small.keras", tmp_path / "math.keras")
    report = export_model(tmp_path / "math.keras", tmp_path / "out", dtype="float32")
    assert report.prefix == "math_model" and not (tmp_path / "out" / "math.h").exists()
    compile_strict(tmp_path / "out")


def test_report_includes_verify_results(models, tmp_path):
    from exporter import cli
    code = cli.main([str(models / "small.keras"), "--calibration", str(models / "cal.npy"),
                     "-o", str(tmp_path / "out"), "--verify", "host", "--report",
                     str(tmp_path / "r.html"), "-q"])
    assert code == 0
    html = (tmp_path / "r.html").read_text()
    assert 'id="verify"' in html and 'id="verify-layers"' in html and "int8" in html


def test_catalogue_covers_every_class():
    """The issue's examples plus at least three cases of our own per class."""
    prefixes = {"user code": "user-code-", "OUTDIR": ("force-", "outdir-"),
                "resources": "resources-", "constants": ("bn-", "json-", "leaky-", "elu-"),
                "names": "name-", "after writing": ("json-", "report-", "verify-", "calibration-npz",
                                                    "calibration-same")}
    for what, p in prefixes.items():
        assert sum(c.startswith(p) for c in CASES) >= 7, what


def test_safety_keys_as_keras_resolves_them():
    """safety.offending on hand-written configs: what Keras would look up
    among the user's objects is listed, data and equations are not."""
    from exporter.frontends.safety import offending

    def model(**layer):
        entry = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
                 "config": {"name": "d", "units": 2}, **layer}
        return {"module": "keras", "class_name": "Functional", "config": {"layers": [entry]}}
    assert offending(model()) == []
    assert offending(model(inbound_nodes=[{"args": ["ij,jk->ik", "ij->ji", 3.0], "kwargs": {
        "w": {"class_name": "__numpy__", "config": {"value": [1, 2], "dtype": "float32"}}}}])) == []
    for layer, why in (({"registered_name": "evil>Dense"}, "evil>Dense"),
                       ({"registered_name": "Dense2"}, "Dense2"),
                       ({"class_name": "evil>Dense", "registered_name": None}, "evil>Dense"),
                       ({"module": "evil_layers"}, "evil_layers"),
                       ({"config": {"name": "d", "activation": "evil>act"}}, "evil>act"),
                       ({"config": {"name": "d", "activation": {"module": "builtins",
                                    "class_name": "function", "config": "act"}}}, "act"),
                       ({"config": {"name": "d", "alpha": float("nan")}}, "NaN"),
                       ({"config": {"name": "d", "x": {"class_name": "__typespec__",
                                                      "config": []}}}, "type spec")):
        found = offending(model(**layer))
        assert len(found) == 1 and why in found[0] and "'d'" in found[0], (layer, found)
    # compile_config is dropped unread at the top (compile=False), not in a nested model
    top = model()
    top["compile_config"] = {"loss": "evil>loss"}
    assert offending(top) == []
    top["config"]["layers"].append({**model(), "compile_config": {"loss": "evil>loss"}})
    assert len(offending(top)) == 1
