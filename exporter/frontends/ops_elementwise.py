"""Keras 3 op nodes that work element by element: `x + 3.0`, `0.5 * h`,
`ops.maximum(x, 0.0)`, `inputs / 255.0`, `x ** 2`, `ops.sqrt(x)`, the
activation ops (`ops.relu`, `ops.nn.hard_silu`...), and the same between two
tensors, with NumPy broadcasting.

A constant operand may be a Python number or an array (numpy broadcasting,
the batch axis included: an array aligns with the trailing axes of the
batched tensor).  Lowering, exactly:
- a scalar or per-channel (last axis) constant with + - * / is an affine
  y = a·x + b per channel (the IR's `batchnorm`: folded into the conv/dense
  before it, else one requantization in int8);
- maximum/minimum with a scalar is a clamp (fused where it can be);
- any other function of one tensor is an `activation` (a 256-entry table in
  int8; chains of them become one table);
- other constants and two tensors are a `binary` node with broadcasting.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError
from .context import CLAMPS, Ref
from .registry import ACTIVATIONS, MATH, NN, NUMPY, handler

BINARY = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div",
          "TrueDivide": "div", "Maximum": "max", "Minimum": "min"}


def positional(ctx, n: int, allowed=()) -> list:
    """The node's n positional arguments; keyword arguments other than
    `allowed` (which the handler reads itself) must be None."""
    extra = [k for k, v in ctx.kwargs.items() if k not in allowed and v is not None]
    if len(ctx.args) != n or extra:
        ctx.unsupported(f"called with {len(ctx.args)} positional arguments"
                        + (f" and keyword arguments {', '.join(extra)}" if extra else "")
                        + f"; {n} positional expected")
    ctx.kwargs.accept(*(k for k in ctx.kwargs if k not in allowed))
    return list(ctx.args)


def constant(ctx, value) -> np.ndarray:
    """A constant operand as float64, refused unless finite and numeric."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        ctx.unsupported(f"an operand {value!r} that is neither a tensor nor a number array")
    if not np.all(np.isfinite(arr)):
        ctx.unsupported(f"a constant operand holds NaN or Inf ({arr.ravel()[:4]})")
    return np.asarray(arr, np.float32).astype(np.float64)  # Keras computes in float32


def per_sample(ctx, const: np.ndarray, shape: tuple) -> np.ndarray:
    """A constant as it broadcasts against one sample of `shape`: the axis
    that aligns with the batch (if any) must be 1 and is dropped."""
    if const.ndim > len(shape) + 1:
        ctx.unsupported(f"a constant of shape {const.shape} has more axes than the "
                        f"batched tensor (None,) + {shape}")
    if const.ndim == len(shape) + 1:
        if const.shape[0] != 1:
            ctx.unsupported(f"a constant of shape {const.shape} broadcasts over the batch "
                            f"axis; the exporter runs one sample at a time")
        const = const[0]
    return const


def out_shape(ctx, *shapes) -> tuple:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        ctx.unsupported(f"shapes {' and '.join(str(s) for s in shapes)} do not broadcast")


@handler(NUMPY, *BINARY)
def binary_op(ctx):
    a, b = positional(ctx, 2)
    return lower_binary(ctx, BINARY[ctx.cls], a, b)


