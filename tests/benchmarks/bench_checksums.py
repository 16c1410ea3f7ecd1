"""What the checksums cost: a cutout tile's Zarr group written and read with and without
the crc32c codec, and a Parquet table with and without page checksums, side by side in one
run (this machine is noisy: alternating rounds, the best of each).

    .venv/bin/python tests/benchmarks/bench_checksums.py [--cutouts 3000] [--rows 2000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def zarr_round(folder: Path, images: np.ndarray, *, checksum: bool) -> tuple[float, float]:
    import zarr
    from zarr.codecs import Crc32cCodec

    if folder.exists():
        shutil.rmtree(folder)
    began = time.perf_counter()
    group = zarr.open_group(str(folder), mode="w-")
    array = group.create_array(
        "r",
        shape=images.shape,
        dtype="float32",
        chunks=(256, *images.shape[1:]),
        shards=(-(-images.shape[0] // 256) * 256, *images.shape[1:]),
        compressors=(Crc32cCodec(),) if checksum else None,
        fill_value=np.nan,
    )
    array[:] = images
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    back = zarr.open_array(str(folder / "r"), mode="r")
    for start in range(0, images.shape[0], 1024):
        back[start : start + 1024]
    return wrote, time.perf_counter() - began


def parquet_round(path: Path, table, *, checksum: bool) -> tuple[float, float]:
    import pyarrow.parquet as pq

    began = time.perf_counter()
    pq.write_table(table, path, compression="zstd", write_page_checksum=checksum)
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    pq.read_table(path, page_checksum_verification=checksum)
    return wrote, time.perf_counter() - began


def main() -> None:
    import pyarrow as pa

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutouts", type=int, default=3000, help="cutouts in the tile")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the table")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.normal(100, 5, (args.cutouts, 101, 101)).astype(np.float32)
    table = pa.table(
        {
            "ID": [f"KiDS J{k:012d}" for k in range(args.rows)],
            "p_cnn": rng.random(args.rows).astype(np.float32),
            "sample": np.where(rng.random(args.rows) < 0.1, "LRG", "BG"),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for checksum in (False, True):
                times.setdefault(("zarr", checksum), []).append(
                    zarr_round(tmp / "tile.zarr", images, checksum=checksum)
                )
                times.setdefault(("parquet", checksum), []).append(
                    parquet_round(tmp / "t.parquet", table, checksum=checksum)
                )
    mib = {"zarr": images.nbytes / 2**20, "parquet": table.nbytes / 2**20}
    print(f"{'format':<8} {'checksums':<10} {'write MiB/s':>12} {'read MiB/s':>11}")
    for fmt in ("zarr", "parquet"):
        rates = {}
        for checksum in (False, True):
            write = min(t[0] for t in times[(fmt, checksum)])
            read = min(t[1] for t in times[(fmt, checksum)])
            rates[checksum] = (mib[fmt] / write, mib[fmt] / read)
            label = "on" if checksum else "off"
            print(f"{fmt:<8} {label:<10} {rates[checksum][0]:>12.0f} {rates[checksum][1]:>11.0f}")
        print(
            f"{fmt:<8} cost: write {100 * (rates[False][0] / rates[True][0] - 1):+.1f}%, "
            f"read {100 * (rates[False][1] / rates[True][1] - 1):+.1f}% (time with/without - 1)"
        )


if __name__ == "__main__":
    main()
