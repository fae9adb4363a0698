"""Emit the model's C folder from a planned graph (DESIGN.md, "The emitted folder").

The jinja2 templates in templates/ render PREFIX.h, PREFIX.c and
PREFIX_weights.h; the kernels the model uses are copied from c_runtime/.
Output is deterministic: no timestamps, stable order, fixed float format.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import jinja2
import numpy as np

from .errors import ExportError, UnsupportedModelError
from .ir import binary_shapes, check_matmul, check_norm, check_reduce
from .planner import Plan, rnn_state_elements, scratch_name, stream_name

RUNTIME_DIR = "k2m_runtime"
RUNTIME_ALWAYS = ["k2m.h", "k2m_math.h", "k2m_quantize.c"]
RUNTIME_FOR_OP = {"conv2d": "k2m_conv.c", "depthwise_conv2d": "k2m_depthwise.c",
                  "dense": "k2m_fully_connected.c",
                  "max_pool": "k2m_pool.c", "avg_pool": "k2m_pool.c", "mean": "k2m_pool.c",
                  "activation": "k2m_activation.c", "softmax": "k2m_activation.c",
                  "add": "k2m_elementwise.c", "binary": ("k2m_elementwise.c", "k2m_broadcast.c"),
                  "reduce": "k2m_reduce.c", "matmul": "k2m_matmul.c",
                  "copy": "k2m_copy.c",
                  "prelu": "k2m_activation.c", "conv3d": "k2m_conv3d.c",
                  "max_pool3d": "k2m_conv3d.c", "avg_pool3d": "k2m_conv3d.c",
                  "resize_bilinear": "k2m_copy.c", "embedding": "k2m_copy.c",
                  "rnn": ("k2m_recurrent.c", "k2m_copy.c"),
                  "norm": "k2m_norm.c"}
# Kernel files whose float versions live apart, so int8 models link without libm.
FLOAT_FILES = {"k2m_activation.c": "k2m_activation_f32.c", "k2m_recurrent.c": "k2m_recurrent_f32.c",
               "k2m_norm.c": "k2m_norm_f32.c"}
NO_CODE = {"reshape", "identity"}
FLOAT_MAX = "3.40282347e+38f"


def package_dir(name: str) -> Path:
    """templates/ and c_runtime/: inside the package when installed, else the repo root."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is missing from the exporter installation")


class NonFinite(ValueError):
    """A constant that C cannot spell (NaN, Inf, or past float32)."""


