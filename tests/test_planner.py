"""The arena planner's memory choices change nothing numerically.

A depthwise-separable model with fixed random weights (strided and
expanding layers, a max pool, conv + global average pooling at the end) is
exported twice: with the planner's choices (sliding-window ops in place over
their input, the last conv fused with its pooling) and with every such
choice switched off.  The two C models must give the same outputs bit for
bit - on the host (the portable loops; int8 and float32) and on the emulated
Cortex-M4 (the DSP loops, int8) - and the chosen plan must be smaller and
say what it chose.  tests/test_dsp.py holds the kernels to the overlap the
planner computes, shape by shape.
"""
from __future__ import annotations

import html

import numpy as np
import pytest

from conftest import require_tool
from exporter import export_model, host, planner, report_html


def plain_plan(graph):
    """The plan without in-place windows or fused pooling."""
    return planner._plan(graph, frozenset(), {})


@pytest.fixture(scope="module")
def sep_model(keras, tmp_path_factory):
    keras.utils.set_random_seed(1)
    L = keras.layers
    m = keras.Sequential([
        keras.Input((33, 29, 3)),
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        L.DepthwiseConv2D(3, padding="same", activation="relu"),
        L.Conv2D(16, 1, activation="relu"),                    # expanding pointwise
        L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
        L.Conv2D(16, 1),
        L.MaxPooling2D(2, padding="same"),
        L.DepthwiseConv2D(3, padding="valid", activation="relu"),
        L.Conv2D(12, 1, activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(5),
    ])
    # larger weights than Keras's initial ones, so every output moves
    for layer in m.layers:
        w = layer.get_weights()
        if w:
            layer.set_weights([v * 3 if v.ndim > 1 else v + 0.05 for v in w])
    path = tmp_path_factory.mktemp("planner") / "sep.keras"
    m.save(path)
    rng = np.random.default_rng(0)
    return path, rng.uniform(-1, 1, (40, 33, 29, 3)).astype(np.float32)


def export_both(path, x, tmp_path, monkeypatch, dtype):
    kw = dict(dtype=dtype, calibration_data=x if dtype == "int8" else None, force=True,
              target="host")
    chosen = export_model(path, tmp_path / "chosen", **kw)
    with monkeypatch.context() as m:
        m.setattr(planner, "plan", plain_plan)
        plain = export_model(path, tmp_path / "plain", **kw)
    return chosen, plain


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_chosen_plan_gives_the_same_bits_on_the_host(sep_model, tmp_path, monkeypatch, dtype):
    path, x = sep_model
    chosen, plain = export_both(path, x, tmp_path, monkeypatch, dtype)
    notes = " | ".join(chosen.planner)
    assert "in place over its input" in notes
    assert chosen.arena_bytes < plain.arena_bytes
    if dtype == "int8":
        assert "fused, the conv's map is not stored" in notes
    page = report_html.render(chosen)
    assert all(f"<li>{html.escape(n)}</li>" in page for n in chosen.planner)   # the HTML report shows them
    a = host.load(tmp_path / "chosen", build_dir=tmp_path / "b1").predict(x)
    b = host.load(tmp_path / "plain", build_dir=tmp_path / "b2").predict(x)
    assert np.array_equal(a.view(np.uint32) if dtype == "float32" else a,
                          b.view(np.uint32) if dtype == "float32" else b)
    print(f"{dtype}: arena {plain.arena_bytes} -> {chosen.arena_bytes} B; {notes}")


def test_chosen_plan_gives_the_same_bits_on_the_m4(sep_model, tmp_path, monkeypatch):
    from exporter import target
    require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    require_tool("qemu-system-arm", "apt-get install qemu-system-arm")
    path, x = sep_model
    export_both(path, x, tmp_path, monkeypatch, "int8")
    c = host.load(tmp_path / "chosen", build_dir=tmp_path / "b1")
    raw = np.clip(np.floor(x / c.input_scale + 0.5) + c.input_zero_point, -128, 127).astype(np.int8)
    on_m4 = target.run_on_qemu(tmp_path / "chosen", raw, build_dir=tmp_path / "q1")
    plain_m4 = target.run_on_qemu(tmp_path / "plain", raw, build_dir=tmp_path / "q2")
    np.testing.assert_array_equal(on_m4, plain_m4)
    np.testing.assert_array_equal(on_m4, c.invoke(raw))  # QEMU equals host
