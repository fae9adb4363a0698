"""Reading a Keras model file safely.

Before Keras deserializes anything, the model's config is read straight from
the file (`config.json` in a `.keras` zip, the `model_config` attribute of an
`.h5`) and every layer class is checked against the supported set.  A
Lambda or custom layer is therefore refused without Keras ever building it,
and every unsupported layer is listed at once.  Loading itself uses Keras's
safe mode and never compiles the model.
"""
from __future__ import annotations

import json
import os
import zipfile

from ..errors import ExportError, UnsupportedModelError

# What to use instead, for layers users often bring.
ADVICE = {
    "Lambda": "a Lambda holds Python code, which the exporter never runs; "
              "rewrite it with built-in layers",
    "TFOpLambda": "a raw TensorFlow op; rewrite it with built-in Keras layers",
}

CONTAINERS = {"Sequential", "Functional", "Model"}


def read_config(path: str) -> dict:
    """The model's architecture config, without deserializing it."""
    if not os.path.isfile(path):
        raise ExportError(f"cannot read model file '{path}': no such file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        import h5py
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise ExportError(
                    f"'{path}' is an HDF5 file without a model config "
                    f"(weights only?); save the whole model with model.save()")
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            return json.loads(raw)
    except ExportError:
        raise
    except Exception as e:  # zip/hdf5/json errors all mean the same to a user
        raise ExportError(
            f"cannot read model file '{path}': not a Keras .keras or .h5 model "
            f"({type(e).__name__}: {first_line(e)})") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def iter_layers(config: dict):
    """(name, class_name, module) of every layer, nested models included."""
    cls = config.get("class_name", "")
    inner = config.get("config", {}) or {}
    if cls in CONTAINERS:
        for layer in inner.get("layers", []) or []:
            yield from iter_layers(layer)
        return
    yield inner.get("name", "?"), cls, config.get("module")
    if isinstance(inner.get("layer"), dict):  # wrappers hold another layer
        yield from iter_layers(inner["layer"])


def check_supported(config: dict, supported: set) -> None:
    bad = []
    for name, cls, module in iter_layers(config):
        builtin = module is None or str(module).startswith("keras")
        if cls == "InputLayer" or (cls in supported and builtin):
            continue
        why = ADVICE.get(cls) or ("a custom layer; only built-in Keras layers "
                                  "are exported" if not builtin else
                                  "not supported yet")
        bad.append(f"'{name}' ({cls}: {why})")
    if bad:
        raise UnsupportedModelError(
            f"the model has {len(bad)} unsupported layer"
            f"{'s' if len(bad) > 1 else ''}: " + "; ".join(bad)
            + f". Supported layers: {', '.join(sorted(supported))}")


def load(path: str, supported: set):
    config = read_config(path)
    check_supported(config, supported)
    import keras
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        raise ExportError(
            f"Keras could not load '{path}': {first_line(e)}") from None
