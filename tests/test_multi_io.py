"""Models with several inputs and outputs (PREFIX_predict_multi, in the
model's declared order) and shared layers, against Keras."""
import numpy as np

from conftest import compile_strict, export_and_load, quant_step_errors


def two_in_two_out(keras):
    L = keras.layers
    a, b = keras.Input((6, 3), name="series"), keras.Input((4,), name="extra")
    shared = L.Dense(5, activation="relu", name="shared")       # called on two inputs
    x = L.Flatten()(L.Conv1D(4, 3, activation="relu")(a))
    x = L.Concatenate()([shared(L.Dense(4)(x)), shared(b)])
    out1 = L.Dense(3, activation="softmax", name="label")(x)
    out2 = L.Dense(2, name="value")(L.Add()([shared(b), L.Dense(5)(x)]))
    return keras.Model([a, b], [out1, out2])


def test_two_inputs_two_outputs(keras, tmp_path):
    m = two_in_two_out(keras)
    m.save(tmp_path / "multi.keras")
    xs = [np.random.normal(size=(64, 6, 3)).astype(np.float32),
          np.random.normal(size=(64, 4)).astype(np.float32)]
    refs = [r.reshape(64, -1) for r in m.predict(xs, verbose=0)]
    _, c = export_and_load(tmp_path / "multi.keras", tmp_path / "f32", dtype="float32")
    for got, ref in zip(c.predict_multi(xs), refs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    report, c8 = export_and_load(tmp_path / "multi.keras", tmp_path / "i8", calibration_data=xs)
    header = c8.header
    for k, (got, ref) in enumerate(zip(c8.predict_multi(xs), refs)):
        steps = quant_step_errors(got, ref, header["outputs"][k]["scale"])
        assert np.mean(steps <= 2.0) >= 0.99, f"output {k}: max {steps.max():.2f} steps"
    assert len(c8.input_sizes) == 2 and c8.output_sizes == [3, 2]
    text = (tmp_path / "i8" / "multi.h").read_text()
    for macro in ("multi_NUM_INPUTS        2", "multi_INPUT1_SIZE       4",
                  "multi_OUTPUT0_SIZE       3", "multi_predict_multi("):
        assert macro in text
    assert "multi_predict(const float" not in text  # single-I/O API only when it applies
    compile_strict(tmp_path / "i8", "gcc", extra=["-pedantic"])


def test_multi_input_calibration_must_match_inputs(keras, tmp_path):
    import pytest
    from exporter import ExportError, export_model
    m = two_in_two_out(keras)
    with pytest.raises(ExportError, match="2 inputs"):
        export_model(m, tmp_path / "o", calibration_data=[np.zeros((4, 6, 3), np.float32)])
    assert not (tmp_path / "o").exists()
