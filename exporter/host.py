"""Build an emitted model folder on the host and run it from Python (cffi).

    model = exporter.host.load("build/model")
    y = model.predict(x)          # x: (N,) + input shape, float
    raw = model.invoke(x_int8)    # raw int8 (or float) in and out
    ys = model.predict_multi([x0, x1])   # several inputs/outputs: lists
    model.reset_state()           # stateful recurrent models: a new sequence

Used by the tests and offered to users for their own parity tests.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import ExportError


class HostModel:
    """An emitted model built for this machine.  `predict`/`invoke` take and
    return one array for a one-input, one-output model; `predict_multi`/
    `invoke_multi` take and return lists, one array per input/output."""

    def __init__(self, lib, ffi, prefix: str, header: dict):
        self.lib, self.ffi, self.prefix = lib, ffi, prefix
        self.header = header
        self.trace_sink: list = []
        self.arena_bytes = header["ARENA_BYTES"]
        self.dtype = header["dtype"]
        self.input_sizes = [t["size"] for t in header["inputs"]]
        self.output_sizes = [t["size"] for t in header["outputs"]]
        first_in, first_out = header["inputs"][0], header["outputs"][0]
        self.input_size, self.output_size = first_in["size"], first_out["size"]
        self.input_scale, self.input_zero_point = first_in["scale"], first_in["zero_point"]
        self.output_scale, self.output_zero_point = first_out["scale"], first_out["zero_point"]
        self.input_ctypes = [t["ctype"] for t in header["inputs"]]
        self.stateful = header["stateful"]
        self._predict = getattr(lib, f"{prefix}_predict_multi")
        self._invoke = getattr(lib, f"{prefix}_invoke_multi")

    def reset_state(self) -> None:
        """Zero a stateful model's recurrent state (PREFIX_reset_state); each
        predict/invoke sample otherwise continues from the previous one."""
        if self.stateful:
            getattr(self.lib, f"{self.prefix}_reset_state")()

    def _call(self, fn, name, xs, dtype, ctype, in_types=None):
        in_types = in_types or [(dtype, ctype)] * len(xs)
        xs = [np.ascontiguousarray(np.asarray(x, dtype=t).reshape(-1, n))
              for x, n, (t, _) in zip(xs, self.input_sizes, in_types)]
        if len(xs) != len(self.input_sizes) or len({len(x) for x in xs}) != 1:
            raise ValueError(f"{self.prefix} takes {len(self.input_sizes)} inputs with the "
                             f"same number of samples")
        outs = [np.empty((len(xs[0]), n), dtype) for n in self.output_sizes]
        for i in range(len(xs[0])):
            ins = [self.ffi.from_buffer(c, x[i]) for x, (_, c) in zip(xs, in_types)]
            if self.input_ctypes and len(set(self.input_ctypes)) > 1:  # void *input[]
                ins = [self.ffi.cast("void *", p) for p in ins]
            res = [self.ffi.from_buffer(ctype, o[i]) for o in outs]
            rc = fn(ins, res)
            if rc != 0:
                raise RuntimeError(f"{self.prefix}_{name} returned {rc}")
        return outs

    def predict_multi(self, xs) -> list:
        """Float in, float out, batch axis first; one array per input/output."""
        return self._call(self._predict, "predict_multi", xs, np.float32, "float[]")

    def invoke_multi(self, xs) -> list:
        """Raw in, raw out (int8 for an int8 model, float for a float model)."""
        raw = (np.int8, "int8_t[]") if self.dtype == "int8" else (np.float32, "float[]")
        types = {"int8_t": (np.int8, "int8_t[]"), "float": (np.float32, "float[]"),
                 "int32_t": (np.int32, "int32_t[]")}
        return self._call(self._invoke, "invoke_multi", xs, *raw,
                          in_types=[types[c] for c in self.input_ctypes])

    def predict(self, x) -> np.ndarray:
        return self.predict_multi([x])[0]

    def trace(self, xs) -> list:
        """Per sample, the raw bytes of every layer's output in run order
        (a folder loaded with trace=True)."""
        xs = xs if isinstance(xs, (list, tuple)) else [xs]
        per_sample = []
        for i in range(len(xs[0])):
            self.trace_sink = []
            self.predict_multi([x[i:i + 1] for x in xs])
            per_sample.append(self.trace_sink)
        return per_sample

    def invoke(self, x) -> np.ndarray:
        return self.invoke_multi([x])[0]


def read_header(path: Path, prefix: str) -> dict:
    text = path.read_text()

    def define(name, cast=int):
        m = re.search(rf"#define {re.escape(prefix)}_{name}\s+(\S+)", text)
        if not m:
            raise ExportError(f"{path} does not define {prefix}_{name}; not an exported "
                              f"model header")
        return cast(m.group(1).rstrip("f"))

    values = {"ARENA_BYTES": define("ARENA_BYTES"),
              "dtype": "int8" if f"typedef int8_t {prefix}_output_t" in text else "float32",
              "stateful": f"void {prefix}_reset_state(void);" in text}
    input_type = re.search(rf"typedef (\w+) {re.escape(prefix)}_input_t;", text)
    values["input_type"] = input_type.group(1) if input_type else "float"
    for role in ("INPUT", "OUTPUT"):
        values[role.lower() + "s"] = [
            {"size": define(f"{role}{k}_SIZE"), "scale": define(f"{role}{k}_SCALE", float),
             "zero_point": define(f"{role}{k}_ZERO_POINT")}
            for k in range(define(f"NUM_{role}S"))]
        for k, t in enumerate(values[role.lower() + "s"]):
            m = re.search(rf"typedef (\w+) {re.escape(prefix)}_{role.lower()}{k}_t;", text)
            t["ctype"] = m.group(1) if m else ("int8_t" if values["dtype"] == "int8" else "float")
        first = values[role.lower() + "s"][0]
        values.update({f"{role}_SIZE": first["size"], f"{role}_SCALE": first["scale"],
                       f"{role}_ZERO_POINT": first["zero_point"]})
    return values


def check_compiler() -> None:
    """The C compilers load() runs: $CC (or cc) for the runtime and the one
    Python's build tools use for the model's module."""
    import shlex
    import shutil
    import sysconfig
    for cc in {os.environ.get("CC", "cc"), (sysconfig.get_config_var("CC") or "cc")}:
        tool = shlex.split(cc)[0] if cc.strip() else "cc"
        if shutil.which(tool) is None:
            raise ExportError(f"--verify host needs a C compiler, and '{tool}' was not found "
                              f"on PATH; install one with `apt-get install -y gcc libc6-dev`")


def find_prefix(out_dir: Path) -> str:
    for h in sorted(out_dir.glob("*.h")):
        if h.name.endswith("_weights.h"):
            continue
        if (out_dir / (h.stem + ".c")).exists():
            return h.stem
    raise ExportError(f"'{out_dir}' holds no exported model (PREFIX.h + PREFIX.c)")


def load(out_dir, prefix: str | None = None, build_dir=None,
         extra_compile_args=("-O2", "-std=c99"), trace: bool = False) -> HostModel:
    """Compile the folder with the system C compiler and load it.  With
    trace=True every layer's output is also captured (`HostModel.trace`)."""
    import cffi

    out_dir = Path(out_dir).resolve()
    prefix = prefix or find_prefix(out_dir)
    header = read_header(out_dir / f"{prefix}.h", prefix)
    sources = sorted(str(p) for p in out_dir.rglob("*.c"))
    if trace:
        extra_compile_args = tuple(extra_compile_args) + ("-DK2M_TRACE_HOOK=k2m_host_trace",)
    digest = hashlib.sha1(repr(list(extra_compile_args)).encode())
    for f in sorted(p for p in out_dir.rglob("*") if p.is_file()):  # weights live in .h files
        digest.update(f.relative_to(out_dir).as_posix().encode())
        digest.update(f.read_bytes())
    module = f"_k2m_{prefix}_{digest.hexdigest()[:12]}"
    if module in sys.modules:  # the very same folder is already loaded
        return _host_model(sys.modules[module], prefix, header, trace)
    ctype = "int8_t" if header["dtype"] == "int8" else "float"
    ffi = cffi.FFI()
    ffi.cdef(f"""
        typedef {header["input_type"]} {prefix}_input_t;
        typedef {ctype} {prefix}_output_t;""" + (
        f"void {prefix}_reset_state(void);" if header["stateful"] else "") + f"""
        int {prefix}_predict_multi(const float *const input[], float *const output[]);
        int {prefix}_invoke_multi(const {prefix}_input_t *const input[],
                                  {prefix}_output_t *const output[]);
    """ + ('extern "Python+C" void k2m_host_trace(int32_t, const void *, int32_t);'
           if trace else ""))
    runtime = [p for p in sources if Path(p).parent != out_dir]
    objects = [_runtime_object(Path(p), extra_compile_args) for p in runtime]
    ffi.set_source(module, f'#include "{prefix}.h"',
                   sources=[p for p in sources if p not in runtime], extra_objects=objects,
                   include_dirs=[str(out_dir)], extra_compile_args=list(extra_compile_args),
                   libraries=["m"])
    # One build folder per source digest: loading the same folder again
    # reuses the compiled module instead of leaving a new temp dir behind.
    build = Path(build_dir) if build_dir else Path(tempfile.gettempdir()) / "k2m-host" / module
    build.mkdir(parents=True, exist_ok=True)
    so = ffi.compile(tmpdir=str(build), verbose=False)
    spec = importlib.util.spec_from_file_location(module, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[module] = mod
    return _host_model(mod, prefix, header, trace)


def _runtime_object(src: Path, args) -> str:
    """The runtime kernels are the same files in every emitted folder:
    compile each once per content and flags, and reuse the object."""
    digest = hashlib.sha1(repr(list(args)).encode())
    for f in sorted(src.parent.glob("*.[ch]")):  # the file and the headers it may include
        if f.suffix == ".h" or f == src:
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    cache = Path(tempfile.gettempdir()) / "k2m-host" / "objects"
    obj = cache / f"{src.stem}-{digest.hexdigest()[:16]}.o"
    if not obj.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_suffix(f".{os.getpid()}.tmp")
        cc = os.environ.get("CC", "cc")
        r = subprocess.run([cc, *args, "-fPIC", "-c", str(src), "-o", str(tmp)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ExportError(f"compiling {src.name} failed:\n{r.stderr.strip()}")
        os.replace(tmp, obj)  # atomic: a concurrent build sees all or nothing
    return str(obj)


def _host_model(mod, prefix, header, trace) -> HostModel:
    model = HostModel(mod.lib, mod.ffi, prefix, header)
    if trace:
        @mod.ffi.def_extern(name="k2m_host_trace")
        def _record(step, data, nbytes):
            model.trace_sink.append(bytes(mod.ffi.buffer(data, nbytes)))
    return model
