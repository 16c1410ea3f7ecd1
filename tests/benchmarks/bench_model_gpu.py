"""Benchmark: ResNet-18 images/s on a GPU under the Keras backend of ``KERAS_BACKEND``.

For the full network (``--width 1``) and each dtype policy (float32, mixed_float16), on
random 101x101x1 images in [0, 255] of batch ``--batch``: training images/s
(``train_on_batch``, binary cross-entropy, Adam) and inference images/s
(``predict_on_batch``), each the median of ``--rounds`` timed rounds of ``--steps`` calls
after warm-up calls (compilation). A result is forced to the host after every call, so
asynchronous dispatch is not mistaken for speed. Prints the device and versions.

    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false \
        python tests/benchmarks/bench_model_gpu.py --batch 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def rate(call, batch: int, *, steps: int, rounds: int) -> float:
    """Median images/s of ``rounds`` rounds of ``steps`` calls (after two warm-up calls)."""
    call()
    call()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        rates.append(steps * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras

    from lensdask.devices import has_gpu
    from lensdask.nn.model import build_resnet18

    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, GPU: {has_gpu()}")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, 101, 101, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (args.batch, 1)).astype(np.float32)
    print(
        f"ResNet-18 width {args.width}, batch {args.batch}, median of {args.rounds} x "
        f"{args.steps} calls"
    )
    print(f"{'policy':>14} {'train img/s':>12} {'infer img/s':>12}")
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        model = build_resnet18(width=args.width, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")

        def train(model=model):
            float(model.train_on_batch(images, labels))

        def infer(model=model):
            np.asarray(model.predict_on_batch(images))

        train_rate = rate(train, args.batch, steps=args.steps, rounds=args.rounds)
        infer_rate = rate(infer, args.batch, steps=args.steps, rounds=args.rounds)
        print(f"{policy:>14} {train_rate:>12.0f} {infer_rate:>12.0f}")
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
