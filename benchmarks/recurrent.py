"""Recurrent models: our int8 C export next to TFLite int8 / TFLM.

    python benchmarks/recurrent.py [--models kws_lstm,gru_signals,tokens_lstm,bilstm_reg]
                                   [--out build/recurrent] [--no-m4]

Trains four small sequence models on synthetic, real-like data (fixed seeds),
then for each one, on a held-out test set:

- ours: `exporter.export_model(..., dtype="int8", calibration_data=...)`, run
  with `exporter.host.load(out).predict`: RMSE, max |err| and top-1 agreement
  against Keras, task accuracy; arena and weight bytes from the report; the
  instructions of one `PREFIX_invoke` on the emulated Cortex-M4
  (../shared/tools/m4run, QEMU mps2-an386, DSP and portable builds, on a real
  test input; the M4 output is checked against the host build's).
- TFLite: full-integer int8 (`TFLiteConverter`, representative dataset = the
  same calibration samples, `Optimize.DEFAULT`, `TFLITE_BUILTINS_INT8`, int8
  input/output), run with tf.lite's interpreter on the same inputs (each
  quantized with its own input parameters), and with TFLM (pip package
  `tflite-micro`: arena from its recording allocator, as in
  tests/test_mlperf.py, and its outputs).  Every conversion route is tried in
  a subprocess (the converter can crash) and its outcome is reported, failures
  included:
    keras3      the trained Keras 3 model as it is (batch dimension None)
    keras3_b1   a Keras 3 copy with batch size 1 (same weights)
    tf_keras_b1 a tf_keras (Keras 2) copy, batch size 1, same weights: the
                route to TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM
                (needs `pip install --no-deps tf-keras==<tensorflow version>`)
    unroll_b1   a Keras 3 copy with unroll=True, batch size 1, same weights
                (tried only when tf_keras_b1 did not give a model)
  The TFLite columns of the tables use the first route that converted and ran.
  The Embedding model takes int32 token ids in all three (the converter's
  int8 input type applies to float inputs only).  TFLite's fused LSTM keeps
  h and c in variable tensors that persist across invokes: both interpreters
  are reset before every test sample, so each sequence starts from zero state
  as in Keras.  For each fused LSTM op the table also says whether its h state
  variable carries the same quantization as its output (the step reads h back
  from that variable).

Prints markdown tables.  Whole run about 3-5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
M4RUN = ROOT.parent / "shared" / "tools" / "m4run"

# ------------------------------------------------------------------ data
# Every generator takes a numpy Generator and returns (x, y); y is a class
# index (classifiers) or a float target vector (regression).

KWS_CLASSES = 12          # silence, unknown, 10 keywords (as in Speech Commands)
KWS_T, KWS_F = 49, 10


def kws_like(rng, n: int, seed: int = 7):
    """MFCC-like (49 frames x 10 coefficients), standardized as a KWS front end
    would.  Each keyword is a fixed sequence of 2-4 "phonemes" (a 10-coefficient
    spectral shape each, coefficient k of size ~1/(1+k/2), c0 = energy); a
    sample places its word at a random onset (frames 2..17), stretched 0.75x to
    1.3x in time, with a random gain and channel tilt, smoothed transitions,
    over a low-energy background; Gaussian noise on every coefficient.
    Class 0 is silence (background only), class 1 "unknown": a random
    sequence of phonemes from the whole inventory."""
    tmpl = np.random.default_rng(seed)           # the vocabulary: fixed
    inventory = tmpl.normal(0, 1, (24, KWS_F)) / (1 + np.arange(KWS_F) / 2)
    inventory[:, 0] = tmpl.uniform(0.8, 2.0, 24)               # voiced energy
    words = [tmpl.choice(24, tmpl.integers(2, 5), replace=True)
             for _ in range(KWS_CLASSES - 2)]
    y = rng.integers(0, KWS_CLASSES, n)
    x = np.empty((n, KWS_T, KWS_F), np.float32)
    base = np.zeros(KWS_F)
    base[0] = -1.5
    for i in range(n):
        c = y[i]
        frames = np.tile(base + rng.normal(0, 0.1, KWS_F), (KWS_T, 1))
        if c != 0:
            seq = words[c - 2] if c >= 2 else rng.choice(24, rng.integers(2, 5))
            stretch = rng.uniform(0.75, 1.3)
            dur = max(len(seq), int(round(len(seq) * 7 * stretch)))
            onset = int(rng.integers(2, 18))
            gain = rng.uniform(0.7, 1.3)
            tilt = rng.normal(0, 0.15, KWS_F)
            pos = np.linspace(0, len(seq) - 1, dur)        # fractional phoneme index
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, len(seq) - 1)
            w = (pos - lo)[:, None]
            word = (1 - w) * inventory[seq[lo]] + w * inventory[seq[hi]]
            word = gain * word + tilt
            end = min(KWS_T, onset + dur)
            frames[onset:end] = word[:end - onset]
        x[i] = frames + rng.normal(0, 0.25, frames.shape)
    return x, y


def waveforms(rng, n: int, T: int = 50):
    """(n, T, 3): class = the kind of channel 0 (0 sine, 1 square, 2 step,
    3 sine riding on a step), random frequency 0.02-0.2 cycles/step, phase,
    amplitude, step position and levels; channels 1 and 2 are distractors of
    random kinds; noise sigma 0.1 everywhere."""
    t = np.arange(T)[None, :, None]
    shape = (n, 1, 3)
    freq = rng.uniform(0.02, 0.2, shape)
    phase = rng.uniform(0, 2 * np.pi, shape)
    amp = rng.uniform(0.3, 1.5, shape)
    sine = amp * np.sin(2 * np.pi * freq * t + phase)
    square = amp * np.where(sine >= 0, 1.0, -1.0)
    pos = rng.integers(T // 5, 4 * T // 5, shape)
    lo, hi = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
    hi = np.where(np.abs(hi - lo) < 0.4, lo + np.sign(hi - lo + 1e-9) * 0.4, hi)
    step = np.where(t < pos, lo, hi)
    kind = rng.integers(0, 4, shape)
    y = kind[:, 0, 0].copy()
    x = np.select([kind == 0, kind == 1, kind == 2], [sine, square, step], 0.6 * sine + step)
    return (x + rng.normal(0, 0.1, x.shape)).astype(np.float32), y


VOCAB, TOK_T, TOPIC_WORDS = 263, 10, 40


def token_topics(rng, n: int):
    """(n, 10) int32 token ids: Zipf-like background over the ids that are
    not topic words; class 0..2 plants 2-3 words of its topic (40 ids each,
    from id 100) at random positions, and in 35% of the samples one stray word
    of another topic; class 3 plants one word of each of two different topics
    (a "mixed" text: the model has to count)."""
    topic_ids = np.arange(100, 100 + 3 * TOPIC_WORDS)
    background = np.setdiff1d(np.arange(VOCAB), topic_ids)
    p = 1.0 / np.arange(1, len(background) + 1)
    p /= p.sum()
    y = rng.integers(0, 4, n)
    x = background[rng.choice(len(background), size=(n, TOK_T), p=p)]
    for i in range(n):
        if y[i] < 3:
            topics = [y[i]] * int(rng.integers(2, 4))
            if rng.random() < 0.35:                    # a stray word of another topic
                topics.append((y[i] + rng.integers(1, 3)) % 3)
        else:
            topics = list(rng.choice(3, 2, replace=False))
        where = rng.choice(TOK_T, len(topics), replace=False)
        x[i, where] = [100 + t * TOPIC_WORDS + rng.integers(0, TOPIC_WORDS) for t in topics]
    return x.astype(np.int32), y


def oscillation_params(rng, n: int, T: int = 24):
    """(n, T, 3) -> (frequency, amplitude) of channel 0: a sine or (30%) a
    square wave of frequency 0.03-0.25 cycles/step and amplitude 0.2-1.5, on a
    random offset, plus a slower drift channel and a step channel, noise
    sigma 0.05.  Targets scaled to ~[0, 1]: 4*freq, amp/1.5."""
    t = np.arange(T)[None]
    f = rng.uniform(0.03, 0.25, (n, 1))
    a = rng.uniform(0.2, 1.5, (n, 1))
    s = a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    s = np.where(rng.random((n, 1)) < 0.3, a * np.sign(s), s) + rng.uniform(-0.5, 0.5, (n, 1))
    drift = rng.uniform(-1, 1, (n, 1)) * np.cos(np.pi * 0.02 * t + rng.uniform(0, 6, (n, 1)))
    step = np.where(t >= rng.integers(0, T, (n, 1)), rng.uniform(-1, 1, (n, 1)), 0.0)
    x = np.stack([s, drift, step], -1) + rng.normal(0, 0.05, (n, T, 3))
    return x.astype(np.float32), np.concatenate([4 * f, a / 1.5], 1).astype(np.float32)


# --------------------------------------------------------------- models
# build(L, Input, Sequential, batch_size, unroll) works with keras (3) and
# tf_keras (2): the TFLite routes rebuild the same architecture and copy the
# weights.

def _kws(L, Input, Sequential, bs=None, unroll=False):
    return Sequential([Input((KWS_T, KWS_F), batch_size=bs), L.LSTM(64, unroll=unroll),
                       L.Dense(KWS_CLASSES, activation="softmax")])


def _gru(L, Input, Sequential, bs=None, unroll=False):
    return Sequential([Input((50, 3), batch_size=bs), L.GRU(32, unroll=unroll),
                       L.Dense(4, activation="softmax")])


def _tokens(L, Input, Sequential, bs=None, unroll=False):
    return Sequential([Input((TOK_T,), batch_size=bs, dtype="int32"), L.Embedding(VOCAB, 64),
                       L.LSTM(32, unroll=unroll), L.Dense(4, activation="softmax")])


def _bilstm(L, Input, Sequential, bs=None, unroll=False):
    return Sequential([Input((24, 3), batch_size=bs),
                       L.Bidirectional(L.LSTM(16, return_sequences=True, unroll=unroll)),
                       L.Bidirectional(L.LSTM(16, unroll=unroll)), L.Dense(2)])


# name: description, builder, data, (train, calibration, test), epochs, lr, classifier
MODELS = {
    "kws_lstm": ("KWS-like: LSTM(64) -> Dense(12) softmax, MFCC-like (49, 10)",
                 _kws, kws_like, (2400, 200, 600), 10, 0.005, True),
    "gru_signals": ("GRU(32) -> Dense(4) softmax, sine/square/step (50, 3)",
                    _gru, waveforms, (2000, 200, 500), 8, 0.01, True),
    "tokens_lstm": ("Embedding(263, 64) -> LSTM(32) -> Dense(4) softmax, tokens (10,)",
                    _tokens, token_topics, (3000, 300, 600), 6, 0.01, True),
    "bilstm_reg": ("Bidirectional(LSTM(16), seq) -> Bidirectional(LSTM(16)) -> Dense(2), "
                   "regression (24, 3)", _bilstm, oscillation_params, (2000, 200, 500), 12,
                   0.01, False),
}
SEED = 0
ROUTES = ["keras3", "keras3_b1", "tf_keras_b1", "unroll_b1"]


def train(name: str, out: Path):
    """Train one model (fixed seeds); save its weights and data for the
    TFLite workers.  Returns (model, data dict)."""
    import keras
    _, build, gen, (n_train, n_cal, n_test), epochs, lr, classifier = MODELS[name]
    seed = SEED + list(MODELS).index(name)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = gen(rng, n_train + n_test)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    x_cal = x_train[:n_cal]
    model = build(keras.layers, keras.Input, keras.Sequential)
    if classifier:
        model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy")
    else:
        model.compile(keras.optimizers.Adam(lr), "mse")
    t0 = time.time()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    ref = np.asarray(model.predict(x_test, batch_size=256, verbose=0)).reshape(len(x_test), -1)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", x_cal=x_cal, x_test=x_test, y_test=y_test, ref=ref)
    np.savez(folder / "weights.npz", *model.get_weights())
    data = dict(x_cal=x_cal, x_test=x_test, y_test=y_test, ref=ref, seed=seed,
                train_seconds=time.time() - t0, n=(n_train, n_cal, n_test), epochs=epochs,
                classifier=classifier)
    return model, data


def task_score(out, y, classifier: bool) -> float:
    """Accuracy (classifiers) or RMSE against the true targets."""
    out = np.asarray(out).reshape(len(y), -1)
    if classifier:
        return float(np.mean(out.argmax(1) == y))
    return float(np.sqrt(np.mean((out - y.reshape(len(y), -1)) ** 2)))


# ------------------------------------------------------------ TFLite worker
# Runs in a subprocess: `recurrent.py --worker NAME ROUTE FOLDER`.  Writes
# FOLDER/NAME/ROUTE.json (+ .tflite, outputs) and prints "STAGE <what>"
# lines so a crash can be placed.


def _stage(what: str):
    print(f"STAGE {what}", flush=True)


def _short_error(text: str) -> str:
    """The first informative line of a converter / interpreter error."""
    lines = [re.sub(r"^.*?error: ", "", ln).strip() for ln in str(text).splitlines()
             if "error:" in ln]
    lines = [ln for ln in lines if ln and not ln.startswith("loc(")]
    lines = [ln for ln in lines if "' op " in ln] + lines     # the op that failed first
    msg = lines[0] if lines else str(text).strip().splitlines()[-1] if str(text).strip() else "?"
    msg = re.sub(r"\s+", " ", msg)
    return msg[:160]


def _capture_fd2(fn):
    """Run fn() with the C-level stderr captured; (result or exception, text)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 (reported, not hidden)
            result = e
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return result, tmp.read().decode(errors="replace")


