"""Bounded resources: what a model file would make Keras allocate, found
before Keras (or TensorFlow) is imported.

- The file: at most MAX_MODEL_FILE_BYTES.  A .keras zip's members are judged
  by the sizes its directory declares (config.json at most MAX_CONFIG_BYTES,
  the weights in proportion to the parameters the config declares, the
  rest at most MAX_OTHER_BYTES together), and config.json is read in chunks
  that stop at its cap, so a decompression bomb is refused before it is
  inflated.  An .h5's config attribute is judged by its stored size, and
  the weight datasets of either format by their declared shapes (h5py reads
  shapes without reading data).
- The model: parameters per layer, from each layer's config and input shape
  (Keras 3 configs carry it in `build_config` and in the inbound tensors;
  legacy .h5 configs do not, and there the weight datasets' shapes count),
  and the largest tensor, from every shape the config states.  Weights
  (1 byte each in int8, 4 in float32) over the flash budget, or a tensor
  over the RAM budget, are refused with the numbers (exit 4): the real
  weights and arena can only be larger.  Without a budget (--target host)
  the exporter's own limits apply.

What a config does not state (a layer without its input shape) is bounded
when Keras builds it: exporter.frontends.load_guard refuses a weight that
would pass `Limits.load_params()` before Keras allocates it.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass

from ..errors import BudgetError, ExportError

MAX_MODEL_FILE_BYTES = 1 << 30
MAX_CONFIG_BYTES = 16 << 20
MAX_OTHER_BYTES = 64 << 20        # metadata.json, assets/
MAX_MEMBERS = 4096
MAX_PARAMS = 1 << 24              # the exporter's limit without a flash budget
MAX_TENSOR_ELEMENTS = 1 << 24     # ... and without a RAM budget
WEIGHT_FILE_BYTES_PER_PARAM = 16  # float64 weights or saved optimizer slots
WEIGHT_FILE_SLACK = 16 << 20
LOAD_FACTOR = 4                   # Keras's weights vs the flash budget, while loading
CHUNK = 1 << 20

# Layers whose weights all reach flash (BatchNormalization and Normalization
# fold into an affine of 2 values per channel; their 4 do not all count).
FLASH = {"Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
         "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
         "SeparableConv2D", "Embedding", "SimpleRNN", "LSTM", "GRU", "PReLU",
         "Bidirectional", "TimeDistributed"}


@dataclass
class Limits:
    """The budgets an export runs under."""
    dtype: str = "float32"
    flash_kb: int | None = None
    ram_kb: int | None = None

    @property
    def value_bytes(self) -> int:
        return 1 if self.dtype == "int8" else 4

    def load_params(self) -> int:
        """Parameters Keras may allocate while loading: far over the flash
        budget (BatchNormalization statistics and the like fold away), and
        never over the exporter's limit."""
        if self.flash_kb is None:
            return MAX_PARAMS
        return min(MAX_PARAMS, LOAD_FACTOR * self.flash_kb * 1024 // self.value_bytes + (1 << 16))

    def weight_file_bytes(self) -> int:
        return WEIGHT_FILE_BYTES_PER_PARAM * self.load_params() + WEIGHT_FILE_SLACK


# ---- the file ------------------------------------------------------------

def check_file(size: int, shown: str) -> None:
    if size > MAX_MODEL_FILE_BYTES:
        raise BudgetError(f"model file '{shown}' is {size} B; the exporter reads model files "
                          f"up to {MAX_MODEL_FILE_BYTES} B (a model for a microcontroller is "
                          f"far smaller)")


def check_zip(z, shown: str) -> None:
    """The directory of a .keras zip: member count and declared sizes."""
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ExportError(f"cannot read model file '{shown}': its zip archive lists "
                          f"{len(infos)} members; a Keras model has a few")
    other = 0
    for info in infos:
        if info.filename == "config.json":
            if info.file_size > MAX_CONFIG_BYTES:
                raise _bomb(shown, info, MAX_CONFIG_BYTES)
        elif not info.filename.startswith("model.weights."):
            other += info.file_size
            if other > MAX_OTHER_BYTES:
                raise _bomb(shown, info, MAX_OTHER_BYTES)


def check_weights_member(z, limits: Limits, shown: str) -> None:
    for info in z.infolist():
        if info.filename.startswith("model.weights.") and info.file_size > limits.weight_file_bytes():
            raise _bomb(shown, info, limits.weight_file_bytes())


def _bomb(shown: str, info, cap: int) -> BudgetError:
    return BudgetError(
        f"model file '{shown}': its member '{info.filename}' declares {info.file_size} B "
        f"uncompressed ({info.compress_size} B stored), over the {cap} B the exporter reads "
        f"for it; refused before decompressing (a damaged or hostile file)")


def read_member(z, name: str, cap: int, shown: str) -> bytes:
    """A zip member's bytes, read in chunks that stop past `cap`."""
    parts, total = [], 0
    with z.open(name) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return b"".join(parts)
            total += len(chunk)
            if total > cap:
                raise BudgetError(f"model file '{shown}': its member '{name}' inflates to more "
                                  f"than {cap} B; refused while decompressing")
            parts.append(chunk)


def check_attribute(attrs, name: str, shown: str) -> None:
    """An HDF5 attribute's stored size, before it is read."""
    size = attrs.get_id(name).get_storage_size()
    if size > MAX_CONFIG_BYTES:
        raise BudgetError(f"model file '{shown}': its '{name}' attribute holds {size} B, over "
                          f"the {MAX_CONFIG_BYTES} B the exporter reads")


def h5_datasets(group) -> dict:
    """{dataset path: number of values} of every dataset below `group`,
    from the declared shapes (no data is read)."""
    import h5py
    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = math.prod(obj.shape) if obj.shape else 1
    group.visititems(visit)
    return found


def check_weights(source: str, limits: Limits, shown: str) -> None:
    """Refuse weight datasets (a .keras zip's model.weights.h5, a legacy
    .h5's model_weights) that declare more values than Keras may load: a
    compressed dataset is a bomb like a zip member."""
    import h5py
    try:
        if source.endswith(".keras"):
            with zipfile.ZipFile(source) as z:
                if "model.weights.h5" not in z.namelist():
                    return
                with z.open("model.weights.h5") as member, h5py.File(member, "r") as f:
                    total = sum(h5_datasets(f).values())
        else:
            with h5py.File(source, "r") as f:
                group = f.get("model_weights")
                total = sum(h5_datasets(group).values()) if isinstance(group, h5py.Group) else 0
    except Exception as e:  # noqa: BLE001 - zip, CRC and HDF5 errors alike
        raise ExportError(f"cannot read model file '{shown}': its weights are damaged "
                          f"({type(e).__name__}: {str(e).strip()[:160]})") from None
    if total > limits.load_params():
        raise BudgetError(f"model file '{shown}': its weights declare {total} values, over the "
                          f"{limits.load_params()} the exporter loads under this budget; "
                          f"refused before reading them")


def h5_layer_values(source: str):
    """{layer name: weight values} of a legacy .h5 model (its model_weights
    group holds one group per layer); None for other files."""
    if not source.endswith(".h5"):
        return None
    import h5py
    with h5py.File(source, "r") as f:
        group = f.get("model_weights")
        if not isinstance(group, h5py.Group):
            return None
        per_layer: dict = {}
        for path, n in h5_datasets(group).items():
            head = path.split("/", 1)[0]
            per_layer[head] = per_layer.get(head, 0) + n
        return per_layer


# ---- the model -----------------------------------------------------------

def _dims(shape):
    """A shape's dimensions after the batch, if all are whole numbers > 0."""
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        return None
    dims = shape[1:]
    if all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        return list(dims)
    return None


def _first_shape(entry: dict):
    """A layer entry's (first) input shape: its build_config, else the
    first tensor of its first inbound node."""
    build = entry.get("build_config")
    shape = build.get("input_shape") if isinstance(build, dict) else None
    if isinstance(shape, dict):
        shape = next(iter(shape.values()), None)
    if isinstance(shape, list) and shape and isinstance(shape[0], (list, dict)):
        shape = shape[0]
    if _dims(shape):
        return [None] + _dims(shape)
    for tensor in _tensors(entry.get("inbound_nodes")):
        if _dims(tensor):
            return [None] + _dims(tensor)
    return None


def _tensors(value):
    """Shapes of the __keras_tensor__ objects in a value, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__" and isinstance(value.get("config"), dict):
            yield value["config"].get("shape")
            return
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, list):
        for v in value:
            yield from _tensors(v)


def _int(c: dict, key: str, default=None):
    v = c.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _kernel(c: dict) -> int | None:
    k = c.get("kernel_size")
    k = [k] if isinstance(k, int) else k
    if not isinstance(k, list) or not all(isinstance(v, int) and v > 0 for v in k):
        return None
    return math.prod(k)


def _bias(c: dict, n: int) -> int:
    return n if c.get("use_bias", True) else 0


def _channels(c: dict, shape) -> int:
    return shape[1] if c.get("data_format") == "channels_first" else shape[-1]


def _conv(c, shape):
    k, f, groups = _kernel(c), _int(c, "filters"), _int(c, "groups", 1) or 1
    return None if k is None or f is None else k * (_channels(c, shape) // groups) * f + _bias(c, f)


def _conv_transpose(c, shape):
    k, f = _kernel(c), _int(c, "filters")
    return None if k is None or f is None else k * _channels(c, shape) * f + _bias(c, f)


def _depthwise(c, shape):
    k, m = _kernel(c), _int(c, "depth_multiplier", 1)
    n = _channels(c, shape) * (m or 0)
    return None if k is None else k * n + _bias(c, n)


def _separable(c, shape):
    k, m, f = _kernel(c), _int(c, "depth_multiplier", 1), _int(c, "filters")
    if k is None or f is None:
        return None
    n = _channels(c, shape) * (m or 0)
    return k * n + n * f + _bias(c, f)


def _rnn(c, shape):
    units = _int(c, "units")
    if units is None:
        return None
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[c["__class__"]]
    biases = gates * units * (2 if c["__class__"] == "GRU" and c.get("reset_after", True) else 1)
    return gates * units * (shape[-1] + units) + (biases if c.get("use_bias", True) else 0)


def _embedding(c, shape):
    a, b = _int(c, "input_dim"), _int(c, "output_dim")
    return None if a is None or b is None else a * b


def _prelu(c, shape):
    shared = c.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else shared
    return math.prod(1 if (k + 1) in shared else d for k, d in enumerate(shape[1:]))


def _wrapped(c, shape):
    """Bidirectional (two copies, or its backward layer) and TimeDistributed."""
    inner = c.get("layer")
    if not isinstance(inner, dict):
        return None
    if c["__class__"] == "TimeDistributed":
        return layer_params(inner, [None] + shape[2:]) if len(shape) > 2 else None
    forward = layer_params(inner, shape)
    back = c.get("backward_layer")
    backward = layer_params(back, shape) if isinstance(back, dict) else forward
    return None if forward is None or backward is None else forward + backward


FORMULAS = {"Dense": lambda c, s: s[-1] * (_int(c, "units") or 0) + _bias(c, _int(c, "units") or 0),
            "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,
            "Conv1DTranspose": _conv_transpose, "Conv2DTranspose": _conv_transpose,
            "Conv3DTranspose": _conv_transpose,
            "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,
            "SeparableConv1D": _separable, "SeparableConv2D": _separable,
            "SimpleRNN": _rnn, "LSTM": _rnn, "GRU": _rnn, "Embedding": _embedding,
            "PReLU": _prelu, "Bidirectional": _wrapped, "TimeDistributed": _wrapped}


def layer_params(entry: dict, shape=None):
    """Keras's parameter count of one layer entry, or None when its config
    or input shape does not say."""
    cls, c = entry.get("class_name"), entry.get("config")
    if cls not in FORMULAS or not isinstance(c, dict):
        return None
    shape = shape or _first_shape(entry)
    if not shape or len(shape) < 2:
        return None
    try:
        return FORMULAS[cls]({**c, "__class__": cls}, shape)
    except (TypeError, KeyError, IndexError):
        return None


def layer_entries(config):
    """Every layer entry (dict with class_name and config) of a model
    config, nested models' included, with the model entries themselves."""
    if not isinstance(config, dict):
        return
    yield config
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    for entry in layers if isinstance(layers, list) else ():
        yield from layer_entries(entry)


def largest_tensor(config):
    """(elements, shape) of the largest tensor any shape in the config
    states: inputs, build_config input shapes, inbound tensors."""
    best = (0, None)

    def visit(value):
        nonlocal best
        if isinstance(value, dict):
            for key in ("batch_shape", "batch_input_shape", "input_shape", "shape"):
                shapes = value.get(key)
                for shape in (shapes if isinstance(shapes, list) and shapes
                              and isinstance(shapes[0], list) else [shapes]):
                    dims = _dims(shape)
                    if dims and math.prod(dims) > best[0]:
                        best = (math.prod(dims), tuple(dims))
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
    visit(config)
    return best


def check_model(config: dict, limits: Limits, shown: str, h5_values: dict | None = None) -> None:
    """Refuse (exit 4) a model whose config already states more weights
    than the flash budget (or the exporter's limit) holds, or a tensor
    larger than the RAM budget (or the limit)."""
    flash: dict = {}
    for entry in layer_entries(config):
        cls, inner = entry.get("class_name"), entry.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        n = layer_params(entry)
        if n is None and h5_values is not None and isinstance(name, str):
            n = h5_values.get(name)  # a legacy .h5: the layer's weight datasets
        if n and cls in FLASH:
            flash[str(name)] = flash.get(str(name), 0) + n
    total = sum(flash.values())
    nbytes = total * limits.value_bytes
    if limits.flash_kb is not None and nbytes > limits.flash_kb * 1024:
        raise _over_budget(f"flash: at least {nbytes} B of {limits.dtype} weights ({total} "
                           f"parameters) > {limits.flash_kb} KB ({limits.flash_kb * 1024} B); "
                           f"largest: {_largest(flash, limits.value_bytes, ' B')}", "--flash-kb")
    if total > MAX_PARAMS:
        raise BudgetError(f"the model has at least {total} parameters (largest: "
                          f"{_largest(flash)}), over the exporter's limit of {MAX_PARAMS}; "
                          f"refused before loading it")
    elements, shape = largest_tensor(config)
    tensor_bytes = elements * limits.value_bytes
    if limits.ram_kb is not None and tensor_bytes > limits.ram_kb * 1024:
        raise _over_budget(f"RAM: a tensor of shape {shape} needs at least {tensor_bytes} B of "
                           f"{limits.dtype} arena > {limits.ram_kb} KB ({limits.ram_kb * 1024} B)",
                           "--ram-kb")
    if elements > MAX_TENSOR_ELEMENTS:
        raise BudgetError(f"the model has a tensor of shape {shape} ({elements} values), over "
                          f"the exporter's limit of {MAX_TENSOR_ELEMENTS}; refused before "
                          f"loading it")


def _largest(sizes: dict, factor: int = 1, unit: str = "") -> str:
    return ", ".join(f"{k} {v * factor}{unit}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])


def _over_budget(what: str, flag: str) -> BudgetError:
    return BudgetError(f"the model does not fit the target's budget: {what} (raise {flag} if "
                       f"your part has more); refused from the model's config, before loading it")
