"""Benchmark: stamps resampled per second (``score.resample``), and scoring with and without.

Makes two cutout stores of ``--tiles`` x ``--per-tile`` synthetic cutouts, the same
galaxies at the model's 0.2"/px and at ``--scale`` (0.25"/px by default), and an
(untrained) ResNet-18 of ``--width`` whose card says 0.2"/px, then, side by side in one
run (this machine is noisy):

- **resampling alone**: :func:`lensdask.score.resample.resample_stamps` in this process on
  chunks of ``read_chunk`` (1024) stamps in memory, as a scoring task calls it, and the
  same stamps resampled by one reproject call per stamp (what batching saves);
- **scoring**: :func:`lensdask.score.scoring.score_cutouts` on a LocalCluster of
  ``--workers`` single-threaded workers, the store at 0.2"/px (no resampling) and the one
  at ``--scale`` with ``resample=True``, alternately ``--repeat`` times, after a warm-up
  that loads the model on the workers; the best run of each.

    python tests/benchmarks/bench_resample.py --tiles 4 --per-tile 512 --width 1.0
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL_SCALE = 0.2


def resample_rate(store: Path, scale: float, chunk: int) -> tuple[float, float]:
    """Stamps/s of :func:`resample_stamps` over the store's r-band stamps in chunks of
    ``chunk``, and of one reproject call per stamp (on 32 stamps)."""
    from lensdask.formats.cutout_store import complete_tiles, read_tile
    from lensdask.score.resample import resample_stamps

    stamps = np.concatenate(
        [read_tile(store, t, bands=("r",)).images["r"] for t in complete_tiles(store)]
    )
    resample_stamps(stamps[:8], from_scale=scale, to_scale=MODEL_SCALE, size=101)  # imports
    start = time.perf_counter()
    for first in range(0, stamps.shape[0], chunk):
        resample_stamps(
            stamps[first : first + chunk], from_scale=scale, to_scale=MODEL_SCALE, size=101
        )
    batched = stamps.shape[0] / (time.perf_counter() - start)
    start = time.perf_counter()
    for stamp in stamps[:32]:
        resample_stamps(stamp[None], from_scale=scale, to_scale=MODEL_SCALE, size=101)
    single = 32 / (time.perf_counter() - start)
    return batched, single


def score_rate(client, store: Path, model_dir: Path, out: Path, *, resample: bool) -> float:
    """Cutouts/s of one :func:`score_cutouts` run (the model already resident)."""
    from lensdask.config import ScoreConfig
    from lensdask.score.scoring import score_cutouts

    config = ScoreConfig(resample=resample)
    start = time.perf_counter()
    report = score_cutouts(store, model_dir, out, config=config, client=client, progress=False)
    wall = time.perf_counter() - start
    assert report.units.ok and not report.problems, report
    assert bool(report.resampled) == resample, report.resampled
    shutil.rmtree(out)
    return report.rows / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--per-tile", type=int, default=512)
    parser.add_argument("--scale", type=float, default=0.25, help="arcsec/px of the stamps")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="Work folder (default: tmp)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from lensdask.config import ScoreConfig
    from lensdask.formats.model_dir import CARD_FILE
    from lensdask.testing import write_cutout_store, write_untrained_model

    work = Path(tempfile.mkdtemp(prefix="bench-resample-", dir=args.dir))
    try:
        layout = {f"KIDS_{k}.0_0.5": {"LRG": args.per_tile} for k in range(args.tiles)}
        native = write_cutout_store(work / "native.zarr", layout, pixel_scale=MODEL_SCALE)
        coarse = write_cutout_store(work / "coarse.zarr", layout, pixel_scale=args.scale)
        warm = {"KIDS_99.0_0.5": {"LRG": 64}}
        warm_native = write_cutout_store(work / "wn.zarr", warm, pixel_scale=MODEL_SCALE)
        warm_coarse = write_cutout_store(work / "wc.zarr", warm, pixel_scale=args.scale)
        model_dir = write_untrained_model(work / "model", width=args.width)
        card = json.loads((model_dir / CARD_FILE).read_text())
        (model_dir / CARD_FILE).write_text(json.dumps({**card, "pixel_scale": MODEL_SCALE}))
        n = args.tiles * args.per_tile
        print(
            f'{n} cutouts of 101x101 in {args.tiles} tiles, {args.scale}"/px -> '
            f'{MODEL_SCALE}"/px; ResNet-18 width {args.width}'
        )
        batched, single = resample_rate(coarse, args.scale, ScoreConfig().read_chunk)
        print(f"resampling alone, 1 thread, chunks of 1024:   {batched:8.1f} stamps/s")
        print(f"resampling alone, 1 thread, one call a stamp: {single:8.1f} stamps/s")
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            score_rate(client, warm_native, model_dir, work / "w1", resample=False)
            score_rate(client, warm_coarse, model_dir, work / "w2", resample=True)
            rates: dict[bool, list[float]] = {False: [], True: []}
            for k in range(args.repeat):
                for resample, store in ((False, native), (True, coarse)):
                    out = work / f"scores-{resample}-{k}"
                    rates[resample].append(
                        score_rate(client, store, model_dir, out, resample=resample)
                    )
        plain, resampled = max(rates[False]), max(rates[True])
        print(
            f"scoring, {args.workers} worker(s) x 1 thread, stamps at the model's scale: "
            f"{plain:8.1f} cutouts/s"
        )
        print(
            f'scoring, {args.workers} worker(s) x 1 thread, resampled from {args.scale}"/px: '
            f"{resampled:8.1f} cutouts/s = {resampled / plain:.2f}x "
            f"(resampling then scoring, one after the other: 1/(1/{plain:.0f} + "
            f"1/({args.workers} x {batched:.0f})) = "
            f"{1 / (1 / plain + 1 / (args.workers * batched)):.0f})"
        )
        runs = {key: [round(r, 1) for r in values] for key, values in rates.items()}
        print(f"every run: without {runs[False]}, with {runs[True]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
