"""Whole-model figures on the emulated Cortex-M4: instructions and cycles_est.

    python benchmarks/models.py [--models digits,kws,resnet8,ad,vww] [--out build/bench]
                                [--json FILE] [--layers]
    python benchmarks/models.py --from-json FILE    # the table of an earlier --json

For each model: export to int8, build `PREFIX_invoke` for the Cortex-M4
(arm-none-eabi-gcc -O2) and run one inference under QEMU (mps2-an386) with
../shared/tools/m4run, once with the DSP loops and once forced portable
(-DK2M_PORTABLE), and checks both give the same outputs.  Prints MACs, the exact instruction count, m4run's
`cycles_est` (a static Cortex-M4 timing model with zero wait states: an
estimate, not a measurement), the exporter's planned arena and weight bytes
next to the RAM (data + bss) and flash (text, which holds the code and the
rodata weights, + data) of the model's own compiled objects from
arm-none-eabi-size, and the best published Cortex-M4 cycles (measured on
silicon).  `--json FILE` writes
{"models": {name: {"macs", "instructions", "cycles_est",
"instructions_portable", "arena_bytes", "weight_bytes", "flash_bytes",
"ram_bytes"}}}.  `--layers` adds a per-layer table of the DSP build
(instructions and cycles_est between consecutive layers, through the
K2M_TRACE_HOOK every generated model has).  Instruction counts do not depend
on the input values much, so the calibration data is synthetic except for
the autoencoder (a real clip) and the digits (the bundled samples).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
M4RUN = SHARED / "tools" / "m4run"
MLPERF = SHARED / "mlperf_tiny"
ARM = ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"]

# name -> (file, best published Cortex-M4 cycles, who published them)
MODELS = {
    "digits": (ROOT / "examples" / "digits_cnn.keras", None, None),
    "kws": (MLPERF / "kws" / "kws_ref_model_keras3.keras", 5.18e6, "X-CUBE-AI 9.0"),
    "resnet8": (MLPERF / "ic" / "pretrainedResnet.h5", 19.82e6, "X-CUBE-AI 9.0"),
    "ad": (MLPERF / "ad" / "ad01.h5", 0.49e6, "Plumerai"),
    "vww": (MLPERF / "vww" / "vww_96_keras3.keras", 10.67e6, "X-CUBE-AI 9.0"),
}

MAIN = r"""
#include <stdio.h>
#include "m4bench.h"
#include "{p}.h"
static {p}_input_t input[{p}_INPUT_SIZE];
static {p}_output_t output[{p}_OUTPUT_SIZE];
#ifdef K2M_TRACE_HOOK
/* --layers: one m4run region per layer */
void K2M_TRACE_HOOK(int32_t step, const void *data, int32_t bytes)
{{
    (void)step; (void)data; (void)bytes;
    bench_end();
    bench_begin();
}}
#endif
int main(void)
{{
    int i;
    for (i = 0; i < {p}_INPUT_SIZE; ++i) input[i] = ({p}_input_t)((i * 37) % 101 - 50);
    unsigned long sum = 0;
    bench_begin();
    i = {p}_invoke(input, output);
    bench_end();
    for (int k = 0; k < {p}_OUTPUT_SIZE; ++k) sum = sum * 31u + (unsigned long)(output[k] & 0xFF);
    printf("rc %d checksum %08lx\n", i, sum & 0xFFFFFFFFul);
    return i;
}}
"""
REGION = re.compile(r"--- m4run region (\d+) ---\ninstructions: (\d+)\n(?:.*\n)*?cycles_est: (\d+)")


def calibration(name: str, shape) -> np.ndarray:
    if name == "ad":
        clip = np.fromfile(MLPERF / "ad" / "normal_id_01_00000000_hist_librosa.bin", np.float32)
        frames = clip.reshape(-1, 128)
        return np.stack([frames[i:i + 5].ravel() for i in range(len(frames) - 4)])
    if name == "digits":
        return np.load(ROOT / "examples" / "digits_calibration.npy")
    return np.random.default_rng(0).uniform(0, 1, size=(16,) + tuple(shape)).astype(np.float32)


def m4run(out_dir: Path, prefix: str, portable: bool = False, layers: bool = False) -> tuple:
    """([(instructions, cycles_est)] of each region: one for the whole
    inference, or one per layer with `layers`; the outputs' checksum)."""
    main = out_dir.parent / f"{prefix}_bench_main.c"
    main.write_text(MAIN.format(p=prefix))
    sources = [str(p) for p in sorted(out_dir.rglob("*.c"))] + [str(main)]
    cmd = [sys.executable, str(M4RUN), "-I", str(out_dir), "--cycles", "--timeout", "600",
           "--ldflags=-Wl,--defsym=__stack_size=0x10000"]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    if layers:
        cmd += ["-D", "K2M_TRACE_HOOK=k2m_bench_layer"]
    r = subprocess.run(cmd + sources, capture_output=True, text=True)
    found = [(int(m.group(2)), int(m.group(3))) for m in REGION.finditer(r.stdout)]
    checksum = re.search(r"rc 0 checksum (\w+)", r.stdout)
    if r.returncode != 0 or not found or not checksum:
        raise RuntimeError(f"m4run failed for {prefix}:\n{r.stdout}\n{r.stderr}")
    return found, checksum.group(1)


def object_sizes(out_dir: Path) -> tuple:
    """(flash, RAM) of the model's own objects as arm-none-eabi-size reports
    them: text + data (text holds the code and the rodata weights), and
    data + bss (the arena is bss)."""
    flash = ram = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(out_dir.rglob("*.c")):
            obj = Path(tmp) / (src.stem + ".o")
            subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", *ARM, "-I", str(out_dir),
                            "-c", str(src), "-o", str(obj)], check=True)
            size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True,
                                  text=True, check=True).stdout.splitlines()[1].split()
            flash += int(size[0]) + int(size[1])
            ram += int(size[1]) + int(size[2])
    return flash, ram