def lower_binary(ctx, func: str, a, b) -> str:
    """func(a, b) with a and b each a Ref or a constant."""
    if isinstance(a, Ref) and isinstance(b, Ref):
        if len(a.keras_shape) != len(b.keras_shape):
            # NumPy aligns the batch axis of the shorter one with a sample axis
            # of the other: Keras itself then runs only with batch size 1.
            ctx.unsupported(f"an op between tensors of shapes (None,) + {a.keras_shape} and "
                            f"(None,) + {b.keras_shape}: their ranks differ, so NumPy's "
                            f"broadcasting pairs one's batch axis with the other's sample "
                            f"axis; give both the same rank (ops.expand_dims)")
        return binary_tensors(ctx, func, [a.name, b.name])
    if not isinstance(a, Ref) and not isinstance(b, Ref):
        ctx.unsupported("both operands are constants")
    x, const, const_first = (a, b, False) if isinstance(a, Ref) else (b, a, True)
    shape = ctx.shape(x.name)
    raw = constant(ctx, const)
    if func == "add" and not const_first:
        raw = as_tf_bias_add(ctx, raw, shape)
    c = per_sample(ctx, raw, shape)
    out = out_shape(ctx, shape, c.shape)
    if out == shape and c.size == 1:
        return scalar_op(ctx, func, x.name, float(c.ravel()[0]), const_first)
    channels = shape[-1] if shape else 1
    if (out == shape and func in ("add", "sub", "mul", "div") and c.ndim >= 1
            and c.shape[-1] == channels and c.size == channels and not
            (func == "div" and const_first)):
        return channel_affine(ctx, func, x.name, c.ravel(), const_first)
    if func == "div" and not const_first and np.any(c == 0):
        ctx.unsupported("division by a constant that holds 0")
    ctx.info(out, macs=int(np.prod(out)))
    return ctx.add("binary", [x.name], out, {"func": func, "clamp": CLAMPS["linear"],
                                              "const_first": const_first},
                   {"const": np.ascontiguousarray(c.astype(np.float32))})


def as_tf_bias_add(ctx, c: np.ndarray, shape: tuple) -> np.ndarray:
    """`x + c` as Keras's TensorFlow backend computes it: a constant that
    squeezes to one vector matching x's last axis (or its first after the
    batch) is added with tf.nn.bias_add along that axis, whatever NumPy's
    broadcasting of c's shape would say (keras/src/backend/tensorflow/
    numpy.py, add).  The result in Keras's own layout, with a warning where
    that differs from NumPy's."""
    dims = [d for d in c.shape if d > 1]
    if len(dims) != 1 or not shape or dims[0] not in (shape[0], shape[-1]):
        return c
    vec = c.reshape(-1)
    tf_shape = (vec.size,) if shape[-1] == dims[0] else (vec.size,) + (1,) * (len(shape) - 1)
    try:
        same = np.array_equal(np.broadcast_to(per_sample(ctx, c, shape), shape),
                              np.broadcast_to(vec.reshape(tf_shape), shape))
    except (ValueError, UnsupportedModelError):
        same = False
    if not same:
        ctx.graph.warnings.append(
            f"{ctx.name}: x + a constant of shape {c.shape}: Keras's TensorFlow backend adds it "
            f"along axis {'-1' if shape[-1] == dims[0] else '1'} (tf.nn.bias_add), unlike NumPy's "
            f"broadcasting of that shape; the export does what Keras does")
    return vec.reshape(tf_shape)


def binary_tensors(ctx, func: str, names: list) -> str:
    """func over two or more tensors, left to right, broadcasting."""
    shapes = [ctx.shape(t) for t in names]
    t, shape = names[0], shapes[0]
    for k, (other, other_shape) in enumerate(zip(names[1:], shapes[1:])):
        shape = out_shape(ctx, shape, other_shape)
        last = k == len(names) - 2
        same = ctx.shape(t) == other_shape
        op = "add" if func == "add" and same else "binary"
        attrs = {"clamp": CLAMPS["linear"]} if op == "add" else {
            "func": func, "clamp": CLAMPS["linear"]}
        t = ctx.add(op, [t, other], shape, attrs, suffix="" if last else f"_part{k}")
    ctx.info(shape, macs=int(np.prod(shape)) * (len(names) - 1))
    return t


