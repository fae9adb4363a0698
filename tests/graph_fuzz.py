"""A differential fuzzer of whole Keras graphs against the exporter.

`generate(seed)` writes the Python source of a random but valid Keras
functional model: layers and Keras 3 op nodes from a grammar of what the
exporter supports (constants on either side of every binary op, scalars,
per-channel and broadcast arrays, broadcasting merges, the activation zoo,
reshapes, slices, reductions, matmuls, normalizations, attention, nested
Functional and Sequential sub-models called once or shared, shared layers,
several outputs).  Each line is executed as it is generated, so Keras
itself decides the shapes and rejects invalid combinations, which are
dropped.  `check(source, folder)` saves the model to a .keras file, exports
it to float32 and int8, runs the C on the host and compares with Keras:

- float32 must be within FLOAT_TOL of the output's largest magnitude, or
  within twice Keras float32's own error against a float64 run of the same
  graph (exporter.interpret), where float32 rounding is all the output holds
  (a normalization of nearly equal values);
- int8: every node within INT8_NODE_STEPS of its output's quantization steps
  (plus, for a table read by int16, how far its 257 interpolated points are
  from the function at worst: `table_error`) of its own float function
  evaluated on the int8 values its inputs hold in the C
  (exporter.verify.own_errors; a conv's or dense's int8 weights and a
  binary op's int8 constant, dequantized): the kernels' arithmetic is checked,
  not how much a normalization or division magnifies upstream rounding,
  which TFLite's int8 shares; and, end to end, an RMSE within
  INT8_RANGE_SHARE of the output's range (or magnitude) plus one output
  step (catches boundary and layout errors); where the graph itself is
  ill-conditioned in int8 (a norm of one value near zero, a softmax whose
  input rounds to a tie), that is measured against the int8 reference
  instead: the float64 graph with every tensor rounded to its own int8
  grid (`int8_reference`), which is what TFLite's scheme computes too; such
  graphs are counted as "ill-conditioned", never silently;
- or the export is refused (UnsupportedModelError, exit 3) with a message
  that names a node of the model.

Anything else — an exit-0 mismatch, an internal error, a refusal that names
nothing — is a failure, reported with the graph's source.

    python tests/graph_fuzz.py --count 5000 --seed 1    # the counts per outcome

With --blocks the grammar also has ResNet basic blocks (x + conv(conv(x)),
which the int8 plan may stream row by row): then the plain build's outputs
must equal the trace build's (which runs the blocks' layers unfused) bit
for bit, and "(streamed)" counts the graphs that streamed one.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

FLOAT_TOL = 1e-5
INT8_NODE_STEPS = 2.0
INT8_RANGE_SHARE = 0.1
CAL, TEST = 64, 32
ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "swish", "hard_swish", "gelu", "elu",
               "selu", "softplus", "softsign", "leaky_relu", "linear", "mish", "hard_sigmoid"]


@dataclass
class Tensor:
    var: str
    shape: tuple


@dataclass
class Program:
    lines: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def source(self) -> str:
        body = "\n".join(self.lines)
        ins = ", ".join(t.var for t in self.inputs)
        outs = ", ".join(t.var for t in self.outputs)
        return f"{body}\nmodel = keras.Model([{ins}], [{outs}], name='fuzz')\n"


def namespace():
    import keras
    from keras import layers as L
    from keras import ops
    return {"keras": keras, "L": L, "ops": ops, "np": np}


class Generator:
    """Grows a graph one line at a time; a line Keras rejects is undone."""

    def __init__(self, seed: int, blocks: bool = False):
        self.rng = np.random.default_rng(seed)
        self.blocks = blocks  # ResNet basic blocks in the grammar (--blocks)
        self.ns = namespace()
        self.prog = Program()
        self.pool: list = []
        self.count = 0

    # ---- helpers --------------------------------------------------------
    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def name(self) -> str:
        self.count += 1
        return f"n{self.count}"

    def num(self, lo=-2.0, hi=2.0, nonzero=False) -> str:
        v = float(self.rng.uniform(lo, hi))
        if nonzero and abs(v) < 0.25:
            v = 0.25 if v >= 0 else -0.25
        return repr(round(v, 3))

    def array(self, shape, nonzero=False) -> str:
        a = np.round(self.rng.uniform(-2, 2, shape), 2)
        if nonzero:
            a = np.where(np.abs(a) < 0.25, 0.5, a)
        return f"np.array({a.tolist()!r}, np.float32)"

    def run(self, line: str, var: str | None, ns=None):
        """Execute `line`; the new tensor (or None if Keras rejected it)."""
        ns = self.ns if ns is None else ns
        try:
            exec(line, ns)
        except Exception:
            return None
        if var is None:
            return True
        t = ns.get(var)
        shape = tuple(getattr(t, "shape", (None,))[1:])
        if not shape or any(d is None or d <= 0 for d in shape) or int(np.prod(shape)) > 4096:
            return None
        return Tensor(var, shape)

    def emit(self, line: str, var: str, lines=None, pool=None, ns=None):
        t = self.run(line, var, ns)
        if t is None:
            return None
        (self.prog.lines if lines is None else lines).append(line)
        (self.pool if pool is None else pool).append(t)
        return t

    # ---- the grammar ----------------------------------------------------
    def unary_steps(self, t: Tensor) -> list:
        """(line template, needs) candidates for one tensor; {x} is the input."""
        r, c = len(t.shape), t.shape[-1]
        n = self.name
        act = self.pick(ACTIVATIONS)
        steps = [
            f"L.Activation('{act}', name='{n()}')({{x}})",
            f"L.ReLU(max_value={self.pick(['None', '6.0', '1.0'])}, name='{n()}')({{x}})",
            f"L.LeakyReLU(negative_slope={self.num(0.05, 0.5)}, name='{n()}')({{x}})",
            f"{{x}} + {self.num()}", f"{self.num()} + {{x}}", f"{{x}} - {self.num()}",
            f"{self.num()} - {{x}}", f"{{x}} * {self.num()}", f"{self.num()} * {{x}}",
            f"{{x}} / {self.num(nonzero=True)}", f"{self.num(nonzero=True)} / (ops.abs({{x}}) + 1.0)",
            f"ops.maximum({{x}}, {self.num()})", f"ops.minimum({self.num()}, {{x}})",
            f"{{x}} * {self.array((c,))}", f"{self.array((c,))} + {{x}}",
            f"{{x}} - {self.array((c,))}", f"{{x}} / {self.array((c,), nonzero=True)}",
            f"ops.maximum({{x}}, {self.array((c,))})",
            f"{{x}} * {self.array(t.shape)}", f"{self.array(t.shape[-2:] if r > 1 else t.shape)} - {{x}}",
            "ops.square({x})", "ops.abs({x})", "-{x}", "ops.sqrt(ops.abs({x}) + 0.5)",
            "ops.exp(ops.clip({x}, -3.0, 3.0))", "ops.tanh({x})", "ops.sigmoid({x})",
            "ops.relu6({x})", "ops.nn.hard_silu({x})", "ops.gelu({x})", "ops.silu({x})",
            f"ops.clip({{x}}, {self.num(-2, 0)}, {self.num(0, 2)})", "{x} ** 2",
            "keras.activations.relu({x})", "ops.log(ops.abs({x}) + 1.0)",
            f"L.Dropout(0.3, name='{n()}')({{x}})",
            f"L.Dense({int(self.rng.integers(2, 9))}, activation='{act}', name='{n()}')({{x}})",
            f"L.BatchNormalization(name='{n()}')({{x}})",
            f"L.LayerNormalization(name='{n()}')({{x}})",
            f"ops.reshape({{x}}, (-1, {int(np.prod(t.shape))}))",
            f"L.Softmax(name='{n()}')({{x}})", "ops.softmax({x})",
            f"L.UnitNormalization(name='{n()}')({{x}})",
            f"L.PReLU(name='{n()}')({{x}})", f"L.ELU(alpha={self.num(0.2, 1.5)}, name='{n()}')({{x}})",
            "ops.cast({x}, 'float32')",
            f"L.Rescaling({self.num(0.1, 2)}, offset={self.num()}, name='{n()}')({{x}})",
            f"L.RMSNormalization(name='{n()}')({{x}})",
            "ops.nn.hard_tanh({x})", "ops.negative({x})", "ops.nn.relu({x})",
            f"ops.einsum('{'bxyz'[:r + 1]},{'xyz'[min(r, 3) - 1]}k->{'bxyz'[:r]}k', {{x}}, {self.array((c, 3))})",
            f"ops.matmul({{x}}, {self.array((c, int(self.rng.integers(1, 5))))})",
            f"L.Reshape({(int(np.prod(t.shape)),)}, name='{n()}')({{x}})",
            "ops.pad({x}, " + repr([[0, 0]] + [[int(self.rng.integers(0, 2)), int(self.rng.integers(0, 2))] for _ in t.shape]) + ")",
        ]
        if r >= 2:
            steps += [
                f"ops.mean({{x}}, axis={self.pick(list(range(1, r + 1)) + [-1])}, keepdims={self.pick([True, False])})",
                "ops.max({x}, axis=-1, keepdims=True)", "ops.sum({x}, axis=1)",
                f"ops.transpose({{x}}, {tuple([0] + list(self.rng.permutation(range(1, r + 1))))})",
                "{x}[:, 1:]", "{x}[..., :-1]", "ops.expand_dims({x}, axis=-1)",
                f"L.LayerNormalization(axis={list(range(1, r + 1))}, name='{n()}')({{x}})",
                "L.Flatten()({x})",
                "{x}[:, 0:1]", "{x}[:, :, None]" if r == 2 else "{x}[:, :, 0]",
                f"ops.concatenate([{{x}}, {{x}} * {self.num()}], axis=-1)",
                f"L.Permute({tuple([2, 1] + list(range(3, r + 1)))}, name='{n()}')({{x}})",
                f"ops.squeeze(ops.expand_dims({{x}}, 1), axis=1)",
            ]
        if r == 2:  # (steps, channels)
            k = int(self.rng.integers(1, 4))
            steps += [
                f"L.Conv1D({int(self.rng.integers(2, 9))}, {k}, padding='{self.pick(['same', 'valid', 'causal'])}', activation='{act}', name='{n()}')({{x}})",
                f"L.MaxPooling1D(2, padding='same', name='{n()}')({{x}})",
                f"L.GlobalAveragePooling1D(name='{n()}')({{x}})",
                f"L.GlobalAveragePooling1D(data_format='channels_first', name='{n()}')({{x}})",
                f"L.MultiHeadAttention(num_heads={int(self.rng.integers(1, 3))}, key_dim={int(self.rng.integers(2, 6))}, name='{n()}')({{x}}, {{x}})",
                "ops.matmul({x}, ops.transpose({x}, (0, 2, 1)))",
                "ops.einsum('btc,bsc->bts', {x}, {x})",
                f"L.Attention(use_scale={self.pick([True, False])}, name='{n()}')([{{x}}, {{x}}])",
                f"L.Conv1D({int(self.rng.integers(2, 7))}, 2, strides=2, padding='same', name='{n()}')({{x}})",
                f"L.AveragePooling1D(2, name='{n()}')({{x}})",
                f"L.GlobalMaxPooling1D(name='{n()}')({{x}})",
                f"L.UpSampling1D(2, name='{n()}')({{x}})",
                f"L.SeparableConv1D({int(self.rng.integers(2, 7))}, 3, padding='same', name='{n()}')({{x}})",
            ]
        if r == 3:  # images
            groups = self.pick([g for g in (1, 2, 3, 4) if c % g == 0])
            steps += [
                f"L.Conv2D({int(self.rng.integers(2, 9))}, {self.pick([1, 3])}, strides={self.pick([1, 1, 2])}, padding='{self.pick(['same', 'valid'])}', activation='{act}', name='{n()}')({{x}})",
                f"L.DepthwiseConv2D(3, padding='same', activation='{act}', name='{n()}')({{x}})",
                f"L.{self.pick(['MaxPooling2D', 'AveragePooling2D'])}(2, padding='same', name='{n()}')({{x}})",
                f"L.GlobalAveragePooling2D(keepdims={self.pick([True, False])}, name='{n()}')({{x}})",
                f"L.GlobalMaxPooling2D(name='{n()}')({{x}})",
                f"L.GroupNormalization(groups={groups}, name='{n()}')({{x}})",
                f"L.UpSampling2D(2, name='{n()}')({{x}})",
                f"L.ZeroPadding2D(1, name='{n()}')({{x}})",
                f"L.Resizing({int(self.rng.integers(2, 9))}, {int(self.rng.integers(2, 9))}, interpolation='{self.pick(['bilinear', 'nearest'])}', name='{n()}')({{x}})",
                f"L.{self.pick(['RandomFlip', 'RandomContrast'])}({'0.2' if True else ''}, name='{n()}')({{x}})"
                .replace("RandomFlip(0.2, ", "RandomFlip("),
                "{x} * L.GlobalAveragePooling2D(keepdims=True)({x})",
                f"L.Multiply(name='{n()}')([{{x}}, L.Activation('sigmoid')(L.Conv2D({c}, 1)(L.GlobalAveragePooling2D(keepdims=True)({{x}})))])",
                f"{{x}} + {self.array((t.shape[0], 1, 1))}",
                f"L.Conv2D({int(self.rng.integers(2, 7))}, 3, dilation_rate=2, padding='same', name='{n()}')({{x}})",
                f"L.SeparableConv2D({int(self.rng.integers(2, 7))}, 3, padding='same', activation='{act}', name='{n()}')({{x}})",
                f"L.Cropping2D(1, name='{n()}')({{x}})",
                f"L.CenterCrop({max(1, t.shape[0] - 1)}, {max(1, t.shape[1] - 2)}, name='{n()}')({{x}})",
                f"L.Resizing(4, 4, crop_to_aspect_ratio={self.pick([True, False])}, name='{n()}')({{x}})",
                f"L.Resizing(5, 3, pad_to_aspect_ratio=True, name='{n()}')({{x}})",
                f"L.Conv2DTranspose({int(self.rng.integers(2, 5))}, 2, strides=2, name='{n()}')({{x}})",
                f"ops.mean({{x}}, axis=(1, 2), keepdims=True) * {{x}}",
            ]
        return steps

    def block_step(self, t: Tensor) -> str:
        """A ResNet basic block over an image tensor: x + conv(conv(x)), the
        add's inputs in either order (--blocks)."""
        n, c = self.name, t.shape[-1]
        # activations the convs fuse (a separate activation node breaks the
        # block); kernels that stream (3x3 -> 3x3, 1x1 -> 5x5) and that cannot (3x3 -> 1x1)
        conv = (f"L.Conv2D({c}, {self.pick([1, 3, 3, 5])}, padding='same', "
                f"activation='{self.pick(['linear', 'relu'])}', name='{n()}')("
                f"L.Conv2D({int(self.rng.integers(2, 17))}, {self.pick([1, 3, 3])}, "
                f"padding='same', activation='{self.pick(['relu', 'relu6', 'linear'])}', name='{n()}')({{x}}))")
        return self.pick([f"L.Add(name='{n()}')([{{x}}, {conv}])", f"L.Add(name='{n()}')([{conv}, {{x}}])"])

    def binary_step(self):
        """Two pool tensors that broadcast, merged by a layer or an op."""
        pairs = [(a, b) for a in self.pool for b in self.pool if a is not b and broadcasts(a.shape, b.shape)]
        if not pairs:
            return None
        a, b = self.pick(pairs)
        same = a.shape == b.shape
        n = self.name()
        # op nodes broadcast batched shapes: only same-rank operands keep
        # the batch axes aligned (else Keras itself runs only batch size 1)
        ops_pairs = [f"{a.var} + {b.var}", f"{a.var} * {b.var}", f"{a.var} - {b.var}",
                     f"ops.maximum({a.var}, {b.var})", f"ops.minimum({a.var}, {b.var})",
                     f"{a.var} / (ops.abs({b.var}) + 1.0)"] if len(a.shape) == len(b.shape) else []
        choices = ops_pairs + [
                   f"L.Add(name='{n}')([{a.var}, {b.var}])",
                   f"L.Multiply(name='{n}')([{a.var}, {b.var}])",
                   f"L.Subtract(name='{n}')([{a.var}, {b.var}])",
                   f"L.Maximum(name='{n}')([{a.var}, {b.var}])",
                   f"L.Average(name='{n}')([{a.var}, {b.var}])"]
        if same and len(a.shape) >= 1:
            choices.append(f"L.Concatenate(name='{n}')([{a.var}, {b.var}])")
            choices.append(f"ops.stack([{a.var}, {b.var}], axis=1)")
        return self.pick(choices)

    def step(self, nested_ok: bool) -> bool:
        var = f"t{len(self.prog.lines)}_{self.count}"
        kind = self.rng.random()
        if kind < 0.2:
            expr = self.binary_step()
            if expr is None:
                return False
            return self.emit(f"{var} = {expr}", var) is not None
        x = self.pool[-1] if self.rng.random() < 0.6 else self.pick(self.pool)
        if nested_ok and kind < 0.3:
            return self.nested(x)
        if kind < 0.34:
            return self.shared(x)
        if self.blocks and len(x.shape) == 3 and self.rng.random() < 0.5:
            template = self.block_step(x)
        else:
            template = self.pick(self.unary_steps(x))
        return self.emit(f"{var} = " + template.replace("{x}", x.var), var) is not None

    def nested(self, x: Tensor) -> bool:
        """A sub-model over x's shape, called on x (and maybe on another
        tensor of the same shape: a shared sub-model)."""
        sub = f"sub{self.count}"
        self.count += 1
        lines, pool = [f"{sub}_in = keras.Input({x.shape!r})"], [Tensor(f"{sub}_in", x.shape)]
        ns = self.ns
        if self.run(lines[0], None) is None:
            return False
        sequential = self.rng.random() < 0.4
        layers = []
        for _ in range(int(self.rng.integers(1, 4))):
            cur = pool[-1]
            cands = [s for s in self.unary_steps(cur) if s.startswith("L.") and s.count("{x}") == 1
                     and s.endswith("({x})")] if sequential else self.unary_steps(cur)
            if not cands:
                break
            template = self.pick(cands)
            var = f"{sub}_t{len(lines)}"
            if self.emit(f"{var} = " + template.replace("{x}", cur.var), var, lines, pool, ns) and sequential:
                layers.append(template[:-len("({x})")])
        if len(pool) < 2:
            return False
        if sequential:
            if not layers:
                return False
            lines = [f"{sub} = keras.Sequential([keras.Input({x.shape!r}), {', '.join(layers)}], name='{sub}')"]
        else:
            lines.append(f"{sub} = keras.Model({sub}_in, {pool[-1].var}, name='{sub}')")
        if self.run("\n".join(lines), None) is None:
            return False
        self.prog.lines.extend(lines)
        var = f"t{len(self.prog.lines)}_{self.count}"
        if self.emit(f"{var} = {sub}({x.var}{', training=False' if self.rng.random() < 0.3 else ''})", var) is None:
            return False
        twins = [t for t in self.pool if t.shape == x.shape and t.var not in (x.var, var)]
        if twins and self.rng.random() < 0.5:
            var2 = f"t{len(self.prog.lines)}_{self.count}b"
            self.emit(f"{var2} = {sub}({self.pick(twins).var})", var2)
        return True

    def shared(self, x: Tensor) -> bool:
        twins = [t for t in self.pool if t.shape == x.shape and t is not x]
        if not twins:
            return False
        lay = f"shared{self.count}"
        self.count += 1
        units = int(self.rng.integers(2, 7))
        kind = self.pick([f"L.Dense({units}, name='{lay}')", f"L.LayerNormalization(name='{lay}')",
                          f"L.Activation('tanh', name='{lay}')"])
        if self.run(f"{lay} = {kind}", None) is None:
            return False
        self.prog.lines.append(f"{lay} = {kind}")
        v1, v2 = f"t{len(self.prog.lines)}_{self.count}a", f"t{len(self.prog.lines)}_{self.count}b"
        ok = self.emit(f"{v1} = {lay}({x.var})", v1)
        return bool(ok and self.emit(f"{v2} = {lay}({self.pick(twins).var})", v2))

    def generate(self) -> Program:
        kind = self.pick(["image", "image", "seq", "seq", "vec"])
        n_inputs = 1 if self.rng.random() < 0.8 else 2
        shape = {"image": (int(self.rng.integers(4, 9)), int(self.rng.integers(4, 9)),
                           int(self.rng.integers(2, 6))),
                 "seq": (int(self.rng.integers(3, 9)), int(self.rng.integers(2, 7))),
                 "vec": (int(self.rng.integers(3, 13)),)}[kind]
        for k in range(n_inputs):
            t = self.emit(f"in{k} = keras.Input({shape!r}, name='in{k}')", f"in{k}")
            self.prog.inputs.append(t)
        if n_inputs == 2:  # both inputs feed the graph
            n = self.name()
            self.emit(f"t_in = {self.pick(['in0 + in1', 'in0 * in1', 'ops.maximum(in0, in1)'])}"
                      if self.rng.random() < 0.5 else
                      f"t_in = L.Concatenate(name='{n}')([in0, in1])", "t_in")
        target = int(self.rng.integers(3, 9))
        made, tries = 0, 0
        while made < target and tries < 60:
            tries += 1
            made += bool(self.step(nested_ok=True))
        derived = [t for t in self.pool if t not in self.prog.inputs]
        if not derived:
            derived = [self.emit(f"t_out = L.Activation('linear', name='{self.name()}')(in0)", "t_out")]
        outs = [derived[-1]]
        if len(derived) > 2 and self.rng.random() < 0.3:
            outs.append(self.pick(derived[:-1]))
        self.prog.outputs = outs
        return self.prog


