"""Handlers of the sequence layers: SimpleRNN, LSTM, GRU, Bidirectional,
Embedding and TimeDistributed.

A recurrent layer becomes one `rnn` node over its whole sequence; its
weights are Keras's with rows transposed to (out, in), gates in Keras's
order (LSTM i, f, c, o; GRU z, r, h).  A Bidirectional layer is two such
nodes (the backward one reading the sequence from its end) and the merge.
"""
from __future__ import annotations

import numpy as np

from .. import validate
from . import movement
from . import registry
from .context import CLAMPS, LayerContext, TrackedConfig, check_read
from .registry import layer

CELLS = {"SimpleRNN": ("simple", 1), "LSTM": ("lstm", 4), "GRU": ("gru", 3)}
RNN_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear")
MAX_UNITS = 512  # int8: sum of units int8 x int16 products fits int32 (k2m.h)


def _activation(ctx, config, key: str) -> str:
    name = config[key]
    if not isinstance(name, str) or name not in RNN_ACTIVATIONS:
        ctx.unsupported(f"{key}={name!r} is not supported in a recurrent layer "
                        f"(supported: {', '.join(RNN_ACTIVATIONS)})")
    return name


def _weights(ctx, layer) -> list:
    arrays = [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]
    validate.check_finite(ctx.name, ctx.cls, arrays)
    return arrays


def recurrent_node(ctx, layer, suffix="", reverse_output=False) -> str:
    """One `rnn` node for a SimpleRNN/LSTM/GRU layer (possibly a
    Bidirectional's half) reading ctx.inputs[0]."""
    own = layer is ctx.layer
    c = ctx.config if own else TrackedConfig(layer.get_config())
    cls = type(layer).__name__
    cell, gates = CELLS[cls]
    if len(ctx.in_shape) != 2:
        ctx.unsupported(f"a recurrent layer needs (steps, features) inputs, got "
                        f"{validate.fmt_shape(ctx.in_shape)}")
    if c.get("return_state"):
        ctx.unsupported("return_state=True returns the states as extra outputs; "
                        "export the model without them (return_sequences gives every h)")
    if len(ctx.inputs) > 1:
        ctx.unsupported("an initial_state input is not supported; the state starts at "
                        "zero (or persists, with stateful=True)")
    steps, features = ctx.in_shape
    units = int(c["units"])
    act, rec_act = _activation(ctx, c, "activation"), "linear"
    if cell != "simple":
        rec_act = _activation(ctx, c, "recurrent_activation")
    ws = _weights(ctx, layer)
    use_bias = c.get("use_bias", True)
    kernel, recurrent = ws[0], ws[1]
    validate.check_kernel(ctx.name, ctx.cls, kernel.shape, (features, gates * units),
                          ("in", "gates·units"))
    validate.check_kernel(ctx.name, ctx.cls, recurrent.shape, (units, gates * units),
                          ("units", "gates·units"))
    weights = {"kernel": np.ascontiguousarray(kernel.T),
               "recurrent": np.ascontiguousarray(recurrent.T)}
    reset_after = cell == "gru" and c.get("reset_after", True)
    if use_bias:
        bias = ws[2]
        if reset_after:  # (2, 3 units): input bias, recurrent bias
            validate.check_kernel(ctx.name, ctx.cls, bias.shape, (2, gates * units),
                                  ("input/recurrent", "gates·units"))
            weights["bias"], weights["recurrent_bias"] = bias[0], bias[1]
        else:
            validate.check_kernel(ctx.name, ctx.cls, bias.shape, (gates * units,),
                                  ("gates·units",))
            weights["bias"] = bias
    sequences = bool(c.get("return_sequences"))
    out_shape = (steps, units) if sequences else (units,)
    attrs = {"cell": cell, "gates": gates, "units": units, "steps": steps,
             "features": features, "act": act, "rec_act": rec_act,
             "reset_after": bool(reset_after), "backwards": bool(c.get("go_backwards")),
             "sequences": sequences, "reverse_output": bool(reverse_output and sequences),
             "stateful": bool(c.get("stateful"))}
    params = sum(w.size for w in ws)
    macs = steps * gates * units * (features + units)
    info = ctx.info(out_shape, kernel_shape=kernel.shape, kernel_dims=("in", "gates·units"),
                    c_layout=weights["kernel"].shape, c_dims=("gates·units", "in"),
                    params=params, macs=macs)
    info.more_weights.append(("recurrent", recurrent.shape, ("units", "gates·units"),
                              weights["recurrent"].shape, ("gates·units", "units")))

    if not own:  # a Bidirectional's half: its own config, checked the same way
        check_read(type(layer), c, ctx.unsupported)
    return ctx.add("rnn", ctx.inputs[:1], out_shape, attrs, weights, suffix=suffix)


@layer(*CELLS)
def recurrent(ctx):
    return recurrent_node(ctx, ctx.layer)


MERGE_MODES = {"sum": ("add", None), "mul": ("binary", "mul"), "ave": ("binary", "avg")}


