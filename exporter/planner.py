"""Static arena planning.

Every activation tensor gets an offset in one static arena.  Reshape and
Flatten outputs are aliases of their input; an elementwise op whose input
dies at that op writes in place.  Buffers are placed greedily, largest first,
at the lowest offset that overlaps no buffer alive at the same time (the
scheme of TFLM's greedy planner).  The model's input and output live in the
arena too, so PREFIX_ARENA_BYTES is all the RAM the model needs besides the
stack.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import OPS

ALIGN = 4
ALIASES = {"reshape", "identity"}


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    tensors: list = field(default_factory=list)
    offset: int = -1


@dataclass
class Plan:
    offsets: dict            # tensor name, or scratch_name(node), -> arena offset
    arena_bytes: int
    live_bytes: list         # bytes alive during each node
    buffers: list

    def peak_step(self) -> int:
        return max(range(len(self.live_bytes)), key=self.live_bytes.__getitem__) if self.live_bytes else 0


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


RNN_SCRATCH = {"simple": 1, "lstm": 4, "gru": 4}  # x units, K2M_*_SCRATCH in k2m.h
RNN_STATE = {"simple": 1, "lstm": 2, "gru": 1}


def rnn_state_elements(node) -> int:
    """h (and an LSTM's c), int16 in int8 models, float in float ones."""
    return RNN_STATE[node.attrs["cell"]] * node.attrs["units"]


def depthwise_scratch_bytes(a: dict, in_c: int, out_c: int) -> int:
    """K2M_DEPTHWISE_S8_SCRATCH_BYTES of k2m.h for a depthwise node's attrs,
    0 where the kernel does not use it (not K2M_DEPTHWISE_RING_OK: only
    3x3, depth multiplier 1, no dilation, horizontal stride 1 or 2)."""
    (kh, kw), (_, sw), (dh, dw) = a["kernel"], a["strides"], a["dilation"]
    if (kh, kw) != (3, 3) or in_c != out_c or (dh, dw) != (1, 1) or sw not in (1, 2):
        return 0
    in_w, out_w, pad_left = a["in_hw"][1], a["out_hw"][1], a["pad"][1]
    row = (max(pad_left + in_w, sw * out_w + 6) + 1) & ~1
    return 24 * row + 4 * ((out_w + 1) & ~1) + 312


def scratch_bytes(graph, node) -> int:
    """Working memory a kernel needs during its node (k2m.h): the int8
    conv's im2col buffer, two int16 columns of k_h·k_w·in_c; the int8
    depthwise conv's ring of transposed rows; a recurrent layer's gates,
    and its state unless the layer is stateful (the state then lives
    outside the arena, across calls)."""
    if node.op == "conv2d" and graph.dtype == "int8":
        kh, kw = node.attrs["kernel"]
        return 4 * kh * kw * graph.tensors[node.inputs[0]].shape[-1]
    if node.op == "depthwise_conv2d" and graph.dtype == "int8":
        return depthwise_scratch_bytes(node.attrs, graph.tensors[node.inputs[0]].shape[-1],
                                       graph.tensors[node.outputs[0]].shape[-1])
    if node.op == "rnn":
        elements = RNN_SCRATCH[node.attrs["cell"]] * node.attrs["units"]
        if not node.attrs["stateful"]:
            elements += rnn_state_elements(node)
        return elements * (2 if graph.dtype == "int8" else 4)
    return 0


def scratch_name(node) -> str:
    return node.name + "/scratch"  # '/' never appears in a tensor name


def plan(graph) -> Plan:
    steps = len(graph.nodes)
    last_read = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last_read[t] = i
    for t in graph.outputs:
        last_read[t] = steps  # copied out after the last node

    root: dict = {}
    buffers: dict = {}

    def new_buffer(t, first):
        tensor = graph.tensors[t]
        buffers[t] = Buffer(t, _align(tensor.nbytes), first, first, [t])
        root[t] = t

    for t in graph.inputs:
        new_buffer(t, 0)
    for i, node in enumerate(graph.nodes):
        src, out = node.inputs[0], node.outputs[0]
        src_root = root[src]
        sharing = buffers[src_root].tensors  # src and its earlier aliases
        reuse = node.op in ALIASES or (
            OPS[node.op] and graph.tensors[src].nbytes == graph.tensors[out].nbytes
            and all(last_read.get(t, -1) <= i and t not in graph.outputs for t in sharing))
        if reuse:
            root[out] = src_root
            buffers[src_root].tensors.append(out)
        else:
            new_buffer(out, i)
    for t, r in root.items():
        b = buffers[r]
        b.last = max(b.last, last_read.get(t, b.first))
    scratch = []
    for i, node in enumerate(graph.nodes):
        size = scratch_bytes(graph, node)
        if size:
            name = scratch_name(node)
            buffers[name] = Buffer(name, _align(size), i, i, [])
            scratch.append(name)

    placed: list = []
    order = sorted(buffers.values(), key=lambda b: (-b.size, b.first, b.name))
    for b in order:
        busy = sorted((p.offset, p.offset + p.size) for p in placed
                      if p.first <= b.last and b.first <= p.last)
        offset = 0
        for lo, hi in busy:
            if offset + b.size <= lo:
                break
            offset = max(offset, _align(hi))
        b.offset = offset
        placed.append(b)

    arena = max((b.offset + b.size for b in placed), default=0)
    live = [sum(b.size for b in placed if b.first <= i <= b.last) for i in range(steps)]
    offsets = {t: buffers[r].offset for t, r in root.items()}
    offsets.update({name: buffers[name].offset for name in scratch})
    return Plan(offsets, max(arena, ALIGN), live, sorted(placed, key=lambda b: b.offset))
