"""Recurrent layers against Keras: Embedding, SimpleRNN, LSTM, GRU (both
reset_after settings), Bidirectional, TimeDistributed, stateful models.

Every case is a real Keras model saved to a .keras file (some also .h5),
exported to float32 and to int8, built with the system C compiler and run
through `exporter.host`, on real-like data from tests/seq_models.py (sine /
square / step signals with varying frequency, phase, amplitude and step
position plus a little noise; random Zipf-like token sequences; moving-blob
frames), never white noise alone.  Parity models use Keras's random init
with every bias set to non-zero values; classifiers are tiny models trained
on synthetic tasks, with committed weights (tests/trained_models.py).

Tolerances (the issue's acceptance criteria, not loosened):
- float32: rtol 1e-5 with atol 1e-5 * max|Keras output| (as
  tests/test_layers.py), i.e. 1e-5 relative to the output's magnitude: the C
  does the same float32 arithmetic as Keras in another order, so only
  rounding differs.
- int8: RMSE of (C - Keras) <= 3% of the Keras output span (max - min over
  the test set), against Keras fed the same float inputs (so the input's
  quantization is part of the error, as a user sees it).  int8 weights,
  int16 states/gates and an int8 output grid cannot be closer in general;
  3% is the issue's bound.
- classifiers (softmax outputs): additionally top-1 agreement >= 98% with
  Keras on held-out real-like data, the classifier itself >= 95% accurate so
  the agreement is measured on a meaningful model.
- stateful / repeat calls / out-of-range Embedding indices: exact (bit for
  bit) equality between C results that must be the same computation.

Coverage: every cell x return_sequences x length (1, 2, 10, 50), single and
stacked (four outputs of one model per cell and length); Bidirectional: every merge mode with both
return_sequences settings, every cell and every length, and stacked;
go_backwards per cell; use_bias=False with (inference-inactive) dropout per
cell; Masking / mask_zero refused; every activation / recurrent_activation
per cell at length 10; Conv1D front ends; TimeDistributed(Dense/Conv2D/Conv1D);
Embedding -> recurrent and its out-of-range clamp (also under ASan/UBSan);
trained classifiers incl. the users' models of acceptance point 3; stateful
chunks and reset; repeat calls of a stateless model.  Measured numbers are
recorded per case (pytest --junitxml with -o junit_family=legacy).
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

import seq_models as S
from conftest import export_and_load, require_tool

LENGTHS = (1, 2, 10, 50)
CELLS = ("SimpleRNN", "LSTM", "GRU", "GRU_reset_before")
N_CAL, N_TEST = 128, 64
FLOAT_RTOL = 1e-5
INT8_RMSE_OF_SPAN = 0.03
TOP1_AGREEMENT = 0.98

_record = None


@pytest.fixture(autouse=True)
def _recorder(record_property):
    """Measured numbers go to the JUnit XML (--junitxml) of every case."""
    global _record
    _record = record_property
    yield
    _record = None


def record(name, value):
    if _record is not None:
        _record(name, value)


def rng_for_test():
    """A generator seeded from the per-test seed conftest sets."""
    return np.random.default_rng(np.random.randint(2**31))


def cell(keras, kind, units, **kw):
    if kind == "GRU_reset_before":
        return keras.layers.GRU(units, reset_after=False, **kw)
    if kind == "GRU":
        return keras.layers.GRU(units, reset_after=True, **kw)
    return getattr(keras.layers, kind)(units, **kw)


# ---------------------------------------------------------------- parity helpers


def float_parity(got, ref, what="float32"):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != Keras {ref.shape}"
    top = np.abs(ref).max()
    rel = float(np.abs(got - ref).max() / top) if top else float(np.abs(got).max())
    record(f"{what}_max_err_over_max_abs", rel)
    np.testing.assert_allclose(got, ref, rtol=FLOAT_RTOL, atol=FLOAT_RTOL * top,
                               err_msg=f"{what}: max |C - Keras| / max |Keras| = {rel:.3g}")


def int8_parity(got, ref, classifier=False, what="int8"):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != Keras {ref.shape}"
    rmse = float(np.sqrt(np.mean((got - ref) ** 2)))
    span = float(ref.max() - ref.min())
    assert span > 0, f"{what}: Keras output is constant over the test set; a useless case"
    record(f"{what}_rmse_over_span", rmse / span)
    msg = (f"{what}: RMSE {rmse:.4g} = {100 * rmse / span:.2f}% of the output span "
           f"{span:.4g} (max |err| {np.abs(got - ref).max():.4g})")
    assert rmse <= INT8_RMSE_OF_SPAN * span, msg
    if classifier:
        agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
        record(f"{what}_top1_agreement", agree)
        assert agree >= TOP1_AGREEMENT, f"{what}: top-1 agreement {agree:.4f} ({msg})"


def keras_out(model, x):
    """Keras's output (an eager call: the same numbers as predict(), without
    predict()'s per-model tracing cost)."""
    y = model(x, training=False)
    return [np.asarray(t) for t in y] if isinstance(y, (list, tuple)) else np.asarray(y)