@layer("Bidirectional")
def bidirectional(ctx):
    mode = ctx.config.get("merge_mode")
    ctx.config.accept("layer", "backward_layer")
    fwd, bwd = ctx.layer.forward_layer, ctx.layer.backward_layer
    for half in (fwd, bwd):
        if type(half).__name__ not in CELLS:
            ctx.unsupported(f"Bidirectional around {type(half).__name__}; "
                            f"SimpleRNN, LSTM and GRU are supported")
    if mode not in ("concat", *MERGE_MODES):
        ctx.unsupported(f"merge_mode={mode!r} returns the two directions separately; use "
                        f"concat, sum, mul or ave")
    # Keras flips the backward half's sequence output back into input order.
    f = recurrent_node(ctx, fwd, suffix="_forward")
    b = recurrent_node(ctx, bwd, suffix="_backward", reverse_output=True)
    shape = ctx.graph.tensors[f].shape
    if mode == "concat":
        out, moves = movement.concatenate([shape, shape], len(shape) - 1)
        return ctx.add("copy", [f, b], out, {"moves": moves, "fill": False,
                                             "out_size": int(np.prod(out))})
    op, func = MERGE_MODES[mode]
    attrs = {"clamp": CLAMPS["linear"], **({"func": func} if func else {})}
    return ctx.add(op, [f, b], shape, attrs)


def check_embedding(entry) -> list:
    if (entry.get("config") or {}).get("mask_zero"):
        return ["mask_zero=True masks padded steps, and the exporter runs masking-free "
                "sequences; train without mask_zero (or pad with a real token)"]
    return []


@layer("Embedding", check=check_embedding)
def embedding(ctx):
    c = ctx.config
    if c.get("mask_zero"):
        ctx.unsupported("mask_zero=True masks padded steps, and the exporter runs "
                        "masking-free sequences; train without mask_zero (or pad with "
                        "a real token)")
    src = ctx.inputs[0]
    if src not in ctx.graph.inputs:
        ctx.unsupported("an Embedding must read a model input (integer indices) directly")
    ctx.graph.tensors[src].dtype = "int32"
    table = ctx.weights()[0]
    vocab, dim = int(c["input_dim"]), int(c["output_dim"])
    validate.check_kernel(ctx.name, ctx.cls, table.shape, (vocab, dim), ("vocab", "dim"))
    out_shape = ctx.in_shape + (dim,)
    ctx.info(out_shape, kernel_shape=table.shape, kernel_dims=("vocab", "dim"),
             c_layout=table.shape, c_dims=("vocab", "dim"), params=table.size)
    return ctx.add("embedding", [src], out_shape, {"vocab": vocab, "dim": dim},
                   {"table": table})


class FrameContext(LayerContext):
    """A TimeDistributed layer's inner layer, seen on one frame."""

    def __init__(self, outer, inner_layer, frame_input):
        super().__init__(outer.graph, inner_layer, [frame_input], outer.infos)
        self.outer = outer

    @property
    def name(self) -> str:
        return self.outer.name


NOT_PER_FRAME = set(CELLS) | {"Bidirectional", "Embedding", "TimeDistributed"}
# Ops that already treat every position of the leading axes alike: one call
# over all frames does what the per-frame loop would, with fewer calls.
ALONG_LAST_AXIS = {"dense", "activation", "softmax", "batchnorm", "reshape", "identity"}


@layer("TimeDistributed")
def time_distributed(ctx):
    """The inner layer's nodes on one frame, run for every frame: the
    frames of a (T, ...) tensor are contiguous, so C loops the kernel over
    them with advancing pointers."""
    ctx.config.accept("layer")
    inner = ctx.layer.layer
    cls = type(inner).__name__
    handler = registry.lookup(registry.object_key(inner))
    if handler is None or cls in NOT_PER_FRAME:
        ctx.unsupported(f"TimeDistributed around {cls}; wrap a Dense, Conv or other "
                        f"per-frame layer")
    graph, frames = ctx.graph, ctx.in_shape[0]
    frame = graph.add_tensor(ctx.inputs[0] + "_frame", ctx.in_shape[1:]).name
    first_node, first_info = len(graph.nodes), len(ctx.infos)
    inner_ctx = FrameContext(ctx, inner, frame)
    out = handler.lower(inner_ctx)
    inner_ctx.check_understood()
    del graph.tensors[frame]
    if out == frame:  # nothing to run per frame
        return ctx.inputs[0]
    for node in graph.nodes[first_node:]:
        node.inputs = [ctx.inputs[0] if t == frame else t for t in node.inputs]
        if node.op not in ALONG_LAST_AXIS:
            node.attrs["frames"] = frames
        node.keras_class = f"TimeDistributed({cls})"
        for t in node.outputs:
            graph.tensors[t].shape = (frames,) + graph.tensors[t].shape
    for info in ctx.infos[first_info:]:
        info.keras_class = f"TimeDistributed({cls})"
        info.input_shape, info.output_shape = ctx.in_shape, (frames,) + info.output_shape
        info.macs *= frames
    return out