def c_float(x: float) -> str:
    with np.errstate(over="ignore", invalid="ignore"):
        f = np.float32(x)
    if not np.isfinite(f):
        raise NonFinite(f"{float(x)!r}" + ("" if not np.isfinite(x) else " (Inf in float32)"))
    s = f"{float(f):.9g}"
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def c_comment(text: str) -> str:
    """Text that is safe inside a C block comment under -Wall -Werror: no
    comment delimiters, no trigraphs, printable ASCII only."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    return text.replace("*/", "* /").replace("/*", "/ *").replace("??", "?-?")


def c_array_body(values: np.ndarray, per_line: int) -> str:
    if values.dtype.kind == "f":
        items = [c_float(v) for v in values.ravel()]
    else:
        items = [str(int(v)) for v in values.ravel()]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "    " + ",\n    ".join(lines)


CTYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t", np.dtype(np.int32): "int32_t",
          np.dtype(np.uint16): "uint16_t", np.dtype(np.uint32): "uint32_t",
          np.dtype(np.float32): "float"}
TENSOR_CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}
RNN_ACT_ENUMS = {"tanh": "K2M_RNN_TANH", "sigmoid": "K2M_RNN_SIGMOID",
                 "hard_sigmoid": "K2M_RNN_HARD_SIGMOID", "relu": "K2M_RNN_RELU",
                 "linear": "K2M_RNN_LINEAR"}
RNN_FUNCS = {"simple": "simple_rnn", "lstm": "lstm", "gru": "gru"}
NORM_MODE_ENUMS = {"layer": "K2M_NORM_LAYER", "rms": "K2M_NORM_RMS",
                   "rms_scaling": "K2M_NORM_RMS_SCALING", "l2": "K2M_NORM_L2"}


class Emitter:
    def __init__(self, graph, plan: Plan, prefix: str):
        self.g, self.plan, self.p = graph, plan, prefix
        self.arrays: list = []
        self.seen: dict = {}
        self.int8 = graph.dtype == "int8"
        self.frame: dict = {}      # tensor -> elements per frame, in a TimeDistributed loop
        self.state_elements = 0    # the stateful layers' static state block
        # Every identifier the model's files define, so a constant's name
        # (from a layer name C may not spell) never repeats one.
        self.names = {f"{prefix}_{n}" for n in RESERVED}
        self.maps = trace_maps(graph, plan)

    def unique(self, base: str) -> str:
        name, k = base, 2
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def const(self, node, role: str, values: np.ndarray, comment: str) -> str:
        values = np.ascontiguousarray(values)
        ctype = CTYPES[values.dtype]
        key = (ctype, values.tobytes())
        if key in self.seen:  # a shared layer's weights are stored once
            return self.seen[key]
        try:
            body = c_array_body(values, 16 if values.dtype.itemsize == 1 else 8)
        except NonFinite as e:
            raise NonFinite(f"its {role} constants hold {e}") from None
        name = self.unique(f"{self.p}_{c_ident(node.name)}_{role}")
        self.seen[key] = name
        self.arrays.append({"name": name, "ctype": ctype, "size": max(values.size, 1),
                            "body": body, "comment": c_comment(comment),
                            "nbytes": values.nbytes, "layer": node.layer})
        return name

    def tensor(self, name: str) -> str:
        ctype = TENSOR_CTYPES[self.g.tensors[name].dtype]
        if name in self.maps:  # a fused or streamed conv's map: trace builds only
            return f"{self.p}_map + {self.maps[name]}" if self.maps[name] else f"{self.p}_map"
        ref = f"{self.p.upper()}_TENSOR({ctype}, {self.plan.offsets[name]})"
        return f"{ref} + t * {self.frame[name]}" if name in self.frame else ref

    def macro(self, node, tin, tout) -> str:
        """The ops.c.j2 macro: op and data types (s8, s8_s16, s16, f32)."""
        if not self.int8:
            return f"{node.op}_f32"
        if tout.dtype == "int16":
            return f"{node.op}_s8_s16"
        return f"{node.op}_{'s16' if tin.dtype == 'int16' else 's8'}"

    def clamp_f32(self, clamp):
        lo, hi = clamp
        return (c_float(lo) if lo is not None else "-" + FLOAT_MAX,
                c_float(hi) if hi is not None else FLOAT_MAX)

    def step(self, node) -> dict:
        try:
            return self._step(node)
        except NonFinite as e:
            raise UnsupportedModelError(
                f"layer '{node.layer}' ({node.keras_class}): a constant of its C code is not "
                f"a finite float32 ({e}); C cannot hold it (check the layer's weights and "
                f"config)") from None

    def _step(self, node) -> dict:
        tin, tout = self.g.tensors[node.inputs[0]], self.g.tensors[node.outputs[0]]
        frames = node.attrs.get("frames", 0)
        s = {"trace": self.tensor(tout.name), "nbytes": tout.nbytes, "tensor": tout.name,
             "frames": frames, "macro": self.macro(node, tin, tout),
             "comment": f"{node.layer}: {node.keras_class} -> {node.op} "
                        f"{tin.shape} -> {tout.shape}"}
        if node.attrs.get("fused"):
            s["comment"] += f", fused {', '.join(node.attrs['fused'])}"
        s["comment"] = c_comment(s["comment"])
        if frames:  # the kernel sees one frame; C loops over them (t)
            self.frame = {t: self.g.tensors[t].size // frames for t in node.inputs + node.outputs}
            tin, tout = (dataclasses.replace(x, shape=x.shape[1:]) for x in (tin, tout))
        s["input"], s["output"] = self.tensor(tin.name), self.tensor(tout.name)
        getattr(self, "_" + node.op)(node, tin, tout, s)
        self.frame = {}
        return s

    def _window(self, node, tin, tout):
        a = node.attrs
        (ih, iw), (oh, ow) = a["in_hw"], a["out_hw"]
        return {"in_h": ih, "in_w": iw, "in_c": tin.shape[-1], "out_h": oh, "out_w": ow,
                "out_c": tout.shape[-1], "k_h": a["kernel"][0], "k_w": a["kernel"][1],
                "stride_h": a["strides"][0], "stride_w": a["strides"][1],
                "dil_h": a["dilation"][0], "dil_w": a["dilation"][1],
                "pad_top": a["pad"][0], "pad_left": a["pad"][1]}

    def _weighted(self, node, tin, tout, s):
        layout = {"conv2d": "OHWI", "dense": "(out, in)", "conv3d": "(out, kd, kh, kw, in)"}.get(
            node.op, "(1, kh, kw, out)")
        if self.int8:
            q = node.attrs["int8"]
            s["kernel"] = self.const(node, "w", q["kernel"], f"{node.layer}: int8 weights {layout} {q['kernel'].shape}")
            s["bias"] = self.const(node, "b", q["bias"], f"{node.layer}: int32 bias")
            s["multiplier"] = self.const(node, "mult", q["multiplier"], f"{node.layer}: Q31 requantization multipliers")
            s["shift"] = self.const(node, "shift", q["shift"], f"{node.layer}: requantization shifts")
            s["input_offset"], s["output_offset"] = -tin.quant.zero_point, tout.quant.zero_point
            s["act_min"], s["act_max"] = q["act"]
        else:
            w = node.weights["kernel"].astype(np.float32)
            s["kernel"] = self.const(node, "w", w, f"{node.layer}: float weights {layout} {w.shape}")
            b = node.weights.get("bias")
            s["bias"] = self.const(node, "b", b.astype(np.float32), f"{node.layer}: bias") if b is not None else "0"
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])

    def _conv2d(self, node, tin, tout, s):
        s["window"] = self._window(node, tin, tout)
        self._weighted(node, tin, tout, s)
        if self.int8:
            offset = self.plan.offsets[scratch_name(node)]
            s["scratch"] = f"{self.p.upper()}_TENSOR(int16_t, {offset})"

    def _window3d(self, node, tin, tout):
        w = node.attrs["window3d"]
        lists = ", ".join("{" + ", ".join(str(v) for v in w[k]) + "}" for k in ("k", "stride", "dil", "pad"))
        return (f"{{{', '.join(str(v) for v in w['in'])}}}, {tin.shape[-1]}, "
                f"{{{', '.join(str(v) for v in w['out'])}}}, {tout.shape[-1]}, {lists}")

    def _conv3d(self, node, tin, tout, s):
        s["window3d"] = self._window3d(node, tin, tout)
        self._weighted(node, tin, tout, s)

    def _pool3d(self, node, tin, tout, s):
        s["window3d"] = self._window3d(node, tin, tout)
        if self.int8:
            s["act_min"], s["act_max"] = node.attrs["int8"]["act"]
        else:
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])

    _max_pool3d = _avg_pool3d = _pool3d

    def _depthwise_conv2d(self, node, tin, tout, s):
        s["window"] = self._window(node, tin, tout)
        self._weighted(node, tin, tout, s)
        if self.int8:
            offset = self.plan.offsets.get(scratch_name(node))
            s["scratch"] = "0" if offset is None else f"{self.p.upper()}_TENSOR(int16_t, {offset})"

    def _dense(self, node, tin, tout, s):
        s["batches"] = tin.size // tin.shape[-1]
        s["in_features"], s["out_features"] = tin.shape[-1], tout.shape[-1]
        self._weighted(node, tin, tout, s)

    def _pool(self, node, tin, tout, s):
        s["window"] = self._window(node, tin, tout)
        if self.int8:
            s["act_min"], s["act_max"] = node.attrs["int8"]["act"]
        else:
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])

    _max_pool = _avg_pool = _pool

    def _mean(self, node, tin, tout, s):
        if not self.int8:
            return self._pool(node, tin, tout, s)
        q = node.attrs["int8"]
        s["spatial"], s["channels"] = tin.size // tin.shape[-1], tin.shape[-1]
        s["multiplier"] = self.const(node, "mult", q["multiplier"], f"{node.layer}: Q31 multiplier of the mean")
        s["shift"] = self.const(node, "shift", q["shift"], f"{node.layer}: shift of the mean")
        s["input_offset"], s["output_offset"] = -tin.quant.zero_point, tout.quant.zero_point
        s["act_min"], s["act_max"] = q["act"]

    def _add(self, node, tin, tout, s):
        s["input2"], s["size"] = self.tensor(node.inputs[1]), tin.size
        if self.int8:
            s["params"] = ", ".join(str(int(v)) for v in node.attrs["int8"]["params"])
        else:
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])

    def _copy(self, node, tin, tout, s):
        s["size"], s["fill"] = tout.size, node.attrs["fill"]
        q = node.attrs.get("int8", {})
        s["fill_value"] = q.get("fill", 0) if self.int8 else "0.0f"
        s["moves"] = []
        for m in node.attrs["moves"]:
            rq = q["requant"][m["input"]] if self.int8 else None
            s["moves"].append({
                "dims": ", ".join("{" + ", ".join(str(v) for v in m[k]) + "}"
                                  for k in ("count", "in_stride", "out_stride")),
                "input": f"{self.tensor(node.inputs[m['input']])} + {m['in_offset']}",
                "output": f"{s['output']} + {m['out_offset']}",
                "requant": ", ".join(str(int(v)) for v in rq) if rq else None})

    def _prelu(self, node, tin, tout, s):
        s["size"] = tin.size
        alpha = node.attrs["int8"]["alpha"] if self.int8 else node.weights["alpha"]
        s["period"] = alpha.size
        s["alpha"] = self.const(node, "alpha", alpha, f"{node.layer}: PReLU alpha")
        if self.int8:
            s["params"] = ", ".join(str(int(v)) for v in node.attrs["int8"]["params"])

    def _resize_bilinear(self, node, tin, tout, s):
        (h, w, ch), (oh, ow, _) = tin.shape, tout.shape
        s["dims"] = f"{h}, {w}, {ch}, {oh}, {ow}"
        for axis in ("y", "x"):
            m = node.attrs[axis]
            s[axis + "_index"] = self.const(node, axis + "_index", m["index"],
                                            f"{node.layer}: source {axis} indices")
            frac = (np.round(m["frac"].astype(np.float64) * 2048).astype(np.int16)
                    if self.int8 else m["frac"].astype(np.float32))
            s[axis + "_frac"] = self.const(node, axis + "_frac", frac,
                                           f"{node.layer}: weight of the second {axis} source")

    def _binary(self, node, tin, tout, s):
        """Same shapes: k2m_elementwise.c's kernels; otherwise (and for div)
        k2m_broadcast.c's over the merged box of broadcast_box."""
        if node.attrs.get("frames"):
            raise ExportError(f"'{node.layer}': a binary op inside TimeDistributed is not supported")
        first, second, out = binary_shapes(self.g, node)
        q = node.attrs.get("int8", {})
        s["func"] = q.get("func", node.attrs["func"])
        if "const" in node.weights:
            values = q["const"] if self.int8 else node.weights["const"].astype(np.float32)
            kind = "int8 (own scale)" if self.int8 else "float"
            const = self.const(node, "const", values,
                               f"{node.layer}: {kind} constant operand {values.shape}")
            pair = (const, s["input"]) if node.attrs.get("const_first") else (s["input"], const)
        else:
            pair = (s["input"], self.tensor(node.inputs[1]))
        s["input"], s["input2"], s["size"] = pair[0], pair[1], tout.size
        s["enum"] = "K2M_BINARY_" + s["func"].upper()
        s["kernel"] = {"sub": "add", "avg": "add"}.get(s["func"], s["func"])
        if self.int8:
            s["params"] = ", ".join(str(int(v)) for v in q["params"])
        else:
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])
        pad = len(out)
        same = (1,) * (pad - len(first)) + first == (1,) * (pad - len(second)) + second
        float_sub_reversed = not self.int8 and s["func"] == "sub" and node.attrs.get("const_first")
        if (not same or s["func"] == "div" or float_sub_reversed
                or (self.int8 and same_shape_kernel_wraps(s["func"], q["params"]))):
            count, stride1, stride2 = broadcast_box(first, second, out)
            s["dims"] = ", ".join("{" + ", ".join(str(v) for v in axis) + "}"
                                  for axis in (count, stride1, stride2))
        elif node.attrs.get("const_first"):
            # k2m_elementwise.c allows in place as output == input1 (the
            # planner may give the tensor's buffer to the output): the
            # tensor goes first, with its (offset, multiplier, shift); the
            # float ops left here commute.
            s["input"], s["input2"] = s["input2"], s["input"]
            if self.int8:
                v = [int(x) for x in q["params"]]
                s["params"] = ", ".join(str(x) for x in v[3:6] + v[0:3] + v[6:])

    def _reduce(self, node, tin, tout, s):
        if node.attrs.get("frames"):
            raise ExportError(f"'{node.layer}': a reduction inside TimeDistributed is not supported")
        check_reduce(self.g, node)
        s["dims"] = ", ".join(str(int(v)) for v in node.attrs["dims"])
        s["func"] = node.attrs["func"]
        if not self.int8:
            s["enum"] = "K2M_REDUCE_" + s["func"].upper()
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])
        elif s["func"] in ("max", "min"):
            s["act_min"], s["act_max"] = node.attrs["int8"]["act"]
        else:
            s["params"] = ", ".join(str(int(v)) for v in node.attrs["int8"]["params"])

    def _matmul(self, node, tin, tout, s):
        if node.attrs.get("frames"):
            raise ExportError(f"'{node.layer}': a matmul inside TimeDistributed is not supported")
        check_matmul(self.g, node)
        a = node.attrs
        levels = [tuple(lv) for lv in a.get("batch") or []]
        levels = [(1, 0, 0, 0)] * (3 - len(levels)) + levels
        lists = ", ".join("{" + ", ".join(str(int(lv[r])) for lv in levels) + "}" for r in range(4))
        s["dims"] = f"{a['m']}, {a['n']}, {a['k']}, {a['a_row']}, {a['b_row']}, {a['c_row']}, {lists}"
        s["input2"] = self.tensor(node.inputs[1])
        if self.int8:
            if {tin.dtype, self.g.tensors[node.inputs[1]].dtype} != {"int8"}:
                raise ExportError(f"'{node.layer}': the int8 matmul takes int8 operands")
            s["params"] = ", ".join(str(int(v)) for v in a["int8"]["params"])
        else:
            s["act_min"], s["act_max"] = self.clamp_f32(a.get("clamp", (None, None)))

    def _activation(self, node, tin, tout, s):
        s["size"], s["func"] = tin.size, node.attrs["func"]
        if self.int8 and tin.dtype == "int16":
            s["table"] = self.const(node, "lut", node.attrs["int8"]["table16"],
                                    f"{node.layer}: {s['func']} at 257 points of the int16 input, "
                                    f"in 1/256 output steps")
        elif self.int8:
            s["table"] = self.const(node, "lut", node.attrs["int8"]["table"],
                                    f"{node.layer}: {s['func']} as a table over the 256 int8 inputs")
        elif s["func"] == "clamp":
            s["act_min"], s["act_max"] = self.clamp_f32(node.attrs["clamp"])
        elif s["func"] not in ("sigmoid", "tanh"):
            s["act_enum"] = "K2M_ACT_" + s["func"].upper()
            s["alpha"] = c_float(node.attrs.get("alpha", 0.0))
            s["threshold"] = c_float(node.attrs.get("threshold", 0.0))

    def _softmax(self, node, tin, tout, s):
        s["cols"] = tin.shape[-1]
        s["rows"] = tin.size // s["cols"]
        q = node.attrs.get("int8", {})
        if "exp_hi" in q:
            s["exp_hi"] = self.const(node, "exp_hi", q["exp_hi"],
                                     f"{node.layer}: exp(-input_scale * 256 * k), Q15")
            s["exp_lo"] = self.const(node, "exp_lo", q["exp_lo"],
                                     f"{node.layer}: exp(-input_scale * k), Q15")
        elif self.int8:
            s["exp_table"] = self.const(node, "exp", q["exp_table"],
                                        f"{node.layer}: exp(-input_scale * d) in fixed point")

    def _embedding(self, node, tin, tout, s):
        table = node.attrs["int8"]["table"] if self.int8 else node.weights["table"]
        s["table"] = self.const(node, "table", table,
                                f"{node.layer}: embedding table (vocab, dim) {table.shape}")
        s["count"], s["rows"], s["dim"] = tin.size, node.attrs["vocab"], node.attrs["dim"]

    def _rnn(self, node, tin, tout, s):
        a = node.attrs
        flags = [f for f, on in (("K2M_RNN_BACKWARDS", a["backwards"]),
                                 ("K2M_RNN_SEQUENCES", a["sequences"]),
                                 ("K2M_RNN_REVERSE_OUTPUT", a["reverse_output"]),
                                 ("K2M_GRU_RESET_AFTER", a["reset_after"])) if on]
        s["dims"] = f"{a['steps']}, {a['features']}, {a['units']}, {' | '.join(flags) or 0}"
        s["fn"] = f"k2m_{RNN_FUNCS[a['cell']]}_{'s8' if self.int8 else 'f32'}"
        s["ptype"] = (f"k2m_{RNN_FUNCS[a['cell']]}_s8_params" if self.int8
                      else "k2m_rnn_f32_params")
        s["params"] = self._rnn_int8(node) if self.int8 else self._rnn_f32(node)
        ctype = "int16_t" if self.int8 else "float"
        state = rnn_state_elements(node)
        s["state_ctype"], s["state_elements"] = ctype, state
        offset = self.plan.offsets[scratch_name(node)]
        if a["stateful"]:  # kept across calls, outside the arena
            s["state"], s["zero_state"] = f"{self.p}_state + {self.state_elements}", False
            self.state_elements += state
        else:
            s["state"], s["zero_state"] = f"{self.p.upper()}_TENSOR({ctype}, {offset})", True
            offset += state * (2 if self.int8 else 4)
        s["scratch"] = f"{self.p.upper()}_TENSOR({ctype}, {offset})"

    def _rnn_f32(self, node) -> str:
        a, w = node.attrs, node.weights
        kernel = self.const(node, "w", w["kernel"].astype(np.float32),
                            f"{node.layer}: float kernel (gates·units, in) {w['kernel'].shape}")
        rec = self.const(node, "r", w["recurrent"].astype(np.float32),
                         f"{node.layer}: float recurrent kernel (gates·units, units) "
                         f"{w['recurrent'].shape}")
        parts = [w[k] for k in ("bias", "recurrent_bias") if k in w]
        bias = self.const(node, "b", np.concatenate(parts).astype(np.float32),
                          f"{node.layer}: bias" + (", then the recurrent bias"
                                                   if len(parts) == 2 else "")) if parts else "0"
        return (f"{kernel}, {rec}, {bias}, {RNN_ACT_ENUMS[a['act']]}, "
                f"{RNN_ACT_ENUMS[a['rec_act']]}")

    def _rnn_int8(self, node) -> str:
        q, layer, cell = node.attrs["int8"], node.layer, node.attrs["cell"]
        c = lambda role, key, what: self.const(node, role, q[key], f"{layer}: {what}")  # noqa: E731
        weights = ", ".join([
            c("w", "kernel", f"int8 kernel (gates·units, in) {q['kernel'].shape}"),
            c("b", "bias", "int32 input bias, input zero point folded in"),
            c("w_mult", "kernel_multiplier", "Q31 multipliers, input side to pre-activation"),
            c("w_shift", "kernel_shift", "shifts, input side"),
            c("r", "recurrent", f"int8 recurrent kernel (gates·units, units) {q['recurrent'].shape}"),
            c("r_bias", "recurrent_bias", "int32 recurrent bias of the candidate")
            if q["recurrent_bias"] is not None else "0",
            c("r_mult", "recurrent_multiplier", "Q31 multipliers, recurrent side"),
            c("r_shift", "recurrent_shift", "shifts, recurrent side")])
        luts = ", ".join(self.const(node, f"lut{g}", t, f"{layer}: gate {g} activation, "
                                    f"513-point int16 table")
                         for g, t in enumerate(q["luts"]))
        pair = lambda key: "{" + f"{q[key][0]}, {q[key][1]}" + "}"  # noqa: E731
        tail = f"{pair('h_to_output')}, {q['output_offset']}"
        if cell == "simple":
            return f"{{{weights}}}, {luts}, {tail}"
        if cell == "lstm":
            cell_lut = self.const(node, "cell_lut", q["cell_lut"],
                                  f"{layer}: activation of the cell state, 513-point table")
            return (f"{{{weights}}}, {{{luts}}}, {cell_lut}, {pair('forget')}, "
                    f"{pair('input')}, {pair('output_gate')}, {tail}")
        return (f"{{{weights}}}, {{{luts}}}, {pair('reset')}, {pair('keep')}, "
                f"{pair('update')}, {q['one']}, {tail}")

    def _norm(self, node, tin, tout, s):
        check_norm(node, tin.size)
        s["dims"] = ", ".join(str(int(v)) for v in node.attrs["dims"])
        mode = NORM_MODE_ENUMS[node.attrs["mode"]]
        if self.int8:
            q = node.attrs["int8"]
            mult = self.const(node, "gamma_mult", q["gamma_multiplier"],
                              f"{node.layer}: gamma / output scale, Q31, shift {q['gamma_shift']}")
            beta = self.const(node, "beta", q["beta"],
                              f"{node.layer}: beta / output scale, 1/256 output steps")
            strides = ", ".join(str(int(v)) for v in q["param_stride"])
            s["params"] = (f"{mode}, {q['input_offset']}, {q['eps_bits']}, {q['eps']}ull, "
                           f"{mult}, {q['gamma_shift']}, {beta}, {{{strides}}}, "
                           f"{q['output_offset']}, {q['act_min']}, {q['act_max']}")
            return
        w = node.weights
        arrays = [self.const(node, k, w[k].astype(np.float32), f"{node.layer}: {k}")
                  if k in w else "0" for k in ("gamma", "beta")]
        strides = node.attrs["param_index"] if ("gamma" in w or "beta" in w) else (0, 0, 0)
        lo, hi = self.clamp_f32(node.attrs.get("clamp", (None, None)))
        s["params"] = (f"{mode}, {c_float(node.attrs['epsilon'])}, {arrays[0]}, {arrays[1]}, "
                       f"{{{', '.join(str(int(v)) for v in strides)}}}, {lo}, {hi}")


