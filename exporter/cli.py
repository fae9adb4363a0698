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
    p.add_argument("--report", metavar="FILE.html",
                   help="also write the report as a self-contained HTML page with plots "
                        "of the arena (RAM) and weight (flash) bytes per layer")
    p.add_argument("--verify", choices=["host", "qemu"],
                   help="after writing OUTDIR, run samples through the C model (built for this "
                        "machine, or for the Cortex-M4 and run on QEMU) and through Keras, and "
                        "print the comparison")
    p.add_argument("--verify-samples", metavar="FILE",
                   help=".npy/.npz inputs for --verify (default: the --calibration file)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return p


def quiet_frameworks() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)


def check_report_paths(args) -> None:
    """--json/--report must be writable files: found out before exporting."""
    from .errors import ExportError
    for what, path in (("--json file", args.json), ("report", args.report)):
        if path is None:
            continue
        if os.path.isdir(path):
            raise ExportError(f"cannot write {what} '{path}': it is a directory; give a file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ExportError(f"cannot write {what} '{path}': folder '{parent}' does not exist")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.verify and args.output is None:
        parser().error("--verify needs -o OUTDIR")
    if args.output is None and not args.explain:
        parser().error("give -o OUTDIR (or --explain to only inspect the model)")
    if args.verify and not (args.verify_samples or args.calibration):
        parser().error("--verify needs inputs: pass --verify-samples FILE.npy (or --calibration)")
    quiet_frameworks()
    from . import quantize
    from .errors import ExportError
    if args.quiet:
        quantize.PROGRESS = False
    from .export import export_model
    try:
        check_report_paths(args)
        if args.verify_samples:  # before anything is written
            from .calibration import precheck
            precheck(args.verify_samples, what="samples")
        # Inspecting without writing needs no calibration: explain the float model.
        dtype = args.dtype if (args.output or args.calibration) else "float32"
        report = export_model(
            args.model, args.output, target=args.target, dtype=dtype,
            calibration_data=args.calibration, name=args.name, force=args.force,
            flash_kb=args.flash_kb, ram_kb=args.ram_kb, check_samples=args.verify_samples)
        verified = None
        if args.verify:
            from .verify import layer_metrics, verify
            samples = args.verify_samples or args.calibration
            verified = verify(args.output, args.model, samples, where=args.verify)
            if report.dtype == "int8":  # where the int8 error comes from, layer by layer
                verified["layers"] = layer_metrics(report, args.output, samples)
        if args.json:
            data = report.to_dict()
            if verified is not None:
                data["verify"] = verified
            try:
                with open(args.json, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=2)
            except OSError as e:
                raise ExportError(f"cannot write --json file '{args.json}': {e.strerror}") from None
        if args.report:
            from . import report_html
            try:
                report_html.write(report, args.report)
            except OSError as e:
                raise ExportError(f"cannot write report '{args.report}': {e.strerror}") from None
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
    if verified is not None:
        from .metrics import format_row
        print(format_row(f"C/{args.verify}", verified))
        if verified.get("layers"):
            from .verify import format_layers
            print("per layer, C int8 vs the float model (error in each tensor's own steps):")
            print(format_layers(verified["layers"]))
        if args.verify == "qemu":
            if verified["qemu_bit_exact"]:
                print("QEMU Cortex-M4 outputs are bit-exact with the host build")
            else:
                print(f"QEMU vs host build: {verified['qemu_mismatches']} outputs differ, "
                      f"max relative {verified['qemu_max_rel']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
