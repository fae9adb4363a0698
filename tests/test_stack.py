"""Stack use of PREFIX_invoke / PREFIX_predict on Cortex-M4 (exporter/stack.py).

Each emitted folder is compiled with arm-none-eabi-gcc -O2 for Cortex-M4
(hard float, the DSP kernels) with -fstack-usage -fcallgraph-info=su, and the
frames summed along the deepest call path, memcpy/memset/libm included.

The stated bound: STACK_BOUND = 1024 bytes for PREFIX_invoke and
PREFIX_predict of every model here, int8 and float32, with no dynamic frame,
recursion or unresolved call.  Measured when the bound was set (gcc 12.2):
the digits example 476 bytes int8 (invoke; predict 452) and 216 float32; the
every-op-family model 476 int8 (predict 460) and 232 float32.  The int8 worst path is
invoke -> run -> k2m_conv2d_s8 -> im2col_s8 -> col_seg (192 + 184 + 28 bytes
of it in the conv kernel), so the bound leaves about 2x headroom for kernel
work without letting the stack grow unnoticed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STACK_BOUND = 1024


@pytest.fixture(scope="module")
def arm_gcc():
    return require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi")


@pytest.fixture(scope="module")
def digits_folders(tmp_path_factory):
    from exporter import export_model
    out = tmp_path_factory.mktemp("stack_digits")
    cal = np.load(EXAMPLES / "digits_calibration.npy")
    export_model(EXAMPLES / "digits_cnn.keras", out / "int8", calibration_data=cal)
    export_model(EXAMPLES / "digits_cnn.keras", out / "float32", dtype="float32")
    return out


def every_op_model(keras):
    """conv, depthwise, dense (int8 and int8 -> int16), max/avg/global pools,
    softmax, activation tables (int8 and int16), add, concatenate, padding."""
    L = keras.layers
    inp = keras.Input((12, 12, 3))
    x = L.ZeroPadding2D(1)(inp)
    x = L.Conv2D(8, 3, activation="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = L.Activation("tanh")(x)
    a = L.MaxPooling2D(2)(x)
    b = L.AveragePooling2D(2)(x)
    s = L.Add()([a, b])
    c = L.Concatenate()([s, a])
    c = L.Conv2D(8, 1, activation="relu6")(c)
    g = L.GlobalAveragePooling2D()(c)
    d = L.Dense(16, activation="relu")(g)
    d = L.Dense(16, activation="sigmoid")(d)
    d = L.Dense(10)(d)
    return keras.Model(inp, L.Softmax()(d), name="every_op")


@pytest.fixture(scope="module")
def every_op_folders(keras, tmp_path_factory):
    from exporter import export_model
    keras.utils.set_random_seed(0)
    model = every_op_model(keras)
    out = tmp_path_factory.mktemp("stack_every_op")
    cal = np.random.default_rng(0).random((64, 12, 12, 3)).astype(np.float32)
    export_model(model, out / "int8", calibration_data=cal)
    export_model(model, out / "float32", dtype="float32")
    return out


def check_bounded(result):
    from exporter.stack import format_report
    report = format_report(result)
    print("\n" + report)
    assert result["method"] == "fcallgraph-info", report
    assert result["bounded"], report
    assert not result["dynamic"] and not result["recursive"] and not result["unresolved"], report
    assert not result["unknown"], report
    for entry in ("invoke", "predict"):
        assert result[entry] is not None, f"no {result['prefix']}_{entry}"
        assert 0 < result[entry] <= STACK_BOUND, report
    return report


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_digits_stack_bounded(arm_gcc, digits_folders, dtype):
    from exporter.stack import stack_usage
    r = stack_usage(digits_folders / dtype)
    check_bounded(r)
    assert r["prefix"] == "digits_cnn"
    kernels = {k for k in r["functions"] if k.startswith("k2m_")}
    assert {"k2m_quantize_f32_s8", "k2m_conv2d_f32"} <= kernels
    # the worst path runs through a conv kernel, whose frame is counted
    path = r["entries"]["invoke"]["path"]
    assert path[0] == "digits_cnn_invoke"
    if dtype == "int8":
        # the last conv runs fused with its global average pooling (planner)
        assert {"k2m_conv2d_s8", "k2m_conv2d_pool_s8"} & set(path), path
        assert set(r["external"]) <= {"memcpy", "memset"}
    else:
        assert "expf" in r["external"] and r["functions"]["expf"]["source"] == "disassembly"
    assert r["invoke"] == sum(r["functions"][f]["frame"] for f in path)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_every_op_family_stack_bounded(arm_gcc, every_op_folders, dtype):
    from exporter.stack import stack_usage
    folder = every_op_folders / dtype
    r = stack_usage(folder)
    check_bounded(r)
    called = (folder / "every_op.c").read_text()
    families = (["conv2d_s8", "depthwise_conv2d_s8", "fully_connected_s8(",
                 "fully_connected_s8_s16", "max_pool_s8", "avg_pool_s8", "mean_s8",
                 "softmax_s16_s8", "lut_s8", "lut_s16_s8", "add_s8", "copy_s8"]
                if dtype == "int8" else
                ["conv2d_f32", "depthwise_conv2d_f32", "fully_connected_f32", "max_pool_f32",
                 "avg_pool_f32", "softmax_f32", "tanh_f32", "sigmoid_f32", "add_f32",
                 "copy_f32"])
    missing = [f for f in families if "k2m_" + f not in called]
    assert not missing, f"the model no longer exercises {missing}"


def test_objdump_fallback_agrees(arm_gcc, digits_folders):
    """The call graph from `objdump -dr` (for a gcc without
    -fcallgraph-info) gives the same worst case as gcc's own."""
    from exporter.stack import stack_usage
    a = stack_usage(digits_folders / "int8")
    b = stack_usage(digits_folders / "int8", callgraph="objdump")
    assert b["method"] == "objdump" and b["bounded"]
    assert (a["invoke"], a["predict"]) == (b["invoke"], b["predict"])


