"""Benchmark: the header scan of `lensdask index-images`, and position matching.

Writes (once) ``--files`` small FITS images (100 x 100 px, TAN WCS, every fourth one
tile-compressed ``.fits.fz``) on a grid of 1.1 deg tiles, then indexes them by reading their
headers on a LocalCluster of ``--workers`` workers x 1 thread, ``--repeat`` times into a
fresh folder, and once more into the same folder (a rerun: every batch complete). Prints
the files per second of the scan (wall time of :func:`index_images`, planning included),
then places ``--targets`` random targets on the index's groups with
:func:`lensdask.images.match.match_targets` and prints targets per second.

    .venv/bin/python tests/benchmarks/bench_image_index.py --files 1000 --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

WIDTH = 100
SCALE = 40.0  # arcsec/px: 1.11 deg images on a 1.1 deg grid
COLUMNS = 40


def write_files(folder: Path, n: int) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((WIDTH, WIDTH), np.float32)
    for k in range(n):
        ra, dec = 100.0 + 1.1 * (k % COLUMNS), -20.0 + 1.1 * (k // COLUMNS)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [ra, dec]
        wcs.wcs.crpix = [(WIDTH + 1) / 2] * 2
        wcs.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
        header = wcs.to_header()
        header["FILTER"] = "r_SDSS"
        header["OBJECT"] = f"KIDS_{ra:.1f}_{dec:.1f}"
        if k % 4 == 3:
            hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type="RICE_1")]
            name = f"img{k:05d}.fits.fz"
        else:
            hdus = [fits.PrimaryHDU(data, header)]
            name = f"img{k:05d}.fits"
        fits.HDUList(hdus).writeto(folder / name, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--targets", type=int, default=100_000)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from lensdask.config import ImageIndexConfig
    from lensdask.images.index import index_images
    from lensdask.images.match import match_targets

    images = args.workdir / f"images-{args.files}"
    if not images.is_dir() or len(list(images.iterdir())) != args.files:
        shutil.rmtree(images, ignore_errors=True)
        start = time.perf_counter()
        write_files(images, args.files)
        print(f"wrote {args.files} FITS files in {time.perf_counter() - start:.1f} s")
    config = ImageIndexConfig(preset="kids-dr4-headers", batch_size=args.batch_size)
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        walls = []
        for k in range(args.repeat):
            out = args.workdir / f"index-{k}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            report = index_images(images, out, config=config, client=client, progress=False)
            walls.append(time.perf_counter() - start)
            assert report.images == args.files, report.images
        start = time.perf_counter()
        index_images(images, out, config=config, client=client, progress=False)
        rerun = time.perf_counter() - start
    best, median = min(walls), statistics.median(walls)
    print(
        f"header scan, {args.files} files, {args.workers} workers x 1 thread, batches of "
        f"{args.batch_size}: {args.files / median:.0f} files/s (median of {args.repeat}; "
        f"best {args.files / best:.0f} files/s, {median:.2f} s); rerun with every batch "
        f"complete: {rerun:.2f} s"
    )

    index = report.index
    rng = np.random.default_rng(0)
    rows = args.files // COLUMNS
    ra = rng.uniform(99.5, 100.0 + 1.1 * COLUMNS, args.targets)
    dec = rng.uniform(-20.5, -20.0 + 1.1 * rows, args.targets)
    start = time.perf_counter()
    match = match_targets(ra, dec, index, band="r")
    wall = time.perf_counter() - start
    print(
        f"position matching, {args.targets} targets against {len(index)} images: "
        f"{wall:.2f} s ({args.targets / wall:.0f} targets/s); {match.counts}"
    )


if __name__ == "__main__":
    main()
