"""Keras's other activations, as activation= arguments and as layers:
int8 through 256-entry tables (or interpolated int16 tables after a
conv/dense), float32 through k2m_activation_f32.  Tolerances of
test_layers.check."""
import pytest

from test_layers import check

NAMES = ["leaky_relu", "elu", "selu", "hard_sigmoid", "hard_silu", "silu", "gelu",
         "softplus", "softsign", "mish", "exponential"]


@pytest.mark.parametrize("name", NAMES)
def test_activation_argument_of_dense(keras, tmp_path, name):
    L = keras.layers
    init = keras.initializers.RandomNormal(stddev=0.1 if name == "exponential" else 0.4)
    m = keras.Sequential([keras.Input((10,)), L.Dense(9, activation=name, kernel_initializer=init,
                                                      bias_initializer="random_normal")])
    check(m, tmp_path, (10,))


@pytest.mark.parametrize("name", ["gelu", "hard_silu", "leaky_relu"])
def test_activation_layer_after_pool(keras, tmp_path, name):
    """Not after a conv/dense: the plain int8 table path."""
    L = keras.layers
    m = keras.Sequential([keras.Input((6, 6, 3)), L.MaxPooling2D(2), L.Activation(name)])
    check(m, tmp_path, (6, 6, 3))


@pytest.mark.parametrize("layer", ["leaky", "elu", "relu_slope"])
def test_activation_layers(keras, tmp_path, layer):
    L = keras.layers
    act = {"leaky": L.LeakyReLU(negative_slope=0.1), "elu": L.ELU(alpha=0.7),
           "relu_slope": L.ReLU(negative_slope=0.2)}[layer]
    m = keras.Sequential([keras.Input((7, 4)), L.Conv1D(5, 3, bias_initializer="random_normal"),
                          act, L.Flatten(), L.Dense(3)])
    check(m, tmp_path, (7, 4))


def test_relu_threshold_float32_and_int8_away_from_the_jump(keras, tmp_path):
    """Keras's thresholded ReLU jumps from 0 to `threshold` at x = threshold;
    int8 cannot place a jump between two grid points, so int8 is checked on
    inputs whose pre-activation stays clear of it; float32 everywhere."""
    import numpy as np
    from conftest import export_and_load
    L = keras.layers
    m = keras.Sequential([keras.Input((8,)), L.ReLU(negative_slope=0.2, threshold=0.3)])
    x = np.random.default_rng(3).normal(size=(64, 8)).astype(np.float32)
    x = np.where(np.abs(x - 0.3) < 0.05, x + 0.1, x)
    m.save(tmp_path / "m.keras")
    _, c = export_and_load(tmp_path / "m.keras", tmp_path / "f", dtype="float32")
    np.testing.assert_allclose(c.predict(x), m.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    _, c8 = export_and_load(tmp_path / "m.keras", tmp_path / "q", calibration_data=x)
    err = np.abs(c8.predict(x) - m.predict(x, verbose=0)) / c8.output_scale
    assert np.mean(err <= 2.0) >= 0.99


@pytest.mark.parametrize("shared_axes", [None, [1, 2]])
def test_prelu(keras, tmp_path, shared_axes):
    L = keras.layers
    m = keras.Sequential([keras.Input((5, 4, 3)), L.Conv2D(6, 2, bias_initializer="random_normal"),
                          L.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.5, 0.8),
                                  shared_axes=shared_axes)])
    check(m, tmp_path, (5, 4, 3))
