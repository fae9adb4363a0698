"""The model file's config checked before Keras builds anything.

Every node of the model — layers, Keras 3 op nodes, nested Functional and
Sequential models at any depth, wrapped layers — is looked up by its
serialized (module, class_name); what has no handler, or a configuration
its handler's `check` refuses, is collected, and all of it is reported in
one UnsupportedModelError (exit 3), one sentence per item with its path.
Keras and TensorFlow are not imported: this runs in well under a second.
"""
from __future__ import annotations

from ..errors import ExportError, UnsupportedModelError
from . import registry

# What to use instead, for nodes users often bring (keyed by class name).
ADVICE = {
    "Lambda": "a Lambda holds Python code, which the exporter never runs; "
              "rewrite it with built-in layers or keras.ops",
    "TFOpLambda": "a raw TensorFlow op; rewrite it with built-in Keras layers",
    "Masking": "the exporter runs masking-free sequences; remove Masking and feed "
               "sequences of the model's fixed length",
    "NotEqual": "a comparison op, which Keras adds for Embedding(mask_zero=True) masks; "
                "the exporter runs masking-free sequences",
    "RNN": "a generic RNN around a cell; use the LSTM, GRU or SimpleRNN layer instead",
    "ConvLSTM1D": "not supported; use Conv1D/Conv2D with TimeDistributed, then an LSTM",
    "ConvLSTM2D": "not supported; use Conv1D/Conv2D with TimeDistributed, then an LSTM",
}
WRAPPED = ("layer", "backward_layer")  # Bidirectional, TimeDistributed


def check(config: dict) -> None:
    """Raise UnsupportedModelError listing every unsupported node."""
    problems = list(problems_of(config))
    if problems:
        n = len(problems)
        raise UnsupportedModelError(
            f"the model has {n} unsupported layer{'s' if n > 1 else ''} or op"
            f"{'s' if n > 1 else ''}: " + "; ".join(problems)
            + f". Supported layers: {', '.join(registry.layer_names())}; and the keras.ops "
              f"listed in README.md")


def nodes(config: dict, path: str = ""):
    """(path, entry) of every node that is not a container, depth first."""
    if not isinstance(config, dict):
        raise ExportError("the model config lists something that is not a layer; "
                          "the file is damaged or not written by Keras")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ExportError("the model config lists something that is not a layer; "
                          "the file is damaged or not written by Keras")
    if registry.is_container(config):
        layers = inner.get("layers") or []
        if not isinstance(layers, list):
            raise ExportError("the model config's layer list is not a list; the file is "
                              "damaged or not written by Keras")
        for entry in layers:
            if isinstance(entry, dict) and registry.is_container(entry):
                yield from nodes(entry, f"{path}{node_name(entry)}/")
            else:
                yield from nodes(entry, path)
        return
    yield path, config
    for key in WRAPPED:
        if isinstance(inner.get(key), dict):
            yield from nodes(inner[key], f"{path}{node_name(config)}/")


def node_name(entry: dict) -> str:
    inner = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    return str(inner.get("name") or entry.get("name") or "?")


def problems_of(config: dict):
    from .keras_file import custom_objects
    for path, entry in nodes(config):
        key = registry.config_key(entry)
        cls = key[1]
        where = f"'{path}{node_name(entry)}'"
        if key == (registry.LAYERS, "InputLayer"):
            continue
        if entry.get("module") is None and looks_like_op(entry):
            yield (f"{where} ({cls}: a Keras 3 op node such as `x + 3.0`, which the legacy "
                   f".h5 format cannot tell from a layer (Keras itself cannot load it); "
                   f"save the model as .keras)")
            continue
        handler = registry.lookup(key)
        if handler is None:
            yield f"{where} ({describe(key)}: {advice(key, entry)})"
            continue
        custom = list(custom_objects({k: v for k, v in (entry.get("config") or {}).items()
                                      if k not in ("layer", "layers", "backward_layer")}))
        if custom:
            yield (f"{where} ({cls} with custom objects, whose code the exporter never "
                   f"runs: {', '.join(custom)})")
            continue
        if handler.check is not None:
            for why in handler.check(entry):
                yield f"{where} ({describe(key)}: {why})"


def describe(key) -> str:
    module, cls = key
    if module == registry.LAYERS:
        return cls
    if module.startswith("keras.src.ops.") or module == registry.ACTIVATIONS:
        return f"op node {module.replace('keras.src.', '')}.{cls}"
    return f"{module}.{cls}"


def advice(key, entry) -> str:
    module, cls = key
    if cls in ADVICE:
        return ADVICE[cls]
    if not is_builtin(module):
        return "a custom layer; only built-in Keras layers and keras.ops are exported"
    if module.startswith("keras.src.ops.") or module == registry.ACTIVATIONS:
        return ("this keras.ops operation has no exact C equivalent in the exporter yet; "
                "express it with supported layers or ops")
    if registry.is_container(entry) or cls in registry.LEGACY_CONTAINERS:
        return "a model class the exporter cannot inline"
    return "not supported yet"


def is_builtin(module) -> bool:
    return module is None or module == "keras" or str(module).startswith("keras.")


def call_kwargs(entry: dict):
    """The keyword arguments of each call of a Functional node."""
    for call in entry.get("inbound_nodes") or []:
        if isinstance(call, dict) and isinstance(call.get("kwargs"), dict):
            yield call["kwargs"]


def call_args(entry: dict):
    for call in entry.get("inbound_nodes") or []:
        if isinstance(call, dict) and isinstance(call.get("args"), list):
            yield call["args"]


def input_shapes(entry: dict) -> list:
    """Per-sample shapes of the tensors of a node's first call (Keras 3
    configs record them; legacy .h5 ones do not: then [])."""
    shapes = []

    def walk(v):
        if is_tensor(v):
            shape = (v.get("config") or {}).get("shape")
            if isinstance(shape, list):
                shapes.append(tuple(shape[1:]))
        elif isinstance(v, list):
            for item in v:
                walk(item)
    for args in call_args(entry):
        walk(args)
        break
    return shapes


def is_tensor(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def looks_like_op(entry: dict) -> bool:
    """A legacy (module-less) entry that is an op node, not a layer: op
    configs carry no 'trainable'/'dtype', and ops take constants as
    positional arguments, which layers never do."""
    inner = entry.get("config") or {}
    if "trainable" not in inner and "dtype" not in inner:
        return True
    for args in call_args(entry):
        flat = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if any(not is_tensor(a) for a in flat):
            return True
    return False
