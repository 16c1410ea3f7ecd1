"""Benchmark: galaxies scored per second through `lensdask score` against the bare model.

Makes a cutout store of ``--tiles`` x ``--per-tile`` synthetic 101x101 cutouts and an
(untrained) ResNet-18 of ``--width``, then, side by side in one run:

- **bare model**: the model predicting the same cutouts, already normalised and in memory,
  in one process (batch as the pipeline's), no Dask;
- **pipeline**: :func:`lensdask.score.scoring.score_cutouts` on a Dask cluster, reading the
  cutouts from Zarr, normalising them, predicting and writing the Parquet scores, with the
  model already resident on the workers (a warm-up run on one tile loads and compiles it).

On a CPU (``--device cpu``, the default) the bare model runs in a child process set up as a
single-threaded worker's (TensorFlow with 2 threads: one crashes later training), and in
two such processes at once (what the machine gives two workers), and the pipeline on 1 and
then 2 single-threaded workers. The issue's goals: pipeline >= 0.9x the bare model per
core and 2 workers >= 1.8x 1 worker. On a GPU (``--device
gpu``) the bare model runs here and the pipeline on a ``LocalCUDACluster`` worker with
``--threads`` threads (tasks read and normalise on the CPU while others use the GPU).

    python tests/benchmarks/bench_score.py --tiles 8 --per-tile 512 --width 1.0
    KERAS_BACKEND=jax python tests/benchmarks/bench_score.py --device gpu --tiles 32 \\
        --per-tile 4096 --threads 8
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import add_calibration_options, record_calibration


def bare_rate(store: Path, model_dir: Path, tiles: list[str], threads: int | None) -> float:
    """Images/s of the resident model alone on the store's cutouts, all in memory."""
    from lensdask.formats.cutout_store import read_tile
    from lensdask.formats.model_dir import read_card
    from lensdask.normalise import normalise_stamps
    from lensdask.score.resident import load_resident

    resident = load_resident(model_dir, read_card(model_dir)["model_id"], threads=threads)
    images = np.concatenate(
        [normalise_stamps(read_tile(store, t, bands=("r",)).images["r"]) for t in tiles]
    )
    resident.predict(images[: resident.batch_size])  # compile
    start = time.perf_counter()
    resident.predict(images)
    return images.shape[0] / (time.perf_counter() - start)


def _bare_child(store, model_dir, tiles, queue) -> None:
    queue.put(bare_rate(Path(store), Path(model_dir), tiles, threads=1))


def bare_in_children(store: Path, model_dir: Path, tiles: list[str], n: int) -> list[float]:
    """Images/s of the bare model in each of ``n`` single-threaded processes run at once."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [
        context.Process(target=_bare_child, args=(str(store), str(model_dir), tiles, queue))
        for _ in range(n)
    ]
    for child in children:
        child.start()
    rates = [queue.get() for _ in children]
    for child in children:
        child.join()
    return rates


def pipeline_rate(client, store: Path, warm: Path, model_dir: Path, work: Path) -> float:
    """Images/s of `score_cutouts` on ``client`` after a warm-up run on ``warm``."""
    from lensdask.score.scoring import score_cutouts

    run = time.monotonic_ns()
    score_cutouts(warm, model_dir, work / f"warm-{run}", client=client, progress=False)
    out = work / f"scores-{run}"
    start = time.perf_counter()
    report = score_cutouts(store, model_dir, out, client=client, progress=False)
    wall = time.perf_counter() - start
    assert report.units.ok and not report.problems, report
    shutil.rmtree(out)
    return report.rows / wall


TF_THREADS = 2
"""TensorFlow threads of a single-threaded worker (lensdask.score.resident): the bare
model's rate per core is its rate in one such process over these."""