def broadcasts(a, b) -> bool:
    try:
        out = np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return int(np.prod(out)) <= 4096


def generate(seed: int, blocks: bool = False) -> str:
    return Generator(seed, blocks).generate().source()


def build(source: str, seed: int):
    import keras
    keras.utils.set_random_seed(seed % 2**31)
    ns = namespace()
    exec(source, ns)
    model = ns["model"]
    rng = np.random.default_rng(seed)
    for v in model.weights:  # biases and statistics that are not zeros and ones
        name = v.path.split("/")[-1]
        shape = tuple(v.shape)
        if name in ("bias", "beta", "moving_mean", "alpha"):
            v.assign(rng.normal(0, 0.3, shape).astype(np.float32))
        elif name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
    return model


@dataclass
class Outcome:
    status: str          # match | refused | failure
    detail: str = ""
    construct: str = ""
    streamed: bool = False  # the int8 plan ran a residual block row by row


def node_names(model) -> set:
    names = set()

    def walk(m, prefix):
        for op in m._operations if hasattr(m, "_operations") else []:
            names.add(prefix + op.name)
            names.add(op.name)
            inner = getattr(op, "_functional", op) if hasattr(op, "layers") else None
            if inner is not None and inner is not m and hasattr(inner, "_operations"):
                walk(inner, prefix + op.name + "/")
    walk(model, "")
    return names