def broadcast_box(first, second, out, dims: int = 6):
    """k2m_broadcast_dims of `first <op> second` (numpy broadcasting to
    `out`): (count, stride1, stride2), outermost axis first, padded to
    `dims` axes.  Axes of size 1 go; an axis merges into the one outside it
    where both inputs step alike (stride_outer == stride_inner * count), so
    (H, W, C) by (1, 1, C) becomes (H*W, C) with strides (C, 1), (0, 1)."""
    rank = len(out)
    strides = []
    for shape in ((1,) * (rank - len(first)) + tuple(first),
                  (1,) * (rank - len(second)) + tuple(second)):
        st, step = [0] * rank, 1
        for i in reversed(range(rank)):
            st[i] = step if shape[i] != 1 else 0  # 0: broadcast along this axis
            step *= shape[i]
        strides.append(st)
    axes: list = []
    for i in range(rank):
        if out[i] == 1:
            continue
        s1, s2 = strides[0][i], strides[1][i]
        if axes and axes[-1][1] == s1 * out[i] and axes[-1][2] == s2 * out[i]:
            axes[-1] = (axes[-1][0] * out[i], s1, s2)
        else:
            axes.append((out[i], s1, s2))
    if len(axes) > dims:
        raise ExportError(f"broadcasting {tuple(first)} against {tuple(second)} needs "
                          f"{len(axes)} axes; the kernels take {dims}")
    axes = [(1, 0, 0)] * (dims - len(axes)) + axes
    return tuple(list(col) for col in zip(*axes))