def test_flags_dynamic_recursive_and_indirect(arm_gcc, tmp_path):
    """A VLA frame, recursion and a call through a pointer the object never
    takes the address of all make the result unbounded, and are named."""
    from exporter.stack import stack_usage
    (tmp_path / "m_weights.h").write_text("/* weights */\n")
    (tmp_path / "m.c").write_text(r"""
#include <stdint.h>
extern int (*hook)(int);
static __attribute__((noinline)) int vla(int n) { volatile int a[n]; a[0] = n; return a[0]; }
static __attribute__((noinline)) int rec(int n) { volatile int pad[4]; pad[0] = n; return n ? rec(n - 1) + pad[0] : 0; }
int m_invoke(const int8_t *in, int8_t *out) { out[0] = (int8_t)(vla(in[0]) + rec(in[1])); return 0; }
int m_predict(const float *in, float *out) { out[0] = (float)hook((int)in[0]); return 0; }
""")
    r = stack_usage(tmp_path, link_libraries=False)
    assert not r["bounded"]
    assert any("vla" in f for f in r["dynamic"]), r["dynamic"]
    assert any("rec" in f for f in r["recursive"]), r["recursive"]
    assert "m_predict" in r["unresolved"], r["unresolved"]
    assert r["invoke"] > 0 and r["predict"] is not None


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_sequence_model_stack_bounded(arm_gcc, keras, tmp_path, dtype):
    """The recurrent, embedding and TimeDistributed kernels stay within the
    bound too (their gates live in the arena, never on the stack)."""
    from exporter import export_model
    from exporter.stack import stack_usage
    from test_compile import sequence_model
    cal = sequence_model(keras, tmp_path / "seq.keras")
    export_model(tmp_path / "seq.keras", tmp_path / dtype, dtype=dtype, calibration_data=cal)
    r = stack_usage(tmp_path / dtype)
    check_bounded(r)
    suffix = "s8" if dtype == "int8" else "f32"
    assert {f"k2m_lstm_{suffix}", f"k2m_gru_{suffix}", f"k2m_simple_rnn_{suffix}",
            f"k2m_embedding_{suffix}"} <= set(r["functions"])
