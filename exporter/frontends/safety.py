"""What in a model file could reach code that is not Keras's own.

Keras resolves every serialized object (layers, nested models, initializers,
regularizers, constraints, activations, dtype policies, quantizers, op
nodes) in keras/src/saving/serialization_lib.py and, for legacy .h5
configs, keras/src/legacy/saving/serialization.py.  Both look the object up
in the registry of user objects first (`register_keras_serializable`,
`get_custom_objects()`, `custom_object_scope`), by

- a class's `registered_name`, or its `class_name` when the key is absent;
- a function's name (the `config` string), and for `module: "builtins"`
  also any registered key ending in `>name`;
- any plain string in a config or in a node's arguments (legacy configs:
  every string but `name`), e.g. "package>name";

and only then among Keras's own modules (`module` "keras" or "keras.*";
other packages are never imported).  `offending` lists every object whose
key could name a user's object, or that is not Keras's: a `package>Name`
key (the form `register_keras_serializable` writes), a `registered_name`
that differs from the class, a function that is not a built-in activation,
a module outside Keras, a serialized lambda or type spec.  What it accepts
has a plain name, which only a `get_custom_objects()["Dense"] = ...` in the
process could shadow: exporter.frontends.load_guard empties those
registries while Keras loads, so what is accepted here resolves to Keras's
built-in by construction.  JSON NaN and Infinity (which Python's json reads
as floats) are listed too: no constant of the C can hold them.

`model_kind` decides a file's format by its content, the way the loader
that will read it does, and refuses a file that is both a Keras zip and an
HDF5 model (a polyglot, which one reader would see as one model and the
other as another).  No Keras or TensorFlow import: this runs first, fast.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
import zipfile

from ..errors import ExportError

# keras.activations' functions: what a `class_name: "function"` may name.
BUILTIN_FUNCTIONS = frozenset({
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold"})
# Special class names Keras turns into data, never into a class or function.
DATA_OBJECTS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                          "__ellipsis__", "__slice__"})
REFUSED_OBJECTS = {"__lambda__": "a serialized Python lambda",
                   "__typespec__": "a TensorFlow type spec, resolved through the registry "
                                   "of user objects"}
# Keys whose string values are layer references or names, never looked up.
NAME_KEYS = frozenset({"name"})
REFERENCE_KEYS = frozenset({"keras_history", "input_layers", "output_layers"})
# Where a layer entry sits: in a model's `layers`, or wrapped by another layer.
LAYER_KEYS = frozenset({"layer", "backward_layer", "forward_layer", "cell"})
MISSING = object()
# What register_keras_serializable(package, name) registers: "package>Name".
# (An einsum equation such as "ij,jk->ik" is not one; and whatever such a
# string names, load_guard's empty registries leave Keras nothing to find.)
REGISTERED_NAME = re.compile(r"[A-Za-z_][\w.]*>[A-Za-z_]\w*")


def is_keras_module(module) -> bool:
    return module == "keras" or (isinstance(module, str) and module.startswith("keras."))


def offending(config) -> list:
    """Every object of a model config Keras could resolve to something that
    is not its own built-in, and every non-finite number, as
    "<layer> <path>: <why>" strings; empty for a safe config."""
    found: list = []
    top = dict(config) if isinstance(config, dict) else config
    if isinstance(top, dict):
        top.pop("compile_config", None)  # load_model(compile=False) drops it unread
    _walk(top, "", "the model", found)
    return found


def _where(layer: str, path: str) -> str:
    return f"{layer} {path}" if path else layer


def _walk(value, path: str, layer: str, found: list) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        found.append(f"{_where(layer, path)} = {shown}: not a finite number, which no C "
                     f"constant can hold")
    elif isinstance(value, str):
        if REGISTERED_NAME.fullmatch(value):
            found.append(f"{_where(layer, path)} = '{value}': a registered name, which "
                         f"Keras would look up among the user's objects")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _walk(item, f"{path}[{k}]", layer, found)
    elif isinstance(value, dict):
        if "class_name" in value:
            why = object_problem(value)
            if why:
                found.append(f"{_where(layer, path)}: {why}")
                return
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in NAME_KEYS and isinstance(item, str):
                continue
            if key in REFERENCE_KEYS:
                _walk_references(item, sub, layer, found)
            elif key == "inbound_nodes" and isinstance(item, list):
                for k, node in enumerate(item):
                    if isinstance(node, list):  # legacy [[name, node, tensor, kwargs], ...]
                        _walk_references(node, f"{sub}[{k}]", layer, found)
                    else:
                        _walk(node, f"{sub}[{k}]", layer, found)
            elif key == "layers" and isinstance(item, list):
                for k, entry in enumerate(item):
                    _walk(entry, "", _layer_label(entry, f"{sub}[{k}]"), found)
            elif key in LAYER_KEYS and isinstance(item, dict) and "class_name" in item:
                _walk(item, "", _layer_label(item, sub), found)
            else:
                _walk(item, sub, layer, found)


def _walk_references(value, path: str, layer: str, found: list) -> None:
    """Lists of layer references: their strings are names; anything else
    (a legacy node's kwargs) is checked as usual."""
    if isinstance(value, list):
        for k, item in enumerate(value):
            _walk_references(item, f"{path}[{k}]", layer, found)
    elif not isinstance(value, str):
        _walk(value, path, layer, found)


def _layer_label(entry, fallback: str) -> str:
    if isinstance(entry, dict):
        inner = entry.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        name = name or entry.get("name")
        if isinstance(name, str):
            return f"layer '{name}' ({entry.get('class_name')})"
    return fallback


def object_problem(obj: dict):
    """Why Keras could resolve this serialized object to something that is
    not its own built-in, or None."""
    cls = obj["class_name"]
    if not isinstance(cls, str):
        return "its class_name is not a string"
    if cls in REFUSED_OBJECTS:
        return REFUSED_OBJECTS[cls] + ", which the exporter never runs"
    if cls in DATA_OBJECTS:
        return None
    module = obj.get("module")
    registered = obj.get("registered_name", MISSING)
    inner = obj.get("config")
    if cls == "function":
        if not isinstance(inner, str) or inner not in BUILTIN_FUNCTIONS:
            return (f"function {inner!r} is not one of Keras's built-in activations "
                    f"(a user's function, whose code the exporter never runs)")
        if module is not None and module != "builtins" and not is_keras_module(module):
            return f"function '{inner}' comes from module '{module}', not from Keras"
        if registered not in (MISSING, None, "function", inner):
            return (f"function '{inner}' carries the registered name {registered!r}, "
                    f"which Keras would look up among the user's objects")
        return None
    if ">" in cls:
        return (f"class '{cls}' is a registered name (a user's object registered with "
                f"register_keras_serializable), not a Keras built-in")
    if module is not None and not is_keras_module(module):
        return f"'{cls}' comes from module '{module}', not from Keras (a user's object)"
    if registered not in (MISSING, None, cls):
        return (f"'{cls}' carries the registered name {registered!r}: Keras would build "
                f"that registered user object instead of its built-in '{cls}'")
    if isinstance(inner, str) and ">" in inner:
        return f"'{cls}' has the config {inner!r}, a registered name"
    return None


# ---- file format ---------------------------------------------------------

@contextlib.contextmanager
def private_copy(path: str, max_bytes: int):
    """A copy of the model file in a private temporary folder, named for its
    content (model.keras, model.h5), removed afterwards: the bytes checked
    are the bytes Keras loads, whatever happens to the user's file meanwhile,
    and Keras (which picks its reader by the file name) reads the format
    the checks read."""
    folder = tempfile.mkdtemp(prefix="k2m-model-")
    try:
        copy = os.path.join(folder, "model")
        try:
            with open(path, "rb") as src, open(copy, "xb") as dst:
                copied = 0
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise ExportError(f"model file '{path}' grew past {max_bytes} B "
                                          f"while it was read")
                    dst.write(chunk)
        except OSError as e:
            raise ExportError(f"cannot read model file '{path}': {e.strerror}") from None
        kind = model_kind(copy, path)
        if kind in ("keras", "h5"):
            os.rename(copy, f"{copy}.{kind}")
            copy = f"{copy}.{kind}"
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def model_kind(path: str, shown: str) -> str:
    """"keras" (a zip with config.json) or "h5" (an HDF5 file with a
    model_config attribute), decided by the file's content; a file that is
    both is refused, one that is neither is "zip"/"hdf5"/None for the
    caller's message."""
    zip_model = zip_kind = False
    try:
        with zipfile.ZipFile(path) as z:
            zip_kind = True
            zip_model = "config.json" in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        pass
    h5_kind = h5_model = False
    if _has_hdf5_signature(path):
        import h5py
        try:
            with h5py.File(path, "r") as f:
                h5_kind = True
                h5_model = "model_config" in f.attrs
        except Exception:  # noqa: BLE001 - h5py raises many kinds on a damaged file
            pass
    if zip_model and h5_model:
        raise ExportError(f"cannot read model file '{shown}': it is both a .keras zip archive "
                          f"and an HDF5 model (a polyglot file, which two readers would see "
                          f"as two different models); save the model again with model.save()")
    if zip_model:
        return "keras"
    if h5_model:
        return "h5"
    return "zip" if zip_kind else "hdf5" if h5_kind else None


def _has_hdf5_signature(path: str) -> bool:
    """HDF5's superblock signature at offset 0, 512, 1024, 2048... (where
    the HDF5 library looks for it)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False
