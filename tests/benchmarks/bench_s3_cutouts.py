"""Cutouts from FITS tiles on S3 against the same tiles on local disk, side by side: the
cutout kernel of one tile (open the image, read its rows block by block, slice every
stamp; ``bench_compressed.py``'s, each run in a fresh process) on a plain float32 tile, a
RICE_1 and a GZIP_2 one, read from the local file and from a local S3 server (moto's, the
tests' ``tests/s3.py``, in this process) through s3fs. The bytes read from S3 are counted
by the server: for all targets (a dense tile) and for a handful of stamps. The peer of a
cut from S3 is one GET of the whole file (``1 GET s``): what the server and s3fs can
deliver at best.

    .venv/bin/python tests/benchmarks/bench_s3_cutouts.py [--pixels 8000] [--targets 4000]

moto answers a ranged GET by copying the whole object first, so each request costs time in
proportion to the file's size: a real S3 does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_compressed import KINDS, write_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the S3 server
from s3 import running_s3_server

BUCKET = "lensdask-bench"


def cut(path: str, positions: Path, env: dict[str, str]) -> dict:
    """``bench_compressed.py --cut-one`` in a fresh process: seconds, stamps, peak RSS."""
    script = Path(__file__).with_name("bench_compressed.py")
    out = subprocess.run(
        [sys.executable, str(script), "--cut-one", path, str(positions)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FETCH_ALL = (
    "import json, sys, time, s3fs; fs = s3fs.S3FileSystem(); began = time.perf_counter(); "
    "n = len(fs.cat_file(sys.argv[1])); "
    "print(json.dumps({'seconds': time.perf_counter() - began, 'bytes': n}))"
)
"""The peer of a cut from S3: one GET of the whole file, in a fresh process."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=8000, help="side of the tile, px")
    parser.add_argument("--targets", type=int, default=4000, help="stamps of the dense run")
    parser.add_argument("--sparse", type=int, default=10, help="stamps of the sparse run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="keep the images here and reuse them")
    args = parser.parse_args()
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    with tempfile.TemporaryDirectory() as scratch, running_s3_server() as server:
        tmp = args.dir or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        paths = {
            kind: tmp / (f"tile_{kind}.fits" + ("" if level is None else ".fz"))
            for kind, level in KINDS.items()
        }
        began = time.perf_counter()
        if not all(path.exists() for path in paths.values()):
            paths = write_images(tmp, args.pixels)
        print(f"{args.pixels}x{args.pixels} px tiles ready in {time.perf_counter() - began:.0f} s")
        fs = s3fs.S3FileSystem(**server.storage_options)
        fs.mkdir(BUCKET)
        began = time.perf_counter()
        urls = {}
        for kind, path in paths.items():
            fs.put_file(str(path), f"{BUCKET}/{path.name}")
            urls[kind] = f"s3://{BUCKET}/{path.name}"
        print(f"uploaded to {server.endpoint} in {time.perf_counter() - began:.0f} s")
        sizes = {kind: path.stat().st_size for kind, path in paths.items()}
        rng = np.random.default_rng(1)
        dense, sparse = tmp / "xy_dense.npy", tmp / "xy_sparse.npy"
        np.save(dense, rng.uniform(0, args.pixels - 1, (args.targets, 2)))
        np.save(sparse, rng.uniform(0, args.pixels - 1, (args.sparse, 2)))
        # the children find the server where botocore looks: the AWS_* variables
        env = {**os.environ, **server.environment}
        runs: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for kind in KINDS:
                for where, path in (("local", str(paths[kind])), ("s3", urls[kind])):
                    server.traffic.reset()
                    result = cut(path, dense, env)
                    result["bytes"], result["reads"] = (
                        server.traffic.bytes_read,
                        server.traffic.reads,
                    )
                    runs.setdefault((kind, where), []).append(result)
        whole = {}
        for kind in KINDS:
            out = subprocess.run(
                [sys.executable, "-c", FETCH_ALL, urls[kind]],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            whole[kind] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        few = {}
        for kind in KINDS:
            server.traffic.reset()
            result = cut(urls[kind], sparse, env)
            few[kind] = (result["stamps"], server.traffic.bytes_read, server.traffic.reads)
    print(
        f"dense: {args.targets} stamps of 101 px on a {args.pixels} px tile; best of {args.rounds}"
    )
    print(
        f"{'image':<8} {'file MiB':>9} {'local /s':>9} {'S3 /s':>8} {'S3/local':>9} "
        f"{'S3 MiB read':>12} {'x file':>7} {'GETs':>5} {'peak RSS MiB local/S3':>22} "
        f"{'S3 s':>6} {'1 GET s':>8}"
    )
    for kind in KINDS:
        local = min(runs[kind, "local"], key=lambda r: r["seconds"])
        remote = min(runs[kind, "s3"], key=lambda r: r["seconds"])
        rate_local = local["stamps"] / local["seconds"]
        rate_s3 = remote["stamps"] / remote["seconds"]
        peaks = (
            f"{max(r['peak'] for r in runs[kind, 'local']):.0f}/"
            f"{max(r['peak'] for r in runs[kind, 's3']):.0f}"
        )
        print(
            f"{kind:<8} {sizes[kind] / 2**20:>9.1f} {rate_local:>9.0f} {rate_s3:>8.0f} "
            f"{rate_local / rate_s3:>8.2f}x {remote['bytes'] / 2**20:>12.1f} "
            f"{remote['bytes'] / sizes[kind]:>7.3f} {remote['reads']:>5} {peaks:>22} "
            f"{remote['seconds']:>6.2f} {whole[kind]:>8.2f}"
        )
    print(f"sparse: {args.sparse} stamps from S3 (rows they touch: 101 x row bytes each)")
    print(f"{'image':<8} {'stamps':>7} {'MiB read':>9} {'x file':>7} {'GETs':>5} {'x touched':>10}")
    for kind, (stamps, nbytes, reads) in few.items():
        touched = args.sparse * 101 * args.pixels * 4 * sizes[kind] / sizes["plain"]
        print(
            f"{kind:<8} {stamps:>7} {nbytes / 2**20:>9.2f} {nbytes / sizes[kind]:>7.3f} "
            f"{reads:>5} {nbytes / touched:>10.2f}"
        )


if __name__ == "__main__":
    main()