def same_shape_kernel_wraps(func, params) -> bool:
    """Whether k2m_elementwise.c's same-shape kernel could wrap for these
    parameters (a left shift large enough that acc << shift leaves int32),
    where the broadcast kernels saturate: mul's product is below 2^16,
    max/min's inputs below 2^8, add's headroom sum below 2^29."""
    if func == "mul":
        return params[9] > 15
    if func in ("max", "min"):
        return max(params[2], params[5]) > 23
    return params[9] > 2


# The identifiers a model's files define besides its constants: PREFIX_<name>.
RESERVED = ("arena", "state", "run", "reset_state", "predict", "invoke", "predict_multi",
            "invoke_multi", "input_t", "output_t", "ALIGNED", "TENSOR", "TRACE")


def c_ident(name: str) -> str:
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in name)
    return out if out and not out[0].isdigit() else "_" + out


def trace_maps(graph, plan: Plan) -> dict:
    """tensor -> its offset in PREFIX_map, the maps normal builds never
    store (a conv fused with its global pooling; a streamed block's two
    convs, alive together), which trace builds compute unfused."""
    maps = {graph.nodes[c].outputs[0]: 0 for c in plan.fused}
    for a, (b, _) in plan.streams.items():
        ya, yb = graph.nodes[a].outputs[0], graph.nodes[b].outputs[0]
        maps[ya], maps[yb] = 0, (graph.tensors[ya].nbytes + 3) // 4 * 4
    return maps