def scalar_op(ctx, func, x, c, const_first) -> str:
    ctx.info(ctx.shape(x))
    if func == "add":
        return affine(ctx, x, 1.0, c)
    if func == "sub":
        return affine(ctx, x, -1.0, c) if const_first else affine(ctx, x, 1.0, -c)
    if func == "mul":
        return affine(ctx, x, c, 0.0)
    if func == "div":
        if const_first:
            return unary(ctx, x, "rdiv", alpha=c)
        if c == 0.0:
            ctx.unsupported("division by the constant 0")
        return affine(ctx, x, 1.0 / c, 0.0)
    return clamp(ctx, x, (c, None) if func == "max" else (None, c))


def channel_affine(ctx, func, x, c, const_first) -> str:
    ones, zeros = np.ones_like(c), np.zeros_like(c)
    if func == "div":
        if np.any(c == 0):
            ctx.unsupported("division by a constant that holds 0")
        scale, offset = 1.0 / c, zeros
    else:
        scale, offset = {"add": (ones, c), "mul": (c, zeros),
                         "sub": (-ones, c) if const_first else (ones, -c)}[func]
    ctx.info(ctx.shape(x), macs=int(np.prod(ctx.shape(x))))
    return affine(ctx, x, scale, offset)


def row(ctx, shape) -> None:
    """The node's report row, unless the handler made one already."""
    if not ctx.has_info:
        ctx.info(shape)


def affine(ctx, x: str, scale, offset) -> str:
    """y = scale·x + offset along the last axis (scalars broadcast)."""
    shape = ctx.shape(x)
    row(ctx, shape)
    ch = shape[-1] if shape else 1
    a = np.broadcast_to(np.asarray(scale, np.float64), (ch,)).astype(np.float32)
    b = np.broadcast_to(np.asarray(offset, np.float64), (ch,)).astype(np.float32)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        ctx.unsupported("a constant operand overflows float32")
    return ctx.add("batchnorm", [x], shape, {"clamp": CLAMPS["linear"]},
                   {"scale": a, "offset": b})


def clamp(ctx, x: str, bounds) -> str:
    row(ctx, ctx.shape(x))
    return ctx.add("activation", [x], ctx.shape(x), {"func": "clamp", "clamp": tuple(bounds)})


def unary(ctx, x: str, func: str, **params) -> str:
    row(ctx, ctx.shape(x))
    return ctx.add("activation", [x], ctx.shape(x), {"func": func, **params})


# ---- functions of one tensor ----------------------------------------------

UNARY = {"Square": "square", "Sqrt": "sqrt", "Abs": "abs", "Absolute": "abs",
         "Exp": "exponential", "Log": "log", "Log1p": "log1p", "Expm1": "expm1",
         "Tanh": "tanh", "Reciprocal": "reciprocal", "Sign": "sign", "Sin": "sin",
         "Cos": "cos", "Floor": "floor", "Ceil": "ceil"}
NN_UNARY = {"Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_swish",
            "Silu": "swish", "Selu": "selu", "Softplus": "softplus", "Softsign": "softsign"}


def one_tensor(ctx, allowed=()) -> str:
    (x,) = positional(ctx, 1, allowed)
    if not isinstance(x, Ref):
        ctx.unsupported("its operand is a constant")
    return x.name


@handler(NUMPY, *UNARY)
def unary_op(ctx):
    return unary(ctx, one_tensor(ctx), UNARY[ctx.cls])


@handler(MATH, "Rsqrt", "Erf")
def math_unary_op(ctx):
    return unary(ctx, one_tensor(ctx), ctx.cls.lower())


@handler(NN, *NN_UNARY)
def nn_unary_op(ctx):
    return unary(ctx, one_tensor(ctx), NN_UNARY[ctx.cls])


@handler(NUMPY, "Negative")
def negative_op(ctx):
    return affine(ctx, one_tensor(ctx), -1.0, 0.0)


@handler(NN, "Relu")
def relu_op(ctx):
    return clamp(ctx, one_tensor(ctx), CLAMPS["relu"])


@handler(NN, "Relu6")
def relu6_op(ctx):
    return clamp(ctx, one_tensor(ctx), CLAMPS["relu6"])


