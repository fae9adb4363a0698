"""Handlers of MultiHeadAttention and Attention (dot-product).

MultiHeadAttention(query (T, dq), value (S, dv_in), key = value) is, per
head h with key_dim dk and value_dim dv (keras/src/layers/attention):
    Q = query Wq + bq,  K = key Wk + bk,  V = value Wv + bv   (per head)
    P = softmax(Q K^T / sqrt(dk)) over the keys
    out = sum_h (P V)_h Wo_h + bo
lowered to dense (Q, with 1/sqrt(dk) folded into Wq and bq), dense (K, V),
one batched matmul for all heads' scores (heads as the batch), softmax,
V transposed to (heads, dv, S), a second batched matmul writing every
head's output into its columns of (T, heads·dv), and the output dense.
Masks, causal masks and returned attention scores are refused.
"""
from __future__ import annotations

import numpy as np

from . import movement
from .context import CLAMPS, Ref, with_bias
from .registry import layer

MASKS = ("query_mask", "value_mask", "key_mask", "attention_mask")


def check_call(entry) -> list:
    """The config-level refusals (before Keras builds the model)."""
    from .precheck import call_kwargs
    problems = []
    for kwargs in call_kwargs(entry):
        for key in MASKS + ("mask",):
            if kwargs.get(key) is not None:
                problems.append(f"a {key} is not supported (mask-free attention)")
        if kwargs.get("use_causal_mask"):
            problems.append("use_causal_mask=True is not supported yet (mask-free attention)")
        if kwargs.get("return_attention_scores"):
            problems.append("return_attention_scores=True returns the scores as an extra "
                            "output; export the model without them")
    config = entry.get("config") or {}
    if config.get("use_gate"):
        problems.append("use_gate=True (gated attention) is not supported yet")
    if config.get("sliding_window") is not None:
        problems.append("sliding_window attention is not supported yet")
    if config.get("score_mode", "dot") != "dot":
        problems.append(f"score_mode='{config.get('score_mode')}'; 'dot' is supported")
    return sorted(set(problems))


def refuse_masks(ctx) -> None:
    for key in MASKS:
        if ctx.kwargs.get(key) is not None:
            ctx.unsupported(f"a {key} is not supported: the exporter runs every position "
                            f"(mask-free attention)")
    if ctx.kwargs.get("use_causal_mask"):
        ctx.unsupported("use_causal_mask=True is not supported yet (mask-free attention "
                        "only)")
    if ctx.kwargs.get("return_attention_scores"):
        ctx.unsupported("return_attention_scores=True returns the scores as an extra "
                        "output; export the model without them")


def dense(ctx, x: str, kernel, bias, suffix) -> str:
    """x (rows, in) @ kernel (in, out) + bias, along the last axis."""
    rows = ctx.shape(x)[:-1]
    w = {"kernel": np.ascontiguousarray(np.asarray(kernel, np.float32).T)}
    return ctx.add("dense", [x], rows + (kernel.shape[1],), {"clamp": CLAMPS["linear"]},
                   with_bias(w, None if bias is None else np.asarray(bias, np.float32).ravel()),
                   suffix=suffix)


def attention_core(ctx, q: str, k: str, v: str, heads: int, dk: int, dv: int) -> str:
    """softmax(Q K^T) V per head: q (T, heads·dk), k (S, heads·dk), v
    (S, heads·dv) -> (T, heads·dv)."""
    t, s = ctx.shape(q)[0], ctx.shape(k)[0]
    scores = ctx.add("matmul", [q, k], (heads, t, s), {
        "m": t, "n": s, "k": dk, "a_row": heads * dk, "b_row": heads * dk, "c_row": s,
        "batch": [(heads, dk, dk, t * s)]}, suffix="_scores")
    probs = ctx.add("softmax", [scores], (heads, t, s), {"axis": -1}, suffix="_softmax")
    vt_shape, moves = movement.permute((s, heads, dv), (2, 3, 1))
    vt = ctx.add("copy", [v], vt_shape, {"moves": moves, "fill": False,
                                        "out_size": s * heads * dv}, suffix="_value_t")
    return ctx.add("matmul", [probs, vt], (t, heads * dv), {
        "m": t, "n": dv, "k": s, "a_row": s, "b_row": s, "c_row": heads * dv,
        "batch": [(heads, t * s, dv * s, dv)]}, suffix="_heads")


