"""Train the suite's models and write their weights to
tests/fixtures/trained_weights.npz (see tests/trained_models.py).

    python tests/make_fixtures.py                 # every model
    python tests/make_fixtures.py lstm_bands      # some
    python tests/make_fixtures.py --survey 5      # score 5 seeds per model, write nothing

For each model, seeds 0, 1, 2... are trained (keras.utils.set_random_seed,
tf.config.experimental.enable_op_determinism) until one scores its
requirement with MARGIN to spare on the held-out split; those weights are
written.  The tests load them and never train, so the suite does not depend
on how a training run converges on the machine that runs it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import trained_models as T  # noqa: E402

MARGIN = {"accuracy": 0.03, "rmse": 0.05}
MAX_SEEDS = 10


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"models (default: all of {', '.join(T.MODELS)})")
    p.add_argument("--survey", type=int, metavar="N",
                   help="train seeds 0..N-1 of each model and print the scores; write nothing")
    args = p.parse_args(argv)
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    names = args.names or list(T.MODELS)
    for name in names:
        if name not in T.MODELS:
            p.error(f"unknown model '{name}'")
    if args.survey:
        for name in names:
            scores = [T.score(name, T.train(name, seed), T.data(name)) for seed in range(args.survey)]
            worst = max(scores) if T.MODELS[name].metric == "rmse" else min(scores)
            print(f"{name}: {T.MODELS[name].metric} over seeds 0..{args.survey - 1}: "
                  + ", ".join(f"{s:.3f}" for s in scores) + f"; worst {worst:.3f}", flush=True)
        return 0
    weights = dict(np.load(T.WEIGHTS)) if T.WEIGHTS.exists() else {}
    for name in names:
        margin = MARGIN[T.MODELS[name].metric]
        for seed in range(MAX_SEEDS):
            start = time.time()
            model = T.train(name, seed)
            value = T.score(name, model, T.data(name))
            print(f"{name} seed {seed}: {T.MODELS[name].metric} {value:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
            if T.meets(name, value, margin):
                break
        else:
            print(f"{name}: no seed of {MAX_SEEDS} met the requirement with its margin; "
                  f"make the task easier or train longer", file=sys.stderr)
            return 1
        for k in [k for k in weights if k.startswith(name + "/")]:
            del weights[k]
        for i, w in enumerate(model.get_weights()):
            weights[f"{name}/{i:02d}"] = np.asarray(w, np.float32)
    T.WEIGHTS.parent.mkdir(exist_ok=True)
    np.savez_compressed(T.WEIGHTS, **dict(sorted(weights.items())))
    print(f"wrote {T.WEIGHTS} ({T.WEIGHTS.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
