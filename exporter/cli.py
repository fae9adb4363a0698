"""`export-model`: parse arguments, call the library, map errors to exit codes.

Exit codes (DESIGN.md): 0 ok, 2 bad usage or unreadable input, 3 unsupported
model, 4 over the target's flash/RAM budget.  Errors are one sentence on
stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export-model",
        description="Export a trained Keras model (.keras or .h5) to plain C for a "
                    "Cortex-M4: int8 (TFLite/CMSIS-NN scheme) or float32.")
    p.add_argument("model", help="Keras model file (.keras or legacy .h5)")
    p.add_argument("-o", "--output", metavar="OUTDIR", help="folder to write the C code into")
    p.add_argument("--target", default="cortex-m4", choices=["cortex-m4", "host"])
    p.add_argument("--dtype", default="int8", choices=["int8", "float32"])
    p.add_argument("--calibration", metavar="FILE",
                   help=".npy/.npz of representative inputs, shape (N,) + input shape (int8)")
    p.add_argument("--name", metavar="PREFIX",
                   help="C prefix for files and symbols (default: the model file's stem)")
    p.add_argument("--force", action="store_true", help="replace OUTDIR if it exists")
    p.add_argument("--flash-kb", type=int, help="flash budget (cortex-m4 default 1024)")
    p.add_argument("--ram-kb", type=int, help="RAM budget for the arena (cortex-m4 default 192)")
    p.add_argument("--explain", action="store_true",
                   help="print every layer's shapes, kernel layouts and MACs; "
                        "without -o nothing is written")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return p


def quiet_frameworks() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.output is None and not args.explain:
        parser().error("give -o OUTDIR (or --explain to only inspect the model)")
    quiet_frameworks()
    from .errors import ExportError
    from .export import export_model
    try:
        # Inspecting without writing needs no calibration: explain the float model.
        dtype = args.dtype if (args.output or args.calibration) else "float32"
        report = export_model(
            args.model, args.output, target=args.target, dtype=dtype,
            calibration_data=args.calibration, name=args.name, force=args.force,
            flash_kb=args.flash_kb, ram_kb=args.ram_kb)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report.to_dict(), f, indent=2)
    except ExportError as e:
        print(f"export-model: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("export-model: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: still one sentence, no traceback
        print(f"export-model: internal error ({type(e).__name__}: {e}); nothing was "
              f"written; please report this with the model", file=sys.stderr)
        return 1
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.quiet:
        if args.explain:
            print(report.explain())
        print(report.table())
        if report.out_dir:
            print(f"wrote {report.out_dir}/{report.prefix}.h, {report.prefix}.c, "
                  f"{report.prefix}_weights.h and the kernels it uses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