def stream_step(graph, plan: Plan, em: Emitter, a: int, by_node: dict) -> dict:
    """k2m_conv_pair_add_s8's arguments for the block streamed from node a:
    both convs' as their unfused steps have them, the add's with the block
    input first (its two halves swapped if the layer had it second; the sum
    is the same)."""
    b, c = (graph.nodes[i] for i in plan.streams[a])
    x = graph.nodes[a].inputs[0]
    params = [int(v) for v in c.attrs["int8"]["params"]]
    if c.inputs[0] != x:
        params[0:6] = params[3:6] + params[0:3]
    return {"a": by_node[graph.nodes[a].name], "b": by_node[b.name],
            "add": ", ".join(map(str, params)), "x": em.tensor(x),
            "scratch": f"{em.p.upper()}_TENSOR(int8_t, {plan.offsets[stream_name(graph.nodes[a])]})"}


def prepare(graph, plan: Plan, prefix: str, model_name: str) -> dict:
    """Everything the templates need; nothing is written yet."""
    em = Emitter(graph, plan, prefix)
    steps = [em.step(n) for n in graph.nodes if n.op not in NO_CODE]
    by_node = dict(zip((n.name for n in graph.nodes if n.op not in NO_CODE), steps))
    for c, p in plan.fused.items():  # conv + global pooling (planner.global_pool_fusions)
        conv, pool = by_node[graph.nodes[c].name], by_node[graph.nodes[p].name]
        conv["pool"], pool["fused_away"] = pool, True
    for a, later in plan.streams.items():  # a residual block by rows (planner.stream_candidates)
        by_node[graph.nodes[a].name]["stream"] = stream_step(graph, plan, em, a, by_node)
        for i in later:
            by_node[graph.nodes[i].name]["fused_away"] = True
    map_bytes = max((off + graph.tensors[t].nbytes for t, off in em.maps.items()), default=0)
    int8 = graph.dtype == "int8"

    def boundary(names):
        rows = []
        for k, t in enumerate(graph.tensors[n] for n in names):
            q = graph.boundary_quant.get(t.name, t.quant)
            real = int8 and t.dtype != "int32"  # indices are whole numbers, no scale
            rows.append({"index": k, "size": t.size, "shape": t.shape,
                         "offset": plan.offsets[t.name], "ctype": TENSOR_CTYPES[t.dtype],
                         "scale": c_float(q.scale) if real else "1.0f",
                         "zero_point": q.zero_point if real else 0})
        return rows
    inputs = boundary(graph.inputs)
    input_types = {t["ctype"] for t in inputs}
    runtime = set(RUNTIME_ALWAYS)
    for n in graph.nodes:
        files = RUNTIME_FOR_OP.get(n.op, ())
        files = (files,) if isinstance(files, str) else files
        runtime.update(files if int8 else (FLOAT_FILES.get(f, f) for f in files))
    if plan.streams:
        runtime.add("k2m_stream.c")
    return {
        "input_type": input_types.pop() if len(input_types) == 1 else "void",
        "state_elements": em.state_elements,
        "state_ctype": "int16_t" if int8 else "float",
        "p": prefix, "P": prefix.upper(), "model_name": c_comment(model_name),
        "dtype": graph.dtype,
        "inputs": inputs, "outputs": boundary(graph.outputs),
        "arena_bytes": plan.arena_bytes, "weight_bytes": sum(a["nbytes"] for a in em.arrays),
        "raw_type": "int8_t" if int8 else "float",
        "steps": steps, "arrays": em.arrays, "runtime_dir": RUNTIME_DIR, "map_bytes": map_bytes,
        "runtime_files": sorted(runtime),
    }


@functools.lru_cache(maxsize=None)
def templates() -> jinja2.Environment:
    """One environment per process: jinja2 compiles each template once."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(package_dir("templates"))),
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def write(ctx: dict, out_dir: Path) -> None:
    env = templates()
    p = ctx["p"]
    files = {f"{p}.h": "model.h.j2", f"{p}.c": "model.c.j2", f"{p}_weights.h": "weights.h.j2"}
    for fname, template in files.items():
        text = env.get_template(template).render(**ctx)
        (out_dir / fname).write_text(text, encoding="utf-8")
    runtime = out_dir / RUNTIME_DIR
    runtime.mkdir()
    src = package_dir("c_runtime")
    for fname in ctx["runtime_files"]:
        shutil.copyfile(src / fname, runtime / fname)
