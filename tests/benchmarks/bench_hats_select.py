"""Benchmark: `lensdask select` over a HATS catalog, over the same rows as per-tile Parquet,
and DuckDB over each set of files, in one run.

Generates (once) a mock survey of ``--tiles`` full tiles (1006 tiles: ~120M rows) with
`lensdask mock-survey --catalog-format hats`, which writes the per-tile catalog and the same
rows as a HATS catalog (at most ``--pixel-rows`` rows per HEALPix partition). Then runs,
alternately and ``--repeat`` times each: `lensdask select` over the HATS catalog (one unit
per pixel), `lensdask select` over the per-tile files (one unit per tile), both on
``--workers`` workers x 1 thread, and DuckDB (as many threads) with the same cuts over the
HATS partition files and over the tile files. Prints wall time, rows/s, peak memory of the
process tree and the ratio to DuckDB over the same files, checks that all four select the
same numbers of LRGs and BGs, and shows where lensdask's time goes beyond reading files.

    .venv/bin/python tests/benchmarks/bench_hats_select.py --tiles 1006 \
        --workdir /tmp/lensdask-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured
from bench_select import DUCKDB_SQL, duckdb_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1006)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    python = sys.executable
    lensdask = str(Path(python).with_name("lensdask"))
    seed = ["--seed", "2020", "--catalog-format", "hats"]
    cluster = ["--workers", str(args.workers), "--no-progress", "--dashboard-address", ":0"]
    threads = ["--threads-per-worker", "1"]
    survey = args.workdir / f"survey-{args.tiles}"
    catalogs = {"HATS": survey / "catalog_hats", "tiles": survey / "catalog"}

    gen = run_measured(
        [lensdask, "-q", "mock-survey", str(survey), "--tiles", str(args.tiles), *seed, *cluster]
    )
    rows = sum(json.loads(p.read_text())["rows"] for p in (survey / "_units").glob("*.json"))
    files = {
        "HATS": sorted((catalogs["HATS"] / "dataset").rglob("*.parquet")),
        "tiles": sorted(catalogs["tiles"].glob("*.parquet")),
    }
    print(
        f"catalog: {rows:,} rows; {len(files['tiles'])} tile files, "
        f"{len(files['HATS'])} HATS partitions"
    )
    print(f"  mock-survey (tiles + HATS, or reused): {gen.wall:.1f} s")
    for name, paths in files.items():
        print(f"  {name}: {sum(p.stat().st_size for p in paths) / 2**30:.2f} GiB of Parquet")

    globs = {"HATS": f"{catalogs['HATS']}/dataset/**", "tiles": str(catalogs["tiles"])}
    runs: dict[str, list] = {}
    counts: dict[str, str] = {}
    for _ in range(args.repeat):
        for name, catalog in catalogs.items():
            out = args.workdir / f"targets-{name}.parquet"
            shutil.rmtree(out, ignore_errors=True)
            run = run_measured(
                [lensdask, "select", str(catalog), "--out", str(out), *threads, *cluster]
            )
            runs.setdefault(f"lensdask {name}", []).append(run)
            counts[f"lensdask {name}"] = run.output.strip().splitlines()[-1]
            duck_out = args.workdir / f"duckdb-{name}.parquet"
            duck_out.unlink(missing_ok=True)
            sql = DUCKDB_SQL.format(catalog=globs[name], out=duck_out)
            sql = sql.replace("threads = 2", f"threads = {args.workers}")
            run = run_measured([python, str(duckdb_script(sql, args.workdir))])
            runs.setdefault(f"duckdb {name}", []).append(run)
            counts[f"duckdb {name}"] = " ".join(run.output.split())

    walls = {tool: statistics.median(r.wall for r in results) for tool, results in runs.items()}
    print(f"\n{'tool':<18}{'wall s':>9}{'rows/s':>14}{'peak GiB':>10}{'x DuckDB':>10}")
    for tool, results in runs.items():
        peak = max(r.peak_rss for r in results)
        duck = walls[f"duckdb {tool.split()[1]}"]
        print(
            f"{tool:<18}{walls[tool]:>9.1f}{rows / walls[tool]:>14,.0f}{peak / 2**30:>10.2f}"
            f"{walls[tool] / duck:>10.2f}"
        )
    print()
    for tool, line in counts.items():
        print(f"{tool + ':':<16}{line}")
    for name, paths in files.items():
        print_overhead(name, paths, catalogs[name], args.workdir, workers=args.workers)


def print_overhead(name: str, paths: list[Path], catalog: Path, workdir: Path, *, workers: int):
    """Where lensdask's time goes, in-process on a running cluster: the selection, the ID
    check it ends with, and the ideal of reading the files alone (one thread per worker)."""
    from distributed import Client, LocalCluster

    from lensdask.catalog.duplicates import CHECKED_FILE, check_target_ids
    from lensdask.catalog.select import read_tile_targets, select_targets
    from lensdask.config import SelectConfig

    config = SelectConfig()
    sample = paths[:: max(1, len(paths) // 20)]
    start = time.perf_counter()
    for path in sample:
        read_tile_targets(path, config=config)
    read = (time.perf_counter() - start) / len(sample) * len(paths) / workers
    out = workdir / f"inprocess-{name}.parquet"
    shutil.rmtree(out, ignore_errors=True)
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        select_targets(catalog, out, client=client, progress=False)
        total = time.perf_counter() - start
        (out / CHECKED_FILE).unlink()  # checked again, timed alone
        start = time.perf_counter()
        check_target_ids(out, mode="error", stage="select", client=client, progress=False)
        ids = time.perf_counter() - start
    print(f"\nwhere the time goes ({name}: {len(paths)} files, {workers} workers, in-process):")
    print(f"  select_targets on a running cluster: {total:6.1f} s")
    print(f"    of which the repeated-ID check:    {ids:6.1f} s")
    print(f"  reading + cuts alone (ideal):        {read:6.1f} s")
    print(f"  per-unit overhead: {(total - ids - read) / len(paths) * 1000 * workers:.0f} ms")


if __name__ == "__main__":
    main()
