"""The main job on the bundled example: export digits_cnn.keras to int8 and
float32 C, build each folder on this machine, run it on the digits test
split and print how closely the C matches Keras.

    python examples/demo.py [--out build/demo]
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_example import digits_split  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/demo")
    args = ap.parse_args()
    import keras
    from exporter import export_model, host
    from exporter.metrics import compare, format_row

    model_path = HERE / "digits_cnn.keras"
    calibration = HERE / "digits_calibration.npy"
    _, x_test, _, y_test = digits_split()
    ref = keras.models.load_model(model_path, safe_mode=True, compile=False).predict(x_test, verbose=0)
    print(f"model {model_path.name}, {len(x_test)} test digits, Keras accuracy "
          f"{100 * np.mean(ref.argmax(1) == y_test):.2f}%\n")
    for dtype in ("int8", "float32"):
        out = Path(args.out) / dtype
        report = export_model(model_path, out, dtype=dtype, calibration_data=calibration,
                              force=True)
        print(f"== {dtype}: exported to {out}/")
        print(report.table())
        c = host.load(out)
        got = c.predict(x_test)
        step = c.output_scale if dtype == "int8" else None
        print(format_row("C vs Keras", compare(got, ref, step)))
        print(f"C accuracy {100 * np.mean(got.argmax(1) == y_test):.2f}%")
        on_target(out, model_path, x_test[:50])
        print()


def on_target(out, model_path, x):
    """The same folder built for the Cortex-M4 and run under QEMU, if the
    ARM toolchain and QEMU are installed."""
    import shutil
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        print("(Cortex-M4 run skipped: apt-get install gcc-arm-none-eabi "
              "libnewlib-arm-none-eabi qemu-system-arm)")
        return
    from exporter.metrics import format_row
    from exporter.verify import verify
    m = verify(out, model_path, x, where="qemu")
    if m["qemu_bit_exact"]:
        same = "  bit-exact with the host build"
    else:  # float: the M4's FPU fuses and rounds differently from the PC's
        same = f"  max relative difference to the host build {m['qemu_max_rel']:.1e}"
    print(format_row("M4 (QEMU)", m) + same)


if __name__ == "__main__":
    main()