def check(model, tmp_path, x_cal, x_test, classifier=False, fmt="keras", x_keras=None):
    """Save `model` as .keras (or .h5), export float32 and int8 (calibrated on
    x_cal), and compare both C builds with Keras on x_test, output by output
    (a model with several outputs through predict_multi).  x_keras: what
    Keras is fed instead of x_test (e.g. int32 token ids)."""
    path = tmp_path / f"model.{fmt}"
    model.save(path)
    n = len(x_test)
    refs = keras_out(model, x_test if x_keras is None else x_keras)
    refs = [np.asarray(r).reshape(n, -1) for r in (refs if isinstance(refs, list) else [refs])]
    names = list(model.output_names) if len(refs) > 1 else [""]
    _, c = export_and_load(path, tmp_path / "f32", dtype="float32")
    _, c8 = export_and_load(path, tmp_path / "i8", dtype="int8", calibration_data=x_cal)
    failures = []   # every output and dtype is checked before the test fails
    for dtype, cm in (("float32", c), ("int8", c8)):
        got = cm.predict_multi([x_test]) if len(refs) > 1 else [cm.predict(x_test)]
        assert len(got) == len(refs), f"{dtype}: {len(got)} outputs, Keras has {len(refs)}"
        for name, g, r in zip(names, got, refs):
            what = f"{dtype}_{name}" if name else dtype
            try:
                if dtype == "float32":
                    float_parity(g, r, what)
                else:
                    int8_parity(g, r, classifier, what)
            except AssertionError as e:
                failures.append(str(e).strip().splitlines()[0])
    assert not failures, "\n".join(failures)
    return c, c8


def signal_data(rng, T, F=3):
    return S.signals(rng, N_CAL, T, F), S.signals(rng, N_TEST, T, F)


def finish(model, rng):
    S.randomize_biases(model, rng)
    return model


# ---------------------------------------------------------------- the full matrix


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("kind", CELLS)
def test_cell_matrix(keras, tmp_path, kind, T):
    """Every cell x return_sequences x length, single and stacked: one model
    with four outputs from the same input, `single_last`/`single_sequences`
    = cell(8) and `stacked_last`/`stacked_sequences` = cell(8,
    return_sequences=True) -> cell(6), each output checked on its own (one
    export per cell and length instead of four keeps the file within its
    time budget; a failure names every output that fails)."""
    rng = rng_for_test()
    inp = keras.Input((T, 3))
    outputs = []
    for rs, suffix in ((False, "last"), (True, "sequences")):
        outputs.append(cell(keras, kind, 8, return_sequences=rs, name=f"single_{suffix}")(inp))
        hidden = cell(keras, kind, 8, return_sequences=True)(inp)
        outputs.append(cell(keras, kind, 6, return_sequences=rs, name=f"stacked_{suffix}")(hidden))
    m = finish(keras.Model(inp, outputs), rng)
    check(m, tmp_path, *signal_data(rng, T))


# ---------------------------------------------------------------- Bidirectional


