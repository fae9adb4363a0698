"""`export-model`: parse arguments, call the library, map errors to exit codes.

Exit codes (DESIGN.md): 0 ok, 2 bad usage or unreadable input, 3 unsupported
model, 4 over the target's flash/RAM budget; 128 + the signal number when
SIGINT, SIGTERM or SIGHUP stops it.  Errors are one sentence on stderr,
never a traceback; once something is written the sentence says exactly what.

`--help`, `--version` and usage errors answer without importing the
exporter's numerical modules (let alone TensorFlow): they come from this
module and argparse alone.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile

EXIT_CODES = """exit codes:
  0  done
  2  bad usage or unreadable input (a file that is not a model, bad samples)
  3  unsupported model: every unsupported layer is listed in one message
  4  over the flash or RAM budget, with the numbers
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); nothing half-written"""

EXAMPLES = """examples:
  export-model model.keras --calibration samples.npy -o build/model
      int8 C for a Cortex-M4 (1024 KB flash, 192 KB RAM budget), built with
      arm-none-eabi-gcc; samples.npy holds representative inputs (N,) + input shape
  export-model model.h5 --dtype float32 --target host -o build/model_f32 --verify host
      float32 C, no budget, checked against Keras on this PC"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export-model", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained Keras model (.keras or .h5) to plain C99 for a\n"
                    "Cortex-M4: int8 (TFLite/CMSIS-NN scheme) or float32.",
        epilog=EXIT_CODES + "\n\n" + EXAMPLES)
    p.add_argument("model", help="Keras model file (.keras or legacy .h5)")
    p.add_argument("-o", "--output", metavar="OUTDIR",
                   help="folder to write the C code into (a new or empty folder, or an earlier "
                        "export with --force)")
    p.add_argument("--target", default="cortex-m4", choices=["cortex-m4", "host"],
                   help="cortex-m4 (default): checks the weights against --flash-kb (1024) and "
                        "the arena against --ram-kb (192); host: no budget, for running the C "
                        "on this PC. The C is the same: DSP code is chosen at compile time")
    p.add_argument("--dtype", choices=["int8", "float32"],
                   help="int8 (default): weights and activations quantized as TFLite does, "
                        "needs --calibration; float32: float weights and kernels for the "
                        "M4F's FPU")
    p.add_argument("--calibration", metavar="FILE",
                   help=".npy/.npz of representative inputs, shape (N,) + input shape or "
                        "(N, elements) (int8)")
    p.add_argument("--name", metavar="PREFIX",
                   help="C prefix for files and symbols (default: the model file's stem)")
    p.add_argument("--force", action="store_true",
                   help="replace OUTDIR when it holds an earlier, unchanged export")
    p.add_argument("--flash-kb", type=int, help="flash budget (cortex-m4 default 1024)")
    p.add_argument("--ram-kb", type=int, help="RAM budget for the arena (cortex-m4 default 192)")
    p.add_argument("--explain", action="store_true",
                   help="print every layer's shapes, kernel layouts and MACs; "
                        "without -o nothing is written")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--report", metavar="FILE.html",
                   help="also write the report as a self-contained HTML page with plots "
                        "of the arena (RAM) and weight (flash) bytes per layer (and the "
                        "--verify results)")
    p.add_argument("--verify", choices=["host", "qemu"],
                   help="after writing OUTDIR, run samples through the C model (built for this "
                        "machine, or for the Cortex-M4 and run on QEMU) and through Keras, and "
                        "print the comparison")
    p.add_argument("--verify-samples", metavar="FILE",
                   help=".npy/.npz inputs for --verify (default: the --calibration file)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    from .outdir import tool_version
    p.add_argument("--version", action="version", version=f"export-model {tool_version()}")
    return p


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so every `finally`
    (temporary folders) runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def quiet_frameworks() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)


def _real(path) -> str:
    return os.path.realpath(path)


def check_output_paths(args) -> None:
    """--json/--report must be files that can be written, apart from OUTDIR
    and from every input: found out before anything is written."""
    from .errors import ExportError
    inputs = {_real(p): what for p, what in ((args.model, "the model file"),
                                              (args.calibration, "the calibration file"),
                                              (args.verify_samples, "the --verify-samples file"))
              if p}
    seen = {}
    for what, path in (("--json file", args.json), ("report", args.report)):
        if path is None:
            continue
        real = _real(path)
        if os.path.isdir(path):
            raise ExportError(f"cannot write {what} '{path}': it is a directory; give a file name")
        if real in inputs:
            raise ExportError(f"cannot write {what} '{path}': it is {inputs[real]}")
        if real in seen:
            raise ExportError(f"cannot write {what} '{path}': it is also the {seen[real]}")
        seen[real] = what
        if args.output:
            out = _real(args.output)
            if real == out or real.startswith(out.rstrip(os.sep) + os.sep):
                raise ExportError(f"cannot write {what} '{path}': it is inside OUTDIR "
                                  f"'{args.output}', which the export replaces as a whole; "
                                  f"write it beside OUTDIR")
        parent = os.path.dirname(real)
        if not os.path.isdir(parent):
            raise ExportError(f"cannot write {what} '{path}': folder '{parent}' does not exist")
        try:  # a real file beside it: access() would let root through /proc or a read-only mount
            fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ExportError(f"cannot write {what} '{path}': {e.strerror}") from None


