"""Shape and weight-layout checks, with explanations a user can read.

Every layer with weights gets a `LayerInfo`: the Keras kernel shape, the
shape its config and input imply, the parameter formula, the C layout the
weights take in flash, and its MACs.  Mismatches and impossible shapes are
errors naming the layer; likely mistakes are warnings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UnsupportedModelError


@dataclass
class LayerInfo:
    name: str
    keras_class: str
    input_shape: tuple
    output_shape: tuple
    kernel_shape: tuple | None = None
    kernel_dims: tuple = ()  # names of the kernel axes, e.g. ("k", "in", "out")
    c_layout: tuple | None = None
    c_dims: tuple = ()
    params: int = 0
    macs: int = 0
    warnings: list = field(default_factory=list)
    more_weights: list = field(default_factory=list)  # (name, keras shape, dims, C shape, C dims)
    call: str = ""  # an op node's call with its constants, e.g. "add(conv2d, 3.0)"

    def formula(self) -> str:
        if self.kernel_shape is None:
            return ""
        dims = "·".join(str(d) for d in self.kernel_shape)
        count = int(np.prod(self.kernel_shape))
        return f"kernel {tuple(self.kernel_shape)} = {dims} = {count}"

    def explain(self) -> str:
        line = f"{self.name} {self.keras_class}  out {fmt_shape(self.output_shape)}"
        if self.kernel_shape is not None:
            keras_axes = ",".join(self.kernel_dims)
            c_axes = ",".join(self.c_dims)
            line += (f"  {self.formula()} [{keras_axes}]"
                     f"  → C {tuple(self.c_layout)} [{c_axes}]")
        for name, shape, dims, c_shape, c_dims in self.more_weights:
            line += (f"  {name} {tuple(shape)} [{','.join(dims)}]"
                     f"  → C {tuple(c_shape)} [{','.join(c_dims)}]")
        line += f"  params {self.params}  MACs {self.macs}"
        if self.call:
            line += f"  = {self.call}"
        return line


def fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_kernel(layer: str, keras_class: str, actual, expected, dims) -> None:
    """The stored kernel must be what the config and input shape imply."""
    if tuple(actual) != tuple(expected):
        raise UnsupportedModelError(
            f"layer '{layer}' ({keras_class}) stores a kernel of shape "
            f"{tuple(actual)} but its config and input imply {tuple(expected)} "
            f"[{', '.join(dims)}]; the file is inconsistent")


def check_output_shape(layer: str, keras_class: str, in_shape, out_shape) -> None:
    if any(d <= 0 for d in out_shape):
        raise UnsupportedModelError(
            f"layer '{layer}' ({keras_class}) turns input {fmt_shape(in_shape)} "
            f"into output {fmt_shape(out_shape)}, which has a dimension <= 0; "
            f"make the input larger or the kernel/stride smaller")


def check_finite(layer: str, keras_class: str, arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise UnsupportedModelError(
                f"layer '{layer}' ({keras_class}) has NaN or Inf weights; "
                f"the model cannot be quantized or run")


def conv1d_warnings(info: LayerInfo) -> None:
    steps, channels = info.input_shape
    if steps == channels and steps > 1:
        info.warnings.append(
            f"{info.name}: Conv1D input {fmt_shape(info.input_shape)} has as many "
            f"steps as channels, which looks like a {steps}×{channels} image; "
            f"Conv1D slides along the {steps} steps and mixes all {channels} "
            f"channels (kernel {tuple(info.kernel_shape)} = k·in·out). For an "
            f"image use Conv2D on input ({steps}, {channels}, 1)")


def dense_nd_warning(info: LayerInfo) -> None:
    if len(info.input_shape) > 1:
        positions = int(np.prod(info.input_shape[:-1]))
        info.warnings.append(
            f"{info.name}: Dense on input {fmt_shape(info.input_shape)} is applied "
            f"to each of the {positions} positions separately (Keras's Dense works "
            f"on the last axis, {info.input_shape[-1]} features); put a Flatten "
            f"before it if you meant one layer over all "
            f"{int(np.prod(info.input_shape))} values")