# Every cell with both return_sequences settings, every length with both, every
# merge mode with both return_sequences settings.
BIDIRECTIONAL_CELLS = [
    ("SimpleRNN", False, 1, "concat"), ("SimpleRNN", True, 50, "sum"),
    ("LSTM", False, 50, "mul"), ("LSTM", True, 1, "ave"),
    ("GRU", False, 2, "ave"), ("GRU", True, 10, "mul"),
    ("GRU_reset_before", False, 10, "sum"), ("GRU_reset_before", True, 2, "concat"),
]


@pytest.mark.parametrize("kind,return_sequences,T,merge_mode", BIDIRECTIONAL_CELLS)
def test_bidirectional_cells_and_lengths(keras, tmp_path, kind, return_sequences, T, merge_mode):
    rng = rng_for_test()
    m = finish(keras.Sequential([
        keras.Input((T, 3)),
        keras.layers.Bidirectional(cell(keras, kind, 6, return_sequences=return_sequences),
                                   merge_mode=merge_mode)]), rng)
    check(m, tmp_path, *signal_data(rng, T))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_bidirectional_stacked(keras, tmp_path, return_sequences):
    rng = rng_for_test()
    L = keras.layers
    m = finish(keras.Sequential([
        keras.Input((10, 3)),
        L.Bidirectional(L.LSTM(6, return_sequences=True)),
        L.Bidirectional(L.GRU(5, return_sequences=return_sequences), merge_mode="sum"),
        L.Dense(3)]), rng)
    check(m, tmp_path, *signal_data(rng, 10))


# ---------------------------------------------------------------- go_backwards


@pytest.mark.parametrize("kind,return_sequences", [("SimpleRNN", True), ("LSTM", False),
                                                   ("GRU", True), ("GRU_reset_before", False)])
def test_go_backwards(keras, tmp_path, kind, return_sequences):
    rng = rng_for_test()
    m = finish(keras.Sequential([
        keras.Input((10, 3)),
        cell(keras, kind, 8, return_sequences=return_sequences, go_backwards=True)]), rng)
    check(m, tmp_path, *signal_data(rng, 10))


@pytest.mark.parametrize("kind,return_sequences", [("SimpleRNN", False), ("LSTM", True),
                                                   ("GRU", False), ("GRU_reset_before", True)])
def test_no_bias_and_training_dropout(keras, tmp_path, kind, return_sequences):
    """use_bias=False, and dropout/recurrent_dropout (as trained models
    carry them; inactive at inference)."""
    rng = rng_for_test()
    m = keras.Sequential([keras.Input((10, 3)),
                          cell(keras, kind, 8, return_sequences=return_sequences, use_bias=False,
                               dropout=0.2, recurrent_dropout=0.1)])
    check(m, tmp_path, *signal_data(rng, 10))


def test_masking_is_refused(keras, tmp_path):
    """Only masking-free inputs are supported: a Masking layer or
    Embedding(mask_zero=True) is refused, never exported with the mask ignored."""
    from exporter import export_model
    from exporter.errors import UnsupportedModelError
    L = keras.layers
    for i, layers in enumerate([[keras.Input((6,)), L.Embedding(20, 4, mask_zero=True), L.LSTM(5)],
                                [keras.Input((6, 2)), L.Masking(0.0), L.GRU(5)]]):
        with pytest.raises(UnsupportedModelError):
            export_model(keras.Sequential(layers), tmp_path / f"m{i}", dtype="float32")


# ---------------------------------------------------------------- activations


# The defaults (tanh, sigmoid) run in every other test; here every other
# function once as activation and once as recurrent_activation, per cell type:
# three stacked layers of one cell type, one (activation, recurrent_activation)
# pair each.
PAIRS = [("sigmoid", "hard_sigmoid"), ("hard_sigmoid", "relu"), ("relu", "tanh")]


@pytest.mark.parametrize("kind", CELLS)
def test_activations(keras, tmp_path, kind):
    rng = rng_for_test()
    layers = []
    for activation, recurrent_activation in PAIRS:
        kw = {"activation": activation, "return_sequences": True}
        if kind != "SimpleRNN":
            kw["recurrent_activation"] = recurrent_activation
        layers.append(cell(keras, kind, 8, **kw))
    m = finish(keras.Sequential([keras.Input((10, 3)), *layers]), rng)
    if kind.startswith("GRU"):
        tame_relu_update_gate(layers[1])    # the (hard_sigmoid, relu) layer
    check(m, tmp_path, *signal_data(rng, 10))


