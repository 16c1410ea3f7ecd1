"""Benchmark: the review loop without people, on a mock survey with injected lenses and
the confusing galaxy kinds (spirals, rings, mergers).

Makes the catalogs of ``--tiles`` mock tiles (the catalog only: which galaxies are lenses
is decided there), scores the bright galaxies with a stand-in classifier drawn from the
truth (lenses high, the confusing kinds in between, the rest low), picks the candidates
with a random exploration of ``--explore`` targets below the threshold, has ``--graders``
simulated graders grade them into the grades database (``lensdask simulate-graders``),
exports the grades and ranks them (``lensdask rank``). Prints the time of each step, the
graders' measured error rates against the configured ones, the purity and completeness of
the high-quality candidates, and the lenses missed by the search as estimated from the
exploration against the truth.

    .venv/bin/python tests/benchmarks/bench_review_loop.py --tiles 4 --explore 400 \
        --graders 3 --p-lens 0.9 --q-non-lens 0.9
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--tile-size", type=float, default=0.5, help="deg")
    parser.add_argument("--explore", type=int, default=400)
    parser.add_argument("--graders", type=int, default=3)
    parser.add_argument("--p-lens", type=float, default=0.9)
    parser.add_argument("--q-non-lens", type=float, default=0.9)
    parser.add_argument("--threshold", type=float, default=0.8, help="p_cnn of a candidate")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from click.testing import CliRunner
    from distributed import Client, LocalCluster

    from lensdask.cli import main as cli
    from lensdask.config import CandidateConfig
    from lensdask.mock.survey import tile_catalog
    from lensdask.mock.tiles import survey_tiles
    from lensdask.score.candidates import select_candidates
    from lensdask.testing import small_survey_config

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lensdask-review-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    config = small_survey_config(
        tiles=args.tiles,
        tile_size=args.tile_size,
        images=True,  # lenses are chosen in the catalog; no image is rendered here
        density=30_000.0,
        lrg_density=1000.0,
        lens_fraction=0.3,
        lens_bg_fraction=0.01,
        spiral_fraction=0.1,
        ring_fraction=0.05,
        merger_fraction=0.05,
    )
    clock = {}
    start = time.perf_counter()
    catalog_dir = work / "catalog"
    catalog_dir.mkdir(exist_ok=True)
    frames = []
    for tile in survey_tiles(config.tiles):
        table = tile_catalog(tile, config=config)
        pq.write_table(table, catalog_dir / f"{tile.name}.parquet")
        frames.append(table.to_pandas())
    catalog = pd.concat(frames, ignore_index=True)
    clock["mock catalog"] = time.perf_counter() - start

    targets = catalog[(catalog["SG2DPHOT"] == 0) & (catalog["MAG_AUTO"] <= 21)].copy()
    kinds = targets["TRUE_TYPE"].astype(str)
    lens = targets["TRUE_LENS"].to_numpy()
    confusing = kinds.isin(["spiral", "ring", "merger"]).to_numpy()
    rng = np.random.default_rng(0)
    n = len(targets)
    targets["p_cnn"] = np.where(
        lens,
        rng.beta(6, 1.5, n),
        np.where(confusing, rng.beta(3, 2, n), rng.beta(0.3, 8, n)),
    ).astype(np.float32)
    scores = work / "scores"
    scores.mkdir(exist_ok=True)
    for tile, part in targets.assign(sample="BG", model_id="stand-in").groupby("THELI_NAME"):
        part[["ID", "THELI_NAME", "sample", "p_cnn", "model_id"]].to_parquet(
            scores / f"{tile}.parquet", index=False
        )

    candidates = work / "candidates.parquet"
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        select_candidates(
            scores,
            candidates,
            config=CandidateConfig(thresholds={"BG": args.threshold}, explore=args.explore),
            client=client,
            progress=False,
        )
        clock["candidates + exploration"] = time.perf_counter() - start
    table = pd.read_parquet(candidates)

    db, export, ranking = work / "grades.sqlite", work / "grades.csv", work / "ranking.csv"
    db.unlink(missing_ok=True)
    runner = CliRunner()
    steps = {
        "simulate-graders": [
            "simulate-graders",
            candidates,
            "--truth",
            catalog_dir,
            "--db",
            db,
            "--graders",
            args.graders,
            "--p-lens",
            args.p_lens,
            "--q-non-lens",
            args.q_non_lens,
        ],
        "inspect export": ["inspect", "export", "--db", db, "--out", export],
        "rank": ["rank", "--scores", candidates, "--grades", export, "--out", ranking],
    }
    for name, command in steps.items():
        start = time.perf_counter()
        result = runner.invoke(cli, [str(arg) for arg in command])
        clock[name] = time.perf_counter() - start
        if result.exit_code != 0:
            raise SystemExit(f"{name} failed:\n{result.output}")
        if name == "simulate-graders":
            print(result.output.rstrip())

    truth = targets.set_index("ID")["TRUE_LENS"]
    grades = pd.read_csv(export)
    is_lens = grades["candidate_id"].map(truth).astype(bool)
    says = grades["grade"].isin(["A", "B"])
    ranked = pd.read_csv(ranking)
    apart = pd.read_csv(ranking.with_name("ranking_exploration.csv"))
    found = table[~table["explore"]]
    explored = table[table["explore"]]
    good = ranked[ranked["quality"] != "low"]
    below = targets["p_cnn"].astype(np.float64) <= args.threshold
    missed_true = int(targets["TRUE_LENS"][below].sum())
    share = float(truth[explored["ID"]].mean()) if len(explored) else float("nan")
    missed_estimate = share * int(below.sum())
    sigma = np.sqrt(share * (1 - share) / max(len(explored), 1)) * int(below.sum())

    print(f"\nworkdir {work}")
    print(f"targets {n}: {int(lens.sum())} lenses, {int(confusing.sum())} spirals/rings/mergers")
    print(f"candidates {len(found)} ({int(truth[found['ID']].sum())} lenses); exploration ", end="")
    print(f"{len(explored)} ({int(truth[explored['ID']].sum())} lenses)")
    print(f"grades {len(grades)} by {grades['grader'].nunique()} simulated graders")
    print(
        f"lenses graded A/B: {says[is_lens].mean():.4f} (p = {args.p_lens}); non-lenses "
        f"graded C/D: {(~says[~is_lens]).mean():.4f} (q = {args.q_non_lens})"
    )
    print(
        f"high-quality candidates {len(good)}: purity {truth[good['candidate_id']].mean():.3f}, "
        f"{int(truth[good['candidate_id']].sum())} of {int(truth[found['ID']].sum())} "
        "candidate lenses"
    )
    print(
        f"exploration table {len(apart)} rows, {int((apart['quality'] != 'low').sum())} "
        "high-quality"
    )
    print(
        f"lenses below the threshold: estimated {missed_estimate:.0f} +- {sigma:.0f} from "
        f"the exploration, true {missed_true}"
    )
    for name, seconds in clock.items():
        print(f"{name:28s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
