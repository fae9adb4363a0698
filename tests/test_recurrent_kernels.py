"""The recurrent kernels (c_runtime/k2m_recurrent.c, int8, and k2m_recurrent_f32.c) against rnn_ref.py.

The test module is built with cffi from k2m.h's recurrent section and
includes the two kernel files themselves: the static k2m_lut16 is testable
directly, and this file does not depend on the rest of the runtime.  int8 kernels must be
bit-exact on random weights, scales and tables under every flag
combination; float kernels agree with the float64 reference to 1e-5 for
every pair of activations.  Output, state and scratch (exactly
K2M_*_SCRATCH elements) sit between guard elements, so a stray write on
either side fails the test.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnn_ref as ref  # noqa: E402
from test_kernels import GUARD, Caller, section_module, sentinel  # noqa: E402

CELLS = ["simple_rnn", "lstm", "gru"]
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
N_CASES = 6  # random int8 cases per kernel and flag combination

SHIMS = r"""
#include "k2m_recurrent.c"
#include "k2m_recurrent_f32.c"
int32_t t_scratch(int32_t cell, int32_t units)
{
    return cell == 0 ? K2M_SIMPLE_RNN_SCRATCH(units)
         : cell == 1 ? K2M_LSTM_SCRATCH(units) : K2M_GRU_SCRATCH(units);
}
void t_lut16(const int16_t *v, const int16_t *t, int32_t *out, int32_t n)
{ int32_t i; for (i = 0; i < n; ++i) out[i] = k2m_lut16(v[i], t); }
"""
SHIM_CDEF = """
int32_t t_scratch(int32_t cell, int32_t units);
void t_lut16(const int16_t *v, const int16_t *t, int32_t *out, int32_t n);
"""


@pytest.fixture(scope="session")
def rnn(tmp_path_factory):
    return section_module("_k2m_recurrent_test", "recurrent layers", SHIMS, SHIM_CDEF,
                          tmp_path_factory.mktemp("k2m_recurrent_build"))


# ---- buffers and calls ---------------------------------------------------

def padded(values):
    """values copied between GUARD sentinels on each side: (full, view)."""
    full = np.full(values.size + 2 * GUARD, sentinel(values.dtype), values.dtype)
    full[GUARD:-GUARD] = values.ravel()
    return full, full[GUARD:-GUARD]


def check_padding(full, what):
    s = sentinel(full.dtype)
    assert np.all(full[:GUARD] == s) and np.all(full[-GUARD:] == s), \
        f"the kernel wrote outside its {what}"


def call(rnn, c, cell, kind, flags, params, x, state):
    """Runs k2m_<cell>_<kind> on guarded output, state and scratch buffers;
    returns (output, final state)."""
    units = state.size // 2 if cell == "lstm" else state.size
    steps, features = x.shape
    dtype = np.int8 if kind == "s8" else np.float32
    out_n = steps * units if flags & ref.SEQUENCES else units
    n_scratch = rnn.lib.t_scratch(CELLS.index(cell), units)
    assert n_scratch == ref.SCRATCH[cell](units)
    out_full, out = padded(np.zeros(out_n, dtype))
    state_full, state_view = padded(state.copy())
    # garbage on entry: the kernel must not read scratch before writing it
    scratch_full, _ = padded(np.random.randint(-999, 999, n_scratch).astype(state.dtype))
    region = lambda full, t: c.ptr(full[GUARD:-GUARD], t)  # noqa: E731
    st = "int16_t" if kind == "s8" else "float"
    getattr(rnn.lib, f"k2m_{cell}_{kind}")(
        c.new("k2m_rnn_dims", dict(steps=steps, features=features, units=units, flags=flags)),
        params, c.ptr(x, "int8_t" if kind == "s8" else "float"),
        region(out_full, "int8_t" if kind == "s8" else "float"),
        region(state_full, st), region(scratch_full, st))
    check_padding(out_full, "output")
    check_padding(state_full, "state")
    check_padding(scratch_full, "scratch")
    out = out.reshape(steps, units) if flags & ref.SEQUENCES else out
    return out, state_view


def random_dims():
    return (int(np.random.randint(1, 41)), int(np.random.randint(1, 21)),
            int(np.random.randint(1, 13)))  # units, features, steps


# ---- int8 ------------------------------------------------------------------

def scales(n, lo, hi):
    """(multiplier, shift) per row: Q31 multipliers in [2^30, 2^31), shifts
    in [lo, hi]."""
    return (np.random.randint(2**30, 2**31, n).astype(np.int32),
            np.random.randint(lo, hi + 1, n).astype(np.int32))


def scale():
    m, s = scales(1, -17, -13)  # int16 x int16 products back to int16
    return int(m[0]), int(s[0])


def random_lut():
    """A 513-entry int16 table: a real tanh or sigmoid (output 1.0 = 2^15),
    a ReLU, or a random walk, rising, falling or neither."""
    kind = np.random.choice(["tanh", "sigmoid", "relu", "up", "down", "walk"])
    v = -32768.0 + 128.0 * np.arange(513)
    in_scale = 10 ** np.random.uniform(-1, 1.2) / 32768  # int16 range +-0.1 .. +-16
    if kind == "tanh":
        t = np.tanh(in_scale * v) * 32768
    elif kind == "sigmoid":
        t = 32768 / (1 + np.exp(-in_scale * v))
    elif kind == "relu":
        t = np.maximum(v, 0) * np.random.uniform(0.2, 2)
    else:
        step = np.random.choice([16, 256, 8192])
        t = np.cumsum(np.random.randint(-step, step + 1, 513)) + np.random.randint(-9999, 9999)
        t = {"up": np.sort(t), "down": -np.sort(t), "walk": t}[kind]
    return np.clip(np.round(t), -32768, 32767).astype(np.int16)


def random_weights(gates, units, features, recurrent_bias):
    rows = gates * units
    km, ks = scales(rows, -4, 0)     # kernel sums reach ~2^16
    rm, rs = scales(rows, -12, -4)   # recurrent sums ~2^20 .. 2^24
    return dict(
        kernel=np.random.randint(-127, 128, (rows, features)).astype(np.int8),
        bias=np.random.randint(-2**15, 2**15, rows).astype(np.int32),
        kernel_multiplier=km, kernel_shift=ks,
        recurrent=np.random.randint(-127, 128, (rows, units)).astype(np.int8),
        recurrent_bias=(np.random.randint(-2**22, 2**22, rows).astype(np.int32)
                        if recurrent_bias else None),
        recurrent_multiplier=rm, recurrent_shift=rs)


def random_params_s8(cell, units, features, recurrent_bias=False):
    m, s = scales(1, -10, -6)  # int16 h to int8
    p = dict(w=random_weights(GATES[cell], units, features, recurrent_bias),
             h_to_output=(int(m[0]), int(s[0])),
             output_offset=int(np.random.randint(-128, 128)))
    if cell == "simple_rnn":
        p["act_lut"] = random_lut()
    elif cell == "lstm":
        p.update(gate_lut=[random_lut() for _ in range(4)], cell_lut=random_lut(),
                 forget=scale(), input=scale(), output_gate=scale())
    else:
        p.update(gate_lut=[random_lut() for _ in range(3)], reset=scale(), keep=scale(),
                 update=scale(), one=int(np.random.randint(0, 32769)))
    return p


def struct_s8(c, cell, p):
    """The cffi k2m_<cell>_s8_params for the reference's parameter dict."""
    w = p["w"]
    s = dict(w={k: c.ptr(v, "int8_t" if v is not None and v.dtype == np.int8 else "int32_t")
                for k, v in w.items()},
             h_to_output=dict(zip(("multiplier", "shift"), p["h_to_output"])),
             output_offset=p["output_offset"])
    for k, v in p.items():
        if k in ("act_lut", "cell_lut"):
            s[k] = c.ptr(v, "int16_t")
        elif k == "gate_lut":
            s[k] = [c.ptr(t, "int16_t") for t in v]
        elif k in ("forget", "input", "output_gate", "reset", "keep", "update"):
            s[k] = dict(zip(("multiplier", "shift"), v))
        elif k == "one":
            s[k] = v
    return c.new(f"k2m_{cell}_s8_params", s)