def layer_table(report, out: Path, name: str) -> str:
    """Per-layer instructions and cycles_est of the DSP build (region k ends
    after the k-th emitted step; the last region is the output copy)."""
    regions, _ = m4run(out, name, layers=True)
    steps = [n for n in report.graph.nodes if n.op not in ("reshape", "identity")]
    lines = [f"\n{name}: per layer (DSP)", "| step | layer | op | output | instr | cycles_est |",
             "|---:|---|---|---|---:|---:|"]
    for k, (instr, cyc) in enumerate(regions):
        if k < len(steps):
            n = steps[k]
            shape = "x".join(str(d) for d in report.graph.tensors[n.outputs[0]].shape)
            lines.append(f"| {k} | {n.layer} | {n.op} | {shape} | {instr:,} | {cyc:,} |")
        else:
            lines.append(f"| {k} | (output copy) | | | {instr:,} | {cyc:,} |")
    return "\n".join(lines)


def measure(name: str, out_root: Path, layers: bool) -> tuple:
    from exporter import export_model
    import keras

    path = MODELS[name][0]
    out = out_root / name
    shape = keras.models.load_model(path, compile=False).inputs[0].shape[1:]
    report = export_model(path, out, calibration_data=calibration(name, shape),
                          name=name, force=True, target="host")
    ((instr, cycles),), dsp_sum = m4run(out, name)
    ((portable, _),), portable_sum = m4run(out, name, portable=True)
    if dsp_sum != portable_sum:
        raise RuntimeError(f"{name}: the DSP and portable builds' outputs differ")
    flash, ram = object_sizes(out)
    row = {"macs": report.macs, "instructions": instr, "cycles_est": cycles,
           "instructions_portable": portable, "arena_bytes": report.arena_bytes,
           "weight_bytes": report.weight_bytes, "flash_bytes": flash, "ram_bytes": ram}
    return row, layer_table(report, out, name) if layers else ""


def markdown(rows: dict) -> str:
    lines = ["| model | MACs | instructions (DSP) | cycles_est (DSP) | cycles_est/MAC | "
             "instructions (portable) | arena B (plan) | RAM B (ELF) | weights B (plan) | "
             "flash B (ELF) | best published M4 cycles | cycles_est / published |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        pub, who = MODELS[name][1:]
        pub_s = f"{pub / 1e6:.2f} M ({who})" if pub else "-"
        ratio = f"{r['cycles_est'] / pub:.2f}" if pub else "-"
        lines.append(
            f"| {name} | {r['macs']:,} | {r['instructions']:,} | {r['cycles_est']:,} | "
            f"{r['cycles_est'] / r['macs']:.2f} | {r['instructions_portable']:,} | "
            f"{r['arena_bytes']:,} | {r['ram_bytes']:,} | {r['weight_bytes']:,} | "
            f"{r['flash_bytes']:,} | {pub_s} | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--layers", action="store_true", help="add a per-layer table (DSP build)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="print the table of a JSON file written by --json, run nothing")
    args = ap.parse_args()
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())["models"]))
        return
    if not M4RUN.exists():
        sys.exit(f"{M4RUN} not found: the benchmark needs ../shared/tools/m4run")
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    rows, tables = {}, []
    for name in names:
        if not MODELS[name][0].exists():
            print(f"skip {name}: {MODELS[name][0]} not found", file=sys.stderr)
            continue
        rows[name], table = measure(name, Path(args.out), args.layers)
        tables.append(table)
        print(f"{name}: done", file=sys.stderr)
    print(markdown(rows))
    for t in tables:
        if t:
            print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({"models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