def worker(name: str, route: str, folder: Path) -> dict:
    import warnings
    warnings.simplefilter("ignore")
    import tensorflow as tf
    from exporter.verify import quantize_like_c
    res = {"route": route, "ok": False}
    d = np.load(folder / "data.npz")
    weights = list(np.load(folder / "weights.npz").values())
    build = MODELS[name][1]
    _stage("build")
    if route == "tf_keras_b1":
        try:
            import tf_keras as K
        except ImportError:
            res["reason"] = "tf_keras not installed (pip install --no-deps tf-keras)"
            return res
    else:
        import keras as K
    bs = None if route == "keras3" else 1
    model = build(K.layers, K.Input, K.Sequential, bs, route == "unroll_b1")
    model.set_weights(weights)
    x_cal, x_test, ref = d["x_cal"], d["x_test"], d["ref"]
    clone = np.asarray(model.predict(x_test, batch_size=bs or 64, verbose=0)).reshape(ref.shape)
    res["clone_max_diff"] = float(np.abs(clone - ref).max())
    print(f"CLONE {res['clone_max_diff']!r}", flush=True)

    def representative():
        for row in x_cal:
            yield [row[None].astype(np.float32 if row.dtype != np.int32 else np.int32)]

    _stage("convert")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    flat, text = _capture_fd2(conv.convert)     # the converter logs its errors on fd 2
    if isinstance(flat, Exception):
        res["stage"], res["reason"] = "conversion failed", _short_error(f"{text}\n{flat}")
        return res
    path = folder / f"{route}.tflite"
    path.write_bytes(flat)
    res["tflite_bytes"] = len(flat)

    _stage("tf.lite interpreter")
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    plain = tf.lite.Interpreter(model_content=flat, experimental_op_resolver_type=resolver)
    tensors = {t["index"]: t for t in plain.get_tensor_details()}
    ops, mismatched = [], []
    for op in plain._get_ops_details():
        desc = op["op_name"]
        if "LSTM" in desc and len(op["inputs"]) > 19:
            # The int8 scheme TFLite chose: the cell state's (input 19) type.  The
            # h state variable (input 18) is read back as the next step's h, so
            # its quantization must be the output's; say where it is not.
            state, cell = op["inputs"][18], op["inputs"][19]
            desc += f" (cell state {np.dtype(tensors[cell]['dtype']).name})"
            qs, qo = tensors[state]["quantization"], tensors[op["outputs"][0]]["quantization"]
            if qs != qo:
                mismatched.append(f"{qs[0]:.3g}/zp {qs[1]} vs output {qo[0]:.3g}/zp {qo[1]}")
        ops.append(desc)
    res["ops"] = ops
    n_lstm = sum("LSTM" in o for o in ops)
    if mismatched:
        res["note"] = (f"{len(mismatched)} of {n_lstm} LSTM ops: h state variable quantized "
                       f"unlike the op's output (" + "; ".join(mismatched) + ")")
    try:
        interp = tf.lite.Interpreter(model_content=flat)
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        res["input_dtype"] = np.dtype(inp["dtype"]).name
        (si, zi), (so, zo) = inp["quantization"], outp["quantization"]

        def raw_input(row):
            if inp["dtype"] == np.int8:
                return quantize_like_c(row, si, zi).reshape(inp["shape"])
            return row.astype(inp["dtype"]).reshape(inp["shape"])

        outs = []
        for row in x_test:
            interp.reset_all_variables()      # LSTM h, c are variables: zero per sample
            interp.set_tensor(inp["index"], raw_input(row))
            interp.invoke()
            outs.append(interp.get_tensor(outp["index"]).astype(np.float32).ravel())
        out = (np.stack(outs) - zo) * so
        np.save(folder / f"{route}_tflite_out.npy", out)
        res["output_step"] = float(so)
    except Exception as e:  # noqa: BLE001
        res["stage"], res["reason"] = "tf.lite interpreter failed", _short_error(e)
        return res
    res["ok"] = True
    (folder / f"{route}.json").write_text(json.dumps(res))   # kept if TFLM crashes

    _stage("tflm")
    try:
        from tflite_micro import runtime
    except ImportError as e:
        res["tflm_reason"] = f"tflite-micro not importable ({e})"
        return res

    def run_tflm():
        tm = runtime.Interpreter.from_file(str(path))
        rows = []
        for k, row in enumerate(x_test):
            if k:
                tm.reset()                    # LSTM h, c are variables: zero per sample
            tm.set_input(raw_input(row), 0)
            tm.invoke()
            rows.append(tm.get_output(0).astype(np.float32).ravel())
            if k == 0:
                tm.print_allocations()
        return np.stack(rows)

    got, text = _capture_fd2(run_tflm)
    if isinstance(got, Exception):
        why = [ln.strip() for ln in text.splitlines()
               if ln.strip() and "Arena allocation" not in ln and not ln.startswith("[")]
        op = re.search(r"(?:opcode|op(?:erator)?)\s*'?([A-Z_0-9]{3,})'?", text + str(got))
        res["tflm_reason"] = (f"unsupported op {op.group(1)}" if op and "find op" in text + str(got)
                              else (why[0] if why else _short_error(got)))[:160]
        res["tflm_detail"] = (text + str(got))[:600]
        return res
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
    res["tflm_arena"] = [found.get("total"), found.get("head"), found.get("tail")]
    np.save(folder / f"{route}_tflm_out.npy", (got - zo) * so)
    res["tflm_ok"] = True
    return res


