"""Static arena planning.

Every activation tensor gets an offset in one static arena.  Reshape and
Flatten outputs are aliases of their input; an elementwise op whose input
dies at that op writes in place.  A sliding-window op (conv, depthwise conv,
pool) whose input dies at it writes over its input too, its output starting
D bytes earlier (`overlap`): the kernels write output pixels in raster order,
so D only has to keep every output pixel clear of the input bytes later
windows still read.  Buffers are placed greedily, largest first, at the
lowest offset that overlaps no buffer alive at the same time (the scheme of
TFLM's greedy planner); a kernel's scratch is a buffer alive during its node
only, so it lands on tensors dead by then.  The model's input and output
live in the arena too, so PREFIX_ARENA_BYTES is all the RAM the model needs
besides the stack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .ir import OPS

ALIGN = 4
ALIASES = {"reshape", "identity"}
# Kernels that write output pixels in raster order, every channel of a pixel
# before the next pixel (k2m.h; the DSP depthwise path writes channel group by
# channel group, which the same overlap also allows when D is a multiple of
# the pixel size).
SLIDING = {"conv2d", "depthwise_conv2d", "max_pool", "avg_pool"}


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
    notes: list = field(default_factory=list)   # the planner's choices, for the report
    in_place: frozenset = frozenset()           # node indices written over their input
    fused: dict = field(default_factory=dict)   # conv node index -> fused pool node index
    streams: dict = field(default_factory=dict)  # conv_a index -> (conv_b, add) streamed by rows

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
    0 where the kernel does not use it (only 3x3, depth multiplier 1, no
    dilation, horizontal stride 1 or 2 take the ring)."""
    (kh, kw), (_, sw), (dh, dw) = a["kernel"], a["strides"], a["dilation"]
    if (kh, kw) != (3, 3) or in_c != out_c or (dh, dw) != (1, 1) or sw not in (1, 2):
        return 0
    in_w, out_w, pad_left = a["in_hw"][1], a["out_hw"][1], a["pad"][1]
    row = (max(pad_left + in_w, sw * out_w + 6) + 1) & ~1
    return 24 * row + 4 * ((out_w + 1) & ~1) + 312


def scratch_bytes(graph, node, pooled: bool = False) -> int:
    """Working memory a kernel needs during its node (k2m.h): the int8
    conv's im2col buffer, two int16 columns of k_h·k_w·in_c (with
    `pooled`, k2m_conv2d_pool_s8's extra); the int8
    depthwise conv's ring of transposed rows; a recurrent layer's gates,
    and its state unless the layer is stateful (the state then lives
    outside the arena, across calls)."""
    if node.op == "conv2d" and graph.dtype == "int8":
        kh, kw = node.attrs["kernel"]
        size = 4 * kh * kw * graph.tensors[node.inputs[0]].shape[-1]
        if pooled:  # K2M_CONV_POOL_S8_SCRATCH_BYTES: a pixel pair's outputs, the sums
            out_c = graph.tensors[node.outputs[0]].shape[-1]
            size += _align(2 * out_c) + 4 * out_c
        return size
    if node.op == "depthwise_conv2d" and graph.dtype == "int8":
        return depthwise_scratch_bytes(node.attrs, graph.tensors[node.inputs[0]].shape[-1],
                                       graph.tensors[node.outputs[0]].shape[-1])
    if node.op == "rnn":
        elements = RNN_SCRATCH[node.attrs["cell"]] * node.attrs["units"]
        if not node.attrs["stateful"]:
            elements += rnn_state_elements(node)
        return elements * (2 if graph.dtype == "int8" else 4)
    return 0


def global_pool_fusions(graph) -> dict:
    """conv node index -> the index of the pooling node fused into it: an
    int8 conv whose only reader is a global average (AveragePooling2D over
    the whole map, or GlobalAveragePooling2D's mean) runs as
    k2m_conv2d_pool_s8, and its output map is never stored."""
    if graph.dtype != "int8":
        return {}
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    fused = {}
    for i, node in enumerate(graph.nodes):
        out = node.outputs[0]
        readers = graph.consumers(out)
        if (node.op != "conv2d" or node.attrs.get("frames") or out in graph.outputs
                or graph.tensors[out].dtype != "int8" or len(readers) != 1):
            continue
        pool = readers[0]
        a = pool.attrs
        whole = (pool.op == "avg_pool" and tuple(a["kernel"]) == tuple(a["in_hw"])
                 and tuple(a["out_hw"]) == (1, 1) and tuple(a["pad"]) == (0, 0)
                 and tuple(a["dilation"]) == (1, 1))
        if (whole or pool.op == "mean") and not a.get("frames"):
            fused[i] = index[id(pool)]
    return fused