@layer("MultiHeadAttention", check=check_call)
def multi_head_attention(ctx):
    c = ctx.config
    refuse_masks(ctx)
    if c["use_gate"]:
        ctx.unsupported("use_gate=True (gated attention) is not supported yet")
    if c["sliding_window"] is not None:
        ctx.unsupported("sliding_window attention is not supported yet")
    query, value = ctx.args[0], ctx.args[1] if len(ctx.args) > 1 else ctx.kwargs.get("value")
    key = ctx.args[2] if len(ctx.args) > 2 else ctx.kwargs.get("key")
    key = value if key is None else key
    if not all(isinstance(t, Ref) for t in (query, value, key)):
        ctx.unsupported("query, value and key must be tensors")
    tq, tv, tk = (ctx.shape(t.name) for t in (query, value, key))
    if len(tq) != 2 or len(tv) != 2 or len(tk) != 2:
        ctx.unsupported(f"inputs of shapes {tq}, {tv}, {tk}: attention over one sequence "
                        f"axis of (steps, features) inputs is supported")
    if tuple(c["attention_axes"] or (1,)) != (1,):
        ctx.unsupported(f"attention_axes={c['attention_axes']}")
    heads, dk = int(c["num_heads"]), int(c["key_dim"])
    dv = int(c["value_dim"] or dk)
    ws = ctx.weights()
    use_bias = c["use_bias"]
    per = 2 if use_bias else 1
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (
        (ws[i * per], ws[i * per + 1] if use_bias else None) for i in range(4))
    expect = {"query": (wq, (tq[-1], heads, dk)), "key": (wk, (tk[-1], heads, dk)),
              "value": (wv, (tv[-1], heads, dv))}
    for name, (w, shape) in expect.items():
        if w.shape != shape:
            ctx.unsupported(f"its {name} kernel is {w.shape}; its config implies {shape}")
    d_out = wo.shape[-1]
    if wo.shape[:2] != (heads, dv):
        ctx.unsupported(f"its output kernel is {wo.shape}; expected ({heads}, {dv}, ...)")
    if c["output_shape"] is not None and tuple(np.atleast_1d(c["output_shape"])) != (d_out,):
        ctx.unsupported(f"output_shape={c['output_shape']}: a per-position output of more "
                        f"than one axis is not supported")
    ctx.config.accept("value_dim", "output_shape", "dropout")
    out_shape = (tq[0], d_out)
    params = sum(w.size for w in ws)
    ctx.info(out_shape, params=params, macs=(tq[0] * tq[-1] * heads * dk + tk[0] * tk[-1] * heads * dk
                                            + tv[0] * tv[-1] * heads * dv
                                            + heads * tq[0] * tk[0] * (dk + dv)
                                            + tq[0] * heads * dv * d_out))
    scale = 1.0 / np.sqrt(np.float64(dk))
    q = dense(ctx, query.name, wq.reshape(tq[-1], heads * dk) * scale,
              None if bq is None else bq.ravel() * scale, "_query")
    k = dense(ctx, key.name, wk.reshape(tk[-1], heads * dk), bk, "_key")
    v = dense(ctx, value.name, wv.reshape(tv[-1], heads * dv), bv, "_value")
    o = attention_core(ctx, q, k, v, heads, dk, dv)
    return dense(ctx, o, wo.reshape(heads * dv, d_out), bo, "")


@layer("Attention", check=check_call)
def attention(ctx):
    """Luong-style dot-product attention: softmax(scale · Q K^T) V with no
    projections; inputs [query, value] or [query, value, key]."""
    c = ctx.config
    refuse_masks(ctx)
    if ctx.kwargs.get("mask") is not None:
        ctx.unsupported("a mask is not supported (mask-free attention)")
    if c["score_mode"] != "dot":
        ctx.unsupported(f"score_mode='{c['score_mode']}'; 'dot' is supported")
    inputs = ctx.args[0] if ctx.args else None
    if not isinstance(inputs, (list, tuple)) or not 2 <= len(inputs) <= 3 or not all(
            isinstance(t, Ref) for t in inputs):
        ctx.unsupported("expects [query, value] or [query, value, key] tensors")
    q, v = inputs[0].name, inputs[1].name
    k = inputs[2].name if len(inputs) == 3 else v
    tq, tk, tv = ctx.shape(q), ctx.shape(k), ctx.shape(v)
    if len(tq) != 2 or tk != (tv[0], tq[1]):
        ctx.unsupported(f"query {tq}, key {tk}, value {tv}: (steps, dim) tensors with "
                        f"matching dims are supported")
    ws = ctx.weights()
    if c["use_scale"]:
        s = float(ws[0].ravel()[0])
        q = ctx.add("batchnorm", [q], tq, {"clamp": CLAMPS["linear"]},
                    {"scale": np.full(tq[-1], s, np.float32),
                     "offset": np.zeros(tq[-1], np.float32)}, suffix="_scaled")
    ctx.config.accept("dropout")
    out = (tq[0], tv[1])
    ctx.info(out, params=len(ws), macs=tq[0] * tk[0] * (tq[1] + tv[1]))
    y = attention_core(ctx, q, k, v, 1, tq[1], tv[1])
    return ctx.add("reshape", [y], out)
