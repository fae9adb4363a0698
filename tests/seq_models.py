"""Sequence data and tiny trained recurrent classifiers shared by
tests/test_recurrent.py and tests/test_recurrent_target.py.

Data is "real-like", never white noise alone:
- `signals`: per channel a sine, a square wave, a step, or a sine riding on a
  step, with random frequency, phase, amplitude, step position and levels,
  plus a little Gaussian noise (what a sensor channel looks like).
- `bands`: a 3-class task, which frequency band a noisy (sometimes square)
  oscillation with a random level step on top is in, plus a second sensor.
- `tokens`: token sequences over a Zipf-like vocabulary with a few class
  keywords planted (a 3-class "topic" task).
- `video`: (T, H, W, 2) frames of a Gaussian blob moving across a static
  gradient; `windows`: (T, L, C) frames cut from `signals`.

`classifier(name)` builds one tiny trained model per name (the weights are
committed, tests/trained_models.py: no test trains) and caches it for the
session.
"""
from __future__ import annotations

import functools

import numpy as np

VOCAB = 263          # the user's Embedding(263, 64) of acceptance point 3
BANDS = [(0.02, 0.05), (0.08, 0.13), (0.18, 0.28)]   # cycles per step


def signals(rng, n: int, T: int, F: int = 3, noise: float = 0.05) -> np.ndarray:
    """(n, T, F) float32 sine/square/step/sine+step channels plus noise."""
    t = np.arange(T)[None, :, None]
    shape = (n, 1, F)
    freq = rng.uniform(0.01, 0.25, shape)
    phase = rng.uniform(0, 2 * np.pi, shape)
    amp = rng.uniform(0.2, 1.5, shape)
    sine = amp * np.sin(2 * np.pi * freq * t + phase)
    square = amp * np.where(sine >= 0, 1.0, -1.0)
    pos = rng.integers(0, T + 1, shape)
    lo, hi = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    step = np.where(t < pos, lo, hi)
    kind = rng.integers(0, 4, shape)
    x = np.select([kind == 0, kind == 1, kind == 2], [sine, square, step], 0.6 * sine + step)
    return (x + rng.normal(0, noise, x.shape)).astype(np.float32)


def bands(rng, n: int, T: int):
    """(x (n, T, 2) float32, class (n,)): class = the frequency band of
    channel 0 (a sine, or a square wave 30% of the time, random amplitude and
    phase, with a step of random height at a random position); channel 1 is
    a slower cosine, as from a second sensor."""
    cls = rng.integers(0, len(BANDS), n)
    lo = np.array([BANDS[c][0] for c in cls])[:, None]
    hi = np.array([BANDS[c][1] for c in cls])[:, None]
    f = rng.uniform(lo, hi)
    t = np.arange(T)[None]
    amp = rng.uniform(0.5, 1.5, (n, 1))
    s = amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    s = np.where(rng.random((n, 1)) < 0.3, amp * np.where(s >= 0, 1.0, -1.0), s)
    pos = rng.integers(0, T, (n, 1))
    s = s + np.where(t >= pos, rng.uniform(-0.5, 0.5, (n, 1)), 0.0)
    other = 0.5 * np.cos(np.pi * f * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    x = np.stack([s, other], -1) + rng.normal(0, 0.05, (n, T, 2))
    return x.astype(np.float32), cls


def tokens(rng, n: int, T: int, vocab: int = VOCAB, classes: int = 3, keywords: int = 3):
    """(x (n, T) int32, class (n,)): Zipf-like background tokens with
    `keywords` tokens of the sample's class (40 per class, from id 3) planted
    at random positions."""
    cls = rng.integers(0, classes, n)
    p = 1.0 / np.arange(1, vocab + 1)
    x = rng.choice(vocab, size=(n, T), p=p / p.sum())
    k = min(keywords, T)
    for i in range(n):
        pos = rng.choice(T, k, replace=False)
        x[i, pos] = 3 + cls[i] * 40 + rng.integers(0, 40, k)
    return x.astype(np.int32), cls


def video(rng, n: int, T: int, H: int = 8, W: int = 8) -> np.ndarray:
    """(n, T, H, W, 2) float32: channel 0 a Gaussian blob moving at a random
    constant velocity, channel 1 a static gradient of random direction."""
    t = np.arange(T)[None, :, None, None]
    yy, xx = np.mgrid[0:H, 0:W]
    yy, xx = yy[None, None], xx[None, None]
    c0 = rng.uniform(1, H - 2, (n, 1, 1, 1)), rng.uniform(1, W - 2, (n, 1, 1, 1))
    v = rng.uniform(-1, 1, (n, 1, 1, 1)), rng.uniform(-1, 1, (n, 1, 1, 1))
    cy, cx = c0[0] + v[0] * t, c0[1] + v[1] * t
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.3 ** 2))
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
    grad = (np.cos(angle) * yy / H + np.sin(angle) * xx / W) * np.ones_like(blob)
    x = np.stack([blob, grad], -1)
    return (x + rng.normal(0, 0.03, x.shape)).astype(np.float32)


def windows(rng, n: int, T: int, L: int, C: int) -> np.ndarray:
    """(n, T, L, C) float32: T consecutive windows of L steps of `signals`."""
    return signals(rng, n, T * L, C).reshape(n, T, L, C)


def randomize_biases(model, rng, scale: float = 0.5):
    """Set every bias of a randomly initialised model to N(0, scale), so the
    biases (all of them: GRU reset_after=True has an input and a recurrent
    bias) are exercised."""
    for v in model.weights:
        if v.path.split("/")[-1] == "bias":
            v.assign(rng.normal(0, scale, tuple(v.shape)).astype(np.float32))


# ---------------------------------------------------------------- classifiers


@functools.lru_cache(maxsize=None)
def classifier(name: str):
    """A trained tiny classifier (committed weights, tests/trained_models.py):
    dict(model, x_cal, x_test, y_test, accuracy).  "tokens_lstm" is the
    user's Embedding(263, 64) -> LSTM -> Dense softmax on length-10
    sequences (acceptance point 3), inputs as whole-number float32 ids."""
    import trained_models
    model, d = trained_models.load(name)
    return {"model": model, "x_cal": d["x_cal"], "x_test": d["x_test"], "y_test": d["y_test"],
            "accuracy": trained_models.score(name, model, d)}


@functools.lru_cache(maxsize=None)
def next_sample_rnn():
    """The user's `SimpleRNN(10, return_sequences=True) -> SimpleRNN(10)` on
    (2, 1) inputs (acceptance point 3), with a Dense(1) head, trained to
    predict the next sample of a sine of fixed frequency and random amplitude
    and phase from the two before it (committed weights).  dict(model,
    x_cal, x_test, y_test, rmse): rmse is Keras's own error on the test split."""
    import trained_models
    model, d = trained_models.load("next_sample")
    return {"model": model, "x_cal": d["x_cal"], "x_test": d["x_test"], "y_test": d["y_test"],
            "rmse": trained_models.score("next_sample", model, d)}