def tame_relu_update_gate(layer):
    """A GRU with recurrent_activation='relu' has an unbounded update gate z in
    h = z*h + (1-z)*h~: with Keras's random init it blows up to 1e9 within 10
    steps (Keras itself overflows to NaN on some draws).  Smaller kernels
    (input x0.5, recurrent x0.2) and biases around +0.3 keep z mostly in
    [0, 1] with 2-23% of pre-activations still negative, so relu's clamp is
    exercised on outputs of sane size."""
    for v in layer.weights:
        name = v.path.split("/")[-1]
        scale, shift = {"kernel": (0.5, 0.0), "recurrent_kernel": (0.2, 0.0),
                        "bias": (0.5, 0.3)}[name]
        v.assign(v.numpy() * scale + shift)


# ---------------------------------------------------------------- front ends


@pytest.mark.parametrize("variant", ["causal_pool_lstm", "same_gru_sequences"])
def test_conv1d_front_end(keras, tmp_path, variant):
    rng = rng_for_test()
    L = keras.layers
    if variant == "causal_pool_lstm":
        T, layers = 50, [L.Conv1D(8, 5, padding="causal", activation="relu"),
                         L.MaxPooling1D(2), L.LSTM(8), L.Dense(2)]
    else:
        T, layers = 10, [L.Conv1D(6, 3, padding="same"), L.GRU(8, return_sequences=True)]
    m = finish(keras.Sequential([keras.Input((T, 3)), *layers]), rng)
    check(m, tmp_path, *signal_data(rng, T))


def _time_distributed(keras, variant):
    L = keras.layers
    TD = L.TimeDistributed
    if variant == "dense_lstm_dense":
        return (10, 3), [TD(L.Dense(6, activation="relu")), L.LSTM(8, return_sequences=True),
                         TD(L.Dense(2))]
    if variant == "conv2d":
        return (6, 8, 8, 2), [TD(L.Conv2D(4, 3, activation="relu"))]
    if variant == "conv2d_lstm":
        return (6, 8, 8, 2), [TD(L.Conv2D(4, 3, strides=2, activation="relu")),
                              L.Reshape((6, 3 * 3 * 4)), L.LSTM(8), L.Dense(3)]
    if variant == "conv1d":
        return (5, 16, 2), [TD(L.Conv1D(4, 3, padding="same"))]
    if variant == "conv1d_gru":
        return (5, 16, 2), [TD(L.Conv1D(4, 3, strides=2, activation="relu")),
                            L.Reshape((5, 7 * 4)), L.GRU(6, return_sequences=True)]
    raise ValueError(variant)


@pytest.mark.parametrize("variant", ["dense_lstm_dense", "conv2d", "conv2d_lstm", "conv1d",
                                     "conv1d_gru"])
def test_time_distributed(keras, tmp_path, variant):
    rng = rng_for_test()
    shape, layers = _time_distributed(keras, variant)
    m = finish(keras.Sequential([keras.Input(shape), *layers]), rng)
    if len(shape) == 4:
        x_cal, x_test = S.video(rng, N_CAL, shape[0]), S.video(rng, N_TEST, shape[0])
    elif len(shape) == 3:
        x_cal, x_test = (S.windows(rng, N_CAL, *shape), S.windows(rng, N_TEST, *shape))
    else:
        x_cal, x_test = signal_data(rng, shape[0], shape[1])
    check(m, tmp_path, x_cal, x_test)


# ---------------------------------------------------------------- Embedding


def token_data(rng, n, T, vocab):
    return S.tokens(rng, n, T, vocab=vocab, keywords=0)[0]


@pytest.mark.parametrize("kind,return_sequences", [("SimpleRNN", True), ("LSTM", False),
                                                   ("GRU", True), ("GRU_reset_before", False)])