def check_verify_tools(where: str) -> None:
    from . import host, target
    if where == "qemu":
        target.check_tools()
    host.check_compiler()


def write_file(path: str, what: str, text: str) -> None:
    """Written beside, then renamed: a failure leaves no half-written file."""
    from .errors import ExportError
    tmp = f"{path}.k2m-{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise ExportError(f"cannot write {what} '{path}': {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def written_note(written: list) -> str:
    if not written:
        return "nothing was written"
    return "written before it stopped: " + ", ".join(written) + "; nothing else was written"


def main(argv=None) -> int:
    import threading
    on_main = threading.current_thread() is threading.main_thread()  # signal() needs it
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)} if on_main else {}
    try:
        return _main(argv)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _main(argv) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.verify and args.output is None:
        p.error("--verify needs -o OUTDIR")
    if args.output is None and not args.explain:
        p.error("give -o OUTDIR (or --explain to only inspect the model)")
    if args.verify and not (args.verify_samples or args.calibration):
        p.error("--verify needs inputs: pass --verify-samples FILE.npy (or --calibration)")
    quiet_frameworks()
    from . import quantize
    from .errors import ExportError
    if args.quiet:
        quantize.PROGRESS = False
    written: list = []
    try:
        return run(args, written)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"export-model: interrupted by {signal.Signals(signum).name}; "
              f"{written_note(written)}", file=sys.stderr)
        return 128 + signum
    except ExportError as e:
        note = f"; {written_note(written)}" if written else ""
        print(f"export-model: error: {e}{note}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug of ours: still one sentence, no traceback
        print(f"export-model: internal error ({type(e).__name__}: {e}); "
              f"{written_note(written)}; please report this with the model", file=sys.stderr)
        return 1


def run(args, written: list) -> int:
    from .export import SYNTHETIC, export_model
    check_output_paths(args)
    if args.verify:
        check_verify_tools(args.verify)
    if args.verify_samples:  # before anything is written
        from .calibration import precheck
        precheck(args.verify_samples, what="samples")
    dtype = args.dtype or "int8"
    calibration = args.calibration
    synthetic = dtype == "int8" and calibration is None and args.output is None
    if synthetic:  # --explain alone: the int8 sizes, from made-up samples
        calibration = SYNTHETIC
    show = not args.quiet and (sys.stderr.isatty() or os.environ.get("K2M_PROGRESS", "")
                               not in ("", "0"))
    if show:
        print(f"loading model {args.model}…", file=sys.stderr, flush=True)
    report = export_model(
        args.model, args.output, target=args.target, dtype=dtype,
        calibration_data=calibration, name=args.name, force=args.force,
        flash_kb=args.flash_kb, ram_kb=args.ram_kb, check_samples=args.verify_samples,
        written=written)
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
        write_file(args.json, "--json file", json.dumps(data, indent=2) + "\n")
        written.append(args.json)
    if args.report:
        from . import report_html
        write_file(args.report, "report", report_html.render(report, verified))
        written.append(args.report)
    print_results(args, report, verified, synthetic)
    return 0


def print_results(args, report, verified, synthetic: bool) -> None:
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not args.quiet:
        if args.explain:
            print(report.explain())
        print(report.table())
        if synthetic:
            print("int8 sizes as planned with made-up samples: the quantization itself needs "
                  "--calibration (or use --dtype float32)")
        if report.out_dir:
            print(f"wrote {report.out_dir}/{report.prefix}.h, {report.prefix}.c, "
                  f"{report.prefix}_weights.h and the kernels it uses")
    if verified is not None:
        from .metrics import format_row
        print(format_row(f"C/{args.verify}", verified))
        if verified.get("layers"):
            from .verify import format_layers
            print("per layer, C int8 vs the float model (error in each tensor's own steps; "
                  "int16 tensors' steps are 256 times finer):")
            print(format_layers(verified["layers"]))
        if args.verify == "qemu":
            if verified["qemu_bit_exact"]:
                print("QEMU Cortex-M4 outputs are bit-exact with the host build")
            else:
                print(f"QEMU vs host build: {verified['qemu_mismatches']} outputs differ, "
                      f"max relative {verified['qemu_max_rel']:.2g}")


if __name__ == "__main__":
    sys.exit(main())
