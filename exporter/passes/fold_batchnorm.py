"""Fold affines y = a·x + b (BatchNormalization, Rescaling, `x * 0.5 + 3`
op nodes...) into the conv, dense, depthwise or affine before them, and
turn those left into 1x1 depthwise convolutions.  Never dropped.

y = a·(W·x + bias) + b = (a·W)·x + (a·bias + b), per output channel.
Through the producer's fused clamp only a scalar a passes exactly:
a·clamp(z, lo, hi) + b = clamp(a·z + b, a·lo + b, a·hi + b) for a > 0
(bounds swapped for a < 0).
"""
import numpy as np

from .fuse_activation import merge_clamps
from .remove_identity import rename_input

# op -> axis of the output channel in the IR weight layout
CHANNEL_AXIS = {"conv2d": 0, "conv3d": 0, "dense": 0, "depthwise_conv2d": -1}
NO_CLAMP = (None, None)


def _through_clamp(clamp, a: float, b: float):
    lo, hi = (None if v is None else v * a + b for v in clamp)
    return (lo, hi) if a >= 0 else (hi, lo)


def _fold_into_weights(producer, a, b):
    shape = [1] * producer.weights["kernel"].ndim
    shape[CHANNEL_AXIS[producer.op]] = -1
    producer.weights["kernel"] = (producer.weights["kernel"] * a.reshape(shape)).astype(np.float32)
    bias = producer.weights.get("bias", np.zeros_like(a))
    producer.weights["bias"] = (bias * a + b).astype(np.float32)


def _fold_into_affine(producer, a, b):
    w = producer.weights
    w["scale"], w["offset"] = (w["scale"] * a).astype(np.float32), (w["offset"] * a + b).astype(np.float32)


def _foldable(graph, node, producer) -> bool:
    src = node.inputs[0]
    if producer is None or len(graph.consumers(src)) != 1 or src in graph.outputs:
        return False
    if producer.op not in CHANNEL_AXIS and producer.op != "batchnorm":
        return False
    if producer.op in CHANNEL_AXIS and len(producer.weights["kernel"]) == 0:
        return False
    clamp = producer.attrs.get("clamp", NO_CLAMP)
    a, b = node.weights["scale"], node.weights["offset"]
    return clamp == NO_CLAMP or (np.ptp(a) == 0 and np.ptp(b) == 0)


def fold_affines(graph) -> bool:
    """One sweep of folding; True if anything changed."""
    changed = False
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        producer = graph.producer(node.inputs[0])
        if not _foldable(graph, node, producer):
            continue
        a, b = node.weights["scale"], node.weights["offset"]
        if producer.attrs.get("clamp", NO_CLAMP) != NO_CLAMP:
            producer.attrs["clamp"] = _through_clamp(producer.attrs["clamp"], float(a[0]), float(b[0]))
        if producer.op == "batchnorm":
            _fold_into_affine(producer, a, b)
        else:
            _fold_into_weights(producer, a, b)
        producer.attrs["fused"] = producer.attrs.get("fused", []) + [node.layer]
        producer.attrs["clamp"] = merge_clamps(producer.attrs.get("clamp", NO_CLAMP),
                                               node.attrs.get("clamp", NO_CLAMP))
        graph.nodes.remove(node)
        del graph.tensors[node.outputs[0]]
        rename_input(graph, node.outputs[0], node.inputs[0])
        changed = True
    return changed


def _beside_function(graph, node) -> bool:
    """A scalar affine next to an elementwise function joins its int8 table."""
    a, b = node.weights["scale"], node.weights["offset"]
    if np.ptp(a) or np.ptp(b) or node.attrs.get("clamp", NO_CLAMP) != NO_CLAMP:
        return False
    producer = graph.producer(node.inputs[0])
    readers = graph.consumers(node.outputs[0])
    return ((producer is not None and producer.op == "activation")
            or (len(readers) == 1 and readers[0].op == "activation"
                and node.outputs[0] not in graph.outputs))


def as_depthwise(graph) -> None:
    """The affines nothing absorbed: 1x1 depthwise convolutions, or, scalar
    and next to an elementwise function, an `affine` function itself."""
    for node in [n for n in graph.nodes if n.op == "batchnorm"]:
        if _beside_function(graph, node):
            a, b = float(node.weights["scale"][0]), float(node.weights["offset"][0])
            node.op, node.weights = "activation", {}
            node.attrs = {"func": "affine", "alpha": a, "threshold": b,
                          **({"fused": node.attrs["fused"]} if "fused" in node.attrs else {})}
            continue
        shape = graph.tensors[node.inputs[0]].shape
        ch = shape[-1]
        positions = int(np.prod(shape[:-1], dtype=np.int64))
        clamp = node.attrs.get("clamp", NO_CLAMP)
        node.op = "depthwise_conv2d"
        node.attrs = {"kernel": (1, 1), "strides": (1, 1), "dilation": (1, 1), "pad": (0, 0),
                      "padding": "valid", "clamp": clamp, "in_hw": (1, positions),
                      "out_hw": (1, positions), "affine": True,
                      **({"fused": node.attrs["fused"]} if "fused" in node.attrs else {})}
        node.weights = {"kernel": node.weights["scale"].reshape(1, 1, 1, ch),
                        "bias": node.weights["offset"]}
