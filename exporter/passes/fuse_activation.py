"""Fold a ReLU/ReLU6 clamp into the conv, dense or pool that produces it.

The clamp then costs nothing: in int8 it narrows the requantization's
output range, in float it is the kernel's output min/max.
"""
from .remove_identity import rename_input

FUSES_INTO = {"conv2d", "depthwise_conv2d", "conv3d", "dense", "max_pool", "avg_pool",
              "max_pool3d", "avg_pool3d", "mean", "add", "binary", "reduce", "matmul"}


def _merge(a, b):
    lo = max(x for x in (a[0], b[0]) if x is not None) if a[0] is not None or b[0] is not None else None
    hi = min(x for x in (a[1], b[1]) if x is not None) if a[1] is not None or b[1] is not None else None
    return lo, hi


def fuse_activations(graph) -> None:
    for node in [n for n in graph.nodes if n.op == "activation" and n.attrs["func"] == "clamp"]:
        src = node.inputs[0]
        producer = graph.producer(src)
        if (producer is None or producer.op not in FUSES_INTO
                or len(graph.consumers(src)) != 1 or src in graph.outputs):
            continue
        # a matmul from the frontend may carry no clamp yet
        producer.attrs["clamp"] = _merge(producer.attrs.get("clamp", (None, None)),
                                         node.attrs["clamp"])
        producer.attrs["fused"] = producer.attrs.get("fused", []) + [node.layer]
        dst = node.outputs[0]
        graph.nodes.remove(node)
        del graph.tensors[dst]
        # the producer's tensor takes the activation's place (and name)
        rename_input(graph, dst, src)