def _row_span(a: dict, r: int, in_h: int) -> tuple:
    """The input rows [lo, hi] output row r of a window reads (k2m_stream.c's
    row_span; vertical dilation 1)."""
    first = r * a["strides"][0] - a["pad"][0]
    return max(first, 0), min(first + a["kernel"][0] - 1, in_h - 1)


def _streamable_rows(a: dict, b: dict) -> bool:
    """k2m_conv_pair_add_s8's schedule, step by step: output row r of conv_b
    computes the conv_a rows it still needs, then overwrites input row r.
    Every row must read at least one row, and no conv_a row may read an
    input row already overwritten."""
    if a["dilation"][0] != 1 or b["dilation"][0] != 1:
        return False
    done = 0  # conv_a rows [0, done) computed
    for r in range(b["out_hw"][0]):
        lo, hi = _row_span(b, r, b["in_hw"][0])
        if lo > hi:
            return False
        for j in range(done, hi + 1):
            x_lo, x_hi = _row_span(a, j, a["in_hw"][0])
            if x_lo > x_hi or x_lo < r:
                return False
        done = max(done, hi + 1)
    return True


def stream_candidates(graph) -> dict:
    """conv_a index -> (conv_b index, add index) for each int8 ResNet basic
    block x + conv_b(conv_a(x)), three consecutive nodes, that
    k2m_conv_pair_add_s8 can run row by row: the convs' maps read only by
    the next node, x read only by conv_a and the add, conv_b's output of
    x's shape, a schedule `_streamable_rows` accepts."""
    if graph.dtype != "int8":
        return {}
    found = {}
    for i in range(len(graph.nodes) - 2):
        a, b, c = graph.nodes[i:i + 3]
        if (a.op, b.op, c.op) != ("conv2d", "conv2d", "add") or len(c.inputs) != 2:
            continue
        x, ya, yb = a.inputs[0], a.outputs[0], b.outputs[0]
        tensors = [graph.tensors[t] for t in (x, ya, yb, c.outputs[0])]
        if (b.inputs[0] != ya or sorted(c.inputs) != sorted([x, yb]) or x == yb
                or any(n.attrs.get("frames") or "in_hw" not in n.attrs for n in (a, b))
                or any(t.dtype != "int8" for t in tensors)
                or {ya, yb, x} & set(graph.outputs)
                or [id(n) for n in graph.consumers(ya)] != [id(b)]
                or [id(n) for n in graph.consumers(yb)] != [id(c)]
                or sorted(map(id, graph.consumers(x))) != sorted([id(a), id(c)])
                or tensors[0].shape != tensors[2].shape or tensors[0].shape != tensors[3].shape
                or tuple(b.attrs["out_hw"]) != tuple(a.attrs["in_hw"])
                or tensors[0].nbytes != a.attrs["in_hw"][0] * a.attrs["in_hw"][1] * tensors[0].shape[-1]):
            continue
        if _streamable_rows(a.attrs, b.attrs):
            found[i] = (i + 1, i + 2)
    return found


def stream_scratch_bytes(graph, a, b) -> tuple:
    """(K2M_CONV_PAIR_ADD_S8_SCRATCH_BYTES, the im2col columns' offset in it)."""
    row_a = a.attrs["out_hw"][1] * graph.tensors[a.outputs[0]].shape[-1]
    row_x = a.attrs["in_hw"][1] * graph.tensors[a.inputs[0]].shape[-1]
    cols = _align(b.attrs["kernel"][0] * row_a) + _align(row_x)
    return cols + max(scratch_bytes(graph, a), scratch_bytes(graph, b)), cols


def stream_name(node) -> str:
    return node.name + "/stream"


def scratch_name(node) -> str:
    return node.name + "/scratch"  # '/' never appears in a tensor name


