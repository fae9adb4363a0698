"""Reading and checking calibration samples (.npy or .npz)."""
from __future__ import annotations

import os

import numpy as np

from .errors import ExportError


def is_path(source) -> bool:
    return isinstance(source, (str, bytes)) or hasattr(source, "__fspath__")


def read_file(source, where: str):
    """The array of a .npy, or {name: array} of a .npz, read whole with
    errors a user can act on (exit 2): never unpickled, every member of an
    archive read and CRC-checked here."""
    path = os.fsdecode(os.fspath(source))
    if os.path.isdir(path):
        raise ExportError(f"cannot read {where}: it is a directory; expected a .npy or .npz file")
    if not os.path.exists(path):
        raise ExportError(f"cannot read {where}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except Exception as e:  # noqa: BLE001 - zip, CRC, header and pickle errors alike
        why = ("it holds Python objects, which are never unpickled; save a numeric array"
               if "allow_pickle" in str(e) or "Object arrays" in str(e) else
               f"expected a .npy or .npz array ({type(e).__name__}: {_first_line(e)})")
        raise ExportError(f"cannot read {where}: {why}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


def precheck(source, what: str = "calibration") -> None:
    """Check a samples file before the (slow) model load: readable, numbers,
    not empty, finite.  Its shape is checked by `load` against the model."""
    if not is_path(source):
        return
    where = f"{what} file '{source}'"
    data = read_file(source, where)
    if isinstance(data, dict):
        if not data:
            raise ExportError(f"{where} holds no arrays")
        for k, v in data.items():
            check_values(v, f"{where} (array '{k}')")
    else:
        check_values(data, where)


def check_values(data, where: str) -> None:
    data = np.asarray(data)
    if data.dtype.kind not in "fiub":
        raise ExportError(f"{where} has dtype {data.dtype}; expected numbers")
    if data.ndim == 0:
        raise ExportError(f"{where} holds a single number; expected an array of samples, "
                          f"shape (N,) + the model input")
    if data.size == 0:
        raise ExportError(f"{where} is empty; pass at least one sample")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ExportError(f"{where} contains NaN or Inf values")


def load(source, input_shape: tuple, what: str = "calibration") -> np.ndarray:
    """Samples (an array or a .npy/.npz path) as float32 of shape
    (N,) + input_shape, or a clear error naming `what` they are for."""
    if is_path(source):
        where = f"{what} file '{source}'"
        data = read_file(source, where)
        if isinstance(data, dict):
            keys = sorted(data)
            if not keys:
                raise ExportError(f"{where} holds no arrays")
            data = data["x" if "x" in keys else keys[0]]
    else:
        where, data = f"{what} data", source
    data = np.asarray(data)
    if data.dtype.kind not in "fiub":
        raise ExportError(f"{where} has dtype {data.dtype}; expected numbers")
    if data.ndim == 0:
        raise ExportError(f"{where} holds a single number; expected an array of samples, "
                          f"shape (N,) + the model input {tuple(input_shape)}")
    size = int(np.prod(input_shape))
    if data.size == 0 or len(data) == 0:
        raise ExportError(f"{where} is empty; pass at least one sample of shape {input_shape}")
    if tuple(data.shape[1:]) != tuple(input_shape):
        if data.ndim == 2 and data.shape[1] == size:  # (N, elements): one flat row each
            data = data.reshape((len(data),) + tuple(input_shape))
        else:  # the same count in another layout is not the same samples
            raise ExportError(f"{where} has shape {data.shape}; expected (N,) + the "
                              f"model input {tuple(input_shape)} or (N, {size})")
    data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ExportError(f"{where} contains NaN or Inf values")
    return data


def load_all(source, input_shapes: list) -> list:
    """Samples for every model input: one array (or file) for a one-input
    model; for several, a list/tuple of arrays or a .npz with one array per
    input in the model's order."""
    if len(input_shapes) == 1:
        return [load(source, input_shapes[0])]
    if is_path(source):
        data = read_file(source, f"calibration file '{source}'")
        if not isinstance(data, dict):
            raise ExportError(f"calibration file '{source}': a model with "
                              f"{len(input_shapes)} inputs needs a .npz with one array "
                              f"per input, in order")
        arrays = list(data.values())
    else:
        arrays = list(source)
    if len(arrays) != len(input_shapes):
        raise ExportError(f"the model has {len(input_shapes)} inputs but the calibration data "
                          f"holds {len(arrays)} arrays; give one per input, in order")
    out = [load(a, s) for a, s in zip(arrays, input_shapes)]
    if len({len(a) for a in out}) != 1:
        raise ExportError("the calibration arrays of the inputs hold different numbers of samples")
    return out


def check_indices(graph, samples: list, source, what: str = "calibration") -> None:
    """Samples of an input read by an Embedding must be token indices: whole
    numbers inside the vocabulary.  Anything else calibrates the model on
    rows it will never see (the C clamps out-of-range indices)."""
    for name, data in zip(graph.inputs, samples):
        readers = [n for n in graph.consumers(name) if n.op == "embedding"]
        if not readers:
            continue
        vocab = min(n.attrs["vocab"] for n in readers)
        where = f"{what} file '{source}'" if is_path(source) else f"the {what} data"
        if np.any(data != np.round(data)):
            raise ExportError(f"{where}: the samples of input '{name}' feed an Embedding but "
                              f"are not whole numbers; pass token indices")
        if data.min() < 0 or data.max() >= vocab:
            raise ExportError(f"{where}: the samples of input '{name}' hold indices from "
                              f"{int(data.min())} to {int(data.max())}, outside the "
                              f"Embedding's vocabulary [0, {vocab})")


def synthetic(graph, count: int = 8) -> list:
    """Made-up samples for sizing an int8 model without calibration data
    (`--explain` alone): a fixed normal draw per float input, index 0 for
    an Embedding's.  The sizes depend on the model's structure only."""
    rng = np.random.default_rng(0)
    out = []
    for name in graph.inputs:
        t = graph.tensors[name]
        shape = (count,) + tuple(t.shape)
        out.append(np.zeros(shape, np.float32) if t.dtype == "int32"
                   else rng.normal(size=shape).astype(np.float32))
    return out
