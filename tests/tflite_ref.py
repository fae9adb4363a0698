"""TFLite's full-integer int8 conversion of a Keras model, as the yardstick
for our int8 error: the same calibration samples as its representative
dataset, Optimize.DEFAULT, TFLITE_BUILTINS_INT8, int8 input and output,
run by tf.lite's interpreter on the same inputs."""
from __future__ import annotations

import numpy as np


def convert(model, x_cal) -> bytes:
    import tensorflow as tf
    xs = x_cal if isinstance(x_cal, list) else [x_cal]

    def representative():
        for i in range(len(xs[0])):
            yield [x[i:i + 1].astype(np.float32) for x in xs]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def run(flat: bytes, x) -> np.ndarray:
    """The int8 model's dequantized outputs for float inputs x (one input,
    one output), each input quantized with the model's own parameters."""
    import tensorflow as tf
    interp = tf.lite.Interpreter(model_content=flat)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], outp["quantization"]
    outs = []
    for row in x:
        q = np.clip(np.round(row / si) + zi, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q.reshape(inp["shape"]))
        interp.invoke()
        outs.append(interp.get_tensor(outp["index"]).astype(np.float64).ravel())
    return (np.stack(outs) - zo) * so


def rmse(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a.reshape(b.shape) - b) ** 2)))


def int8_rmse(model, x_cal, x_test) -> float:
    """TFLite int8's RMSE against Keras float on x_test."""
    want = np.asarray(model.predict(x_test, verbose=0), np.float64).reshape(len(x_test), -1)
    return rmse(run(convert(model, x_cal), x_test), want)
