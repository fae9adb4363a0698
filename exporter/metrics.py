"""Parity metrics between the C model's outputs and Keras's."""
from __future__ import annotations

import numpy as np


def compare(got, ref, step: float | None = None) -> dict:
    """Max abs error, RMSE, cosine, top-1 agreement and, for int8, the error
    in units of the output quantization step."""
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    err = np.abs(got - ref)
    denom = np.linalg.norm(got) * np.linalg.norm(ref)
    out = {"max_abs": float(err.max()), "rmse": float(np.sqrt(np.mean(err ** 2))),
           "cosine": float(np.sum(got * ref) / denom) if denom else 1.0,
           "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1)))}
    if step:
        out["max_steps"] = float(err.max() / step)
        out["within_2_steps"] = float(np.mean(err / step <= 2.0 + 1e-9))
    return out


def format_row(name: str, m: dict) -> str:
    line = (f"{name:<10} max|err| {m['max_abs']:.3g}  RMSE {m['rmse']:.3g}  "
            f"cosine {m['cosine']:.6f}  top-1 agreement {100 * m['top1_agreement']:.2f}%")
    if "max_steps" in m:
        line += (f"  max {m['max_steps']:.2f} steps, {100 * m['within_2_steps']:.2f}% "
                 f"within 2 steps")
    return line
