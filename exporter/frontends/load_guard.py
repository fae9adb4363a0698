"""The conditions Keras loads a checked model file under.

exporter.frontends.safety accepts only objects with plain built-in names;
the one way such a name could still reach a user's code is a registration
under that very name in this process (`get_custom_objects()["Dense"] = ...`,
or a `custom_object_scope`), which Keras consults before its own modules.
While the model loads, those registries are empty and safe mode is forced
on (a notebook's `enable_unsafe_deserialization()` would otherwise
override it), so every accepted object resolves to Keras's built-in.

exporter.frontends.size_check bounds what the config states; a layer whose
input shape the config does not state (a hand-made file, a legacy .h5) is
bounded here: a weight that would take the model's parameters past the
limit is refused before Keras allocates it.
"""
from __future__ import annotations

import contextlib
import math

from ..errors import BudgetError


@contextlib.contextmanager
def guarded(max_params: int, shown: str):
    from keras.src.backend.common import global_state
    from keras.src.layers.layer import Layer
    from keras.src.saving import object_registration
    from keras.src.saving.serialization_lib import SafeModeScope

    registry = object_registration.GLOBAL_CUSTOM_OBJECTS
    saved_registry = dict(registry)
    saved_scope = global_state.get_global_attribute("custom_objects_scope_dict")
    add_weight = Layer.add_weight
    total = 0

    def bounded_add_weight(self, *args, shape=None, **kwargs):
        nonlocal total
        dims = args[0] if args else shape
        try:
            n = math.prod(int(d) for d in dims) if dims is not None else 1
        except (TypeError, ValueError):
            n = 0  # Keras refuses such a shape itself
        total += n
        if total > max_params:
            raise BudgetError(
                f"layer '{self.name}' ({type(self).__name__}) of '{shown}' adds a weight of "
                f"shape {tuple(dims)} ({n} values), which takes the model to at least "
                f"{total} parameters, over the {max_params} the exporter loads under this "
                f"budget; refused before allocating it")
        return add_weight(self, *args, shape=shape, **kwargs)

    registry.clear()
    global_state.set_global_attribute("custom_objects_scope_dict", {})
    Layer.add_weight = bounded_add_weight
    try:
        with SafeModeScope(True):
            yield
    finally:
        Layer.add_weight = add_weight
        registry.clear()
        registry.update(saved_registry)
        global_state.set_global_attribute("custom_objects_scope_dict", saved_scope)
