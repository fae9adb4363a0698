"""The suite's trained models, with fixed weights: tests never train.

How well a training run converges depends on the seed and on the CPU's float
rounding (one machine's LSTM reached 0.62 where another's reached 1.00 from
the same seed), so a test that trains is a test of luck.  Each model here is
an architecture, its data (generated from a fixed seed, or scikit-learn's
digits) and the weights in tests/fixtures/trained_weights.npz, which
`python tests/make_fixtures.py` writes: it trains every model with
keras.utils.set_random_seed and deterministic ops, and keeps a result only
if it scores `required` on held-out data with a margin (see that script).
Every machine then runs the same model; the tests still check its score,
so a changed architecture or data generator that no longer matches the
weights fails loudly.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import seq_models as S

WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "trained_weights.npz"


@dataclass
class Spec:
    build: Callable        # keras -> an uncompiled model
    data: Callable         # () -> dict(x_train, y_train, x_cal, x_test, y_test)
    loss: str = "sparse_categorical_crossentropy"   # "logits": the same on logits
    metric: str = "accuracy"   # or "rmse"
    required: float = 0.95     # accuracy >= required, or rmse <= required
    fit: dict = field(default_factory=dict)   # epochs, batch_size
    lr: float = 0.01


def digits_split():
    """scikit-learn's 8x8 digits scaled to [0, 1], split 75/25:
    (x_train, x_test, y_train, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def _digits():
    x_train, x_test, y_train, y_test = digits_split()
    return {"x_train": x_train, "y_train": y_train, "x_cal": x_train[:300],
            "x_test": x_test, "y_test": y_test}


def _bands(T):
    def data():
        x, y = S.bands(np.random.default_rng(0), 1300, T)
        return {"x_train": x[:1000], "y_train": y[:1000], "x_cal": x[:200],
                "x_test": x[1000:], "y_test": y[1000:]}
    return data


def _tokens():
    x, y = S.tokens(np.random.default_rng(1), 2300, 10, keywords=4)
    xf = x.astype(np.float32)  # whole-number float ids, as _predict takes them
    return {"x_train": x[:2000], "y_train": y[:2000], "x_cal": xf[:300],
            "x_test": xf[2000:], "y_test": y[2000:]}


def _next_sample():
    """The next sample of a sine of fixed frequency, random amplitude and
    phase, from the two before it."""
    rng = np.random.default_rng(2)
    n = 1300
    amp, phase = rng.uniform(0.2, 1.5, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    s = amp * np.sin(2 * np.pi * 0.1 * np.arange(3)[None] + phase) + rng.normal(0, 0.01, (n, 3))
    x, y = s[:, :2, None].astype(np.float32), s[:, 2:].astype(np.float32)
    return {"x_train": x[:1000], "y_train": y[:1000], "x_cal": x[:200],
            "x_test": x[1000:], "y_test": y[1000:]}


def _sensor():
    """A 3-channel sensor task: which of 4 frequencies channel 0 carries."""
    rng = np.random.default_rng(1)
    n = 600
    cls = rng.integers(0, 4, n)
    t = np.arange(32)[None, :, None]
    freq = (cls + 1)[:, None, None] * 0.15
    x = np.concatenate([np.sin(freq * t + rng.uniform(0, 6, (n, 1, 1))),
                        np.cos(freq * t * 0.5), rng.normal(0, 0.3, (n, 32, 1))], -1)
    x = (x + rng.normal(0, 0.1, x.shape)).astype(np.float32)
    return {"x_train": x[:500], "y_train": cls[:500], "x_cal": x[:300],
            "x_test": x[500:], "y_test": cls[500:]}


def _sequential(shape, layers, name=None, **input_kw):
    def build(keras):
        return keras.Sequential([keras.Input(shape, **input_kw), *layers(keras.layers)], name=name)
    return build


def _band_classifier(T, body):
    return Spec(_sequential((T, 2), lambda L: [*body(L), L.Dense(3, activation="softmax")]),
                _bands(T), required=0.95, fit={"epochs": 40, "batch_size": 64})


MODELS = {
    "digits_cnn": Spec(_sequential((8, 8, 1), lambda L: [
        L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 3, activation="relu"), L.Flatten(), L.Dropout(0.1),
        L.Dense(32, activation="relu"), L.Dense(10, name="logits"), L.Softmax()],
        name="digits_cnn"), _digits, required=0.93, lr=0.001,
        fit={"epochs": 30, "batch_size": 32}),
    # logits out, no softmax
    "digits_mlp": Spec(_sequential((8, 8, 1), lambda L: [
        L.Flatten(), L.Dense(32, activation="tanh"), L.Dense(16, activation="relu6"),
        L.Dense(10)], name="digits_mlp"), _digits, loss="logits", required=0.93, lr=0.001,
        fit={"epochs": 40, "batch_size": 32}),
    "lstm_bands": _band_classifier(50, lambda L: [L.LSTM(16)]),
    "bidirectional_gru_bands": _band_classifier(20, lambda L: [L.Bidirectional(L.GRU(8))]),
    "gru_reset_before_bands": _band_classifier(20, lambda L: [L.GRU(12, reset_after=False)]),
    "simplernn_stacked_bands": _band_classifier(20, lambda L: [
        L.SimpleRNN(16, return_sequences=True), L.SimpleRNN(16)]),
    # The user's Embedding(263, 64) -> LSTM -> Dense softmax on length-10 sequences.
    "tokens_lstm": Spec(_sequential((10,), lambda L: [
        L.Embedding(S.VOCAB, 64), L.LSTM(16), L.Dense(3, activation="softmax")],
        name="tokens_lstm"), _tokens, required=0.95, fit={"epochs": 8, "batch_size": 32}),
    # The user's SimpleRNN(10, return_sequences=True) -> SimpleRNN(10) on (2, 1), Dense(1) head.
    "next_sample": Spec(_sequential((2, 1), lambda L: [
        L.SimpleRNN(10, return_sequences=True), L.SimpleRNN(10), L.Dense(1)],
        name="next_sample"), _next_sample, loss="mse", metric="rmse", required=0.1,
        fit={"epochs": 40, "batch_size": 64}),
    # Conv1D same + causal (dilated) + strided, pooling, Dense; logits out.
    "sensor_1d": Spec(_sequential((32, 3), lambda L: [
        L.Conv1D(8, 5, padding="same", activation="relu"),
        L.Conv1D(12, 3, padding="causal", dilation_rate=2, activation="relu"),
        L.MaxPooling1D(2), L.Conv1D(8, 3, strides=2, activation="relu"),
        L.AveragePooling1D(2), L.Flatten(), L.Dense(16, activation="relu"), L.Dense(4)],
        name="sensor_1d"), _sensor, loss="logits", required=0.95, lr=0.003,
        fit={"epochs": 30, "batch_size": 32}),
}


def score(name: str, model, data: dict) -> float:
    """Accuracy (or RMSE) of `model` on the held-out split."""
    y = np.asarray(model(data["x_test"], training=False))
    if MODELS[name].metric == "rmse":
        return float(np.sqrt(np.mean((y - data["y_test"]) ** 2)))
    return float(np.mean(y.argmax(1) == data["y_test"]))


def meets(name: str, value: float, margin: float = 0.0) -> bool:
    """Whether a score reaches the model's requirement (tightened by margin)."""
    spec = MODELS[name]
    if spec.metric == "rmse":
        return value <= spec.required - margin
    return value >= spec.required + margin


@functools.lru_cache(maxsize=None)
def data(name: str) -> dict:
    return MODELS[name].data()


def load(name: str):
    """The model with its committed weights, and its data."""
    import keras
    model = MODELS[name].build(keras)
    with np.load(WEIGHTS) as z:
        keys = sorted(k for k in z.files if k.startswith(name + "/"))
        if not keys:
            raise FileNotFoundError(f"{WEIGHTS} holds no weights for '{name}'; "
                                    f"run python tests/make_fixtures.py {name}")
        model.set_weights([z[k] for k in keys])
    return model, data(name)


def train(name: str, seed: int):
    """Train the model from scratch (tests/make_fixtures.py only)."""
    import keras
    spec = MODELS[name]
    keras.utils.set_random_seed(seed)
    model = spec.build(keras)
    metrics = ["accuracy"] if spec.metric == "accuracy" else []
    loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if spec.loss == "logits" else spec.loss)
    model.compile(keras.optimizers.Adam(spec.lr), loss, metrics=metrics)
    d = data(name)
    model.fit(d["x_train"], d["y_train"], verbose=0, **spec.fit)
    return model