def _first_taps(start, size, k, dil):
    """Per output position, the first tap inside [0, size) (k2m_tap_range's
    k_begin), and whether any tap is."""
    begin = np.where(start < 0, -(-(-start) // dil), 0)
    last = start + (k - 1) * dil
    return start + begin * dil, (begin < k) & (start + begin * dil < size) & (last >= 0)


def overlap(graph, node) -> int | None:
    """D for a sliding-window node: the output may start D bytes before its
    input in one buffer.  Output pixel p (bytes [p·So, (p+1)·So)) is written
    after the windows of pixels < p and its own were read, so it must end at
    or before the first input byte any window of p or later reads:
    D >= max_p ((p + 1)·So - min_{p' >= p} first(p')).  Rounded up to 4 (the
    arena's alignment) and, for the depthwise conv, to the pixel size.  None
    for nodes the kernels do not write that way."""
    a = node.attrs
    if node.op not in SLIDING or a.get("frames") or "in_hw" not in a:
        return None
    tin, tout = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    (in_h, in_w), (out_h, out_w) = a["in_hw"], a["out_hw"]
    if tin.nbytes % (in_h * in_w) or tout.nbytes % (out_h * out_w):
        return None
    si, so = tin.nbytes // (in_h * in_w), tout.nbytes // (out_h * out_w)
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = a["kernel"], a["strides"], a["dilation"], a["pad"]
    y, y_ok = _first_taps(np.arange(out_h) * sh - pt, in_h, kh, dh)
    x, x_ok = _first_taps(np.arange(out_w) * sw - pl, in_w, kw, dw)
    first = ((y[:, None] * in_w + x[None, :]) * si).astype(np.float64)
    first = np.where(y_ok[:, None] & x_ok[None, :], first, np.inf).ravel()
    suffix = np.minimum.accumulate(first[::-1])[::-1]
    need = max(float(np.max((np.arange(first.size) + 1) * so - suffix)), 0.0)  # -inf: no taps
    step = ALIGN if node.op != "depthwise_conv2d" else math.lcm(ALIGN, si)
    return -(-int(need) // step) * step


def plan(graph) -> Plan:
    """The arena plan: the in-place choice (`_best_in_place`) without
    streaming residual blocks, and with every block `stream_candidates`
    finds streamed, then each stream given up again where the arena stays
    as small (a streamed block costs a conv call per row); the smallest
    arena wins, the unstreamed plan on a tie."""
    fused = global_pool_fusions(graph)
    best = _best_in_place(graph, fused, {})
    streams = stream_candidates(graph)
    if not streams:
        return best
    trial = _best_in_place(graph, fused, streams)
    if trial.arena_bytes >= best.arena_bytes:
        return best
    for i in sorted(streams):
        fewer = {k: v for k, v in trial.streams.items() if k != i}
        if i in trial.streams:
            other = _best_in_place(graph, fused, fewer)
            if other.arena_bytes <= trial.arena_bytes:
                trial = other
    return trial


def _best_in_place(graph, fused: dict, streams: dict) -> Plan:
    """Each sliding-window node that could write over its input (`overlap`)
    is taken in place only where that makes the arena no larger: an
    overlap chains the two tensors into one buffer, which can cost more
    than two the greedy placement arranges freely, and a chain of them
    (depthwise / pointwise pairs) only pays as a whole.  So: none and all of
    them, then each one toggled from the better, then each one added to
    none; the smallest arena wins."""
    streamed = {i for a, (b, _) in streams.items() for i in (a, b)}
    candidates = [i for i, n in enumerate(graph.nodes) if overlap(graph, n) is not None
                  and i not in fused and i not in fused.values() and i not in streamed]
    best = min((_plan(graph, frozenset(), fused, streams),
                _plan(graph, frozenset(candidates), fused, streams)),
               key=lambda p: p.arena_bytes)
    for i in candidates:
        trial = _plan(graph, best.in_place ^ {i}, fused, streams)
        if trial.arena_bytes < best.arena_bytes:
            best = trial
    grown = _plan(graph, frozenset(), fused, streams)
    for i in candidates:
        trial = _plan(graph, grown.in_place | {i}, fused, streams)
        if trial.arena_bytes <= grown.arena_bytes:
            grown = trial
    return grown if grown.arena_bytes < best.arena_bytes else best


def _plan(graph, in_place: frozenset, fused: dict, streams: dict) -> Plan:
    """Tensors that share memory (aliases, elementwise in place, the nodes
    in `in_place` over their input, a streamed block's output over its
    input) form a group with fixed offsets inside it; each group, and each
    kernel's scratch, is placed at the lowest offset where none of its
    tensors overlaps a placed tensor alive at the same time (a group's dead
    members free their bytes for others).  A streamed block's two conv maps
    get no memory; its scratch is alive for its three nodes."""
    steps = len(graph.nodes)
    last_read = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last_read[t] = i
    for t in graph.outputs:
        last_read[t] = steps  # copied out after the last node

    group: dict = {}   # tensor -> its group's first tensor
    rel: dict = {}     # tensor -> offset in its group
    born: dict = {t: 0 for t in graph.inputs}
    notes: list = []

    def dies_here(src, i):
        return all(last_read.get(t, -1) <= i and t not in graph.outputs
                   for t in group if group[t] == group[src])

    for t in graph.inputs:
        group[t], rel[t] = t, 0
    pools = {p: c for c, p in fused.items()}
    for c, p in fused.items():
        notes.append(f"{graph.nodes[c].layer}: conv2d and {graph.nodes[p].layer} "
                     f"({graph.nodes[p].op}) fused, the conv's map is not stored")
    streamed, skipped = {}, set()
    for i, node in enumerate(graph.nodes):
        src, out = node.inputs[0], node.outputs[0]
        born[out] = i
        if i in streams and dies_here(src, streams[i][1]):
            streamed[i] = streams[i]
            skipped.update(streams[i])
            b, c = (graph.nodes[k] for k in streams[i])
            notes.append(f"{node.layer}, {b.layer}, {c.layer}: conv2d, conv2d and add streamed "
                         f"row by row over the block input, neither conv's map is stored")
        if i in fused or i in streamed:
            continue
        if i in skipped:  # conv_b (no map), or the add: its output over the block input
            if node.op == "add":
                x = graph.nodes[next(k for k, v in streamed.items() if i in v)].inputs[0]
                group[out], rel[out] = group[x], rel[x]
            continue
        if i in pools:  # written by the fused conv, at its step
            born[out] = pools[i]
            group[out], rel[out] = out, 0
            continue
        elementwise = OPS[node.op] and graph.tensors[src].nbytes == graph.tensors[out].nbytes
        d = overlap(graph, node) if i in in_place and dies_here(src, i) else None
        if node.op in ALIASES or (elementwise and dies_here(src, i)):
            group[out], rel[out] = group[src], rel[src]
        elif d is not None:
            group[out], rel[out] = group[src], rel[src] - d
            notes.append(f"{node.layer}: {node.op} in place over its input "
                         f"(output {d} B before it)")
        else:
            group[out], rel[out] = out, 0
    units: dict = {}
    for t, g in group.items():
        units.setdefault(g, []).append(
            Buffer(t, _align(graph.tensors[t].nbytes), born[t], last_read.get(t, born[t]), [t]))
    for members in units.values():
        low = min(rel[m.name] for m in members)
        for m in members:
            m.offset = rel[m.name] - low   # offset inside the group, for now
    for i, node in enumerate(graph.nodes):
        size = scratch_bytes(graph, node, i in fused)
        if size and i not in streamed and i not in skipped:
            units[scratch_name(node)] = [Buffer(scratch_name(node), _align(size), i, i, [], 0)]
    for i, (b, c) in streamed.items():
        size, _ = stream_scratch_bytes(graph, graph.nodes[i], graph.nodes[b])
        name = stream_name(graph.nodes[i])
        units[name] = [Buffer(name, _align(size), i, c, [], 0)]

    placed: list = []
    order = sorted(units.values(), key=lambda ms: (-max(m.size for m in ms),
                                                   min(m.first for m in ms), ms[0].name))
    for members in order:
        # base offsets at which some member would overlap a placed tensor alive with it
        banned = sorted((p.offset - m.offset - m.size + 1, p.offset + p.size - m.offset)
                        for m in members for p in placed
                        if p.first <= m.last and m.first <= p.last)
        base = 0
        for lo, hi in banned:
            if base < lo:
                break
            base = max(base, _align(hi))
        for m in members:
            m.offset += base
        placed.extend(members)

    arena = max((b.offset + b.size for b in placed), default=0)
    live = []
    for i in range(steps):
        spans, used, end = sorted((b.offset, b.offset + b.size) for b in placed
                                  if b.first <= i <= b.last), 0, 0
        for lo, hi in spans:   # bytes in use, tensors that share them counted once
            used += max(hi, end) - max(lo, end)
            end = max(end, hi)
        live.append(used)
    offsets = {b.name: b.offset for b in placed}
    for i, (b, _) in streamed.items():  # the convs' im2col columns, inside the block's scratch
        a, b = graph.nodes[i], graph.nodes[b]
        cols = offsets[stream_name(a)] + stream_scratch_bytes(graph, a, b)[1]
        offsets[scratch_name(a)] = offsets[scratch_name(b)] = cols
    return Plan(offsets, max(arena, ALIGN), live, sorted(placed, key=lambda b: b.offset), notes,
                in_place, fused, streamed)
