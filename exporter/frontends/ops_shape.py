"""Keras 3 op nodes that move data: reshape, expand_dims, squeeze, transpose,
concatenate, stack, indexing (`x[:, 1:3]`), cast, pad.

Their arguments count the batch axis, which the exporter never touches (it
runs one sample): an op that would move, merge or index the batch axis is
refused, anything else is a reshape (no code) or a strided copy (the IR's
`copy`, frontends/movement.py).
"""
from __future__ import annotations

import numpy as np

from . import movement
from .context import Ref
from .ops_elementwise import one_tensor, positional
from .registry import CORE, NUMPY, handler


def norm_axis(ctx, axis, rank: int) -> int:
    """A Keras axis (batch axis = 0) as an index into the batched shape."""
    if not isinstance(axis, int) or not -rank <= axis < rank:
        ctx.unsupported(f"axis {axis!r} is not an axis of a rank-{rank} tensor")
    return axis % rank


def reshape_to(ctx, x: str, shape) -> str:
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(ctx.shape(x), dtype=np.int64)):
        ctx.unsupported(f"cannot reshape {ctx.shape(x)} to {shape}")
    ctx.info(shape)
    return ctx.add("reshape", [x], shape)


def copy(ctx, inputs, out, moves, fill=False) -> str:
    ctx.info(out)
    return ctx.add("copy", inputs, out, {"moves": moves, "fill": fill,
                                         "out_size": int(np.prod(out, dtype=np.int64))})


def check_reshape(entry) -> list:
    from .precheck import input_shapes
    new = (entry.get("config") or {}).get("newshape") or []
    shapes = input_shapes(entry)
    if not new or new[0] != -1:
        return [f"ops.reshape to {tuple(new)} fixes the batch size; give -1 for the batch axis"]
    if shapes and all(isinstance(d, int) for d in shapes[0]):
        size, rest = int(np.prod(shapes[0], dtype=np.int64)), new[1:]
        if -1 not in rest and int(np.prod(rest, dtype=np.int64)) != size:
            return [f"ops.reshape of {shapes[0]} to {tuple(new)} merges the batch axis with "
                    f"others; the exporter runs one sample at a time: reshape to (-1,) + a "
                    f"shape of {size} values"]
    return []


@handler(NUMPY, "Reshape", check=check_reshape)
def reshape_op(ctx):
    x = one_tensor(ctx)
    new = [int(d) for d in ctx.config["newshape"]]
    size = int(np.prod(ctx.shape(x), dtype=np.int64))
    if not new or new[0] != -1:
        ctx.unsupported(f"ops.reshape to {tuple(new)} fixes the batch size; give -1 for "
                        f"the batch axis, e.g. (-1,) + the per-sample shape")
    rest = new[1:]
    if -1 in rest:
        ctx.unsupported(f"ops.reshape to {tuple(new)} has two -1 axes")
    if int(np.prod(rest, dtype=np.int64)) != size:
        ctx.unsupported(f"ops.reshape of {ctx.shape(x)} to {tuple(new)} merges the batch "
                        f"axis with others (the -1 would be {size} / "
                        f"{int(np.prod(rest, dtype=np.int64))} samples per sample); the exporter "
                        f"runs one sample at a time: reshape to (-1,) + a shape of {size} values")
    return reshape_to(ctx, x, rest)


@handler(NUMPY, "ExpandDims")
def expand_dims_op(ctx):
    x = one_tensor(ctx)
    shape = list(ctx.shape(x))
    axes = ctx.config["axis"]
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    rank = len(shape) + 1 + len(axes)
    at = sorted(norm_axis(ctx, a, rank) for a in axes)
    if 0 in at or len(set(at)) != len(at):
        ctx.unsupported(f"expand_dims at axis {ctx.config['axis']} moves the batch axis")
    for a in at:
        shape.insert(a - 1, 1)
    return reshape_to(ctx, x, shape)


@handler(NUMPY, "Squeeze")
def squeeze_op(ctx):
    x = one_tensor(ctx)
    shape = ctx.shape(x)
    axis = ctx.config["axis"]
    if axis is None:  # every size-1 axis of the sample (never the batch)
        return reshape_to(ctx, x, [d for d in shape if d != 1])
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    at = {norm_axis(ctx, a, len(shape) + 1) for a in axes}
    if 0 in at or any(shape[a - 1] != 1 for a in at):
        ctx.unsupported(f"squeeze of axis {axis} of (None,) + {shape}: only size-1 axes of "
                        f"the sample can be squeezed")
    return reshape_to(ctx, x, [d for k, d in enumerate(shape) if k + 1 not in at])


@handler(NUMPY, "Transpose")
def transpose_op(ctx):
    x = one_tensor(ctx)
    axes = ctx.config["axes"]
    rank = len(ctx.shape(x)) + 1
    if axes is None or len(axes) != rank:
        ctx.unsupported("a transpose without explicit axes reverses the batch axis too")
    axes = [norm_axis(ctx, a, rank) for a in axes]
    if axes[0] != 0 or sorted(axes) != list(range(rank)):
        ctx.unsupported(f"transpose with axes {tuple(axes)} moves the batch axis")
    if axes == list(range(rank)):
        return reshape_to(ctx, x, ctx.shape(x))
    out, moves = movement.permute(ctx.shape(x), tuple(axes[1:]))
    return copy(ctx, [x], out, moves)


def tensor_list(ctx, items) -> list:
    if not isinstance(items, (list, tuple)) or not items:
        ctx.unsupported("expects a list of tensors")
    if any(not isinstance(t, Ref) for t in items):
        ctx.unsupported("a constant in the list of tensors is not supported")
    return [t.name for t in items]