@handler(NN, "HardTanh")
def hard_tanh_op(ctx):
    return clamp(ctx, one_tensor(ctx), (-1.0, 1.0))


@handler(NUMPY, "Clip")
def clip_op(ctx):
    x = one_tensor(ctx)
    lo, hi = float(ctx.config["x_min"]), float(ctx.config["x_max"])
    if not (np.isfinite(lo) and np.isfinite(hi)):
        ctx.unsupported(f"clip bounds ({lo}, {hi}) must be finite numbers")
    # numpy's clip is min(max(x, lo), hi): with lo > hi every value is hi
    return clamp(ctx, x, (lo, hi) if lo <= hi else (hi, hi))


@handler(NN, "LeakyRelu")
def leaky_relu_op(ctx):
    return unary(ctx, one_tensor(ctx), "leaky_relu",
                 alpha=float(ctx.config["negative_slope"]), threshold=0.0)


@handler(NN, "Elu")
def elu_op(ctx):
    return unary(ctx, one_tensor(ctx), "elu", alpha=float(ctx.config["alpha"]))


@handler(NN, "Gelu")
def gelu_op(ctx):
    return unary(ctx, one_tensor(ctx), "gelu_tanh" if ctx.config["approximate"] else "gelu")


@handler(ACTIVATIONS, "Mish")
def mish_op(ctx):
    return unary(ctx, one_tensor(ctx), "mish")


@handler(ACTIVATIONS, "ReLU")
def activations_relu_op(ctx):
    """keras.activations.relu(x, negative_slope, max_value, threshold)."""
    x = one_tensor(ctx)
    c = ctx.config
    slope, top, threshold = float(c["negative_slope"]), c["max_value"], float(c["threshold"])
    if slope == 0.0 and threshold == 0.0:
        return clamp(ctx, x, (0.0, None if top is None else float(top)))
    if top is not None:
        ctx.unsupported("relu with both max_value and negative_slope/threshold")
    return unary(ctx, x, "leaky_relu", alpha=slope, threshold=threshold)


@handler(NN, "Softmax")
def softmax_op(ctx):
    x = one_tensor(ctx)
    axis = ctx.config["axis"]
    rank = len(ctx.shape(x)) + 1
    if axis not in (-1, rank - 1):
        ctx.unsupported(f"softmax over axis {axis}; only the last axis is supported")
    row(ctx, ctx.shape(x))
    return ctx.add("softmax", [x], ctx.shape(x), {"axis": -1})


@handler(NUMPY, "Power")
def power_op(ctx):
    a, b = positional(ctx, 2)
    if isinstance(a, Ref) and not isinstance(b, Ref):
        shape = ctx.shape(a.name)
        c = per_sample(ctx, constant(ctx, b), shape)
        if c.size != 1 or out_shape(ctx, shape, c.shape) != shape:
            ctx.unsupported("a power whose exponent is not one number")
        e = float(c.ravel()[0])
        ctx.info(shape)
        if e == 1.0:
            return affine(ctx, a.name, 1.0, 0.0)
        named = {2.0: "square", 0.5: "sqrt", -0.5: "rsqrt", -1.0: "reciprocal"}
        if e in named:
            return unary(ctx, a.name, named[e])
        return unary(ctx, a.name, "pow", alpha=e)
    if isinstance(b, Ref) and not isinstance(a, Ref):
        shape = ctx.shape(b.name)
        c = per_sample(ctx, constant(ctx, a), shape)
        if c.size != 1 or out_shape(ctx, shape, c.shape) != shape:
            ctx.unsupported("a power whose base is not one number")
        ctx.info(shape)
        return unary(ctx, b.name, "rpow", alpha=float(c.ravel()[0]))
    raise UnsupportedModelError(f"layer '{ctx.name}' (Power): a power of two tensors is "
                                f"not supported; use a constant exponent")
