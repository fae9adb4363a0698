"""Re-create the bundled example: a small CNN trained on scikit-learn's 8×8
digits, saved as digits_cnn.keras, with 200 calibration samples.

    python examples/make_example.py
"""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


def digits_split():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target)


def main():
    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = digits_split()
    L = keras.layers
    m = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ], name="digits_cnn")
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
    print("Keras test accuracy:", m.evaluate(x_test, y_test, verbose=0)[1])
    m.save(HERE / "digits_cnn.keras")
    np.save(HERE / "digits_calibration.npy", x_train[:200])


if __name__ == "__main__":
    main()
