"""The pipeline of DESIGN.md in one function:
load → validate → lower to IR → optimise → quantize → plan memory → emit C.
"""
from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path

from . import calibration, codegen, planner
from .errors import ExportError
from .frontends import keras as keras_frontend
from .passes import optimise
from .quantize import quantize
from .report import TARGET_BUDGETS_KB, LayerRow, Report, check_budget, check_weights_fit

C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double",
    "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
    "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
    "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "_Bool",
    "_Complex", "_Imaginary", "main"}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_prefix(name: str) -> str:
    if not IDENT.match(name) or name in C_KEYWORDS or name.startswith("k2m_"):
        raise ExportError(f"--name '{name}' is not usable as a C prefix: use letters, "
                          f"digits and '_', not starting with a digit, not a C keyword")
    return name


def default_prefix(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "model"
    if name[0].isdigit():
        name = "m_" + name
    if name in C_KEYWORDS or keyword.iskeyword(name) or name.startswith("k2m_"):
        name = name + "_model"
    return name


def lower(model_or_path, name: str | None = None):
    """Load and lower to an optimised float IR graph: (graph, infos, prefix, model name)."""
    from_file = isinstance(model_or_path, (str, os.PathLike))
    if from_file:
        path = Path(model_or_path)
        model = keras_frontend.load(str(path))
        stem = path.stem
    else:
        model, stem = model_or_path, getattr(model_or_path, "name", "model")
    prefix = check_prefix(name) if name is not None else default_prefix(stem)
    graph, infos = keras_frontend.to_graph(model, prefix, prechecked=from_file)
    optimise(graph)
    return graph, infos, prefix, stem


def export_model(model_or_path, out_dir=None, *, target: str = "cortex-m4",
                 dtype: str = "int8", calibration_data=None, name: str | None = None,
                 force: bool = False, flash_kb=None, ram_kb=None,
                 check_samples=None) -> Report:
    """Export a Keras model (object or .keras/.h5 path) to a C folder.

    With out_dir=None nothing is written (validation, explanation and report
    only).  Raises ExportError (or a subclass) with a one-sentence message.
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
    if dtype == "int8" and calibration_data is not None:
        calibration.precheck(calibration_data)
    if out_dir is None:
        return _export(model_or_path, None, None, target, dtype, calibration_data, name,
                       flash_kb, ram_kb, check_samples)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"output folder '{out_dir}' already exists and is not empty; "
                          f"pass --force to replace it")
    # The temporary folder is made first, so an unwritable destination is
    # reported before the model is loaded; it is removed whatever happens.
    tmp = make_temp_folder(out_dir)
    try:
        return _export(model_or_path, out_dir, tmp, target, dtype, calibration_data, name,
                       flash_kb, ram_kb, check_samples)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _export(model_or_path, out_dir, tmp, target, dtype, calibration_data, name,
            flash_kb, ram_kb, check_samples) -> Report:
    graph, infos, prefix, model_name = lower(model_or_path, name)
    if check_samples is not None:  # e.g. --verify-samples: fit the model before writing
        calibration.check_indices(graph, calibration.load_all(
            check_samples, [graph.tensors[t].shape for t in graph.inputs]), check_samples,
            "verification")
    default_flash, default_ram = TARGET_BUDGETS_KB[target]
    flash_kb = flash_kb if flash_kb is not None else default_flash
    ram_kb = ram_kb if ram_kb is not None else default_ram
    check_weights_fit(graph, dtype, flash_kb)
    if dtype == "int8":
        shapes = [graph.tensors[t].shape for t in graph.inputs]
        if calibration_data is None:
            raise ExportError("int8 export needs calibration samples: pass --calibration "
                              "samples.npy (an array of representative inputs, shape (N,) + "
                              f"{shapes[0]}; a .npz with one array per input for several "
                              f"inputs), or use --dtype float32")
        samples = calibration.load_all(calibration_data, shapes)
        calibration.check_indices(graph, samples, calibration_data)
        quantize(graph, samples)
    plan = planner.plan(graph)
    emission = codegen.prepare(graph, plan, prefix, model_name)
    report = build_report(graph, infos, plan, emission["arrays"], prefix, model_name,
                          dtype, target)
    report.graph = graph
    report.state_bytes = emission["state_elements"] * (2 if graph.dtype == "int8" else 4)
    check_budget(report, flash_kb, ram_kb)
    if out_dir is not None:
        write_atomically(out_dir, lambda folder: codegen.write(emission, folder), tmp)
        report.out_dir = str(out_dir)
    return report


def make_temp_folder(out_dir: Path) -> Path:
    """An empty folder beside `out_dir`, where the output is built."""
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as e:
        raise ExportError(f"cannot write output folder '{out_dir}' in '{parent}': "
                          f"{e.strerror}") from None


def write_atomically(out_dir: Path, write, tmp: Path | None = None) -> None:
    """Build the folder beside its destination, then move it into place."""
    if tmp is None:
        tmp = make_temp_folder(out_dir)
    try:
        write(tmp)
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
    except OSError as e:
        raise ExportError(f"cannot write output folder '{out_dir}': {e.strerror}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
