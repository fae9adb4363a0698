"""The pipeline of DESIGN.md in one function:
load → validate → lower to IR → optimise → quantize → plan memory → emit C.
"""
from __future__ import annotations

import keyword
import os
import re
from pathlib import Path

from . import calibration, codegen, planner
from .errors import ExportError
from .frontends import keras as keras_frontend
from .frontends.size_check import Limits
from .outdir import OutputFolder
from .passes import optimise
from .quantize import quantize
from .report import TARGET_BUDGETS_KB, LayerRow, Report, check_budget, check_weights_fit
from .validate import check_graph_finite

C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double",
    "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
    "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
    "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "_Bool",
    "_Complex", "_Imaginary", "main"}
# PREFIX.h beside them, on the -I path, would shadow these headers.
HEADERS = {
    "assert", "complex", "ctype", "errno", "fenv", "float", "inttypes", "iso646", "limits",
    "locale", "math", "setjmp", "signal", "stdalign", "stdarg", "stdatomic", "stdbool",
    "stddef", "stdint", "stdio", "stdlib", "stdnoreturn", "string", "tgmath", "threads",
    "time", "uchar", "wchar", "wctype", "arm_acle", "arm_math", "cmsis_compiler", "k2m"}
IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# calibration_data=SYNTHETIC (without out_dir): int8 sizes from made-up samples.
SYNTHETIC = object()


def prefix_problem(name: str):
    """Why `name` cannot prefix the emitted files and symbols, or None."""
    if not IDENT.fullmatch(name):
        return ("use letters, digits and '_', starting with a letter" if name
                else "it is empty")
    if name in C_KEYWORDS:
        return "it is a C keyword"
    if name.lower() in HEADERS:
        return f"{name}.h would shadow the C header <{name.lower()}.h> on the include path"
    if name.lower().startswith("k2m_"):
        return "k2m_ names belong to the runtime"
    if name.endswith("_weights"):
        return f"{name}.h would be another model's weights header (PREFIX_weights.h)"
    return None


def check_prefix(name: str) -> str:
    problem = prefix_problem(name)
    if problem:
        raise ExportError(f"--name {name!r} is not usable as a C prefix: {problem}")
    return name


