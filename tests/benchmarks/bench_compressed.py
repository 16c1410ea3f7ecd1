"""Cutouts from tile-compressed FITS against the same tile uncompressed, side by side: the
cutout kernel of one tile (open the image, read its rows block by block, slice every stamp)
on a plain float32 image, RICE_1 (quantised, lossy) and GZIP_2 (lossless), each in a fresh
process, with that process's peak resident memory.

    .venv/bin/python tests/benchmarks/bench_compressed.py [--pixels 21000] [--targets 4000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KINDS = {"plain": None, "RICE_1": 16, "GZIP_2": 0}
"""Image kinds and their quantize_level (None: not compressed)."""


def write_images(folder: Path, pixels: int, *, seed: int = 0) -> dict[str, Path]:
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(pixels + 1) / 2, (pixels + 1) / 2]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 5.0, (pixels, pixels)).astype(np.float32)
    header = wcs.to_header()
    paths = {}
    for kind, level in KINDS.items():
        path = folder / (f"tile_{kind}.fits" + ("" if level is None else ".fz"))
        if level is None:
            fits.PrimaryHDU(data, header=header).writeto(path)
        else:
            hdu = fits.CompImageHDU(
                data, header=header, compression_type=kind, quantize_level=level or 0.0
            )
            fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
        paths[kind] = path
    return paths


def cut_one(path: str, positions: str) -> None:
    """In a fresh process: the cutout kernel on one image; prints seconds and peak RSS."""
    from lensdask.cutouts.extract import centre_inside, extract_stamps_by_rows
    from lensdask.cutouts.make import open_image, row_reader

    xy = np.load(positions)
    began = time.perf_counter()
    hdul, image, _, hdu = open_image(path, hdu=None)  # a path or URL (bench_s3_cutouts.py)
    inside = centre_inside(xy[:, 0], xy[:, 1], image.shape, size=101)
    stamps = extract_stamps_by_rows(
        row_reader(hdul, hdu), image.shape, xy[inside, 0], xy[inside, 1], size=101
    )
    hdul.close()
    seconds = time.perf_counter() - began
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its
    # parent's peak (the parent holds the whole image while writing it)
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"seconds": seconds, "stamps": int(stamps.data.shape[0]), "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=21000, help="side of the tile, px")
    parser.add_argument("--targets", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="keep the images here and reuse them")
    parser.add_argument("--cut-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cut_one:
        cut_one(*args.cut_one)
        return
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.dir or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        paths = {
            kind: tmp / (f"tile_{kind}.fits" + ("" if level is None else ".fz"))
            for kind, level in KINDS.items()
        }
        if not all(path.exists() for path in paths.values()):
            paths = write_images(tmp, args.pixels)
        sizes = {kind: path.stat().st_size / 2**20 for kind, path in paths.items()}
        print(f"wrote {args.pixels}x{args.pixels} px tiles in {time.perf_counter() - began:.0f} s")
        rng = np.random.default_rng(1)
        np.save(tmp / "xy.npy", rng.uniform(0, args.pixels - 1, (args.targets, 2)))
        runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind, path in paths.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--cut-one", str(path), str(tmp / "xy.npy")],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'image':<8} {'file MiB':>9} {'stamps/s':>9} {'peak RSS MiB':>13}")
    for kind, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        peak = max(r["peak"] for r in results)
        rate = best["stamps"] / best["seconds"]
        print(f"{kind:<8} {sizes[kind]:>9.0f} {rate:>9.0f} {peak:>13.0f}")


if __name__ == "__main__":
    main()
