"""DepthwiseConv2D, BatchNormalization (folded, or alone as a per-channel
affine) and residual Add, with the tolerances of test_layers.check."""
import numpy as np
import pytest

from test_layers import check




def randomize_batchnorm(model, keras):
    """Trained-looking statistics, so folding is really exercised."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            values = [np.random.uniform(0.5, 1.5, shapes[0]), np.random.normal(0, 0.3, shapes[1]),
                      np.random.normal(0, 0.3, shapes[2]), np.random.uniform(0.5, 2.0, shapes[3])]
            layer.set_weights(values)
    return model


@pytest.mark.parametrize("mult,k,stride,padding,dilation", [
    (1, 3, 1, "same", 1), (1, 3, 2, "same", 1), (2, 3, 1, "valid", 1), (3, 2, 2, "valid", 1),
    (1, 5, 1, "same", 2), (1, 4, 3, "same", 1), (2, 1, 1, "valid", 1)])
@pytest.mark.parametrize("channels", [3, 5, 8])
def test_depthwise(keras, tmp_path, mult, k, stride, padding, dilation, channels):
    L = keras.layers
    m = keras.Sequential([keras.Input((9, 10, channels)),
                          L.DepthwiseConv2D(k, strides=stride, padding=padding,
                                            depth_multiplier=mult, dilation_rate=dilation,
                                            bias_initializer="random_normal")])
    check(m, tmp_path, (9, 10, channels))


def test_depthwise_on_1x1_map(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([keras.Input((1, 1, 6)), L.DepthwiseConv2D(3, padding="same",
                                                                    activation="relu6")])
    check(m, tmp_path, (1, 1, 6))


@pytest.mark.parametrize("where", ["after_conv", "after_depthwise", "after_dense",
                                   "standalone", "after_pool"])
def test_batchnorm(keras, tmp_path, where):
    L = keras.layers
    shape = (8, 8, 3)
    body = {
        "after_conv": [L.Conv2D(6, 3), L.BatchNormalization(), L.ReLU()],
        "after_depthwise": [L.DepthwiseConv2D(3, use_bias=False), L.BatchNormalization(),
                            L.Activation("relu6")],
        "after_dense": [L.Flatten(), L.Dense(7), L.BatchNormalization(), L.Activation("relu")],
        "standalone": [L.BatchNormalization(), L.Conv2D(4, 2)],
        "after_pool": [L.MaxPooling2D(2), L.BatchNormalization(), L.Flatten(), L.Dense(3)],
    }[where]
    m = randomize_batchnorm(keras.Sequential([keras.Input(shape)] + body), keras)
    check(m, tmp_path, shape)


def test_batchnorm_without_scale_or_center(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([keras.Input((6, 4)), L.Conv1D(5, 3),
                          L.BatchNormalization(scale=False), L.BatchNormalization(center=False)])
    for layer in m.layers[1:]:
        layer.set_weights([np.random.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    check(m, tmp_path, (6, 4))


def test_residual_block(keras, tmp_path):
    """ResNet's shape: conv-BN-ReLU, conv-BN, Add with the shortcut, ReLU.
    (One block: with random weights, every further stage adds its own int8
    rounding, and the 2-step bound is meant for a layer's export, not for
    the sum of many random ones; the MLPerf ResNet-8 test covers depth.)"""
    L = keras.layers
    inp = keras.Input((8, 8, 4))
    x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(inp)))
    x = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(x))
    y = L.Activation("relu")(L.Add()([x, inp]))
    short = L.Conv2D(6, 1, strides=2)(y)
    m = randomize_batchnorm(keras.Model(inp, short), keras)
    check(m, tmp_path, (8, 8, 4))


def test_add_of_three(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((12,))
    a, b, c = L.Dense(6)(inp), L.Dense(6, activation="relu")(inp), L.Dense(6)(inp)
    check(keras.Model(inp, L.Add()([a, b, c])), tmp_path, (12,))


@pytest.mark.parametrize("one_d", [False, True])
@pytest.mark.parametrize("mult,stride,padding", [(1, 1, "same"), (2, 2, "valid"), (1, 2, "same")])
def test_separable(keras, tmp_path, one_d, mult, stride, padding):
    L = keras.layers
    if one_d:
        shape, layer = (11, 5), L.SeparableConv1D(6, 3, strides=stride, padding=padding,
                                                  depth_multiplier=mult, activation="relu",
                                                  bias_initializer="random_normal")
    else:
        shape, layer = (9, 8, 5), L.SeparableConv2D(6, 3, strides=stride, padding=padding,
                                                    depth_multiplier=mult, activation="relu",
                                                    bias_initializer="random_normal")
    check(keras.Sequential([keras.Input(shape), layer]), tmp_path, shape)


def test_depthwise_without_bias(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([keras.Input((7, 6, 5)), L.DepthwiseConv2D(3, padding="same", use_bias=False)])
    check(m, tmp_path, (7, 6, 5))


@pytest.mark.parametrize("one_d", [False, True])
@pytest.mark.parametrize("k,stride,padding", [(3, 2, "same"), (3, 2, "valid"), (4, 2, "same"),
                                              (2, 3, "valid"), (3, 1, "same"), (5, 3, "same")])
def test_conv_transpose(keras, tmp_path, one_d, k, stride, padding):
    L = keras.layers
    if one_d:
        shape, layer = (7, 3), L.Conv1DTranspose(4, k, strides=stride, padding=padding,
                                                 bias_initializer="random_normal")
    else:
        shape, layer = (5, 6, 3), L.Conv2DTranspose(4, k, strides=stride, padding=padding,
                                                    bias_initializer="random_normal")
    check(keras.Sequential([keras.Input(shape), layer]), tmp_path, shape)


@pytest.mark.parametrize("kind", ["rescaling", "rescaling_per_channel", "normalization",
                                  "normalization_invert"])
def test_input_scaling_layers(keras, tmp_path, kind):
    L = keras.layers
    layer = {"rescaling": L.Rescaling(1 / 4.0, offset=-0.5),
             "rescaling_per_channel": L.Rescaling([0.5, 2.0, 1.0], offset=[0.1, -0.2, 0.0]),
             "normalization": L.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0]),
             "normalization_invert": L.Normalization(mean=[0.5, -1.0, 2.0],
                                                     variance=[4.0, 0.25, 1.0], invert=True)}[kind]
    m = keras.Sequential([keras.Input((5, 5, 3)), layer, L.Conv2D(4, 3)])
    check(m, tmp_path, (5, 5, 3))


@pytest.mark.parametrize("k,stride,padding,dilation", [(3, 1, "valid", 1), (3, 2, "same", 1),
                                                       ((2, 3, 1), 1, "same", 1), (2, 1, "valid", 2)])
def test_conv3d_and_pools(keras, tmp_path, k, stride, padding, dilation):
    L = keras.layers
    m = keras.Sequential([keras.Input((6, 7, 5, 3)),
                          L.Conv3D(4, k, strides=stride, padding=padding, dilation_rate=dilation,
                                   activation="relu", bias_initializer="random_normal"),
                          L.MaxPooling3D(2, padding="same"), L.AveragePooling3D((1, 2, 1)),
                          L.GlobalAveragePooling3D()])
    check(m, tmp_path, (6, 7, 5, 3))


def test_conv3d_global_max(keras, tmp_path):
    L = keras.layers
    m = keras.Sequential([keras.Input((4, 4, 4, 2)), L.Conv3D(3, 2, bias_initializer="random_normal"),
                          L.GlobalMaxPooling3D(), L.Dense(2)])
    check(m, tmp_path, (4, 4, 4, 2))


def test_conv3d_output_dimension_not_positive(keras):
    """The seed case: a (1, 1, 1, 1904211) input to a 3-D conv: named, shapes given."""
    from exporter import UnsupportedModelError
    from exporter.frontends.geometry import window3d
    import pytest as _pytest
    win = window3d((1, 1, 1), (3, 3, 3), (1, 1, 1), (1, 1, 1), "valid")
    assert win["out"] == [-1, -1, -1]
    from exporter import validate
    with _pytest.raises(UnsupportedModelError, match=r"conv3d_1.*\(1, 1, 1, 1904211\).*<= 0"):
        validate.check_output_shape("conv3d_1", "Conv3D", (1, 1, 1, 1904211), (-1, -1, -1, 8))


@pytest.mark.parametrize("merge", ["Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merges(keras, tmp_path, merge):
    L = keras.layers
    inp = keras.Input((6, 4))
    # branches of similar range: an int8 branch much coarser than the output
    # would bring its own rounding (several output steps) into min/max
    a = L.Conv1D(5, 3, padding="same", bias_initializer="random_normal")(inp)
    b = L.Conv1D(5, 1, bias_initializer="random_normal")(inp)
    x = getattr(L, merge)()([a, b])
    if merge == "Subtract":  # a following ReLU is fused into the merge
        x = L.Activation("relu")(x)
    check(keras.Model(inp, x), tmp_path, (6, 4))


def test_multiply_of_three(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((8,))
    a, b, c = L.Dense(4)(inp), L.Dense(4, activation="sigmoid")(inp), L.Dense(4)(inp)
    check(keras.Model(inp, L.Multiply()([a, b, c])), tmp_path, (8,))


@pytest.mark.parametrize("offset", [0.0, -1.0])
def test_input_rescaling_folds_into_input_quantization(keras, tmp_path, offset):
    """Rescaling(1/255) right after the input costs no layer in int8: the
    input's scale absorbs it (and a whole-step offset its zero point); a
    fractional-step offset stays a layer.  Parity either way."""
    L = keras.layers
    m = keras.Sequential([keras.Input((6, 6, 3)), L.Rescaling(1 / 255.0, offset=offset),
                          L.Conv2D(4, 3, bias_initializer="random_normal")])
    from exporter import export_model
    x = np.random.uniform(0, 255, size=(32, 6, 6, 3)).astype(np.float32)
    report = export_model(m, tmp_path / "o", calibration_data=x)
    ops = [n.op for n in report.graph.nodes]
    text = (tmp_path / "o" / f"{report.prefix}.c").read_text()
    if offset == 0.0:
        assert ops == ["conv2d"] and "rescaling" not in text
    check(m, tmp_path, (6, 6, 3))