def default_prefix(stem: str) -> str:
    """The model file's stem made a usable prefix, deterministically."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    if not name or not name[0].isalpha():
        name = "m_" + name
    if prefix_problem(name) or keyword.iskeyword(name):
        name = name + "_model"
    return name


def lower(model_or_path, name: str | None = None, limits: Limits | None = None):
    """Load and lower to an optimised float IR graph: (graph, infos, prefix, model name)."""
    from_file = isinstance(model_or_path, (str, os.PathLike))
    if from_file:
        path = Path(model_or_path)
        model = keras_frontend.load(str(path), limits)
        stem = path.stem
    else:
        model, stem = model_or_path, getattr(model_or_path, "name", "model")
    prefix = check_prefix(name) if name is not None else default_prefix(stem)
    graph, infos = keras_frontend.to_graph(model, prefix, prechecked=from_file)
    optimise(graph)
    check_graph_finite(graph)
    return graph, infos, prefix, stem


def export_model(model_or_path, out_dir=None, *, target: str = "cortex-m4",
                 dtype: str = "int8", calibration_data=None, name: str | None = None,
                 force: bool = False, flash_kb=None, ram_kb=None,
                 check_samples=None, written: list | None = None) -> Report:
    """Export a Keras model (object or .keras/.h5 path) to a C folder.

    With out_dir=None nothing is written (validation, explanation and report
    only).  Raises ExportError (or a subclass) with a one-sentence message.
    `written`, if given, receives out_dir once it is in place (for a caller
    that must say what was written when a later step fails).
    """
    if target not in TARGET_BUDGETS_KB:
        raise ExportError(f"unknown --target '{target}'; use one of {', '.join(TARGET_BUDGETS_KB)}")
    if dtype not in ("int8", "float32"):
        raise ExportError(f"unknown --dtype '{dtype}'; use int8 or float32")
    for flag, value in (("--flash-kb", flash_kb), ("--ram-kb", ram_kb)):
        if value is not None and value < 0:
            raise ExportError(f"{flag} {value} is negative; give a budget in KB >= 0")
    if name is not None:
        check_prefix(name)  # bad usage: say so before the slow model load
    if dtype == "int8" and calibration_data is SYNTHETIC and out_dir is not None:
        raise ExportError("made-up calibration samples only size a model; writing it needs "
                          "--calibration")
    if dtype == "int8" and calibration_data is not None and calibration_data is not SYNTHETIC:
        calibration.precheck(calibration_data)
    default_flash, default_ram = TARGET_BUDGETS_KB[target]
    limits = Limits(dtype, flash_kb if flash_kb is not None else default_flash,
                    ram_kb if ram_kb is not None else default_ram)
    if out_dir is None:
        return _export(model_or_path, None, target, calibration_data, name, limits,
                       check_samples)
    inputs = [p for p in (model_or_path, calibration_data, check_samples) if calibration.is_path(p)]
    folder = OutputFolder(out_dir, force, inputs)
    folder.check()
    tmp = folder.temp_folder()
    try:
        report = _export(model_or_path, (folder, tmp), target, calibration_data, name, limits,
                         check_samples, written)
        tmp = None
        return report
    finally:
        folder.discard(tmp)


def _export(model_or_path, destination, target, calibration_data, name, limits,
            check_samples, written=None) -> Report:
    graph, infos, prefix, model_name = lower(model_or_path, name, limits)
    if check_samples is not None:  # e.g. --verify-samples: fit the model before writing
        calibration.check_indices(graph, calibration.load_all(
            check_samples, [graph.tensors[t].shape for t in graph.inputs]), check_samples,
            "verification")
    dtype = limits.dtype
    check_weights_fit(graph, dtype, limits.flash_kb)
    if dtype == "int8":
        shapes = [graph.tensors[t].shape for t in graph.inputs]
        if calibration_data is None:
            raise ExportError("int8 export needs calibration samples: pass --calibration "
                              "samples.npy (an array of representative inputs, shape (N,) + "
                              f"{shapes[0]}; a .npz with one array per input for several "
                              f"inputs), or use --dtype float32")
        if calibration_data is SYNTHETIC:
            samples = calibration.synthetic(graph)
        else:
            samples = calibration.load_all(calibration_data, shapes)
            calibration.check_indices(graph, samples, calibration_data)
        quantize(graph, samples)
    plan = planner.plan(graph)
    emission = codegen.prepare(graph, plan, prefix, model_name)
    report = build_report(graph, infos, plan, emission["arrays"], prefix, model_name,
                          dtype, target)
    report.graph = graph
    report.state_bytes = emission["state_elements"] * (2 if graph.dtype == "int8" else 4)
    check_budget(report, limits.flash_kb, limits.ram_kb)
    if destination is not None:
        folder, tmp = destination
        try:
            codegen.write(emission, tmp)
        except OSError as e:
            raise ExportError(f"cannot write output folder '{folder.path}': {e.strerror}") from None
        report.warnings.extend(folder.replace_with(tmp, written))
        report.out_dir = str(folder.path)
    return report


def build_report(graph, infos, plan, arrays, prefix, model_name, dtype, target) -> Report:
    report = Report(model_name, prefix, dtype, target, None, infos=infos,
                    arena_bytes=plan.arena_bytes, planner=list(plan.notes))
    last_step = {n.layer: k for k, n in enumerate(graph.nodes)}
    for info in infos:
        wbytes = sum(a["nbytes"] for a in arrays if a["layer"] == info.name)
        step = last_step.get(info.name)
        live = plan.live_bytes[step] if step is not None else 0
        report.layers.append(LayerRow(info.name, info.keras_class, info.output_shape,
                                      info.params, info.macs, wbytes, live))
        report.warnings.extend(info.warnings)
    report.warnings.extend(graph.warnings)
    report.weight_bytes = sum(a["nbytes"] for a in arrays)
    if plan.live_bytes:
        k = plan.peak_step()
        report.peak_tensors = [f"{b.name} {b.size} B" for b in plan.buffers if b.first <= k <= b.last]
    if dtype == "int8":
        report.quantization = {t.name: (t.quant.scale, t.quant.zero_point, t.dtype)
                               for t in graph.tensors.values()}
    return report