def test_embedding_recurrent(keras, tmp_path, kind, return_sequences):
    """Embedding -> recurrent on random token sequences; int32 ids through
    _invoke give exactly what whole-number floats through _predict give."""
    rng = rng_for_test()
    L = keras.layers
    m = finish(keras.Sequential([keras.Input((10,), dtype="int32"), L.Embedding(50, 6),
                                 cell(keras, kind, 8, return_sequences=return_sequences)]), rng)
    ids_cal, ids = token_data(rng, N_CAL, 10, 50), token_data(rng, N_TEST, 10, 50)
    c, c8 = check(m, tmp_path, ids_cal.astype(np.float32), ids.astype(np.float32), x_keras=ids)
    np.testing.assert_array_equal(c.invoke(ids).view(np.uint32),
                                  c.predict(ids.astype(np.float32)).view(np.uint32))
    from exporter.verify import dequantize_like_c
    raw = c8.invoke(ids)
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(
        dequantize_like_c(raw, c8.output_scale, c8.output_zero_point).view(np.uint32),
        c8.predict(ids.astype(np.float32)).view(np.uint32))


VOCAB_SMALL = 20
INT32_OUT_OF_RANGE = [-2**31, -1000, -1, 20, 21, 1000, 2**31 - 1]
FLOAT_OUT_OF_RANGE = [-1e6, -21.0, -1.0, 20.0, 21.0, 1e6]
FLOAT_BEYOND_INT32 = [-1e10, -3e9, 3e9, 1e10, 2.0**31, -2.0**31 - 1024]


def with_out_of_range(rng, values, T, n=32):
    """n rows of T ids: in-range ids with the given out-of-range values mixed in
    (every value at least once, at varying positions)."""
    ids = rng.integers(0, VOCAB_SMALL, (n, T)).astype(np.float64)
    flat = ids.ravel()
    pos = rng.choice(flat.size, size=3 * len(values), replace=False)
    flat[pos] = np.tile(values, 3)
    return flat.reshape(n, T)


