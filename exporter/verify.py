"""Check an exported C folder against the Keras model it came from.

    m = exporter.verify.verify("build/model", "model.keras", samples, where="qemu")
    print(m["top1_agreement"], m["max_abs"], m["qemu_bit_exact"])

where="host": the folder built with the system C compiler (exporter.host).
where="qemu": built for the Cortex-M4 (firmware_example/, arm-none-eabi-gcc)
and run on QEMU mps2-an386 through PREFIX_invoke, with the inputs quantized
exactly as PREFIX_predict does; its raw outputs are also compared with the
host build's, bit for bit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import calibration, host
from .errors import ExportError
from .metrics import compare


def quantize_like_c(x, scale: float, zero_point: int) -> np.ndarray:
    """k2m_quantize_f32_s8 in numpy, step for step in float32: x / scale, NaN to
    the zero point, clamp to +-512, round half away from zero (v +- 0.5f, then
    truncation), add the zero point, clamp to int8."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        v = x / np.float32(scale)
        nan = np.isnan(v)
        v = np.clip(np.where(nan, np.float32(0), v), np.float32(-512), np.float32(512))
        half = np.float32(0.5)
        r = np.trunc(np.where(v >= 0, v + half, v - half)).astype(np.int32) + int(zero_point)
    r = np.where(nan, int(zero_point), r)
    return np.clip(r, -128, 127).astype(np.int8)


def dequantize_like_c(raw, scale: float, zero_point: int) -> np.ndarray:
    """k2m_dequantize_s8_f32: scale * (float)(raw - zero_point), in float32."""
    raw = np.asarray(raw)
    return np.float32(scale) * (raw.astype(np.int32) - int(zero_point)).astype(np.float32)


def _keras_model(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike)):
        from .frontends import keras as keras_frontend
        return keras_frontend.load(str(model_or_path))
    return model_or_path