def record_gpu_calibration(args: argparse.Namespace, *, bare: float, rate: float) -> None:
    """The GPU worker's two parts: the model's calls (the bare model's rate) and, taking
    turns with them, its CPU side (reading, normalising, copying), from the pipeline's
    rate less the model's time."""
    record_calibration(
        args,
        stage="score",
        mode="gpu",
        quantity="model images",
        rate=bare,
        figure=f"the bare full ResNet-18 on the GPU: {bare:,.0f} images/s",
        per="GPU worker",
        cores=args.threads,
    )
    if rate < bare:
        record_calibration(
            args,
            stage="score",
            mode="gpu",
            quantity="images",
            rate=1 / (1 / rate - 1 / bare),
            figure=f"the worker's CPU side: 1 / (1/{rate:,.0f} - 1/{bare:,.0f}), lensdask "
            "score less the bare model's time",
            per="GPU worker",
            cores=args.threads,
        )


def gpu_cluster(threads: int) -> tuple[object, str]:
    """One worker for the GPU: dask-cuda's LocalCUDACluster where it is installed."""
    try:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(
            host="127.0.0.1", threads_per_worker=threads, dashboard_address=":0"
        )
        return cluster, "LocalCUDACluster"
    except ImportError:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=1, threads_per_worker=threads, host="127.0.0.1", dashboard_address=":0"
        )
        return cluster, "LocalCluster"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--per-tile", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--threads", type=int, default=8, help="GPU worker threads")
    parser.add_argument("--dir", type=Path, default=None, help="Work folder (default: tmp)")
    add_calibration_options(parser)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from lensdask.testing import write_cutout_store, write_untrained_model

    work = Path(tempfile.mkdtemp(prefix="bench-score-", dir=args.dir))
    try:
        tiles = [f"KIDS_{k}.0_0.5" for k in range(args.tiles)]
        start = time.perf_counter()
        layout = {t: {"LRG": args.per_tile} for t in tiles}
        store = write_cutout_store(work / "cutouts.zarr", layout)
        warm = write_cutout_store(work / "warm.zarr", {"KIDS_99.0_0.5": {"LRG": 64}}, seed=9)
        model_dir = write_untrained_model(work / "model", width=args.width)
        n = args.tiles * args.per_tile
        print(
            f"{n} cutouts in {args.tiles} tiles, ResNet-18 width {args.width}, made in "
            f"{time.perf_counter() - start:.0f} s"
        )
        if args.device == "gpu":
            bare = bare_rate(store, model_dir, tiles, threads=None)
            print(f"bare model on the GPU: {bare:,.0f} images/s")
            cluster, kind = gpu_cluster(args.threads)
            with cluster, Client(cluster) as client:
                rate = pipeline_rate(client, store, warm, model_dir, work)
            print(
                f"lensdask score, 1 GPU worker ({kind}) x {args.threads} threads: "
                f"{rate:,.0f} images/s = {rate / bare:.2f}x the bare model"
            )
            if args.width == 1.0:
                record_gpu_calibration(args, bare=bare, rate=rate)
            return
        bare = bare_in_children(store, model_dir, tiles, 1)[0]
        print(f"bare model, 1 process:           {bare:8.1f} images/s")
        if args.width == 1.0:
            record_calibration(
                args,
                stage="score",
                mode="cpu",
                quantity="model images",
                rate=bare / TF_THREADS,
                figure=f"the bare full ResNet-18 in one process, TensorFlow on {TF_THREADS} "
                f"threads, batch 256: {bare:,.1f} images/s, per core",
            )
        pair = sum(bare_in_children(store, model_dir, tiles, 2))
        print(
            f"bare model, 2 processes at once: {pair:8.1f} images/s = {pair / bare:.2f}x "
            "(what 2 cores give 2 workers here)"
        )
        rates = {}
        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    host="127.0.0.1",
                    dashboard_address=":0",
                ) as cluster,
                Client(cluster) as client,
            ):
                rates[workers] = pipeline_rate(client, store, warm, model_dir, work)
            print(
                f"lensdask score, {workers} worker(s) x 1 thread: {rates[workers]:8.1f} images/s "
                f"= {rates[workers] / workers / bare:.2f}x the bare model per core"
            )
        print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
