"""Fold a clamp (ReLU, ReLU6, `ops.maximum(x, 0.0)`, clip) into the op that
produces it.

The clamp then costs nothing: in int8 it narrows the requantization's
output range, in float it is the kernel's output min/max.
"""
from .remove_identity import rename_input

FUSES_INTO = {"conv2d", "depthwise_conv2d", "conv3d", "dense", "max_pool", "avg_pool",
              "max_pool3d", "avg_pool3d", "mean", "add", "binary", "batchnorm", "reduce",
              "matmul"}


def merge_clamps(a, b):
    """clamp(clamp(x, a), b), a applied first, as one clamp: a's bounds
    clamped into b's (None: unbounded).  Where the ranges overlap that is
    the tighter bound on each side; where they do not, the output is b's
    bound nearest a's range everywhere (b comes last), e.g.
    clip(min(x, -1.4), -0.4, 0.3) is -0.4."""
    def into_b(v, unbounded):
        if v is None:
            return unbounded
        v = v if b[0] is None else max(v, b[0])
        return v if b[1] is None else min(v, b[1])
    return into_b(a[0], b[0]), into_b(a[1], b[1])


def fuse_activations(graph) -> bool:
    changed = False
    for node in [n for n in graph.nodes if n.op == "activation" and n.attrs["func"] == "clamp"]:
        src = node.inputs[0]
        producer = graph.producer(src)
        if (producer is None or producer.op not in FUSES_INTO
                or len(graph.consumers(src)) != 1 or src in graph.outputs):
            continue
        # a matmul from the frontend may carry no clamp yet
        producer.attrs["clamp"] = merge_clamps(producer.attrs.get("clamp", (None, None)),
                                               node.attrs["clamp"])
        producer.attrs["fused"] = producer.attrs.get("fused", []) + [node.layer]
        dst = node.outputs[0]
        graph.nodes.remove(node)
        del graph.tensors[dst]
        rename_input(graph, dst, src)  # readers of the clamp read the producer
        changed = True
    return changed