def samples(model, rng, n):
    return [rng.normal(0, 1, (n,) + tuple(t.shape[1:])).astype(np.float32) for t in model.inputs]


def int8_reference(report, xs) -> dict:
    """The graph in float64 with every tensor rounded to its int8 (int16)
    quantization grid and clamped to its range, from the inputs as the C
    quantizes them: int8 inference without the kernels' rounding details.
    Conv/dense use their int8 weights, binary ops their int8 constant
    (exporter.verify.with_int8_weights)."""
    from exporter import interpret
    from exporter.codegen import NO_CODE
    from exporter.verify import quantize_like_c, with_int8_weights
    graph, n = report.graph, len(xs[0])
    values = {}
    for name, x in zip(graph.inputs, xs):
        t = graph.tensors[name]
        if t.dtype == "int32":
            values[name] = np.asarray(x, np.float64).reshape((n,) + t.shape)
            continue
        b = graph.boundary_quant.get(name, t.quant)
        raw = quantize_like_c(np.asarray(x).reshape(n, -1), b.scale, b.zero_point)
        values[name] = (t.quant.scale * (raw.astype(np.int32) - t.quant.zero_point)).reshape(
            (n,) + t.shape)
    for node in graph.nodes:
        t = graph.tensors[node.outputs[0]]
        ins = [values[i] for i in node.inputs]
        if node.op in NO_CODE:
            values[t.name] = ins[0].reshape((n,) + t.shape)
            continue
        y = np.asarray(interpret.run_node(with_int8_weights(node, graph.tensors[node.inputs[0]]),
                                          ins, [graph.tensors[i].shape[1:] for i in node.inputs]),
                       np.float64)
        lo, hi = (-128, 127) if t.dtype == "int8" else (-32768, 32767)
        q = np.clip(np.round(y / t.quant.scale) + t.quant.zero_point, lo, hi)
        values[t.name] = (t.quant.scale * (q - t.quant.zero_point)).reshape((n,) + t.shape)
    return values


