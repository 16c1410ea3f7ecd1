"""Benchmark: how `lensdask simulate` scales from 1 to 2 workers.

Makes (once) a cutout store of synthetic galaxies (``lensdask.testing.write_cutout_store``),
then builds the same training set alternately with a 1-worker and a 2-worker
``LocalCluster`` (1 thread each, cluster started before the clock), ``--repeat`` times each,
into fresh stores. Prints mock lenses/s, examples/s, the speed-up of 2 workers over 1, and
checks that both made byte-identical images (determinism across worker counts).

    .venv/bin/python tests/benchmarks/bench_simulate.py --workdir /tmp/lensdask-bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def build(cutouts: Path, out: Path, config, workers: int) -> float:
    """Seconds to build the training set on a fresh ``workers``-worker cluster."""
    from distributed import Client, LocalCluster

    from lensdask.lensing.simulate import simulate_lenses

    if out.exists():
        shutil.rmtree(out)
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        start = time.perf_counter()
        report = simulate_lenses(cutouts, out, config=config, client=client, progress=False)
        elapsed = time.perf_counter() - start
    if report.units.failures:
        raise RuntimeError(f"failures: {report.units.failures}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--positives", type=int, default=768)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import zarr

    from lensdask.config import SimulateConfig
    from lensdask.testing import write_cutout_store

    work = args.workdir / "simulate"
    cutouts = work / "cutouts.zarr"
    if not cutouts.exists():
        write_cutout_store(cutouts, {f"T{k}": {"LRG": 150, "BG": 50} for k in range(4)})
    config = SimulateConfig(
        positives=args.positives,
        negatives=args.negatives,
        test_positives=128,
        test_negatives=128,
        batch_size=args.batch_size,
        negative_mix={"LRG": 0.6, "BG": 0.4},
    )
    lenses = config.positives + config.test_positives
    examples = lenses + config.negatives + config.test_negatives
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for workers in (1, 2):
            times[workers].append(
                build(cutouts, work / f"trainset-{workers}.zarr", config, workers)
            )
    print(
        f"training set: {lenses} mock lenses + {examples - lenses} negatives, "
        f"batch {config.batch_size}, supersample {config.supersample}"
    )
    print(f"{'workers':>8} {'median s':>9} {'lenses/s':>9} {'examples/s':>11}")
    for workers, values in times.items():
        median = statistics.median(values)
        print(f"{workers:>8} {median:>9.1f} {lenses / median:>9.1f} {examples / median:>11.1f}")
    speedup = statistics.median(times[1]) / statistics.median(times[2])
    print(f"2 workers / 1 worker speed-up: {speedup:.2f}x (ideal 2.0x)")
    same = all(
        np.array_equal(
            zarr.open_array(str(work / "trainset-1.zarr" / split / "images"))[:],
            zarr.open_array(str(work / "trainset-2.zarr" / split / "images"))[:],
        )
        for split in ("train", "val", "test")
    )
    print(f"1-worker and 2-worker images identical: {same}")


if __name__ == "__main__":
    main()
