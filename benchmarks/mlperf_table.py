"""MLPerf Tiny models: our int8 C export next to the MLPerf int8 .tflite (TFLM).

    python benchmarks/mlperf_table.py [--models kws,ic,ad,vww] [--out build/mlperf]

For each model, on the real inputs of tests/test_mlperf.py (photo crops for
IC/VWW, the ToyCar clip's windows for AD, variations of the real KWS sample):
params, MACs, arena bytes and weight (flash) bytes from our int8 export's
report; the TFLM arena of the MLPerf int8 .tflite as TFLM's
RecordingMicroAllocator reports it (pip package `tflite-micro`,
`Interpreter.print_allocations()` after one invoke: "total" = head + tail,
"head" = the planned tensor/scratch area, the tail being persistent runtime
structs, measured on this 64-bit host); max |err| and RMSE vs Keras, and
top-1 agreement, for our host build and for the .tflite (tf.lite interpreter)
on the same float inputs, each quantized with its own input parameters.
Prints one markdown table per model.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import test_mlperf as mlp  # noqa: E402  (real inputs, Case, run_tflite_int8, tflm_arena)

tflm_arena = mlp.tflm_arena


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(mlp.MODELS))
    ap.add_argument("--out", default=None, help="export folder (default: a temp dir)")
    args = ap.parse_args()
    missing = mlp.missing_files()
    if missing:
        sys.exit(f"MLPerf Tiny files not found: {', '.join(missing)}")
    from exporter.metrics import compare

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mlperf_table_"))
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        case = mlp.Case(name, out)
        report, c = case.build("int8")
        ours = compare(c.predict(case.x), case.ref, c.output_scale)
        theirs_out, their_step = case.tflite()
        theirs = compare(theirs_out, case.ref, their_step)
        arena, why = tflm_arena(case.tflite_path, case.x[0])
        if arena:
            total, head, tail = arena
            tflm = f"{total:,} (head {head:,} + tail {tail:,})"
        else:
            tflm = f"n/a: {why}"
        top1 = (lambda m: f"{100 * m['top1_agreement']:.2f}%") if case.classifier else (lambda m: "-")
        print(f"\n### {name}: {case.keras_path.name} vs {case.tflite_path.name} "
              f"({len(case.x)} real inputs, {len(case.cal)} for calibration)\n")
        print("| | ours (k2m int8) | TFLite int8 (MLPerf .tflite) |")
        print("|---|---:|---:|")
        print(f"| params | {report.params:,} | |")
        print(f"| MACs (report) | {report.macs:,} | |")
        print(f"| arena bytes | {report.arena_bytes:,} | {tflm} |")
        print(f"| flash bytes (weights, report) | {report.weight_bytes:,} | "
              f"{case.tflite_path.stat().st_size:,} (.tflite file) |")
        print(f"| max abs error vs Keras | {ours['max_abs']:.4g} | {theirs['max_abs']:.4g} |")
        print(f"| RMSE vs Keras | {ours['rmse']:.4g} | {theirs['rmse']:.4g} |")
        print(f"| within 2 output steps | {100 * ours['within_2_steps']:.2f}% "
              f"(step {c.output_scale:.4g}) | {100 * theirs['within_2_steps']:.2f}% "
              f"(step {their_step:.4g}) |")
        print(f"| top-1 agreement with Keras | {top1(ours)} | {top1(theirs)} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
