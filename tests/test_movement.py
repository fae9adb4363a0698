"""Padding, cropping, nearest upsampling, Permute, RepeatVector and
Concatenate: strided copies, checked against Keras with test_layers.check
(int8 copies are exact up to the input's own quantization; Concatenate of
differently scaled branches requantizes)."""
import pytest

from test_layers import check


@pytest.mark.parametrize("layer,shape", [
    ("ZeroPadding2D(((1, 2), (0, 3)))", (5, 4, 3)),
    ("ZeroPadding2D(1)", (3, 3, 2)),
    ("ZeroPadding1D((2, 1))", (6, 4)),
    ("Cropping2D(((1, 0), (2, 1)))", (6, 7, 3)),
    ("Cropping1D((1, 2))", (8, 5)),
    ("UpSampling2D((2, 3))", (3, 4, 5)),
    ("UpSampling1D(3)", (4, 6)),
    ("Permute((2, 1))", (5, 7)),
    ("Permute((3, 1, 2))", (4, 5, 6)),
    ("RepeatVector(4)", (7,)),
])
def test_single_input_movement(keras, tmp_path, layer, shape):
    L = keras.layers
    m = keras.Sequential([keras.Input(shape), eval("L." + layer)])
    check(m, tmp_path, shape)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_of_differently_scaled_branches(keras, tmp_path, axis):
    L = keras.layers
    inp = keras.Input((6, 5, 4))
    a = L.Conv2D(4, 3, padding="same", bias_initializer="random_normal")(inp)
    b = L.Conv2D(4, 1, activation="relu", kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))(inp)
    out = L.Concatenate(axis=axis)([a, b])
    check(keras.Model(inp, out), tmp_path, (6, 5, 4))


def test_unet_like_block(keras, tmp_path):
    L = keras.layers
    inp = keras.Input((8, 8, 2))
    d = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    p = L.MaxPooling2D(2)(d)
    u = L.UpSampling2D(2)(L.Conv2D(4, 3, padding="same", activation="relu")(p))
    x = L.Concatenate()([d, u])
    x = L.Cropping2D(1)(L.ZeroPadding2D(1)(x))
    check(keras.Model(inp, L.Conv2D(3, 1)(x)), tmp_path, (8, 8, 2))


@pytest.mark.parametrize("size", [(2, 2), (3, 2), (1, 4)])
def test_upsampling2d_bilinear(keras, tmp_path, size):
    L = keras.layers
    m = keras.Sequential([keras.Input((4, 5, 3)), L.UpSampling2D(size, interpolation="bilinear")])
    check(m, tmp_path, (4, 5, 3))