def run_worker(name: str, route: str, folder: Path) -> dict:
    """One conversion route in a subprocess; its JSON, or the crash."""
    t0 = time.time()
    result_file = folder / f"{route}.json"
    result_file.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, __file__, "--worker", name, route, str(folder)],
                       capture_output=True, text=True, timeout=900)
    stages = re.findall(r"^STAGE (.*)$", r.stdout, re.M)
    if r.returncode == 0 and result_file.exists():
        res = json.loads(result_file.read_text())
    else:
        stage = stages[-1] if stages else "start"
        if r.returncode < 0:
            sig = signal.Signals(-r.returncode).name
            why = f"process killed by {sig} during {stage}"
        else:
            why = f"exit code {r.returncode} during {stage}: {_short_error(r.stderr)}"
        clone = re.findall(r"^CLONE (.*)$", r.stdout, re.M)
        res = {"route": route, "ok": False, "crashed": True,
               "clone_max_diff": float(clone[0]) if clone else None,
               "stage": {"convert": "conversion failed", "tflm": "TFLM failed"}.get(
                   stage, f"{stage} failed"),
               "reason": why}
        if stage == "tflm" and result_file.exists():   # tf.lite part finished
            res = json.loads(result_file.read_text()) | {"tflm_reason": why}
    res["seconds"] = time.time() - t0
    return res


