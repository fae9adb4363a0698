"""Whole-model figures on the emulated Cortex-M4.

    python benchmarks/models.py [--models digits,kws,resnet8,ad,vww] [--out build/bench]

For each model: export to int8, build `PREFIX_invoke` for the Cortex-M4
(arm-none-eabi-gcc -O2) and count the instructions of one inference exactly
under QEMU (mps2-an386) with ../shared/tools/m4run, once with the DSP loops
and once forced portable (-DK2M_PORTABLE).  Prints MACs, instructions,
instructions per MAC, the exporter's planned arena and weight bytes next to
the RAM (data + bss) and flash (text + rodata + data) of the model's own
compiled objects from arm-none-eabi-size, and the best
published Cortex-M4 figures (X-CUBE-AI 9.0 cycles on STM32L4R5, MLPerf Tiny
v1.1).  Instruction counts do not depend on the input values much, so the
calibration data is synthetic except for the autoencoder (a real clip).
"""
import argparse
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

# name -> (file, published X-CUBE-AI 9.0 cycles on a Cortex-M4, or None)
MODELS = {
    "digits": (ROOT / "examples" / "digits_cnn.keras", None),
    "kws": (MLPERF / "kws" / "kws_ref_model_keras3.keras", 5.2e6),
    "resnet8": (MLPERF / "ic" / "pretrainedResnet.h5", 19.8e6),
    "ad": (MLPERF / "ad" / "ad01.h5", 0.63e6),
    "vww": (MLPERF / "vww" / "vww_96_keras3.keras", 10.7e6),
}

MAIN = r"""
#include <stdio.h>
#include "m4bench.h"
#include "{p}.h"
static {p}_input_t input[{p}_INPUT_SIZE];
static {p}_output_t output[{p}_OUTPUT_SIZE];
int main(void)
{{
    int i;
    for (i = 0; i < {p}_INPUT_SIZE; ++i) input[i] = ({p}_input_t)((i * 37) % 101 - 50);
    bench_begin();
    i = {p}_invoke(input, output);
    bench_end();
    printf("rc %d out0 %d\n", i, (int)output[0]);
    return i;
}}
"""


def calibration(name: str, shape) -> np.ndarray:
    if name == "ad":
        clip = np.fromfile(MLPERF / "ad" / "normal_id_01_00000000_hist_librosa.bin", np.float32)
        frames = clip.reshape(-1, 128)
        return np.stack([frames[i:i + 5].ravel() for i in range(len(frames) - 4)])
    if name == "digits":
        return np.load(ROOT / "examples" / "digits_calibration.npy")
    return np.random.default_rng(0).uniform(0, 1, size=(16,) + tuple(shape)).astype(np.float32)


def count(out_dir: Path, prefix: str, portable: bool, work: int) -> int:
    main = out_dir.parent / f"{prefix}_bench_main.c"
    main.write_text(MAIN.format(p=prefix))
    sources = [str(p) for p in sorted(out_dir.rglob("*.c"))] + [str(main)]
    cmd = [sys.executable, str(M4RUN), "-I", str(out_dir), "--work", str(work), "--timeout", "600",
           "--ldflags=-Wl,--defsym=__stack_size=0x10000"]
    if portable:
        cmd += ["-D", "K2M_PORTABLE"]
    r = subprocess.run(cmd + sources, capture_output=True, text=True)
    m = re.search(r"--- m4run region 0 ---\ninstructions: (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"m4run failed for {prefix}:\n{r.stdout}\n{r.stderr}")
    return int(m.group(1))


def object_sizes(out_dir: Path) -> tuple:
    """(flash, RAM) of the model's own objects as arm-none-eabi-size reports
    them: text + data (weights are rodata, counted in text), and data + bss
    (the arena is bss)."""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default="build/bench")
    args = ap.parse_args()
    if not M4RUN.exists():
        sys.exit(f"{M4RUN} not found: the benchmark needs ../shared/tools/m4run")
    from exporter import export_model

    rows = []
    for name in args.models.split(","):
        path, published = MODELS[name]
        if not path.exists():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        out = Path(args.out) / name
        import keras
        shape = keras.models.load_model(path, compile=False).inputs[0].shape[1:]
        report = export_model(path, out, calibration_data=calibration(name, shape),
                              name=name, force=True, target="host")
        dsp = count(out, name, False, report.macs)
        portable = count(out, name, True, report.macs)
        flash, ram = object_sizes(out)
        rows.append((name, report.macs, dsp, portable, report.arena_bytes, ram,
                     report.weight_bytes, flash, published))
        print(f"{name}: done", file=sys.stderr)
    print("| model | MACs | instr (DSP) | instr/MAC | instr (portable) | instr/MAC | "
          "DSP speed-up | arena B (plan) | RAM B (ELF) | weights B (plan) | flash B (ELF) | "
          "published M4 cycles | ours / published |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, macs, dsp, port, arena, ram, weights, flash, pub in rows:
        pub_s = f"{pub / 1e6:.2f} M" if pub else "-"
        ratio = f"{dsp / pub:.2f}" if pub else "-"
        print(f"| {name} | {macs:,} | {dsp:,} | {dsp / macs:.2f} | {port:,} | {port / macs:.2f} | "
              f"{port / dsp:.2f}x | {arena:,} | {ram:,} | {weights:,} | {flash:,} | {pub_s} | "
              f"{ratio} |")


if __name__ == "__main__":
    main()
