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

def read_config(path: str) -> dict:
    """The model's architecture config, without deserializing it."""
    if os.path.isdir(path):
        raise ExportError(f"cannot read model file '{path}': it is a directory; give the "
                          f".keras or .h5 file (SavedModel folders are not supported)")
    if not os.path.isfile(path):
        raise ExportError(f"cannot read model file '{path}': no such file")
    config = _read_raw_config(path)
    if (not isinstance(config, dict) or not isinstance(config.get("config", {}), (dict, type(None)))
            or any(cls is None for _, cls, _, _ in iter_layers(config))):
        raise ExportError(f"cannot read model file '{path}': its model config is not a "
                          f"Keras model config (JSON objects with 'class_name' and 'config' "
                          f"for the model and each layer); the file is damaged or not "
                          f"written by Keras")
    return config


def _read_raw_config(path: str):
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


def iter_layers(config):
    """(name, class_name, module, config) of every layer, nested models and
    wrapped layers included; an entry that is not a layer config yields
    class_name None."""
    from . import precheck
    try:
        for path, entry in precheck.nodes(config):
            inner = entry.get("config") or {}
            yield path + precheck.node_name(entry), str(entry.get("class_name")), \
                entry.get("module"), inner
    except ExportError:
        yield "?", None, None, {}


def is_builtin(module) -> bool:
    """Keras 3 names a built-in's module ("keras.layers"); legacy .h5 configs
    name none.  Anything else is a user's (or a foreign) module."""
    return module is None or module == "keras" or str(module).startswith("keras.")


def custom_objects(value, where=""):
    """Paths of the non-built-in objects (custom activations, initializers,
    regularizers...) serialized inside a layer's config: Keras would
    instantiate them, running their code, while building the layer."""
    if isinstance(value, dict):
        if "class_name" in value and "config" in value and (
                not is_builtin(value.get("module"))
                or value.get("registered_name") not in (None, value.get("class_name"))):
            yield f"{where or 'config'} = {value.get('registered_name') or value['class_name']}"
            return
        for k, v in value.items():
            yield from custom_objects(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from custom_objects(v, f"{where}[{k}]")


def check_inputs(config: dict) -> None:
    """Every input dimension but the batch must be known and > 0; read from the
    config so the model is refused before Keras (and TensorFlow) loads."""
    for name, cls, _module, inner in iter_layers(config):
        shape = inner.get("batch_shape") or inner.get("batch_input_shape")
        if cls == "InputLayer" and isinstance(shape, list) and len(shape) > 1:
            dims = shape[1:]
            if any(not isinstance(d, int) or d <= 0 for d in dims):
                shown = "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
                raise UnsupportedModelError(
                    f"model input '{name}' has shape {shown}; every dimension but the "
                    f"batch must be fixed and > 0 (give keras.Input a complete shape)")


def load(path: str):
    from . import precheck
    config = read_config(path)
    precheck.check(config)
    check_inputs(config)
    import keras
    filtering = keras.config.is_traceback_filtering_enabled()
    keras.config.disable_traceback_filtering()  # keep the failing layer's frames
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        raise load_error(path, e) from None
    finally:
        if filtering:
            keras.config.enable_traceback_filtering()


def load_error(path: str, e: BaseException) -> ExportError:
    """Keras's failure as one sentence naming the layer it failed in; an
    output dimension <= 0 is an unsupported model (exit 3)."""
    chain = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    layer = None
    for exc in chain:
        layer = failing_layer(exc) or layer
    text = first_line(chain[-1])
    if layer is None:
        return ExportError(f"Keras could not load '{path}': {text}")
    where = f"layer '{layer[0]}' ({layer[1]})"
    if any("zero or negative" in str(x) or "negative dimension" in str(x).lower() for x in chain):
        return UnsupportedModelError(
            f"{where} in '{path}' has an output dimension <= 0 ({text}); make the "
            f"input larger or the kernel/stride smaller")
    return ExportError(f"Keras could not load '{path}' at {where}: {text}")


def failing_layer(e: BaseException):
    """(name, class) of the innermost Keras layer (not model) whose code
    raised `e`, if any: a method's `self`, or a `from_config(cls, config)`."""
    import keras
    found = None
    tb = e.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        obj, cls, cfg = local.get("self"), local.get("cls"), local.get("config")
        if isinstance(obj, keras.layers.Layer) and not isinstance(obj, keras.Model):
            name = getattr(obj, "name", None) or (found[0] if found else None)
            if name:
                found = (name, type(obj).__name__)
        elif (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
              and not issubclass(cls, keras.Model) and isinstance(cfg, dict) and "name" in cfg):
            found = (str(cfg["name"]), cls.__name__)
        tb = tb.tb_next
    return found