def worker_main(name, route, folder):
    folder = Path(folder)
    res = worker(name, route, folder)
    (folder / f"{route}.json").write_text(json.dumps(res))


# ------------------------------------------------------------- Cortex-M4

M4_MAIN = r"""
#include <stdio.h>
#include "m4bench.h"
#include "{p}.h"
static const {p}_input_t input[{p}_INPUT_SIZE] = {{ {values} }};
static {p}_output_t output[{p}_OUTPUT_SIZE];
int main(void)
{{
    int i, rc;
    bench_begin();
    rc = {p}_invoke(input, output);
    bench_end();
    printf("rc %d out", rc);
    for (i = 0; i < {p}_OUTPUT_SIZE; ++i) printf(" %d", (int)output[i]);
    printf("\n");
    return rc;
}}
"""


def m4_count(out_dir: Path, prefix: str, raw_row: np.ndarray, portable: bool):
    """(instructions of one PREFIX_invoke, raw outputs) on QEMU mps2-an386."""
    main = out_dir.parent / f"{prefix}_m4_main.c"
    main.write_text(M4_MAIN.format(p=prefix, values=", ".join(str(int(v)) for v in raw_row)))
    sources = [str(p) for p in sorted(out_dir.rglob("*.c"))] + [str(main)]
    cmd = [sys.executable, str(M4RUN), "-I", str(out_dir), "--timeout", "600",
           "--ldflags=-Wl,--defsym=__stack_size=0x10000"]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    r = subprocess.run(cmd + sources, capture_output=True, text=True)
    m = re.search(r"--- m4run region 0 ---\ninstructions: (\d+)", r.stdout)
    outs = re.search(r"rc 0 out((?: -?\d+)*)", r.stdout)
    if r.returncode != 0 or not m or not outs:
        raise RuntimeError(f"m4run failed for {prefix}:\n{r.stdout}\n{r.stderr}")
    return int(m.group(1)), np.array(outs.group(1).split(), np.int64)


