"""Benchmark: which kinds of negatives does a model take for lenses?

The test split's negatives are LRGs only; the validation split has every kind of the
training set's negative mix (LRGs, BGs, spirals, rings, mergers). For each model directory
(``lensdask train``) and each training set, predicts the validation split and prints, per
kind, how many examples it holds and the share of them with p_CNN above each of the
reference run's thresholds (0.25, 0.5, 0.75): the false-positive rate of each negative kind,
and the true-positive rate of the mock lenses. Compare models trained on different negative
mixes on the same validation split (each model on each set), because the validation examples
of the rarer kinds are few (~100) and repeat objects of the training split.

    .venv/bin/python tests/benchmarks/bench_negative_kinds.py MODEL_DIR [MODEL_DIR ...] \
        --trainset TRAINSET [--trainset TRAINSET ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from lensdask.devices import set_backend_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--trainset", action="append", required=True)
    args = parser.parse_args()

    set_backend_env()
    from lensdask.formats.model_dir import load_model
    from lensdask.formats.trainset import read_table
    from lensdask.nn.evaluate import THRESHOLDS, predict_split

    header = "  ".join(f"> {t:.2f}" for t in THRESHOLDS)
    for model_dir in args.model_dirs:
        model, card = load_model(model_dir)
        for trainset in args.trainset:
            _, scores = predict_split(model, trainset, "val")
            kinds = read_table(trainset, "val")["kind"].to_numpy(str)
            print(f"model {card['model_id']} ({model_dir}) on the val split of {trainset}")
            print(f"  {'kind':8s} {'n':>6s}  {header}")
            for kind in np.unique(kinds):
                part = scores[kinds == kind]
                shares = "  ".join(f"{np.mean(part > t):6.3f}" for t in THRESHOLDS)
                print(f"  {kind:8s} {part.size:6d}  {shares}")


if __name__ == "__main__":
    main()
