"""Run an exported model folder on an emulated Cortex-M4 (QEMU mps2-an386).

    raw_out = exporter.target.run_on_qemu("build/model", raw_in)

builds `firmware_example/` (startup code, linker script, main.c) with the
model folder and the inputs as a vectors header, with arm-none-eabi-gcc and
the same flags as a real Cortex-M4F firmware, runs the ELF on
`qemu-system-arm -M mps2-an386` with semihosting, and parses the raw outputs
main.c prints (int8 as integers, float as bit patterns: exact).

Nothing is written into the model folder: the vectors header, objects and
ELF go to `build_dir`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import ExportError
from .host import find_prefix, read_header

APT_TOOLCHAIN = "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi"
APT_QEMU = "apt-get install -y qemu-system-arm"
APT_MAKE = "apt-get install -y make"

QEMU_ARGS = ["-M", "mps2-an386", "-cpu", "cortex-m4", "-nographic", "-monitor", "none",
             "-serial", "none", "-semihosting-config", "enable=on,target=native"]

# One ELF holds at most this many bytes of test vectors (the mps2-an386
# "flash" is 4 MiB); more inputs run in several batches.
MAX_VECTOR_BYTES = 1 << 20

_OUT_LINE = re.compile(r"^k2m-out (\d+):((?: \S+)*)\s*$")
_DONE_LINE = re.compile(r"^k2m-done (\d+)\s*$")


def firmware_dir() -> Path:
    """The firmware_example/ folder: $K2M_FIRMWARE_DIR, next to the package
    (installed wheel) or at the repository root (source checkout)."""
    here = Path(__file__).resolve().parent
    candidates = []
    if os.environ.get("K2M_FIRMWARE_DIR"):
        candidates.append(Path(os.environ["K2M_FIRMWARE_DIR"]))
    candidates += [here / "firmware_example", here.parent / "firmware_example"]
    for c in candidates:
        if (c / "Makefile").is_file() and (c / "main.c").is_file():
            return c
    raise ExportError(
        "firmware_example/ (Makefile, main.c, boards/) was not found next to the exporter "
        f"package (looked in {', '.join(str(c) for c in candidates)}); run from a source "
        "checkout of k2m or set K2M_FIRMWARE_DIR to that folder")


def _need(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ExportError(f"'{tool}' was not found on PATH; install it with `{install}` "
                          f"(Debian/Ubuntu, as root)")
    return path


def check_tools(qemu: bool = True) -> None:
    """Raise ExportError naming the apt-get command when a tool is missing."""
    _need("make", APT_MAKE)
    _need("arm-none-eabi-gcc", APT_TOOLCHAIN)
    _need("arm-none-eabi-size", APT_TOOLCHAIN)
    if qemu:
        _need("qemu-system-arm", APT_QEMU)


def _c_value(v, dtype) -> str:
    if dtype in (np.int8, np.int32):
        return str(int(v))
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise ExportError("test vectors contain NaN or Inf, which a C constant cannot hold")
    return f.hex() + "f"   # C99 hexadecimal float: exact


def write_vectors(path: Path, prefix: str, raw: np.ndarray) -> Path:
    """Write a vectors header for main.c: K2M_NUM_VECTORS and k2m_vectors."""
    rows = []
    for row in raw:
        vals = [_c_value(v, raw.dtype) for v in row]
        lines = [", ".join(vals[i:i + 12]) for i in range(0, len(vals), 12)]
        rows.append("    {\n        " + ",\n        ".join(lines) + "\n    }")
    text = (f"/* Test vectors for {prefix}_invoke(), written by exporter.target. */\n"
            f"#ifndef K2M_VECTORS_H\n#define K2M_VECTORS_H\n\n"
            f"#define K2M_NUM_VECTORS {len(raw)}\n\n"
            f"static const {prefix}_input_t k2m_vectors[K2M_NUM_VECTORS][{prefix}_INPUT_SIZE] = {{\n"
            + ",\n".join(rows) + "\n};\n\n#endif /* K2M_VECTORS_H */\n")
    path.write_text(text)
    return path


def build(out_dir, prefix: str | None = None, build_dir=None, board: str = "mps2-an386",
          vectors=None, timeout: float = 300) -> Path:
    """`make -C firmware_example` for one model folder; returns the ELF path."""
    check_tools(qemu=False)
    out_dir = Path(out_dir).resolve()
    prefix = prefix or find_prefix(out_dir)
    build_dir = Path(build_dir or tempfile.mkdtemp(prefix="k2m-fw-")).resolve()
    cmd = ["make", "-C", str(firmware_dir()), "all", f"MODEL_DIR={out_dir}",
           f"PREFIX={prefix}", f"BOARD={board}", f"BUILD={build_dir}"]
    if vectors is not None:
        cmd.append(f"VECTORS={Path(vectors).resolve()}")
    for p in (out_dir, build_dir):
        if " " in str(p):
            raise ExportError(f"'{p}' contains a space, which make cannot handle; "
                              f"use a path without spaces")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportError(f"building the firmware took longer than {timeout:.0f} s: "
                          f"{' '.join(cmd)}") from None
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
        raise ExportError(f"building the firmware for {board} failed ({' '.join(cmd)}):\n{tail}")
    return build_dir / "app.elf"


def run_elf(elf, timeout: float = 120) -> tuple[int, str]:
    """Run an mps2-an386 ELF on QEMU; returns (exit status, console text)."""
    qemu = _need("qemu-system-arm", APT_QEMU)
    cmd = [qemu, *QEMU_ARGS, "-kernel", str(elf)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ExportError(f"QEMU did not finish within {timeout:.0f} s (a hang or a very "
                          f"slow model): {' '.join(cmd)}") from None
    return r.returncode, r.stdout + r.stderr


def parse_outputs(text: str, count: int, output_size: int, dtype) -> np.ndarray:
    """The raw outputs main.c printed, checked for completeness."""
    out = np.zeros((count, output_size), np.int8 if dtype == "int8" else np.uint32)
    seen = np.zeros(count, bool)
    done = None
    for line in text.splitlines():
        m = _OUT_LINE.match(line)
        if m:
            i, vals = int(m.group(1)), m.group(2).split()
            if i >= count or len(vals) != output_size:
                raise ExportError(f"unexpected firmware output line: {line!r}")
            out[i] = [int(v) if dtype == "int8" else int(v, 16) for v in vals]
            seen[i] = True
            continue
        m = _DONE_LINE.match(line)
        if m:
            done = int(m.group(1))
    if done != count or not seen.all():
        tail = "\n".join(text.strip().splitlines()[-10:])
        raise ExportError(f"the firmware printed {int(seen.sum())} of {count} outputs"
                          f"{'' if done is not None else ' and no final line'}; its output "
                          f"ended with:\n{tail}")
    return out if dtype == "int8" else out.view(np.float32)


def run_on_qemu(out_dir, raw_inputs, prefix: str | None = None, build_dir=None,
                timeout: float = 120) -> np.ndarray:
    """Run raw inputs (int8 for an int8 model, float32 for a float model,
    int32 indices for an Embedding model; shape (N, INPUT_SIZE) or (N,) +
    input shape) through PREFIX_invoke on QEMU and return the raw outputs,
    shape (N, OUTPUT_SIZE), exactly as the M4 computed them (int8, or float32
    bit for bit).  A stateful model's state starts at zero in each firmware
    run and carries over from one vector to the next."""
    check_tools()
    out_dir = Path(out_dir).resolve()
    if not out_dir.is_dir():
        raise ExportError(f"model folder '{out_dir}' does not exist")
    prefix = prefix or find_prefix(out_dir)
    header = read_header(out_dir / f"{prefix}.h", prefix)
    dtype = header["dtype"]
    n_in, n_out = header["INPUT_SIZE"], header["OUTPUT_SIZE"]

    raw = np.asarray(raw_inputs)
    if raw.size % n_in or raw.ndim == 0:
        raise ExportError(f"raw inputs of shape {raw.shape} do not split into rows of "
                          f"{prefix}_INPUT_SIZE = {n_in} elements")
    raw = raw.reshape(-1, n_in)
    if header["inputs"][0]["ctype"] == "int32_t":  # Embedding indices
        if raw.dtype.kind not in "iu" or (raw.size and (raw.min() < -2**31 or raw.max() >= 2**31)):
            raise ExportError(f"{prefix} takes int32 indices: pass whole numbers")
        raw = raw.astype(np.int32)
    elif dtype == "int8":
        if raw.dtype.kind not in "iu" or (raw.size and (raw.min() < -128 or raw.max() > 127)):
            raise ExportError(f"{prefix} is an int8 model: pass raw int8 inputs (quantize "
                              f"floats with the input scale and zero point first)")
        raw = raw.astype(np.int8)
    else:
        raw = raw.astype(np.float32)
    if len(raw) == 0:
        return np.zeros((0, n_out), raw.dtype)

    build_dir = Path(build_dir or tempfile.mkdtemp(prefix="k2m-qemu-")).resolve()
    if build_dir == out_dir or out_dir in build_dir.parents:
        raise ExportError(f"build_dir '{build_dir}' is inside the model folder; "
                          f"choose a folder outside '{out_dir}'")
    build_dir.mkdir(parents=True, exist_ok=True)

    per_batch = max(1, MAX_VECTOR_BYTES // raw[0].nbytes)
    results = []
    for start in range(0, len(raw), per_batch):
        batch = raw[start:start + per_batch]
        vectors = write_vectors(build_dir / "vectors.h", prefix, batch)
        elf = build(out_dir, prefix, build_dir / "mps2-an386", vectors=vectors)
        code, text = run_elf(elf, timeout)
        if code != 0:
            tail = "\n".join(text.strip().splitlines()[-10:])
            raise ExportError(f"the firmware exited with status {code} on QEMU "
                              f"(134 = CPU fault); its output ended with:\n{tail}")
        results.append(parse_outputs(text, len(batch), n_out, dtype))
    return np.concatenate(results)


def elf_sizes(elf) -> dict:
    """text, data and bss bytes of an ELF (arm-none-eabi-size, Berkeley format).
    Flash = text + data, static RAM = data + bss."""
    size = _need("arm-none-eabi-size", APT_TOOLCHAIN)
    r = subprocess.run([size, "-B", str(elf)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ExportError(f"arm-none-eabi-size failed on '{elf}': {r.stderr.strip()}")
    lines = r.stdout.strip().splitlines()
    if len(lines) < 2:
        raise ExportError(f"unexpected arm-none-eabi-size output: {r.stdout!r}")
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}
