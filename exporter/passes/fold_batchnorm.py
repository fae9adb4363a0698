"""Fold BatchNormalization into the conv/dense before it, or, where there
is none, turn it into a 1x1 depthwise convolution.  Never dropped.

y = a·(W·x + bias) + b = (a·W)·x + (a·bias + b), per output channel.
"""
import numpy as np

from .remove_identity import rename_input

# op -> axis of the output channel in the IR weight layout
CHANNEL_AXIS = {"conv2d": 0, "conv3d": 0, "dense": 0, "depthwise_conv2d": -1}


def _fold(producer, a, b):
    shape = [1] * producer.weights["kernel"].ndim
    axis = CHANNEL_AXIS[producer.op]
    shape[axis] = -1
    producer.weights["kernel"] = (producer.weights["kernel"] * a.reshape(shape)).astype(np.float32)
    bias = producer.weights.get("bias", np.zeros_like(a))
    producer.weights["bias"] = (bias * a + b).astype(np.float32)
    producer.attrs["fused"] = producer.attrs.get("fused", [])


def _as_depthwise(graph, node):
    shape = graph.tensors[node.inputs[0]].shape
    ch = shape[-1]
    positions = int(np.prod(shape[:-1], dtype=np.int64))
    node.op = "depthwise_conv2d"
    node.attrs = {"kernel": (1, 1), "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
                  "padding": "valid", "clamp": (None, None), "in_hw": (1, positions),
                  "out_hw": (1, positions), "affine": True}
    node.weights = {"kernel": node.weights["scale"].reshape(1, 1, 1, ch),
                    "bias": node.weights["offset"]}


def fold_batchnorm(graph) -> None:
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        src = node.inputs[0]
        producer = graph.producer(src)
        if (producer is not None and producer.op in CHANNEL_AXIS
                and producer.attrs["clamp"] == (None, None)
                and len(graph.consumers(src)) == 1 and src not in graph.outputs):
            _fold(producer, node.weights["scale"], node.weights["offset"])
            producer.attrs["fused"].append(node.layer)
            graph.nodes.remove(node)
            del graph.tensors[node.outputs[0]]
            rename_input(graph, node.outputs[0], src)
        else:
            _as_depthwise(graph, node)