def table_error(node, tin, tout) -> float:
    """For an activation reading int16 (k2m_lut_s16_s8: 257 points, linear
    in between), how far the interpolated table itself is from the function,
    at worst over all 65536 input codes, in output steps: the approximation
    the scheme makes by design (curvature between two points), which the
    kernel's own error may add to its rounding.  0 for other nodes."""
    from exporter import interpret
    q = node.attrs.get("int8", {})
    if node.op != "activation" or tin.dtype != "int16" or "table16" not in q:
        return 0.0
    table = q["table16"].astype(np.float64) / 256
    u = np.arange(65536)
    k, f = u >> 8, (u & 255) / 256
    line = table[k] + (table[np.minimum(k + 1, 256)] - table[k]) * f
    y = np.asarray(interpret.activation(node, tin.quant.scale * (u - 32768.0)), np.float64)
    y = np.clip(y / tout.quant.scale + tout.quant.zero_point, -128, 127)
    ok = np.isfinite(y)
    return float(np.abs(np.clip(line, -128, 127) - y)[ok].max()) if ok.any() else 0.0


def check(source: str, folder: Path, seed: int = 0) -> Outcome:
    from exporter import export_model, host
    from exporter.errors import UnsupportedModelError
    from exporter.verify import own_errors
    folder.mkdir(parents=True, exist_ok=True)
    model = build(source, seed)
    path = folder / "graph.keras"
    model.save(path)
    rng = np.random.default_rng(seed + 1)
    test = samples(model, rng, TEST)
    # The test samples are calibrated on too: an input outside the calibrated
    # range saturates in int8 by design; the fuzzer checks the arithmetic.
    cal = [np.concatenate([c, t]) for c, t in zip(samples(model, rng, CAL), test)]
    want = model(test, training=False)
    want = [np.asarray(w, np.float64).reshape(TEST, -1)
            for w in (want if isinstance(want, (list, tuple)) else [want])]
    names = node_names(model)
    for dtype in ("float32", "int8"):
        out = folder / dtype
        shutil.rmtree(out, ignore_errors=True)
        try:
            report = export_model(path, out, dtype=dtype, force=True,
                                  calibration_data=(cal[0] if len(cal) == 1 else cal)
                                  if dtype == "int8" else None)
        except UnsupportedModelError as e:
            quoted = set(re.findall(r"'([^']+)'", str(e)))
            if not quoted & names:
                return Outcome("failure", f"{dtype}: refused without naming a node: {e}")
            construct = re.search(r"\(([^:)]+)", str(e))
            return Outcome("refused", str(e), construct.group(1) if construct else "?")
        except Exception as e:
            return Outcome("failure", f"{dtype}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        if dtype == "float32":
            from exporter import interpret
            got = host.load(out).predict_multi(test)
            f64 = interpret.run(report.graph, [t.astype(np.float64) for t in test])
            for k, (g, w) in enumerate(zip(got, want)):
                g = np.asarray(g, np.float64).reshape(TEST, -1)
                if g.shape != w.shape:
                    return Outcome("failure", f"float32 output {k}: shape {g.shape} vs {w.shape}")
                own = np.abs(f64[report.graph.outputs[k]].reshape(w.shape) - w).max()
                # float32 rounding of the inputs' magnitude survives a
                # cancellation (x - mean(x), averaged: ~0) where the output's
                # own magnitude says nothing
                floor = 1e-6 * max(float(np.abs(t).max()) for t in test)
                if own > 1e-3 * np.abs(w).max() + floor:  # that is no rounding: a wrong IR
                    return Outcome("failure", f"float32 output {k}: the IR computes something "
                                              f"else than Keras ({own:.3g} off in float64)")
                err = np.abs(g - w).max()
                if not err <= max(FLOAT_TOL * np.abs(w).max(), 2 * own, floor):
                    return Outcome("failure", f"float32 output {k}: error {err:.3g}, "
                                              f"{err / max(np.abs(w).max(), 1e-30):.3g} of the "
                                              f"output's magnitude; Keras float32 vs float64 {own:.3g}")
        else:
            m = host.load(out, trace=True)  # predicts as the plain build does
            ill = None
            for k, (g, w) in enumerate(zip(m.predict_multi(test), want)):
                g = np.asarray(g, np.float64).reshape(w.shape)
                size = max(np.ptp(w), np.abs(w).max())
                rmse = float(np.sqrt(np.mean((g - w) ** 2)))
                if rmse <= INT8_RANGE_SHARE * size + m.header["outputs"][k]["scale"]:
                    continue
                ref = int8_reference(report, test)[report.graph.outputs[k]].reshape(w.shape)
                ref_rmse = float(np.sqrt(np.mean((g - ref) ** 2)))
                if not ref_rmse <= INT8_RANGE_SHARE * size + m.header["outputs"][k]["scale"]:
                    return Outcome("failure", f"int8 output {k}: RMSE {rmse:.3g} against Keras, "
                                              f"{ref_rmse:.3g} against the int8 reference, "
                                              f"output range {np.ptp(w):.3g}")
                ill = (f"int8 output {k}: RMSE {rmse:.3g} against Keras, as the int8 reference "
                       f"({float(np.sqrt(np.mean((ref - w) ** 2))):.3g}); ours against it "
                       f"{ref_rmse:.3g}")
            by_output = {n.outputs[0]: n for n in report.graph.nodes}
            for row in own_errors(report, out, test if len(test) > 1 else test[0], model=m):
                node = by_output[row["tensor"]]
                allowed = INT8_NODE_STEPS + table_error(
                    node, report.graph.tensors[node.inputs[0]], report.graph.tensors[row["tensor"]])
                if not row["max_steps"] <= allowed:
                    return Outcome("failure", f"int8 node {row['tensor']} ({row['op']}): "
                                              f"{row['max_steps']:.2f} steps off its own float "
                                              f"function")
            streamed = any("streamed row by row" in note for note in report.planner)
            if streamed:  # the trace build runs the blocks' layers unfused; the plain build streams
                plain = host.load(out).predict_multi(test)
                if any(not np.array_equal(a, b) for a, b in zip(plain, m.predict_multi(test))):
                    return Outcome("failure", "int8: the streamed residual block's outputs differ "
                                              "from its layers run unfused", streamed=True)
            if ill:
                return Outcome("ill-conditioned", ill, streamed=streamed)
            return Outcome("match", streamed=streamed)
    return Outcome("match")


def run(count: int, seed: int, folder: Path, verbose=False, stop_on_failure=False,
        blocks=False):
    counts = collections.Counter()
    refusals = collections.Counter()
    failures = []
    started = time.monotonic()
    for k in range(count):
        s = seed * 1_000_003 + k
        source = generate(s, blocks)
        try:
            out = check(source, folder / f"g{k}", s)
        except Exception as e:  # building or saving the graph itself failed
            out = Outcome("failure", f"harness: {type(e).__name__}: {e}")
        counts[out.status] += 1
        counts["(streamed)"] += out.streamed
        if out.status == "refused":
            refusals[out.construct] += 1
        if out.status == "failure":
            failures.append((s, source, out.detail))
            if verbose:
                print(f"--- graph seed {s}: {out.detail}\n{source}", file=sys.stderr)
            if stop_on_failure:
                break
        shutil.rmtree(folder / f"g{k}", ignore_errors=True)
    return counts, refusals, failures, time.monotonic() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--blocks", action="store_true",
                    help="add ResNet basic blocks x + conv(conv(x)) to the grammar")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory() as tmp:
        counts, refusals, failures, secs = run(args.count, args.seed, Path(tmp), args.verbose,
                                               blocks=args.blocks)
    print(f"{args.count} graphs (seed {args.seed}) in {secs:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for construct, n in refusals.most_common():
        print(f"  refused {n:5d}  {construct}")
    for s, source, detail in failures[:20]:
        print(f"FAILURE seed {s}: {detail}\n{source}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