def check_s8(rnn, cell, flags, recurrent_bias=False):
    units, features, steps = random_dims()
    p = random_params_s8(cell, units, features, recurrent_bias)
    x = np.random.randint(-128, 128, (steps, features)).astype(np.int8)
    n_state = 2 * units if cell == "lstm" else units
    stateful = np.random.rand() < 0.5
    state = (np.random.randint(-32768, 32768, n_state) if stateful
             else np.zeros(n_state)).astype(np.int16)
    c = Caller(rnn)
    got, got_state = call(rnn, c, cell, "s8", flags, struct_s8(c, cell, p), x, state)
    want, want_state = getattr(ref, f"{cell}_s8")(flags, p, x, state)
    what = f"{cell} units={units} features={features} steps={steps} flags={flags}"
    np.testing.assert_array_equal(got, want, err_msg=what)
    np.testing.assert_array_equal(got_state, want_state, err_msg=what)


@pytest.mark.parametrize("i", range(N_CASES))
@pytest.mark.parametrize("flags", range(8))
@pytest.mark.parametrize("cell", ["simple_rnn", "lstm"])
def test_s8(rnn, cell, flags, i):
    check_s8(rnn, cell, flags)


@pytest.mark.parametrize("i", range(N_CASES))
@pytest.mark.parametrize("recurrent_bias", [False, True])
@pytest.mark.parametrize("flags", [f | r for f in range(8) for r in (0, ref.GRU_RESET_AFTER)])
def test_gru_s8(rnn, flags, recurrent_bias, i):
    check_s8(rnn, "gru", flags, recurrent_bias)


