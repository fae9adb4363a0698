"""Build an emitted model folder on the host and run it from Python (cffi).

    model = exporter.host.load("build/model")
    y = model.predict(x)          # x: (N,) + input shape, float
    raw = model.invoke(x_int8)    # raw int8 (or float) in and out

Used by the tests and offered to users for their own parity tests.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import ExportError


class HostModel:
    def __init__(self, lib, ffi, prefix: str, header: dict):
        self.lib, self.ffi, self.prefix = lib, ffi, prefix
        self.input_size = header["INPUT_SIZE"]
        self.output_size = header["OUTPUT_SIZE"]
        self.arena_bytes = header["ARENA_BYTES"]
        self.dtype = header["dtype"]
        self.input_scale, self.input_zero_point = header["INPUT_SCALE"], header["INPUT_ZERO_POINT"]
        self.output_scale, self.output_zero_point = header["OUTPUT_SCALE"], header["OUTPUT_ZERO_POINT"]
        self._predict = getattr(lib, f"{prefix}_predict")
        self._invoke = getattr(lib, f"{prefix}_invoke")

    def _rows(self, x, dtype):
        x = np.ascontiguousarray(np.asarray(x, dtype=dtype).reshape(-1, self.input_size))
        return x

    def predict(self, x) -> np.ndarray:
        """Float in, float out, one row per sample (batch axis first)."""
        x = self._rows(x, np.float32)
        out = np.empty((len(x), self.output_size), np.float32)
        for i in range(len(x)):
            rc = self._predict(self.ffi.from_buffer("float[]", x[i]),
                               self.ffi.from_buffer("float[]", out[i]))
            if rc != 0:
                raise RuntimeError(f"{self.prefix}_predict returned {rc}")
        return out

    def invoke(self, x) -> np.ndarray:
        """Raw in, raw out (int8 for an int8 model, float for a float model)."""
        dtype, ctype = (np.int8, "int8_t[]") if self.dtype == "int8" else (np.float32, "float[]")
        x = self._rows(x, dtype)
        out = np.empty((len(x), self.output_size), dtype)
        for i in range(len(x)):
            rc = self._invoke(self.ffi.from_buffer(ctype, x[i]),
                              self.ffi.from_buffer(ctype, out[i]))
            if rc != 0:
                raise RuntimeError(f"{self.prefix}_invoke returned {rc}")
        return out


def read_header(path: Path, prefix: str) -> dict:
    text = path.read_text()
    values = {}
    for key in ("INPUT_SIZE", "OUTPUT_SIZE", "ARENA_BYTES", "INPUT_ZERO_POINT",
                "OUTPUT_ZERO_POINT", "INPUT_SCALE", "OUTPUT_SCALE"):
        m = re.search(rf"#define {re.escape(prefix)}_{key}\s+(\S+)", text)
        if not m:
            raise ExportError(f"{path} does not define {prefix}_{key}; not an exported model header")
        raw = m.group(1).rstrip("f")
        values[key] = float(raw) if "SCALE" in key else int(raw)
    values["dtype"] = "int8" if f"typedef int8_t {prefix}_input_t" in text else "float32"
    return values


def find_prefix(out_dir: Path) -> str:
    for h in sorted(out_dir.glob("*.h")):
        if h.name.endswith("_weights.h"):
            continue
        if (out_dir / (h.stem + ".c")).exists():
            return h.stem
    raise ExportError(f"'{out_dir}' holds no exported model (PREFIX.h + PREFIX.c)")


def load(out_dir, prefix: str | None = None, build_dir=None,
         extra_compile_args=("-O2", "-std=c99")) -> HostModel:
    """Compile the folder with the system C compiler and load it."""
    import cffi

    out_dir = Path(out_dir).resolve()
    prefix = prefix or find_prefix(out_dir)
    header = read_header(out_dir / f"{prefix}.h", prefix)
    sources = sorted(str(p) for p in out_dir.rglob("*.c"))
    digest = hashlib.sha1(repr(list(extra_compile_args)).encode())
    for f in sorted(p for p in out_dir.rglob("*") if p.is_file()):  # weights live in .h files
        digest.update(f.relative_to(out_dir).as_posix().encode())
        digest.update(f.read_bytes())
    module = f"_k2m_{prefix}_{digest.hexdigest()[:12]}"
    if module in sys.modules:  # the very same folder is already loaded
        mod = sys.modules[module]
        return HostModel(mod.lib, mod.ffi, prefix, header)
    ctype = "int8_t" if header["dtype"] == "int8" else "float"
    ffi = cffi.FFI()
    ffi.cdef(f"""
        typedef {ctype} {prefix}_input_t;
        typedef {ctype} {prefix}_output_t;
        int {prefix}_predict(const float *input, float *output);
        int {prefix}_invoke(const {prefix}_input_t *input, {prefix}_output_t *output);
    """)
    ffi.set_source(module, f'#include "{prefix}.h"', sources=sources,
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
    return HostModel(mod.lib, mod.ffi, prefix, header)
