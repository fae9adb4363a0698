"""Keras model → IR graph.

The model's graph is walked in Keras's own execution order.  Every node is
a layer or a Keras 3 op node; its handler is found by the (module,
class_name) Keras serializes it under (registry.py) and adds IR nodes
through a `LayerContext`.  A node that is itself a Functional or Sequential
model is inlined: its graph is walked with the outer tensors as inputs and
its layers named by their path (`mobilenet_0.25_96/conv_dw_1`).  Nothing is
skipped: an unknown node is refused with every other one, by name.
"""
from __future__ import annotations

from ..errors import ExportError, UnsupportedModelError
from ..ir import Graph
from . import keras_file, registry
from .context import CLAMPS, ELEMENTWISE, LayerContext, Ref, with_bias  # noqa: F401 (re-exported)


def supported_classes() -> set:
    return set(registry.HANDLERS)


def _functional(model):
    import keras
    if isinstance(model, keras.Sequential):
        f = getattr(model, "_functional", None)
        if f is None:
            raise ExportError(f"the Sequential model '{model.name}' has no input shape; "
                              f"build it with keras.Input(shape=...) first")
        return f
    return model


def _is_model(op) -> bool:
    import keras
    return isinstance(op, keras.Model)


def check_classes(model) -> None:
    """For models passed in memory: the same all-at-once check as for files
    (the file pre-check walks the config this serializes to)."""
    import json

    import keras
    try:
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    except Exception as e:  # a custom object without get_config(), say
        raise UnsupportedModelError(f"the model cannot be serialized by Keras, so it is "
                                    f"not made of built-in layers ({keras_file.first_line(e)})")
    from . import precheck
    precheck.check(config)


def to_graph(model, name: str, prechecked: bool = False):
    """Lower a Keras model to an IR graph; returns (graph, layer infos).
    `prechecked`: the model comes from a file whose config passed the
    pre-check already."""
    if not prechecked:
        check_classes(model)
    f = _functional(model)
    if not hasattr(f, "_nodes_by_depth"):
        raise UnsupportedModelError(f"model '{model.name}' is a subclassed Model; only "
                                    f"Functional and Sequential models can be exported")
    graph = Graph(name)
    infos: list = []
    names = []
    for t in f.inputs:
        shape = tuple(t.shape[1:])
        if any(d is None or d <= 0 for d in shape):
            raise UnsupportedModelError(f"model input '{t.name}' has shape {tuple(t.shape)}; "
                                        f"every dimension but the batch must be fixed and > 0")
        names.append(graph.add_tensor(t.name, shape).name)
    graph.inputs = list(names)
    graph.outputs = _walk(graph, f, names, infos, "")
    for name in graph.inputs:
        if graph.tensors[name].dtype == "int32" and any(
                n.op != "embedding" for n in graph.consumers(name)):
            raise UnsupportedModelError(
                f"model input '{name}' feeds an Embedding and other layers; integer "
                f"indices can only be read by Embedding layers")
    return graph, infos


def _walk(graph, f, input_names, infos, path) -> list:
    """Lower functional model `f` with its inputs bound to IR tensors;
    returns the IR names of its outputs."""
    known = {id(t): n for t, n in zip(f.inputs, input_names)}
    for depth in sorted(f._nodes_by_depth, reverse=True):  # nearest the inputs first
        for node in f._nodes_by_depth[depth]:
            op = node.operation
            if type(op).__name__ == "InputLayer":
                continue
            ins = [known[id(t)] for t in node.input_tensors]
            where = f"'{path}{op.name}' ({type(op).__name__})"
            if node.arguments.kwargs.get("training") and not trains_by_default(op):
                graph.warnings.append(
                    f"{path}{op.name}: called with training=True, which model.predict "
                    f"overrides (it runs every layer with training=False); the export "
                    f"computes what predict computes, not what model(x) computes")
            if _is_model(op):
                inner = _functional(op)
                if len(inner.inputs) != len(ins):
                    raise UnsupportedModelError(f"{where} is called with {len(ins)} tensors "
                                                f"but has {len(inner.inputs)} inputs")
                outs = _walk(graph, inner, ins, infos, f"{path}{op.name}/")
            else:
                outs = _lower_node(graph, node, op, ins, known, infos, path)
            kts = node.output_tensors
            if len(outs) != len(kts):
                raise UnsupportedModelError(f"{where} has {len(kts)} outputs; the exporter "
                                            f"lowered {len(outs)}; please report this")
            for kt, out in zip(kts, outs):
                if str(kt.dtype) != "float32" and not _is_model(op):
                    raise UnsupportedModelError(
                        f"{where} computes {kt.dtype} values; the exporter runs float32 "
                        f"models (cast constants and inputs to float32)")
                ours, theirs = graph.tensors[out].shape, tuple(kt.shape[1:])
                if ours != theirs:
                    raise UnsupportedModelError(
                        f"{where}: Keras says its output is {theirs} but the exporter "
                        f"computed {ours}; please report this")
                known[id(kt)] = out
    return [known[id(t)] for t in f.outputs]


def trains_by_default(op) -> bool:
    """Whether `training=True` in the config is the layer's own default
    (Keras records it for the Random* layers) rather than the user's."""
    import inspect
    try:
        p = inspect.signature(type(op).call).parameters.get("training")
    except (TypeError, ValueError):
        return False
    return p is not None and p.default is True


def _lower_node(graph, node, op, ins, known, infos, path) -> list:
    key = registry.object_key(op)
    handler = registry.lookup(key)
    if handler is None:  # the pre-check lists these; a model built in memory may differ
        raise UnsupportedModelError(f"'{path}{op.name}' ({key[0]}.{key[1]}) is not supported")
    args = _as_refs(node.arguments.args, known)
    kwargs = _as_refs(node.arguments.kwargs, known)
    ctx = LayerContext(graph, op, ins, infos, path, args, kwargs, key)
    out = handler.lower(ctx)
    ctx.check_understood()
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _as_refs(value, known):
    """Call arguments with every KerasTensor replaced by a Ref to its IR tensor."""
    import keras
    if isinstance(value, keras.KerasTensor):
        return Ref(known[id(value)], tuple(value.shape[1:]))
    if isinstance(value, (list, tuple)):
        return type(value)(_as_refs(v, known) for v in value)
    if isinstance(value, dict):
        return {k: _as_refs(v, known) for k, v in value.items()}
    return value


def load(path: str):
    return keras_file.load(path)


# Importing the handler modules registers their layer classes and ops.
from . import (layers_applications, layers_attention, layers_conv,  # noqa: E402,F401
               layers_core, layers_image,
               layers_merge, layers_norm, layers_pool, layers_recurrent, ops_elementwise,
               ops_linalg, ops_shape)