# ------------------------------------------------------------------ main

def fmt(v, spec=".4g"):
    return "-" if v is None else format(v, spec)


def pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "c_runtime", "exporter", "templates"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted changes in c_runtime/exporter/templates" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--no-m4", action="store_true", help="skip the Cortex-M4 instruction counts")
    ap.add_argument("--no-tflite", action="store_true", help="skip the TFLite/TFLM columns")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(*args.worker)
    names = args.models.split(",")
    for n in names:
        if n not in MODELS:
            sys.exit(f"unknown model {n}; choose from {', '.join(MODELS)}")
    do_m4 = not args.no_m4
    if do_m4 and not M4RUN.exists():
        print(f"{M4RUN} not found: no Cortex-M4 counts", file=sys.stderr)
        do_m4 = False
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="k2m_recurrent_"))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    import keras
    from exporter import export_model, host
    from exporter.metrics import compare
    from exporter.verify import quantize_like_c

    def log(msg):
        print(f"[{time.time() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures, results = {}, {}

    def route_chain(name):
        """keras3 and keras3_b1 always; tf_keras_b1; unroll_b1 only if
        tf_keras_b1 gave nothing that runs."""
        folder = out / name
        res = {r: run_worker(name, r, folder) for r in ROUTES[:3]}
        if not res["tf_keras_b1"].get("ok"):
            res["unroll_b1"] = run_worker(name, "unroll_b1", folder)
        return res

    for name in names:
        model, data = train(name, out)
        log(f"{name}: trained in {data['train_seconds']:.0f}s")
        if not args.no_tflite:
            futures[name] = pool.submit(route_chain, name)
        r = results[name] = {"data": data, "model": model}
        y = data["y_test"]
        r["keras_score"] = task_score(data["ref"], y, data["classifier"])
        try:
            rep = export_model(model, out / name / "k2m", dtype="int8",
                               calibration_data=data["x_cal"], name=name, force=True)
            c = host.load(out / name / "k2m", build_dir=out / name / "k2m_build")
            got = c.predict(data["x_test"].astype(np.float32))
        except Exception as e:  # noqa: BLE001 (an exporter problem: reported)
            r["export_error"] = f"{type(e).__name__}: {e}"
            log(f"{name}: export failed: {e}")
            continue
        r.update(report=rep, got=got, ours=compare(got, data["ref"], c.output_scale),
                 ours_score=task_score(got, y, data["classifier"]), step=c.output_scale)
        log(f"{name}: exported, host run done")
        if do_m4:
            row = data["x_test"][0]
            raw = (row.astype(np.int32).ravel() if c.input_ctypes[0] == "int32_t"
                   else quantize_like_c(row, c.input_scale, c.input_zero_point).ravel())
            host_raw = c.invoke(raw[None]).ravel().astype(np.int64)
            try:
                dsp, out_dsp = m4_count(out / name / "k2m", name, raw, False)
                port, out_port = m4_count(out / name / "k2m", name, raw, True)
                r["m4"] = (dsp, port, bool(np.array_equal(out_dsp, host_raw)
                                           and np.array_equal(out_port, host_raw)))
            except RuntimeError as e:
                r["m4_error"] = str(e).splitlines()[0]
            log(f"{name}: M4 counts done")
    for name, fut in futures.items():
        results[name]["tflite"] = fut.result()
    log("TFLite routes done")

    # ------------------------------------------------------------ tables
    commit = git_commit()
    print(f"\n## Recurrent models: k2m int8 vs TFLite int8 / TFLM (commit {commit})\n")
    print(f"Data: synthetic, real-like (see benchmarks/recurrent.py), numpy and Keras seed "
          f"{SEED} + model index; models trained here with Adam, batch 32.  Calibration "
          f"(ours) = representative dataset (TFLite) = the first samples of the training "
          f"split; all figures on the held-out test split.  tensorflow "
          f"{__import__('tensorflow').__version__}, keras {keras.__version__}.\n")

    print("### Models\n")
    print("train / cal / test = samples; params and MACs from our report (MACs: "
          "input and recurrent matrix products of every step, Dense).\n")
    print("| model | layers | train / cal / test | epochs | train s | params | MACs |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        r, d = results[name], results[name]["data"]
        rep = r.get("report")
        print(f"| {name} | {MODELS[name][0]} | {' / '.join(map(str, d['n']))} | {d['epochs']} | "
              f"{d['train_seconds']:.0f} | {fmt(rep and rep.params, ',')} | "
              f"{fmt(rep and rep.macs, ',')} |")

    def tfl_pick(r):
        for route in ROUTES:
            t = r.get("tflite", {}).get(route)
            if t and t.get("ok"):
                return route, t
        return None, None

    print("\n### Accuracy and parity with Keras (test split)\n")
    print("task = accuracy (classifiers) or RMSE against the true targets (bilstm_reg); "
          "RMSE, max |err|, within 2 steps (of that model's output quantization step) and "
          "top-1 agreement compare the int8 outputs, dequantized, with Keras's float32 "
          "outputs.  TFLite int8 = the .tflite of the route named (conversion table below) "
          "run by tf.lite's interpreter; TFLM = the same .tflite run by tflite-micro; both "
          "reset the LSTM state variables before every sample.\n")
    print("| model | implementation | task | RMSE vs Keras | max abs err | within 2 steps | "
          "top-1 agreement |")
    print("|---|---|---:|---:|---:|---:|---:|")

    def acc_row(name, who, out_, step, d):
        m = compare(out_, d["ref"], step)
        sc = pct if d["classifier"] else fmt
        print(f"| {name} | {who} | {sc(task_score(out_, d['y_test'], d['classifier']))} | "
              f"{m['rmse']:.4g} | {m['max_abs']:.4g} | {pct(m['within_2_steps'])} "
              f"(step {step:.3g}) | {pct(m['top1_agreement']) if d['classifier'] else '-'} |")

    for name in names:
        r = results[name]
        d = r["data"]
        sc = pct if d["classifier"] else fmt
        print(f"| {name} | Keras float32 | {sc(r['keras_score'])} | - | - | - | - |")
        if "ours" in r:
            acc_row(name, "**k2m int8 (ours)**", r["got"], r["step"], d)
        else:
            print(f"| {name} | k2m int8 (ours) | export failed: {r.get('export_error', '?')} "
                  f"| | | | |")
        if args.no_tflite:
            continue
        route, t = tfl_pick(r)
        if not t:
            print(f"| {name} | TFLite int8 | no route converted and ran (see below) | | | | |")
            continue
        acc_row(name, f"TFLite int8 ({route}, tf.lite)",
                np.load(out / name / f"{route}_tflite_out.npy"), t["output_step"], d)
        if t.get("tflm_ok"):
            acc_row(name, f"TFLM ({route})", np.load(out / name / f"{route}_tflm_out.npy"),
                    t["output_step"], d)
        else:
            print(f"| {name} | TFLM ({route}) | n/a: {t.get('tflm_reason', '?')} | | | | |")

    if not args.no_tflite:
        print("\n### TFLite int8 conversion routes\n")
        print("Every route converts the same trained weights (copy max diff = the copy's "
              "float outputs against the trained model's); ops without the tf.lite default "
              "delegate; TFLM = whether tflite-micro runs the .tflite.\n")
        print("| model | route | copy max diff | outcome | ops | .tflite B | TFLM |")
        print("|---|---|---:|---|---|---:|---|")
        for name in names:
            for route, t in results[name].get("tflite", {}).items():
                if t.get("ok"):
                    outcome = "converted, runs" + (f"; {t['note']}" if t.get("note") else "")
                else:
                    outcome = f"{t.get('stage', 'failed')}: {t.get('reason', '?')}"
                outcome = outcome.replace("|", "\\|")
                ops = t.get("ops")
                ops_s = ", ".join(_dedupe(ops)) if ops else "-"
                tflm = ("runs" if t.get("tflm_ok") else
                        f"{t['tflm_reason']}" if t.get("tflm_reason") else "-")
                print(f"| {name} | {route} | {fmt(t.get('clone_max_diff'), '.2g')} | {outcome} | "
                      f"{ops_s} | {fmt(t.get('tflite_bytes'), ',')} | {tflm.replace('|', '/')} |")

    print("\n### Memory\n")
    print("arena = all activation RAM: ours = report.arena_bytes (the static arena, "
          "recurrent state included); TFLM = RecordingMicroAllocator after one invoke on "
          "this 64-bit host, total = head (planned tensors and scratch) + tail "
          "(persistent runtime structs); flash: ours = report.weight_bytes (weights, "
          "biases, LUTs and requantization constants; code not included), TFLite = the "
          ".tflite file (weights + graph).\n")
    print("| model | TFLite route | arena ours B | TFLM arena total B | TFLM head B | "
          "weights ours B | .tflite B |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = results[name]
        rep = r.get("report")
        route, t = tfl_pick(r)
        arena = (t or {}).get("tflm_arena") or [None, None, None]
        tflm_tot = fmt(arena[0], ",") if arena[0] else (
            f"n/a: {t.get('tflm_reason', '?')}" if t else "n/a: no .tflite")
        print(f"| {name} | {route or '-'} | {fmt(rep and rep.arena_bytes, ',')} | {tflm_tot} | "
              f"{fmt(arena[1], ',')} | {fmt(rep and rep.weight_bytes, ',')} | "
              f"{fmt((t or {}).get('tflite_bytes'), ',')} |")

    if do_m4:
        print("\n### Cortex-M4 instructions per inference (ours)\n")
        print("One `PREFIX_invoke` on the first test input, counted exactly by "
              "../shared/tools/m4run on QEMU mps2-an386 (arm-none-eabi-gcc -O2, "
              "instructions, not cycles); DSP = default build, portable = -DK2M_PORTABLE; "
              "M4 = host: both builds' int8 outputs equal the host build's.\n")
        print("| model | MACs | instr DSP | instr/MAC DSP | instr portable | "
              "instr/MAC portable | M4 = host |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name in names:
            r = results[name]
            rep = r.get("report")
            if "m4" not in r:
                print(f"| {name} | {fmt(rep and rep.macs, ',')} | "
                      f"{r.get('m4_error', r.get('export_error', '-'))[:80]} | | | | |")
                continue
            dsp, port, same = r["m4"]
            print(f"| {name} | {rep.macs:,} | {dsp:,} | {dsp / rep.macs:.2f} | {port:,} | "
                  f"{port / rep.macs:.2f} | {'yes' if same else 'NO'} |")
    log(f"done in {time.time() - t_start:.0f}s; work folder {out}")


def _dedupe(ops):
    """['A', 'B', 'B', 'B'] -> ['A', 'B x3'] keeping the order of first use."""
    counts = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return [f"{op} x{n}" if n > 1 else op for op, n in counts.items()]


if __name__ == "__main__":
    main()