def test_lut16(rnn):
    """Every int16 input through real, random and steepest tables."""
    v = np.arange(-32768, 32768).astype(np.int16)
    extreme = np.where(np.arange(513) % 2 == 0, -32768, 32767).astype(np.int16)
    for t in [random_lut() for _ in range(20)] + [extreme, -extreme - 1]:
        c = Caller(rnn)
        out = np.zeros(v.size, np.int32)
        rnn.lib.t_lut16(c.ptr(v, "int16_t"), c.ptr(t, "int16_t"), c.ptr(out, "int32_t"), v.size)
        np.testing.assert_array_equal(out, ref.lut16(v, t))


def test_lut16_known_answer(rnn):
    """t[k] = 128 k - 32768 interpolates to the identity, and the falling
    t[k] = 32767 - 128 k to -v - 1; truncating the negative slope term
    instead of flooring it would give -v between table entries.  (The top
    entry is clipped to int16, so the last 128 inputs are left out.)"""
    k = np.arange(513)
    v = np.array([-32768, -32767, -32641, -32640, -129, -128, -1, 0, 1, 127, 32639],
                 np.int16)
    for t, want in ((128 * k - 32768, v), (32767 - 128 * k, -v.astype(np.int32) - 1)):
        c = Caller(rnn)
        t = np.clip(t, -32768, 32767).astype(np.int16)
        out = np.zeros(v.size, np.int32)
        rnn.lib.t_lut16(c.ptr(v, "int16_t"), c.ptr(t, "int16_t"), c.ptr(out, "int32_t"), v.size)
        np.testing.assert_array_equal(out, want)


# ---- float -------------------------------------------------------------------

def random_params_f32(cell, units, features, act, rec_act, reset_after):
    rows = GATES[cell] * units
    bias_rows = 2 * rows if reset_after else rows
    # entries ~ 1 / sqrt(n): pre-activations of order 1, a contracting
    # recurrence.  With an unbounded activation (relu, linear) the state
    # can grow every step and float32 rounding with it, so its weights are
    # smaller.
    gain = 0.4 if {act, rec_act} & {"relu", "linear"} else 1.0
    return dict(
        kernel=(np.random.uniform(-2, 2, (rows, features)) * gain
                / np.sqrt(features)).astype(np.float32),
        recurrent=(np.random.uniform(-1.2, 1.2, (rows, units)) * gain
                   / np.sqrt(units)).astype(np.float32),
        bias=(None if np.random.rand() < 0.25
              else np.random.uniform(-0.5, 0.5, bias_rows).astype(np.float32) * gain),
        act=act, recurrent_act=rec_act)


def struct_f32(c, rnn, p):
    enum = lambda name: getattr(rnn.lib, "K2M_RNN_" + name.upper())  # noqa: E731
    return c.new("k2m_rnn_f32_params", dict(
        kernel=c.ptr(p["kernel"], "float"), recurrent=c.ptr(p["recurrent"], "float"),
        bias=c.ptr(p["bias"], "float"), act=enum(p["act"]),
        recurrent_act=enum(p["recurrent_act"])))


FLOAT_CASES = [("simple_rnn", a, "sigmoid") for a in ref.ACTS] + [
    (cell, a, r) for cell in ("lstm", "gru") for a, r in itertools.product(ref.ACTS, ref.ACTS)]


@pytest.mark.parametrize("cell,act,rec_act", FLOAT_CASES)
def test_f32(rnn, cell, act, rec_act):
    for flags in range(8):
        if cell == "gru" and np.random.rand() < 0.5:
            flags |= ref.GRU_RESET_AFTER
        units, features, steps = random_dims()
        p = random_params_f32(cell, units, features, act, rec_act,
                              flags & ref.GRU_RESET_AFTER)
        x = np.random.uniform(-1.5, 1.5, (steps, features)).astype(np.float32)
        n_state = 2 * units if cell == "lstm" else units
        state = (np.random.uniform(-1, 1, n_state) * (np.random.rand() < 0.5)).astype(np.float32)
        c = Caller(rnn)
        got, got_state = call(rnn, c, cell, "f32", flags, struct_f32(c, rnn, p), x, state)
        want, want_state = getattr(ref, f"{cell}_f32")(flags, p, x, state)
        for g, w, what in ((got, want, "output"), (got_state, want_state, "state")):
            # relative, with a floor for values that cancel to near zero
            tol = 1e-5 * np.abs(w) + 1e-6 * np.abs(w).max()
            err = np.abs(g - w)
            assert np.all(err <= tol), (
                f"{cell} {act}/{rec_act} flags={flags} units={units} features={features} "
                f"steps={steps}: {what} off by up to {err.max():.3g}")