def bit_difference(a, b) -> dict:
    """Compare two raw output arrays exactly: equal, how many elements differ,
    and the largest relative difference (floats)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float32:
        differ = a.view(np.uint32) != b.view(np.uint32)
    else:
        differ = a != b
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = np.maximum(np.maximum(np.abs(a64), np.abs(b64)), np.finfo(np.float32).tiny)
    rel = float(np.max(np.abs(a64 - b64) / denom)) if a.size else 0.0
    return {"bit_exact": bool(not differ.any()), "mismatches": int(differ.sum()),
            "max_rel": rel}


def verify(out_dir, keras_model_or_path, samples, where: str = "host",
           prefix: str | None = None, build_dir=None, timeout: float = 120) -> dict:
    """Run `samples` (float, (N,) + input shape or (N, elements), or a .npy/.npz
    file of them) through the C
    model and through Keras; return exporter.metrics.compare's metrics (max_abs,
    rmse, cosine, top1_agreement, and for int8 max_steps and within_2_steps in
    units of the output scale) plus `where`, `samples`, `dtype` and, for
    where="qemu", `qemu_bit_exact`, `qemu_mismatches` and `qemu_max_rel`
    (QEMU's raw outputs against the host build's)."""
    if where not in ("host", "qemu"):
        raise ExportError(f"unknown verify target '{where}'; use host or qemu")
    out_dir = Path(out_dir)
    prefix = prefix or host.find_prefix(out_dir)
    header = host.read_header(out_dir / f"{prefix}.h", prefix)
    n_in = header["INPUT_SIZE"]

    model = _keras_model(keras_model_or_path)
    in_shape = tuple(model.inputs[0].shape[1:])
    if int(np.prod(in_shape)) != n_in:
        raise ExportError(f"the Keras model takes inputs of shape {in_shape}, the C model "
                          f"{n_in} elements: not the model this folder was exported from")
    rows = calibration.load(samples, in_shape, "samples").reshape(-1, n_in)
    ref = np.asarray(model.predict(rows.reshape((-1,) + in_shape), verbose=0))
    ref = ref.reshape(len(rows), -1)

    host_build = None
    if build_dir is not None:
        host_build = Path(build_dir) / "host"
    hm = host.load(out_dir, prefix, build_dir=host_build)
    result = {"where": where, "samples": int(len(rows)), "dtype": header["dtype"]}

    if where == "host":
        got = hm.predict(rows)
    else:
        from . import target
        if header["dtype"] == "int8":
            raw_in = quantize_like_c(rows, header["INPUT_SCALE"], header["INPUT_ZERO_POINT"])
        else:
            raw_in = rows
        qemu_build = Path(build_dir) / "qemu" if build_dir is not None else None
        raw_qemu = target.run_on_qemu(out_dir, raw_in, prefix=prefix, build_dir=qemu_build,
                                      timeout=timeout)
        raw_host = hm.invoke(raw_in)
        diff = bit_difference(raw_qemu, raw_host)
        result.update(qemu_bit_exact=diff["bit_exact"], qemu_mismatches=diff["mismatches"],
                      qemu_max_rel=diff["max_rel"])
        if header["dtype"] == "int8":
            got = dequantize_like_c(raw_qemu, header["OUTPUT_SCALE"], header["OUTPUT_ZERO_POINT"])
        else:
            got = raw_qemu

    step = header["OUTPUT_SCALE"] if header["dtype"] == "int8" else None
    result.update(compare(got, ref, step))
    return result


def layer_metrics(report, out_dir, samples, build_dir=None) -> list:
    """Per layer, where accuracy is lost: every layer's output in the C model
    (traced in a host build) against the same tensor of the float model
    (exporter.interpret, which matches Keras), with the error in that
    tensor's own quantization steps.  `report` is export_model's, from the
    same process (it carries the graph)."""
    from . import interpret
    from .codegen import NO_CODE
    graph = report.graph
    shapes = [graph.tensors[t].shape for t in graph.inputs]
    xs = calibration.load_all(samples, shapes)
    hm = host.load(out_dir, report.prefix, build_dir=build_dir, trace=True)
    traced = hm.trace(xs)
    ref = interpret.run(graph, xs)
    rows = []
    steps = [n for n in graph.nodes if n.op not in NO_CODE]
    for k, node in enumerate(steps):
        t = graph.tensors[node.outputs[0]]
        dtype = {"int8": np.int8, "int16": np.int16, "float32": np.float32}[t.dtype]
        raw = np.stack([np.frombuffer(sample[k], dtype) for sample in traced]).astype(np.float64)
        got = raw if t.quant is None or t.dtype == "float32" else t.quant.scale * (raw - t.quant.zero_point)
        step = t.quant.scale if t.quant is not None and t.dtype != "float32" else None
        m = compare(got, ref[t.name].reshape(len(got), -1), step)
        rows.append({"layer": node.layer, "op": node.op, "tensor": t.name, "dtype": t.dtype, **m})
    return rows


def with_int8_weights(node, tin):
    """A copy of a conv/dense node whose float weights are its int8 ones,
    dequantized, or of a binary node whose constant operand is its int8
    one (x / c as x * (1/c) where the kernel multiplies): what its kernel
    computes, exactly, before rounding.  The weights' and the constant's
    own rounding is the scheme's, TFLite's too (a constant in [-2, 2] has
    steps of 0.016, coarse next to an output clamped to [0, 1])."""
    import copy
    q = node.attrs.get("int8", {})
    if node.op == "binary" and "const" in q:
        from .quantize import const_operand
        _, tc, func = const_operand(node)  # the constant's scale and the kernel's func
        out = copy.copy(node)
        out.weights = {**node.weights, "const": tc.quant.scale
                       * (q["const"].astype(np.float64) - tc.quant.zero_point)}
        out.attrs = {**node.attrs, "func": func}
        return out
    if node.op not in ("conv2d", "depthwise_conv2d", "conv3d", "dense") or "kernel" not in q:
        return node
    out = copy.copy(node)
    wscale = np.asarray(q["weight_scale"], np.float64)
    kernel = q["kernel"].astype(np.float64)
    shape = [1] * kernel.ndim
    shape[-1 if node.op == "depthwise_conv2d" else 0] = -1
    out.weights = {"kernel": kernel * wscale.reshape(shape),
                   "bias": q["bias"].astype(np.float64) * tin.quant.scale * wscale}
    return out


def own_errors(report, out_dir, samples, build_dir=None, model=None) -> list:
    """Per node of an int8 model, the error the node itself adds: its float
    function (exporter.interpret) applied to the int8 values its inputs
    really hold in the C model, against the C's output, in the output's
    steps (int16 outputs in steps 256 times theirs, the size of an int8
    one).  A conv or dense is evaluated with its int8 weights dequantized
    (a binary op with its int8 constant), so what is measured is the
    kernel's arithmetic; the error of int8 weights themselves is the
    scheme's (TFLite's too).  Unlike layer_metrics, nothing upstream counts: a node whose
    float function magnifies small input differences (a normalization of
    three values, a division) is judged by its own arithmetic only.
    `model`: the folder already loaded with host.load(..., trace=True)."""
    from . import interpret
    from .codegen import NO_CODE
    graph = report.graph
    xs = calibration.load_all(samples, [graph.tensors[t].shape for t in graph.inputs])
    hm = model or host.load(out_dir, report.prefix, build_dir=build_dir, trace=True)
    traced = hm.trace(xs)
    n = len(xs[0])
    values = {}
    for name, x in zip(graph.inputs, xs):
        t = graph.tensors[name]
        if t.dtype == "int32":
            values[name] = np.asarray(x, np.float64).reshape(n, -1)
            continue
        b = graph.boundary_quant.get(name, t.quant)
        raw = quantize_like_c(np.asarray(x).reshape(n, -1), b.scale, b.zero_point)
        values[name] = t.quant.scale * (raw.astype(np.int32) - t.quant.zero_point)
    rows, k = [], 0
    for node in graph.nodes:
        t = graph.tensors[node.outputs[0]]
        if node.op in NO_CODE:
            values[t.name] = values[node.inputs[0]]
            continue
        dtype = {"int8": np.int8, "int16": np.int16}[t.dtype]
        raw = np.stack([np.frombuffer(sample[k], dtype) for sample in traced]).astype(np.float64)
        k += 1
        got = t.quant.scale * (raw - t.quant.zero_point)
        ins = [values[i].reshape((n,) + graph.tensors[i].shape) for i in node.inputs]
        want = np.asarray(interpret.run_node(with_int8_weights(node, graph.tensors[node.inputs[0]]),
                                             ins, [graph.tensors[i].shape[1:] for i in node.inputs]),
                          np.float64)
        lo, hi = (-128, 127) if t.dtype == "int8" else (-32768, 32767)
        # what the output can hold: Keras's value clamped to the calibrated range
        want = np.clip(want.reshape(n, -1), t.quant.scale * (lo - t.quant.zero_point),
                       t.quant.scale * (hi - t.quant.zero_point))
        values[t.name] = got
        # int16 tensors (a conv before tanh/sigmoid/softmax) in int8-sized
        # steps: their weights are int8 like everyone's
        unit = t.quant.scale * (256 if t.dtype == "int16" else 1)
        steps = np.abs(got - want) / unit
        rows.append({"layer": node.layer, "op": node.op, "tensor": t.name, "dtype": t.dtype,
                     "max_steps": float(np.nanmax(steps)) if steps.size else 0.0,
                     "mean_steps": float(np.nanmean(steps)) if steps.size else 0.0})
    return rows


def format_layers(rows) -> str:
    """The per-layer table; `type` is the C tensor's (an int16 tensor's steps
    are 256 times finer than an int8 one's)."""
    lines = [f"{'layer':<28} {'op':<18} {'type':<7} {'max|err|':>10} {'RMSE':>10} "
             f"{'cosine':>9} {'max steps':>9}"]
    for r in rows:
        steps = f"{r['max_steps']:.2f}" if "max_steps" in r else "-"
        lines.append(f"{r['layer'][:28]:<28} {r['op'][:18]:<18} {r['dtype']:<7} "
                     f"{r['max_abs']:>10.3g} {r['rmse']:>10.3g} {r['cosine']:>9.6f} {steps:>9}")
    return "\n".join(lines)