@pytest.fixture(scope="module")
def embedding_models(keras, tmp_path_factory):
    """Embedding(20, 4) alone, and Embedding(20, 4) -> LSTM(5), on length-6
    inputs, each exported to float32 and int8 (loaded on the host)."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    L = keras.layers
    base = tmp_path_factory.mktemp("embedding")
    out = {}
    for name, layers in [("table", [L.Embedding(VOCAB_SMALL, 4)]),
                         ("lstm", [L.Embedding(VOCAB_SMALL, 4), L.LSTM(5, return_sequences=True)])]:
        m = keras.Sequential([keras.Input((6,)), *layers], name=f"emb_{name}")
        S.randomize_biases(m, rng)
        path = base / f"{name}.keras"
        m.save(path)
        cal = rng.integers(0, VOCAB_SMALL, (N_CAL, 6)).astype(np.float32)
        _, c = export_and_load(path, base / f"{name}_f32", dtype="float32")
        _, c8 = export_and_load(path, base / f"{name}_i8", dtype="int8", calibration_data=cal)
        out[name] = {"keras": m, "float32": c, "int8": c8, "path": path,
                     "dirs": {"float32": base / f"{name}_f32", "int8": base / f"{name}_i8"}}
    return out


def table_rows(model, ids):
    table = model.layers[0].get_weights()[0]
    return table[np.clip(ids, 0, VOCAB_SMALL - 1).astype(np.int64)].reshape(len(ids), -1)


def test_embedding_float_rows_and_invoke_clamp(embedding_models):
    """float32 Embedding alone: _invoke on int32 ids returns exactly the table
    rows, out-of-range ids clamped to [0, vocab-1]."""
    e = embedding_models["table"]
    c = e["float32"]
    ids = with_out_of_range(np.random.default_rng(0), INT32_OUT_OF_RANGE, 6).astype(np.int32)
    np.testing.assert_array_equal(c.invoke(ids), table_rows(e["keras"], ids))


def test_embedding_float_predict_clamp(embedding_models):
    """float32 Embedding alone: _predict on whole-number floats, out of range
    within int32."""
    e = embedding_models["table"]
    ids = with_out_of_range(np.random.default_rng(1), FLOAT_OUT_OF_RANGE, 6).astype(np.float32)
    np.testing.assert_array_equal(e["float32"].predict(ids), table_rows(e["keras"], ids))


def test_embedding_float_predict_clamp_beyond_int32(embedding_models):
    """Floats too large for int32 (a plain (int32_t) cast is undefined in C and
    differs between x86 and the M4) are clamped too."""
    e = embedding_models["table"]
    ids = with_out_of_range(np.random.default_rng(2), FLOAT_BEYOND_INT32, 6).astype(np.float32)
    np.testing.assert_array_equal(e["float32"].predict(ids), table_rows(e["keras"], ids))


def test_embedding_int8_table_and_clamp(embedding_models):
    """int8 Embedding alone: clamped ids give bit for bit what the clamped ids
    give, and the rows are within the int8 tolerance of the float table."""
    from exporter.verify import dequantize_like_c
    e = embedding_models["table"]
    c8 = e["int8"]
    rng = np.random.default_rng(3)
    ids = with_out_of_range(rng, INT32_OUT_OF_RANGE, 6).astype(np.int32)
    clipped = np.clip(ids, 0, VOCAB_SMALL - 1).astype(np.int32)
    raw = c8.invoke(ids)
    np.testing.assert_array_equal(raw, c8.invoke(clipped))
    y = dequantize_like_c(raw, c8.output_scale, c8.output_zero_point)
    int8_parity(y, table_rows(e["keras"], ids))
    fl = with_out_of_range(rng, FLOAT_OUT_OF_RANGE, 6).astype(np.float32)
    np.testing.assert_array_equal(c8.predict(fl), c8.predict(np.clip(fl, 0, VOCAB_SMALL - 1)))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_embedding_clamp_through_lstm(embedding_models, dtype):
    """Embedding -> LSTM: out-of-range ids give exactly the clamped ids' result
    (through _invoke with int32 and _predict with floats), which matches
    Keras fed the clamped ids."""
    e = embedding_models["lstm"]
    c = e[dtype]
    rng = np.random.default_rng(4)
    ids = with_out_of_range(rng, INT32_OUT_OF_RANGE, 6).astype(np.int32)
    clipped = np.clip(ids, 0, VOCAB_SMALL - 1).astype(np.int32)
    np.testing.assert_array_equal(c.invoke(ids), c.invoke(clipped))
    fl = with_out_of_range(rng, FLOAT_OUT_OF_RANGE, 6).astype(np.float32)
    fl_clipped = np.clip(fl, 0, VOCAB_SMALL - 1)
    np.testing.assert_array_equal(c.predict(fl), c.predict(fl_clipped))
    ref = keras_out(e["keras"], clipped).reshape(len(ids), -1)
    ref_fl = keras_out(e["keras"], fl_clipped.astype(np.int32)).reshape(len(fl), -1)
    parity = float_parity if dtype == "float32" else int8_parity
    parity(c.predict(clipped.astype(np.float32)), ref, what=f"{dtype}_invoke_ids")
    parity(c.predict(fl), ref_fl, what=f"{dtype}_predict_floats")


SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]

DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include "PREFIX.h"

static const int64_t ids[][PREFIX_INPUT_SIZE] = { @IDS@ };
static const float fids[][PREFIX_INPUT_SIZE] = { @FIDS@ };

int main(void) {
    PREFIX_input_t in[PREFIX_INPUT_SIZE];
    PREFIX_output_t out[PREFIX_OUTPUT_SIZE];
    float fout[PREFIX_OUTPUT_SIZE];
    /* the raw input of an Embedding model is a signed 32-bit integer */
    if (sizeof(PREFIX_input_t) != 4 || (PREFIX_input_t)-1 >= 0 || (PREFIX_input_t)0.5 != 0)
        return 3;
    for (size_t r = 0; r < sizeof ids / sizeof ids[0]; r++) {
        for (int i = 0; i < PREFIX_INPUT_SIZE; i++) in[i] = (PREFIX_input_t)ids[r][i];
        if (PREFIX_invoke(in, out) != 0) return 2;
        for (int i = 0; i < PREFIX_OUTPUT_SIZE; i++) printf("i %.9g\n", (double)out[i]);
    }
    for (size_t r = 0; r < sizeof fids / sizeof fids[0]; r++) {
        if (PREFIX_predict(fids[r], fout) != 0) return 2;
        for (int i = 0; i < PREFIX_OUTPUT_SIZE; i++) printf("p %.9g\n", (double)fout[i]);
    }
    return 0;
}
"""


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_embedding_out_of_range_sanitized(embedding_models, dtype, tmp_path):
    """The exported Embedding -> LSTM built with AddressSanitizer and UBSan
    (float-cast-overflow included) and fed out-of-range int32 ids through
    _invoke and out-of-range floats (also beyond int32) through _predict: no
    read out of bounds, no undefined conversion, and the same outputs as the
    host build."""
    gcc = require_tool("gcc", "apt-get install -y gcc")
    from exporter.host import find_prefix
    e = embedding_models["lstm"]
    out = e["dirs"][dtype]
    c = e[dtype]
    prefix = find_prefix(out)
    rng = np.random.default_rng(5)
    ids = with_out_of_range(rng, INT32_OUT_OF_RANGE, 6, n=8).astype(np.int64)
    fl = with_out_of_range(rng, FLOAT_OUT_OF_RANGE + FLOAT_BEYOND_INT32, 6, n=8).astype(np.float32)
    src = (DRIVER.replace("PREFIX", prefix)
           .replace("@IDS@", ", ".join("{" + ", ".join(f"INT64_C({int(v)})" for v in row) + "}"
                                     for row in ids))
           .replace("@FIDS@", ", ".join("{" + ", ".join(float(v).hex() + "f" for v in row) + "}"
                                      for row in fl)))
    (tmp_path / "driver.c").write_text(src)
    exe = tmp_path / "driver"
    cmd = [gcc, "-std=c99", "-O1", "-g", *SANITIZE, "-I", str(out),
           *map(str, sorted(out.rglob("*.c"))), str(tmp_path / "driver.c"), "-o", str(exe), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                       env={"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1",
                            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
    assert r.returncode == 0 and "runtime error" not in r.stderr, \
        f"exit {r.returncode} (3: the raw input type is not int32)\n{r.stderr[-3000:]}"
    lines = r.stdout.split("\n")
    # %.9g round-trips a float32 exactly
    got_i = np.array([float(l[2:]) for l in lines if l.startswith("i ")], np.float32)
    got_p = np.array([float(l[2:]) for l in lines if l.startswith("p ")], np.float32)
    want_i = c.invoke(ids.astype(np.int32)).astype(np.float32).ravel()
    want_p = c.predict(fl).astype(np.float32).ravel()
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_p, want_p)


# ---------------------------------------------------------------- users' models


@pytest.fixture(scope="session")
def classifiers():
    """Tiny trained classifiers with committed weights (seq_models.classifier)."""
    return S.classifier


@pytest.mark.parametrize("name,fmt", [
    ("lstm_bands", "keras"), ("bidirectional_gru_bands", "keras"),
    ("gru_reset_before_bands", "keras"), ("simplernn_stacked_bands", "h5"),
    ("tokens_lstm", "keras"),
])
def test_trained_classifier(classifiers, tmp_path, name, fmt):
    """Trained classifiers on held-out real-like data: float32 parity, int8
    RMSE and top-1 agreement.  tokens_lstm is the user's Embedding(263, 64)
    on length-10 sequences -> LSTM -> Dense softmax."""
    d = classifiers(name)
    record("keras_accuracy", d["accuracy"])
    assert d["accuracy"] >= 0.95, f"the {name} classifier trained badly ({d['accuracy']:.3f})"
    check(d["model"], tmp_path, d["x_cal"], d["x_test"], classifier=True, fmt=fmt)


@pytest.fixture(scope="session")
def next_sample():
    return S.next_sample_rnn()


@pytest.mark.parametrize("variant,fmt", [("with_head", "h5"), ("as_asked", "keras")])
def test_user_simplernn_stack(keras, next_sample, tmp_path, variant, fmt):
    """`SimpleRNN(10, return_sequences=True) -> SimpleRNN(10)` on (2, 1) inputs,
    trained on next-sample prediction (with its Dense(1) head), and the two
    SimpleRNNs alone as asked."""
    m = next_sample["model"]
    assert next_sample["rmse"] < 0.1, f"the model trained badly (RMSE {next_sample['rmse']:.3f})"
    if variant == "as_asked":
        m = keras.Model(m.inputs[0], m.layers[1].output)
    check(m, tmp_path, next_sample["x_cal"], next_sample["x_test"], fmt=fmt)


# ---------------------------------------------------------------- state


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_stateful_chunks(keras, tmp_path, kind):
    """stateful=True: a sequence fed in chunks across calls equals Keras's
    stateful model (batch 1) fed the same chunks; reset_state() restores the
    first result; without a reset the state carries on."""
    rng = rng_for_test()
    L = keras.layers
    T, F, K, M = 5, 3, 6, 3          # chunk length, features, chunks, sequences
    rs = kind == "GRU"

    def build(stateful):
        inp = keras.Input(batch_shape=(1, T, F)) if stateful else keras.Input((K * T, F))
        return keras.Sequential([inp, cell(keras, kind, 8, stateful=stateful, return_sequences=rs),
                                 L.Dense(3)])

    m = finish(build(True), rng)
    seqs = S.signals(rng, M, K * T, F)
    chunks = seqs.reshape(M, K, T, F)
    rnn = m.layers[0]
    ref = np.zeros((M, K, (T if rs else 1) * 3))
    for s in range(M):
        rnn.reset_state()
        for k in range(K):
            ref[s, k] = keras_out(m, chunks[s, k:k + 1]).ravel()
    rnn.reset_state()
    # The reference itself: Keras's stateful chunks == its stateless whole sequence.
    whole = build(False)
    whole.set_weights(m.get_weights())
    w = keras_out(whole, seqs)
    if rs:
        np.testing.assert_allclose(ref.reshape(M, K * T, 3), w, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(ref[:, -1], w, rtol=1e-5, atol=1e-6)

    path = tmp_path / "stateful.keras"
    m.save(path)
    x_cal = S.signals(rng, 24, K * T, F).reshape(-1, T, F)   # consecutive chunks
    for dtype in ("float32", "int8"):
        kw = {"calibration_data": x_cal} if dtype == "int8" else {}
        _, c = export_and_load(path, tmp_path / dtype, dtype=dtype, **kw)
        got = np.zeros_like(ref)
        for s in range(M):
            c.reset_state()
            got[s] = c.predict(chunks[s])            # K consecutive calls
        parity = float_parity if dtype == "float32" else int8_parity
        parity(got.reshape(M * K, -1), ref.reshape(M * K, -1), what=f"{dtype}_chunks")
        c.reset_state()
        first = c.predict(chunks[0, :1])[0]
        np.testing.assert_array_equal(first, got[0, 0].astype(np.float32),
                                      err_msg=f"{dtype}: reset_state() did not restore the "
                                              f"first result")
        again = c.predict(chunks[0, :1])[0]
        assert not np.array_equal(again, first), f"{dtype}: the state did not persist"
        c.reset_state()
        np.testing.assert_array_equal(c.predict(chunks[1]), got[1].astype(np.float32),
                                      err_msg=f"{dtype}: a replay after reset_state() differs")


def test_stateless_repeatable(keras, tmp_path):
    """A stateless model starts from zero every call: the same input gives the
    same answer whatever ran before, in a batch or alone."""
    rng = rng_for_test()
    L = keras.layers
    m = finish(keras.Sequential([keras.Input((10, 3)), L.LSTM(8, return_sequences=True),
                                 L.GRU(6)]), rng)
    x_cal, x = signal_data(rng, 10)
    c, c8 = check(m, tmp_path, x_cal, x[:16])
    for model in (c, c8):
        first = model.predict(x[:8])
        model.predict(x[8:16])
        np.testing.assert_array_equal(model.predict(x[:8]), first)
        np.testing.assert_array_equal(model.predict(x[3:4]), first[3:4])
        np.testing.assert_array_equal(model.predict(x[:8][::-1]), first[::-1])
