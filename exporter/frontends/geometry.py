"""Sliding-window geometry as TensorFlow computes it (output sizes, padding)."""
from __future__ import annotations


def window_1d(size, k, stride, dilation, padding):
    """Output length and leading pad, as TensorFlow computes them."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2  # the odd pixel goes after, as in TF
    if padding == "causal":
        return (size - 1) // stride + 1, span - 1
    raise ValueError(padding)


def window_attrs(in_hw, k, strides, dilation, padding):
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, k, strides, dilation
    oh, pt = window_1d(h, kh, sh, dh, padding if padding != "causal" else "valid")
    ow, pl = window_1d(w, kw, sw, dw, padding)
    return (oh, ow), {"kernel": (kh, kw), "strides": (sh, sw),
                      "dilation": (dh, dw), "pad": (pt, pl), "padding": padding}


def as_pair(v):
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)


def window3d(in_dhw, k, strides, dilation, padding):
    out, pad = [], []
    for n, kk, s, d in zip(in_dhw, k, strides, dilation):
        o, p = window_1d(n, kk, s, d, padding)
        out.append(o)
        pad.append(p)
    return {"in": list(in_dhw), "out": out, "k": list(k), "stride": list(strides),
            "dil": list(dilation), "pad": pad}
