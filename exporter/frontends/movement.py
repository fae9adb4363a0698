"""Data-movement layers as strided copies (the IR op `copy`).

Each layer becomes a list of moves; a move copies a box of up to 6 axes
from one input to the output (k2m.h, k2m_copy_dims).  Shapes here have no
batch axis; strides count elements.
"""
from __future__ import annotations

import numpy as np

DIMS = 6


def strides(shape) -> list:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= int(d)
    return out[::-1]


def move(count, in_stride, out_stride, input_index=0, in_offset=0, out_offset=0) -> dict:
    pad = DIMS - len(count)
    return {"input": input_index, "in_offset": int(in_offset), "out_offset": int(out_offset),
            "count": [1] * pad + [int(c) for c in count],
            "in_stride": [0] * pad + [int(s) for s in in_stride],
            "out_stride": [0] * pad + [int(s) for s in out_stride]}


def pad_or_crop(in_shape, out_shape, in_start, out_start) -> dict:
    """Copy the overlap of input and output boxes (padding and cropping)."""
    count = [min(i - a, o - b) for i, o, a, b in zip(in_shape, out_shape, in_start, out_start)]
    si, so = strides(in_shape), strides(out_shape)
    return move(count, si, so,
                in_offset=sum(a * s for a, s in zip(in_start, si)),
                out_offset=sum(b * s for b, s in zip(out_start, so)))


def upsample(in_shape, factors) -> tuple:
    """Nearest upsampling of the spatial axes (all but the last) by `factors`."""
    out_shape = tuple(d * f for d, f in zip(in_shape[:-1], factors)) + (in_shape[-1],)
    si, so = strides(in_shape), strides(out_shape)
    count, in_s, out_s = [], [], []
    for axis, f in enumerate(factors):
        count += [in_shape[axis], f]
        in_s += [si[axis], 0]
        out_s += [so[axis] * f, so[axis]]
    count.append(in_shape[-1])
    in_s.append(1)
    out_s.append(1)
    return out_shape, [move(count, in_s, out_s)]


def permute(in_shape, dims) -> tuple:
    out_shape = tuple(in_shape[d - 1] for d in dims)
    si = strides(in_shape)
    return out_shape, [move(out_shape, [si[d - 1] for d in dims], strides(out_shape))]


def repeat(in_shape, n) -> tuple:
    out_shape = (n,) + tuple(in_shape)
    return out_shape, [move(out_shape, [0] + strides(in_shape), strides(out_shape))]


def concatenate(shapes, axis) -> tuple:
    out_shape = list(shapes[0])
    out_shape[axis] = sum(s[axis] for s in shapes)
    so, moves, at = strides(out_shape), [], 0
    for k, shape in enumerate(shapes):
        moves.append(move(shape, strides(shape), so, input_index=k, out_offset=at * so[axis]))
        at += shape[axis]
    return tuple(out_shape), moves


def run(moves, inputs, out_size: int) -> np.ndarray:
    """The moves in numpy, batch axis first (the interpreter's reference);
    what no move writes is zero (padding)."""
    from numpy.lib.stride_tricks import as_strided
    n = inputs[0].shape[0]
    out = np.zeros((n, out_size), np.float64)
    for b in range(n):
        for m in moves:
            src = np.ascontiguousarray(inputs[m["input"]][b], np.float64).ravel()
            item = src.itemsize
            view_in = as_strided(src[m["in_offset"]:], m["count"],
                                 [s * item for s in m["in_stride"]])
            view_out = as_strided(out[b, m["out_offset"]:], m["count"],
                                  [s * item for s in m["out_stride"]])
            view_out[...] = view_in
    return out


def bilinear_map(n_in: int, n_out: int) -> dict:
    """TensorFlow's half-pixel bilinear sampling of one axis: per output
    index the two source indices and the weight of the second."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(np.float32)
    return {"index": np.stack([i0, i1], axis=1).reshape(-1).astype(np.int16), "frac": frac}


def resize_bilinear(x, ymap, xmap) -> np.ndarray:
    """x: (N, H, W, C) → the resized batch, TensorFlow's formula."""
    y0, y1 = ymap["index"][0::2], ymap["index"][1::2]
    x0, x1 = xmap["index"][0::2], xmap["index"][1::2]
    fy = ymap["frac"].astype(np.float64)[None, :, None, None]
    fx = xmap["frac"].astype(np.float64)[None, None, :, None]
    r0, r1 = x[:, y0], x[:, y1]
    top = r0[:, :, x0] + (r0[:, :, x1] - r0[:, :, x0]) * fx
    bottom = r1[:, :, x0] + (r1[:, :, x1] - r1[:, :, x0]) * fx
    return top + (bottom - top) * fy
