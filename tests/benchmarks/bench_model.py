"""Benchmark: ResNet-18 training and inference images/s on the CPU, Keras against ONNX Runtime.

Builds :func:`lensdask.nn.model.build_resnet18` (``--width``, 1.0 = the full network) and
feeds it random float32 images of 101x101x1 px with values in [0, 255]. First the batch
normalisation statistics are set from one batch (one training-mode pass with momentum 0),
so that p_CNN spreads over (0, 1) instead of saturating at 1 as an untrained net's does and
the comparison of outputs means something. Then:

- inference, for each ``--batches`` size, one warm-up and then ``--repeat`` rounds in
  which each way runs once in turn: Keras ``model.predict`` (as compiled by default: no XLA
  on a CPU), ``model.predict`` with ``jit_compile=True`` (XLA), a ``tf.function`` of
  ``model(x, training=False)``, the same with every batch normalisation folded into its
  convolution (an inference-only copy, what ONNX Runtime does to its graph), and ONNX
  Runtime on the same network exported with ``model.export(format="onnx")`` (tf2onnx).
  Prints images/s of the fastest round and the median, images per CPU second (median),
  each way's ratio to ONNX Runtime (the goal: Keras >= 0.8x; of the fastest rounds) and
  the largest difference of p_CNN from ONNX Runtime's;
- training: ``train_on_batch`` steps (binary cross-entropy, Adam) after one warm-up step,
  without and with XLA.

On a shared machine compare the fastest rounds (other processes only ever add time; the
load average is printed before and after), or run with ``--threads 1 --ort-threads 1`` and
compare images per CPU second, which other processes hardly change (with more threads it
includes the threads' spin-waiting).

TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX;
elsewhere, as on the 2-core AMD EPYC (AVX2) where this was written, they need
``TF_ENABLE_ONEDNN_OPTS=1`` before TensorFlow is imported. There its default (Eigen) kernels
run at ~0.7x ONNX Runtime, oneDNN's at ~1.0x.

Needs the ``bench`` extra (onnxruntime, tf2onnx) besides ``nn``.

    .venv/bin/python tests/benchmarks/bench_model.py --batches 256 --repeat 3 --train-steps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import onnxruntime as ort
import tensorflow as tf

from lensdask.nn.model import architecture, build_resnet18


def images(n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` random float32 images of 101x101x1 px with values in [0, 255]."""
    return np.random.default_rng(seed).uniform(0, 255, (n, 101, 101, 1)).astype(np.float32)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wall_and_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def calibrate_batch_norm(model: keras.Model, x: np.ndarray) -> None:
    """Set every batch normalisation's moving statistics to those of the batch ``x``."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(x, training=True)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum


class PassThrough(keras.layers.Layer):
    """Stands where a folded batch normalisation was (takes its ``training`` and ``mask``)."""

    def call(self, x, training=None, mask=None):
        return x


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """An inference copy of ``model`` with each ``<conv>_bn`` folded into ``<conv>``."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.BatchNormalization):
            return PassThrough(name=layer.name)
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2D):
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in folded.layers:
        if isinstance(layer, keras.layers.Conv2D):
            bn = model.get_layer(f"{layer.name}_bn")
            gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
            factor = gamma / np.sqrt(var + bn.epsilon)
            kernel = np.asarray(model.get_layer(layer.name).kernel) * factor
            layer.set_weights([kernel, beta - mean * factor])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return folded


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[256])
    parser.add_argument("--repeat", type=int, default=5, help="timed inference rounds")
    parser.add_argument("--train-batch", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps (0: none)")
    parser.add_argument("--threads", type=int, help="TF intra-op threads, 1 inter-op")
    parser.add_argument("--ort-threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    keras.utils.set_random_seed(0)
    model = build_resnet18(width=args.width)
    card = architecture(model)
    print(
        f"ResNet-18 width {args.width}: {card['params']['total']:,} parameters "
        f"({card['params']['trainable']:,} trainable); keras {keras.__version__} "
        f"({keras.backend.backend()}), tensorflow {tf.__version__}, onnxruntime "
        f"{ort.__version__}; {os.cpu_count()} CPUs, TF intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
        f"ORT intra-op threads {args.ort_threads}, TF_ENABLE_ONEDNN_OPTS="
        f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}; {load()}"
    )
    calibrate_batch_norm(model, images(64, seed=1))

    onnx_path = args.workdir / "bench_model_resnet18.onnx"
    export = seconds(lambda: model.export(onnx_path, format="onnx", verbose=False))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.ort_threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    print(f"ONNX export {export:.1f} s, {onnx_path.stat().st_size / 2**20:.1f} MiB")

    xla = keras.models.clone_model(model)
    xla.set_weights(model.get_weights())
    xla.compile(jit_compile=True)
    call = tf.function(lambda t: model(t, training=False))
    folded = fold_batch_norm(model)
    call_folded = tf.function(lambda t: folded(t, training=False))

    for batch in args.batches:
        x = images(batch, seed=2)
        tensor = tf.constant(x)
        runs = {
            "keras predict": lambda x=x, b=batch: model.predict(x, batch_size=b, verbose=0),
            "keras predict, jit_compile": lambda x=x, b=batch: xla.predict(
                x, batch_size=b, verbose=0
            ),
            "tf.function model(x)": lambda t=tensor: call(t).numpy(),
            "tf.function, BN folded": lambda t=tensor: call_folded(t).numpy(),
            "onnxruntime": lambda x=x: session.run(None, {input_name: x})[0],
        }
        outputs = {name: run() for name, run in runs.items()}  # warm-up (tracing, XLA)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, run in runs.items():
                times[name].append(wall_and_cpu(run))
        best = {name: batch / min(w for w, _ in t) for name, t in times.items()}
        per_cpu = {name: batch / statistics.median(c for _, c in t) for name, t in times.items()}
        print(
            f"\ninference, batch {batch}, {args.repeat} rounds: images/s fastest (median), "
            "images per CPU-s (median)"
        )
        for name, t in times.items():
            diff = np.max(np.abs(outputs[name] - outputs["onnxruntime"]))
            median = batch / statistics.median(w for w, _ in t)
            print(
                f"  {name:<27} {best[name]:6.1f} ({median:6.1f})"
                f"  {best[name] / best['onnxruntime']:.2f}x ORT | {per_cpu[name]:6.1f}/CPU-s "
                f"{per_cpu[name] / per_cpu['onnxruntime']:.2f}x ORT | max |dp| {diff:.1e}"
            )
        p = outputs["onnxruntime"]
        print(f"  p_CNN in [{p.min():.3f}, {p.max():.3f}], median {np.median(p):.3f}; {load()}")

    if args.train_steps < 1:
        return
    print(f"\ntraining (Adam, binary cross-entropy), batch {args.train_batch}:")
    x = images(args.train_batch, seed=3)
    y = np.random.default_rng(3).integers(0, 2, (args.train_batch, 1)).astype(np.float32)
    for jit in (False, True):
        net = keras.models.clone_model(model)
        net.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=jit
        )
        warm = seconds(lambda net=net: net.train_on_batch(x, y))
        steps = [seconds(lambda net=net: net.train_on_batch(x, y)) for _ in range(args.train_steps)]
        print(
            f"  jit_compile={jit!s:<5}: {args.train_batch / min(steps):5.1f} images/s fastest, "
            f"{args.train_batch / statistics.median(steps):5.1f} median (steps "
            f"{', '.join(f'{s:.2f}' for s in steps)} s; first step {warm:.1f} s)"
        )
    print(load())


if __name__ == "__main__":
    main()
