"""keras.applications backbones as users bring them: built with
weights=None, trained a few steps (so BatchNormalization statistics and
weights move off their initial values), saved to .keras and exported.

float32 within 1e-5 of the output's magnitude, or, where Keras's own
float32 result is further than that from a float64 run of the same graph
(exporter.interpret: a deep network's float32 rounding), within twice
Keras's own error; int8 RMSE against Keras
within 1.3x TFLite's int8 RMSE on the same calibration and test inputs
(tests/tflite_ref.py).  Inputs are 32x32 (the smallest MobileNetV3
allows; EfficientNetB0 at 64x64, MobileNetV2 at 96x96) with the
backbone's own top replaced by GlobalAveragePooling + Dense(4), as in
transfer learning, so the weights stay a few MB.
"""
import numpy as np
import pytest

from exporter import interpret

from conftest import export_and_load

CASES = {
    # name: (builder kwargs, input side, flash budget in KB)
    "mobilenet_v3_small": ("MobileNetV3Small", {}, 32, 2048),
    "mobilenet_v3_small_minimalistic_raw": ("MobileNetV3Small",
                                            {"minimalistic": True, "include_preprocessing": False},
                                            32, 2048),
    "mobilenet_v3_large_minimalistic": ("MobileNetV3Large", {"minimalistic": True}, 32, 4096),
    "mobilenet_v3_large_raw": ("MobileNetV3Large", {"include_preprocessing": False}, 32, 4096),
    "efficientnet_b0": ("EfficientNetB0", {}, 64, 8192),
    "mobilenet_v2_035": ("MobileNetV2", {"alpha": 0.35}, 96, 2048),
}


def build(keras, name):
    cls, kwargs, side, _ = CASES[name]
    keras.utils.set_random_seed(7)
    base = getattr(keras.applications, cls)(input_shape=(side, side, 3), weights=None,
                                            include_top=False, **kwargs)
    raw = not kwargs.get("include_preprocessing", True) and cls.startswith("MobileNetV3")
    inp = keras.Input((side, side, 3))
    x = base(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(7)
    lo, hi = (-1.0, 1.0) if raw or cls == "MobileNetV2" else (0.0, 255.0)
    x = rng.uniform(lo, hi, (160, side, side, 3)).astype(np.float32)
    y = rng.integers(0, 4, 160)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), run_eagerly=True)  # eager: no graph tracing for three steps
    model.fit(x[:96], y[:96], epochs=1, batch_size=32, verbose=0)  # a few steps
    # BatchNormalization's moving statistics barely move in three steps
    # (momentum 0.999): set them to one batch's statistics, as a trained
    # network's are, so activations keep their scale through the depth.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(x[:96], training=True)
    return model, x[96:144], x[144:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_application(keras, tmp_path, name):
    import tflite_ref
    model, x_cal, x_test = build(keras, name)
    flash = CASES[name][3]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    want = np.asarray(model.predict(x_test, verbose=0), np.float64)
    report, c = export_and_load(path, tmp_path / "f32", dtype="float32", flash_kb=4 * flash,
                                ram_kb=4096)
    got = c.predict(x_test).reshape(want.shape)
    f64 = interpret.run(report.graph, [x_test.astype(np.float64)])[report.graph.outputs[0]]
    own = np.abs(f64.reshape(want.shape) - want).max()
    err = np.abs(got - want).max()
    print(f"{name}: float32 max error {err:.3g} ({err / np.abs(want).max():.2g} of the output's "
          f"magnitude); Keras float32 against float64 {own:.3g}")
    assert own < 1e-3 * np.abs(want).max(), "the float64 run disagrees with Keras"
    assert err <= max(1e-5 * np.abs(want).max(), 2 * own)
    _, c8 = export_and_load(path, tmp_path / "i8", dtype="int8", calibration_data=x_cal,
                            flash_kb=flash, ram_kb=1024)
    ours = tflite_ref.rmse(c8.predict(x_test), want)
    theirs = tflite_ref.int8_rmse(model, x_cal, x_test)
    print(f"{name}: int8 RMSE ours {ours:.4g}, TFLite {theirs:.4g}, ratio {ours / theirs:.2f}")
    assert ours <= 1.3 * theirs, f"int8 RMSE {ours:.4g} vs TFLite {theirs:.4g}"
