"""The arena planner's memory choices change nothing numerically.

A depthwise-separable model with fixed random weights (strided and
expanding layers, a max pool, conv + global average pooling at the end) is
exported twice: with the planner's choices (sliding-window ops in place over
their input, the last conv fused with its pooling) and with every such
choice switched off.  The two C models must give the same outputs bit for
bit - on the host (the portable loops; int8 and float32) and on the emulated
Cortex-M4 (the DSP loops, int8) - and the chosen plan must be smaller and
say what it chose.  The same for a model of two ResNet basic blocks
(x + conv(conv(x)), the add's inputs in both orders, 3x3 / 3x3 and 3x3 /
5x5 convs, odd map sizes), which the int8 plan streams row by row
(k2m_conv_pair_add_s8): against the plain plan and against the trace build,
which runs the blocks' layers unfused.  tests/test_dsp.py holds the kernels
to the overlap and the streamed geometries the planner accepts, shape by
shape.
"""
from __future__ import annotations

import html

import numpy as np
import pytest

from conftest import require_tool
from exporter import export_model, host, planner, report_html


def plain_plan(graph):
    """The plan without in-place windows, fused pooling or streamed blocks."""
    return planner._plan(graph, frozenset(), {}, {})


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


def on_the_m4(path, x, tmp_path, monkeypatch):
    """Both int8 exports (export_both) run on QEMU: (chosen plan's raw
    outputs, plain plan's, the chosen plan's host build's)."""
    from exporter import target
    require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    require_tool("qemu-system-arm", "apt-get install qemu-system-arm")
    export_both(path, x, tmp_path, monkeypatch, "int8")
    c = host.load(tmp_path / "chosen", build_dir=tmp_path / "b1")
    raw = np.clip(np.floor(x / c.input_scale + 0.5) + c.input_zero_point, -128, 127).astype(np.int8)
    return (target.run_on_qemu(tmp_path / "chosen", raw, build_dir=tmp_path / "q1"),
            target.run_on_qemu(tmp_path / "plain", raw, build_dir=tmp_path / "q2"), c.invoke(raw))


def test_chosen_plan_gives_the_same_bits_on_the_m4(sep_model, tmp_path, monkeypatch):
    on_m4, plain_m4, on_host = on_the_m4(*sep_model, tmp_path, monkeypatch)
    np.testing.assert_array_equal(on_m4, plain_m4)
    np.testing.assert_array_equal(on_m4, on_host)  # QEMU equals host


@pytest.fixture(scope="module")
def resnet_model(keras, tmp_path_factory):
    """Two basic blocks as keras.io's ResNet examples build them."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    inp = keras.Input((15, 13, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(10, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(6, 3, padding="same")(y)
    x = L.ReLU()(L.Add()([x, y]))
    y = L.Conv2D(10, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(6, 5, padding="same")(y)
    x = L.Add()([y, x])                        # the block input second
    out = L.Dense(4)(L.GlobalAveragePooling2D()(x))
    m = keras.Model(inp, out)
    for layer in m.layers:
        w = layer.get_weights()
        if w:
            layer.set_weights([v * 2 if v.ndim > 1 else v + 0.05 for v in w])
    path = tmp_path_factory.mktemp("resnet") / "resnet.keras"
    m.save(path)
    return path, np.random.default_rng(3).uniform(-1, 1, (40, 15, 13, 3)).astype(np.float32)


def test_streamed_blocks_give_the_same_bits_on_the_host(resnet_model, tmp_path, monkeypatch):
    path, x = resnet_model
    chosen, plain = export_both(path, x, tmp_path, monkeypatch, "int8")
    streamed = [n for n in chosen.planner if "streamed row by row" in n]
    assert len(streamed) == 2, chosen.planner
    # the blocks' peak: the input and the first conv's map; streamed, one map's rows
    no_streams = planner._best_in_place(chosen.graph, planner.global_pool_fusions(chosen.graph), {})
    assert chosen.arena_bytes < no_streams.arena_bytes < plain.arena_bytes
    a = host.load(tmp_path / "chosen", build_dir=tmp_path / "b1").predict(x)
    b = host.load(tmp_path / "plain", build_dir=tmp_path / "b2").predict(x)
    t = host.load(tmp_path / "chosen", build_dir=tmp_path / "b3", trace=True).predict(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, t)   # the trace build runs the layers unfused
    assert np.ptp(a, axis=0).min() > 0    # the outputs move with the input
    print(f"arena {plain.arena_bytes} (plain) -> {no_streams.arena_bytes} (in place) -> "
          f"{chosen.arena_bytes} B (streamed)")


def test_streamed_blocks_give_the_same_bits_on_the_m4(resnet_model, tmp_path, monkeypatch):
    on_m4, plain_m4, on_host = on_the_m4(*resnet_model, tmp_path, monkeypatch)
    np.testing.assert_array_equal(on_m4, plain_m4)
    np.testing.assert_array_equal(on_m4, on_host)


@pytest.mark.parametrize("case", ["input_read_elsewhere", "rows_overwritten_too_soon"])
def test_blocks_that_cannot_stream_are_not_streamed(keras, tmp_path, case):
    """x read by a third layer must survive the block; a 5x5 conv_a before
    a 1x1 conv_b would read two input rows the add has already
    overwritten: neither is streamed."""
    L = keras.layers
    inp = keras.Input((9, 7, 4))
    x = L.Conv2D(4, 3, padding="same")(inp)
    if case == "input_read_elsewhere":
        y = L.Conv2D(4, 3, padding="same")(L.Conv2D(4, 3, padding="same")(x))
        out = L.Concatenate()([L.Add()([x, y]), x])
    else:
        y = L.Conv2D(4, 1)(L.Conv2D(8, 5, padding="same")(x))
        out = L.Add()([x, y])
    keras.Model(inp, out).save(tmp_path / "m.keras")
    xs = np.random.default_rng(0).uniform(-1, 1, (8, 9, 7, 4)).astype(np.float32)
    r = export_model(tmp_path / "m.keras", tmp_path / "out", calibration_data=xs, target="host")
    assert not planner.stream_candidates(r.graph)
    assert not any("streamed" in n for n in r.planner)


def test_streamed_blocks_stack_is_bounded(resnet_model, tmp_path, monkeypatch):
    """The row loop calls the conv kernel one level deeper: the static stack
    bound (test_stack.py's 1024 B) still holds, and its worst path runs
    through the block."""
    from exporter.stack import stack_usage
    require_tool("arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi")
    path, x = resnet_model
    export_both(path, x, tmp_path, monkeypatch, "int8")
    r = stack_usage(tmp_path / "chosen")
    assert r["bounded"] and not r["unknown"] and not r["dynamic"] and not r["recursive"]
    assert "k2m_conv_pair_add_s8" in r["entries"]["invoke"]["path"]
    assert set(r["external"]) <= {"memcpy", "memmove", "memset"}
    assert 0 < r["invoke"] <= 1024  # tests/test_stack.py's STACK_BOUND
    print(f"stack: {r['invoke']} B via {' -> '.join(r['entries']['invoke']['path'])}")
