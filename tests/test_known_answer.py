"""A convolution computed by hand: Keras's Conv2D is cross-correlation, no
kernel flip.  4×4 input 1..16, 2×2 kernel [[1, 2], [3, 4]], bias 0.5, valid:
out[i][j] = x[i][j] + 2·x[i][j+1] + 3·x[i+1][j] + 4·x[i+1][j+1] + 0.5.
"""
import numpy as np

from conftest import export_and_load

BY_HAND = [[44.5, 54.5, 64.5],
           [84.5, 94.5, 104.5],
           [124.5, 134.5, 144.5]]
FLIPPED_TOP_LEFT = 26.5  # what a true convolution would give at (0, 0)


def known_answer_model(keras):
    m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 2)])
    m.layers[0].set_weights([np.array([[1, 2], [3, 4]], np.float32).reshape(2, 2, 1, 1),
                             np.array([0.5], np.float32)])
    return m


def test_conv2d_known_answer_float32(keras, tmp_path):
    m = known_answer_model(keras)
    m.save(tmp_path / "ka.h5")
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    _, c = export_and_load(tmp_path / "ka.h5", tmp_path / "out", dtype="float32")
    got = c.predict(x).reshape(3, 3)
    np.testing.assert_array_equal(got, np.array(BY_HAND, np.float32))
    assert got[0, 0] != FLIPPED_TOP_LEFT
    np.testing.assert_array_equal(m.predict(x, verbose=0).reshape(3, 3), got)


def test_conv2d_known_answer_int8(keras, tmp_path):
    """Quantized, the same numbers within one output step (scale = 144.5/255)."""
    m = known_answer_model(keras)
    m.save(tmp_path / "ka.keras")
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    _, c = export_and_load(tmp_path / "ka.keras", tmp_path / "out", calibration_data=x)
    got = c.predict(x).reshape(3, 3)
    assert np.abs(got - np.array(BY_HAND)).max() <= c.output_scale
