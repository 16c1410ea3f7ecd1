"""The KiDS DR4 input settings on a mock survey in the DR4 layout: wall time of the job up to
the candidates, whether every stage completed, and how many stamps have bad pixels.

    .venv/bin/python tests/benchmarks/bench_dr4_job.py [--tiles 16] [--tile-size 0.05] \
        [--compress RICE_1] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
LENSDASK = [str(Path(sys.executable).parent / "lensdask")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--tile-size", type=float, default=0.05)
    parser.add_argument("--compress", default="RICE_1")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from lensdask.testing import write_untrained_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cluster = ["--workers", str(args.workers), "--no-progress", "--dashboard-address", ":0"]
        began = time.perf_counter()
        survey = [
            "mock-survey",
            str(tmp / "download"),
            "--tiles",
            str(args.tiles),
            "--tile-size",
            str(args.tile_size),
            "--images",
            "--bands",
            "r,g",
            "--lrg-density",
            "3000",
            "--layout",
            "kids-dr4",
            *(["--compress", args.compress] if args.compress else []),
        ]
        subprocess.run([*LENSDASK, *survey, *cluster], check=True, capture_output=True)
        made = time.perf_counter() - began
        shipped = yaml.safe_load((ROOT / "jobs" / "kids-dr4.yaml").read_text())
        job = {
            "workdir": str(tmp / "work"),
            "ingest": {**shipped["ingest"], "source": str(tmp / "download" / "catalogs")},
            "images": str(tmp / "download" / "images"),
            "index_images": shipped["index_images"],
            "select": shipped["select"],
            "cutouts": {**shipped["cutouts"], "bands": ["r", "g"]},
            "model": str(write_untrained_model(tmp / "model", width=0.25)),
            "score": {},
            "candidates": shipped["candidates"],
        }
        (tmp / "job.yaml").write_text(yaml.safe_dump(job))
        began = time.perf_counter()
        run = subprocess.run(
            [*LENSDASK, "run", str(tmp / "job.yaml"), *cluster], capture_output=True, text=True
        )
        wall = time.perf_counter() - began
        print(run.stdout)
        what = f"{args.tiles} tiles of {args.tile_size} deg, {args.compress}"
        print(f"mock survey ({what}): {made:.0f} s")
        print(f"job up to the candidates: {wall:.0f} s, exit status {run.returncode}")
        from lensdask.formats.cutout_store import complete_tiles, read_tile

        store = tmp / "work" / "cutouts.zarr"
        tiles = complete_tiles(store)
        bad = [read_tile(store, tile) for tile in tiles]
        fractions = np.concatenate([getattr(t, "bad_fraction", t.nonfinite_fraction) for t in bad])
        n = fractions.shape[0]
        print(
            f"{len(tiles)} tiles, {n} cutouts: {int((fractions > 0).any(axis=1).sum())} with a bad "
            f"pixel in some band, {int((fractions > 0.05).any(axis=1).sum())} with more than 5%"
        )


if __name__ == "__main__":
    main()
