"""Layer-by-layer parity: every padding/stride/dilation combination of Conv1D
and Conv2D, even and odd kernels, 'same' with stride 2 on even and odd
lengths, pools, Dense on an N-D input, no-bias layers, every activation=.

Models are real Keras models saved to .keras files; weights and biases are
random (biases non-zero so they are exercised).  float32: 1e-5 relative to
Keras.  int8: within 2 output quantization steps on >= 99% of outputs, with
Keras fed the same int8-representable inputs the C model sees, so what is
measured is the exporter's error, not the rounding of random float inputs
to the input's int8 grid (which a random-weight layer with a fine output
scale, e.g. tanh's 1/128, can amplify past two steps on its own).
"""
import itertools

import numpy as np
import pytest

from conftest import export_and_load, quant_step_errors




def check(keras_model, tmp_path, in_shape, n=64):
    x = np.random.normal(size=(n,) + in_shape).astype(np.float32)  # seeded per test
    path = tmp_path / "m.keras"
    keras_model.save(path)
    ref = keras_model.predict(x, verbose=0).reshape(n, -1)
    _, c = export_and_load(path, tmp_path / "f32", dtype="float32")
    got = c.predict(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    _, c8 = export_and_load(path, tmp_path / "i8", dtype="int8", calibration_data=x)
    s, zp = c8.input_scale, c8.input_zero_point
    x_grid = s * (np.clip(np.round(x / s) + zp, -128, 127) - zp)
    ref = keras_model.predict(x_grid.astype(np.float32), verbose=0).reshape(n, -1)
    steps = quant_step_errors(c8.predict(x_grid), ref, c8.output_scale)
    assert np.mean(steps <= 2.0) >= 0.99, f"int8: max error {steps.max():.2f} steps"


def conv_cases(paddings):
    for padding, stride, dilation, k in itertools.product(paddings, (1, 2), (1, 2), (2, 3)):
        if stride > 1 and dilation > 1:
            continue  # Keras rejects strides > 1 together with dilation > 1
        yield padding, stride, dilation, k


@pytest.mark.parametrize("padding,stride,dilation,k", list(conv_cases(("valid", "same", "causal"))))
@pytest.mark.parametrize("steps", [11, 12])
def test_conv1d(keras, tmp_path, padding, stride, dilation, k, steps):
    L = keras.layers
    m = keras.Sequential([keras.Input((steps, 3)),
                          L.Conv1D(5, k, strides=stride, dilation_rate=dilation, padding=padding,
                                   bias_initializer="random_normal")])
    check(m, tmp_path, (steps, 3))


@pytest.mark.parametrize("padding,stride,dilation,k", list(conv_cases(("valid", "same"))))
@pytest.mark.parametrize("size", [(9, 9), (10, 7)])
def test_conv2d(keras, tmp_path, padding, stride, dilation, k, size):
    L = keras.layers
    m = keras.Sequential([keras.Input(size + (3,)),
                          L.Conv2D(4, k, strides=stride, dilation_rate=dilation, padding=padding,
                                   bias_initializer="random_normal")])
    check(m, tmp_path, size + (3,))


@pytest.mark.parametrize("kernel,strides", [((3, 1), (2, 1)), ((1, 4), (1, 3)), ((5, 2), (1, 2))])
def test_conv2d_rectangular_no_bias(keras, tmp_path, kernel, strides):
    L = keras.layers
    m = keras.Sequential([keras.Input((12, 11, 2)),
                          L.Conv2D(6, kernel, strides=strides, padding="same", use_bias=False)])
    check(m, tmp_path, (12, 11, 2))


@pytest.mark.parametrize("activation", ["linear", "relu", "relu6", "sigmoid", "tanh", "softmax"])
@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "dense"])
def test_activation_argument(keras, tmp_path, activation, kind):
    L = keras.layers
    if kind == "conv1d":
        shape, layer = (10, 4), L.Conv1D(6, 3, activation=activation, bias_initializer="random_normal")
    elif kind == "conv2d":
        shape, layer = (6, 6, 2), L.Conv2D(6, 3, activation=activation, bias_initializer="random_normal")
    else:
        shape, layer = (12,), L.Dense(7, activation=activation, bias_initializer="random_normal")
    check(keras.Sequential([keras.Input(shape), layer]), tmp_path, shape)


def test_dense_on_nd_input(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([keras.Input((10, 3)), L.Dense(4, activation="relu",
                                                          bias_initializer="random_normal"),
                          L.Dense(2, use_bias=False)])
    check(m, tmp_path, (10, 3))


@pytest.mark.parametrize("pool", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("size,stride,padding", [(2, None, "valid"), (3, 2, "same"),
                                                 (3, 1, "same"), (2, 3, "valid")])
def test_pool2d(keras, tmp_path, pool, size, stride, padding):
    L = keras.layers
    m = keras.Sequential([keras.Input((9, 8, 3)),
                          getattr(L, pool)(size, strides=stride, padding=padding)])
    check(m, tmp_path, (9, 8, 3))


@pytest.mark.parametrize("pool", ["MaxPooling1D", "AveragePooling1D"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pool1d(keras, tmp_path, pool, padding):
    L = keras.layers
    m = keras.Sequential([keras.Input((13, 4)), getattr(L, pool)(3, strides=2, padding=padding)])
    check(m, tmp_path, (13, 4))


@pytest.mark.parametrize("layer", ["GlobalAveragePooling1D", "GlobalMaxPooling1D"])
def test_global_pool1d(keras, tmp_path, layer):
    L = keras.layers
    m = keras.Sequential([keras.Input((9, 5)), L.Conv1D(6, 3, activation="relu"),
                          getattr(L, layer)(), L.Dense(3)])
    check(m, tmp_path, (9, 5))


@pytest.mark.parametrize("layer", ["GlobalAveragePooling2D", "GlobalMaxPooling2D"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pool2d(keras, tmp_path, layer, keepdims):
    L = keras.layers
    m = keras.Sequential([keras.Input((5, 6, 3)), getattr(L, layer)(keepdims=keepdims)])
    check(m, tmp_path, (5, 6, 3))


def test_activation_layers_and_reshape(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([
        keras.Input((24,)), L.Reshape((4, 6)), L.Conv1D(8, 2, bias_initializer="random_normal"),
        L.ReLU(max_value=6.0), L.Flatten(), L.Dense(9), L.Activation("tanh"),
        L.Reshape((3, 3)), L.Dense(4), L.ReLU(), L.Dropout(0.5), L.Softmax()])
    check(m, tmp_path, (24,))


def test_functional_model_h5(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((16, 2))
    x = L.Conv1D(4, 5, padding="same", activation="relu")(inp)
    x = L.MaxPooling1D(2)(x)
    x = L.Flatten()(x)
    out = L.Dense(3, activation="sigmoid")(x)
    m = keras.Model(inp, out)
    x = np.random.normal(size=(32, 16, 2)).astype(np.float32)
    m.save(tmp_path / "f.h5")
    _, c = export_and_load(tmp_path / "f.h5", tmp_path / "out", dtype="float32")
    np.testing.assert_allclose(c.predict(x), m.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
