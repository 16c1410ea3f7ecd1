"""Benchmark: scheduler and worker memory while `lensdask score` scores a million cutouts.

Writes a cutout store of ``--tiles`` x ``--per-tile`` 101x101 cutouts (one synthetic galaxy
repeated, so that zstd keeps the store small on disk; the workers still read, decompress,
normalise and score every cutout) and scores it with an untrained narrow ResNet-18 on 2
single-threaded workers, sampling the resident memory of the scheduler and of each worker
every 0.2 s (the scheduler of a LocalCluster runs in this process, which imports no
TensorFlow). It does the same with a tenth of the tiles first: the scheduler's memory
must not grow with the number of cutouts (one task per tile).

    python tests/benchmarks/bench_score_memory.py --tiles 1000 --per-tile 1000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_store(path: Path, tiles: int, per_tile: int) -> None:
    """A compressible cutout store: the same galaxy in every cutout, with markers."""
    from lensdask.formats.cutout_store import open_root, write_tile_group
    from lensdask.units import Marker, commit_folder, ids_hash, staging_path, write_marker

    open_root(path, attrs={"bands": ["r"], "size": 101})
    yy, xx = np.mgrid[:101, :101] - 50.0
    galaxy = (300 * np.exp(-(xx**2 + yy**2) / 8) + (xx + 2 * yy) * 0.01).astype(np.float32)
    images = np.broadcast_to(galaxy, (per_tile, 101, 101))
    sample = np.array(["LRG", "BG"] * (per_tile // 2) + ["BG"] * (per_tile % 2))
    for k in range(tiles):
        tile = f"KIDS_{k}.0_0.5"
        ids = np.array([f"KiDS J{k:05d}.{i:06d}" for i in range(per_tile)])
        columns = {"ID": ids, "sample": sample, "edge": np.zeros(per_tile, bool)}
        staged = staging_path(path, tile)
        write_tile_group(
            staged, {"r": images}, columns, attrs={"bands": ["r"]}, chunk=256, compression_level=1
        )
        commit_folder(staged, path / tile)
        write_marker(
            path,
            Marker(unit=tile, rows=per_tile, ids_hash=ids_hash(ids), config_hash="b", files={}),
        )


def score_measured(client, store: Path, model_dir: Path, out: Path) -> dict:
    """Score ``store``; peak RSS of the scheduler and of the largest worker, and the rate."""
    import psutil

    from lensdask.score.scoring import score_cutouts

    peaks = {"scheduler": 0, "worker": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = client.run_on_scheduler(lambda: psutil.Process().memory_info().rss)
            workers = client.run(lambda: psutil.Process().memory_info().rss)
            peaks["scheduler"] = max(peaks["scheduler"], rss)
            peaks["worker"] = max(peaks["worker"], *workers.values())
            done.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    report = score_cutouts(store, model_dir, out, client=client, progress=False)
    wall = time.perf_counter() - start
    done.set()
    thread.join()
    assert report.units.ok and not report.problems, report.problems[:3]
    return {**peaks, "rows": report.rows, "tasks": report.tiles, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--per-tile", type=int, default=1000)
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    import psutil
    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench-score-memory-", dir=args.dir))
    try:
        # made in a child process: the scheduler lives in this one and must not count
        # TensorFlow's memory
        model_dir = work / "model"
        code = "import sys; from lensdask.testing import write_untrained_model as w; "
        code += "w(sys.argv[1], width=float(sys.argv[2]))"
        subprocess.run([sys.executable, "-c", code, str(model_dir), str(args.width)], check=True)
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            idle = client.run_on_scheduler(lambda: psutil.Process().memory_info().rss)
            print(f"scheduler RSS idle: {idle / 2**20:.0f} MiB")
            for tiles in (args.tiles // 10, args.tiles):
                store = work / f"cutouts-{tiles}.zarr"
                start = time.perf_counter()
                write_store(store, tiles, args.per_tile)
                made = time.perf_counter() - start
                run = score_measured(client, store, model_dir, work / f"scores-{tiles}")
                print(
                    f"{run['rows']:>9,} cutouts in {run['tasks']:,} tasks (store made in "
                    f"{made:.0f} s): scored in {run['wall']:.0f} s "
                    f"({run['rows'] / run['wall']:,.0f}/s); peak RSS scheduler "
                    f"{run['scheduler'] / 2**20:.0f} MiB, largest worker "
                    f"{run['worker'] / 2**20:.0f} MiB"
                )
                shutil.rmtree(store)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