@handler(NUMPY, "Concatenate")
def concatenate_op(ctx):
    (xs,) = positional(ctx, 1)
    names = tensor_list(ctx, xs)
    shapes = [ctx.shape(t) for t in names]
    rank = len(shapes[0]) + 1
    axis = norm_axis(ctx, ctx.config["axis"], rank)
    if axis == 0:
        ctx.unsupported("concatenation along the batch axis")
    a = axis - 1
    if any(len(s) != len(shapes[0]) or s[:a] + s[a + 1:] != shapes[0][:a] + shapes[0][a + 1:]
           for s in shapes):
        ctx.unsupported(f"cannot concatenate shapes {shapes} along axis {axis}")
    out, moves = movement.concatenate(shapes, a)
    return copy(ctx, names, out, moves)


@handler(NUMPY, "Stack")
def stack_op(ctx):
    (xs,) = positional(ctx, 1)
    names = tensor_list(ctx, xs)
    shapes = [ctx.shape(t) for t in names]
    if len(set(shapes)) != 1:
        ctx.unsupported(f"cannot stack tensors of shapes {shapes}")
    rank = len(shapes[0]) + 2
    axis = norm_axis(ctx, ctx.config["axis"], rank)
    if axis == 0:
        ctx.unsupported("stacking along the batch axis")
    one = list(shapes[0])
    one.insert(axis - 1, 1)
    out, moves = movement.concatenate([tuple(one)] * len(names), axis - 1)
    return copy(ctx, names, out, moves)


@handler(CORE, "Cast")
def cast_op(ctx):
    x = one_tensor(ctx)
    if ctx.config["dtype"] != "float32":
        ctx.unsupported(f"a cast to {ctx.config['dtype']}; the exporter runs float32 models")
    return reshape_to(ctx, x, ctx.shape(x))


@handler(NUMPY, "GetItem")
def get_item_op(ctx):
    """x[key] with slices (positive steps), integers, None and Ellipsis."""
    x, key = positional(ctx, 2)
    if not isinstance(x, Ref):
        ctx.unsupported("indexing a constant")
    shape = ctx.shape(x.name)
    items = list(key) if isinstance(key, (tuple, list)) else [key]
    if sum(i is Ellipsis for i in items) > 1:
        ctx.unsupported("an index with two Ellipsis")
    real = [i for i in items if i is not None and i is not Ellipsis]
    if len(real) > len(shape) + 1:
        ctx.unsupported(f"an index of {len(real)} axes into a rank-{len(shape) + 1} tensor")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items[k:k + 1] = [slice(None)] * (len(shape) + 1 - len(real))
    items += [slice(None)] * (len(shape) + 1 - len([i for i in items if i is not None]))
    if items[0] != slice(None):
        ctx.unsupported(f"the index {key!r} selects along the batch axis; index the sample "
                        f"axes only (x[:, ...])")
    return ctx_index(ctx, x.name, shape, items[1:])


def ctx_index(ctx, x, shape, items) -> str:
    si = movement.strides(shape)
    offset, count, in_stride, out_shape = 0, [], [], []
    axis = 0
    for item in items:
        if item is None:
            out_shape.append(1)
            continue
        n = shape[axis]
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            i = int(item)
            if not -n <= i < n:
                ctx.unsupported(f"index {i} is out of range for an axis of {n}")
            offset += (i % n) * si[axis]
        elif isinstance(item, slice):
            if item.step is not None and (not isinstance(item.step, int) or item.step <= 0):
                ctx.unsupported(f"a slice step of {item.step!r}; only positive steps are "
                                f"supported")
            for v in (item.start, item.stop):
                if v is not None and not isinstance(v, (int, np.integer)):
                    ctx.unsupported(f"a slice bound {v!r} that is not an integer")
            start, _, step = item.indices(n)
            m = len(range(*item.indices(n)))
            if m == 0:
                ctx.unsupported(f"the slice {item} selects nothing from an axis of {n}")
            offset += start * si[axis]
            count.append(m)
            in_stride.append(step * si[axis])
            out_shape.append(m)
        else:
            ctx.unsupported(f"an index item {item!r} (tensors, lists and booleans as "
                            f"indices are not supported)")
        axis += 1
    kept = count
    if len(kept) > movement.DIMS:
        ctx.unsupported(f"an index that keeps {len(kept)} axes (at most {movement.DIMS})")
    out = tuple(out_shape)
    if not out:
        ctx.unsupported("the index selects a single value; keep at least one axis "
                        "(x[:, i:i + 1] instead of x[:, i])")
    move = movement.move(kept, in_stride, movement.strides(kept), in_offset=offset)
    return copy(ctx, [x], out, [move])


@handler(NUMPY, "Pad")
def pad_op(ctx):
    x = one_tensor(ctx, allowed=("constant_values",))
    if ctx.config["mode"] != "constant":
        ctx.unsupported(f"pad mode '{ctx.config['mode']}'; only 'constant' is supported")
    value = ctx.kwargs.get("constant_values")
    if value not in (None, 0, 0.0):
        ctx.unsupported(f"padding with {value!r}; only zeros are supported")
    shape = ctx.shape(x)
    width = np.asarray(ctx.config["pad_width"], dtype=np.int64)
    width = np.broadcast_to(width.reshape(-1, 2) if width.size > 2 else width.reshape(1, 2),
                            (len(shape) + 1, 2))
    if np.any(width[0] != 0) or np.any(width < 0):
        ctx.unsupported(f"pad widths {width.tolist()} pad the batch axis or are negative")
    pairs = [tuple(int(v) for v in p) for p in width[1:]]
    out = tuple(d + a + b for d, (a, b) in zip(shape, pairs))
    move = movement.pad_or_crop(shape, out, [0] * len(shape), [a for a, _ in pairs])
    return copy(ctx, [x], out, [move], fill=True)
