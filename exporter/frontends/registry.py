"""The handler registry: one handler per serialized Keras (module, class_name).

Keras 3 writes every graph node with the module and class it deserializes
from: `("keras.layers", "Add")` is the Add layer, `("keras.src.ops.numpy",
"Add")` is the op node `x + 3.0` or `ops.add(a, b)`.  The two share a class
name and nothing else, so handlers are keyed by the pair, never by a name
alone.  Legacy .h5 configs name no module; their entries are layers.

This module imports neither Keras nor TensorFlow: the pre-check of a model
file (frontends/precheck.py) runs before either is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

LAYERS = "keras.layers"
NUMPY = "keras.src.ops.numpy"
NN = "keras.src.ops.nn"
MATH = "keras.src.ops.math"
CORE = "keras.src.ops.core"
ACTIVATIONS = "keras.src.activations.activations"

# Models that may appear as a node of another model: inlined, never handled.
CONTAINERS = {("keras.src.models.functional", "Functional"), ("keras", "Sequential"),
              ("keras", "Model"), ("keras.models", "Sequential"), ("keras.models", "Model")}
LEGACY_CONTAINERS = {"Functional", "Sequential", "Model"}


@dataclass
class Handler:
    key: tuple
    lower: Callable          # lower(ctx) -> IR tensor name(s)
    check: Callable | None   # check(entry) -> problems found in the config alone


HANDLERS: dict = {}


def handler(module: str, *classes: str, check=None):
    """Register `lower` for (module, class) of each class name."""
    def register(fn):
        for cls in classes:
            HANDLERS[(module, cls)] = Handler((module, cls), fn, check)
        return fn
    return register


def layer(*classes: str, check=None):
    return handler(LAYERS, *classes, check=check)


def config_key(entry: dict) -> tuple:
    """The (module, class_name) of a serialized node; None module (legacy
    .h5) means a built-in layer."""
    module = entry.get("module")
    return (LAYERS if module is None else str(module), str(entry.get("class_name")))


def is_container(entry: dict) -> bool:
    if entry.get("module") is None:
        return entry.get("class_name") in LEGACY_CONTAINERS
    return config_key(entry) in CONTAINERS


def object_key(obj) -> tuple:
    """The (module, class_name) Keras serializes a live layer or op under:
    its public `keras.*` name if it has one, else its class's own module."""
    from keras.src import api_export
    cls = type(obj)
    public = api_export.get_name_from_symbol(cls)
    if public:
        module, _, name = public.rpartition(".")
        return module, name
    return cls.__module__, cls.__name__


def lookup(key: tuple):
    return HANDLERS.get(key)


def layer_names() -> list:
    """The supported layer classes, for messages."""
    return sorted(cls for module, cls in HANDLERS if module == LAYERS)
