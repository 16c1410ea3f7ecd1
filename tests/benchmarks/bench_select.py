"""Benchmark: `lensdask select` against DuckDB on a KiDS-DR4-sized mock catalog.

Generates (once) a mock catalog of ``--tiles`` full tiles (1006 tiles: ~120M rows) with
`lensdask mock-survey` and reports its generation rate; then runs, alternately and
``--repeat`` times each, `lensdask select` (2 workers x 1 thread) and DuckDB (2 threads)
applying the same cuts to the same files and writing Parquet. Prints wall time, rows/s,
peak memory of the whole process tree, the ratio to DuckDB, and checks that both select
the same numbers of LRGs and BGs.

    .venv/bin/python tests/benchmarks/bench_select.py --tiles 1006 --workdir /tmp/lensdask-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import add_calibration_options, record_calibration, run_measured

DUCKDB_SQL = """
SET threads = 2;
COPY (
  SELECT ID, RAJ2000, DECJ2000, THELI_NAME, SG2DPHOT, MAG_AUTO,
         COLOUR_GAAP_g_r, COLOUR_GAAP_r_i, Z_B,
         CASE WHEN MAG_AUTO::DOUBLE < 14 + (0.7 * COLOUR_GAAP_g_r::DOUBLE
                    + 1.2 * (COLOUR_GAAP_r_i::DOUBLE - 0.18)) / 0.3
               AND abs(COLOUR_GAAP_r_i::DOUBLE - COLOUR_GAAP_g_r::DOUBLE / 4.0 - 0.18) < 0.2
               AND MAG_AUTO::DOUBLE <= 20
              THEN 'LRG' ELSE 'BG' END AS sample
  FROM read_parquet('{catalog}/*.parquet')
  WHERE SG2DPHOT = 0 AND MAG_AUTO::DOUBLE <= 21
) TO '{out}' (FORMAT parquet, COMPRESSION zstd);
SELECT sample, count(*) FROM read_parquet('{out}') GROUP BY sample ORDER BY sample;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1006)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    add_calibration_options(parser)
    args = parser.parse_args()
    python = sys.executable
    lensdask = str(Path(python).with_name("lensdask"))
    survey = args.workdir / f"survey-{args.tiles}"
    catalog = survey / "catalog"

    gen = run_measured(
        [
            lensdask,
            "-q",
            "mock-survey",
            str(survey),
            "--tiles",
            str(args.tiles),
            "--seed",
            "2020",
            "--workers",
            str(args.workers),
            "--no-progress",
            "--dashboard-address",
            ":0",
        ]
    )
    rows = sum(json.loads(p.read_text())["rows"] for p in (survey / "_units").glob("*.json"))
    generated = "generated" if "0 already complete" in gen.output else "already there (reused)"
    print(f"catalog: {rows:,} rows in {args.tiles} files, {generated}")
    if "0 already complete" in gen.output:
        print(
            f"  mock-survey: {gen.wall:.1f} s, {rows / gen.wall:,.0f} rows/s, "
            f"peak {gen.peak_rss / 2**30:.2f} GiB ({args.workers} workers)"
        )
    size = sum(p.stat().st_size for p in catalog.glob("*.parquet"))
    print(f"  {size / 2**30:.2f} GiB of Parquet")

    runs: dict[str, list] = {"lensdask select": [], "duckdb": []}
    counts: dict[str, str] = {}
    for _ in range(args.repeat):
        out = args.workdir / "targets.parquet"
        shutil.rmtree(out, ignore_errors=True)
        run = run_measured(
            [
                lensdask,
                "select",
                str(catalog),
                "--out",
                str(out),
                "--workers",
                str(args.workers),
                "--threads-per-worker",
                "1",
                "--no-progress",
                "--dashboard-address",
                ":0",
            ]
        )
        runs["lensdask select"].append(run)
        counts["lensdask select"] = run.output.strip().splitlines()[-1]
        duck_out = args.workdir / "duckdb-targets.parquet"
        duck_out.unlink(missing_ok=True)
        script = duckdb_script(DUCKDB_SQL.format(catalog=catalog, out=duck_out), args.workdir)
        run = run_measured([python, str(script)])
        runs["duckdb"].append(run)
        counts["duckdb"] = " ".join(run.output.split())

    duck_wall = statistics.median(r.wall for r in runs["duckdb"])
    print(f"\n{'tool':<18}{'wall s':>9}{'rows/s':>14}{'peak GiB':>10}{'x DuckDB':>10}")
    for tool, results in runs.items():
        wall = statistics.median(r.wall for r in results)
        peak = max(r.peak_rss for r in results)
        print(
            f"{tool:<18}{wall:>9.1f}{rows / wall:>14,.0f}{peak / 2**30:>10.2f}"
            f"{wall / duck_wall:>10.2f}"
        )
    wall = statistics.median(r.wall for r in runs["lensdask select"])
    record_calibration(
        args,
        stage="select",
        mode="cpu",
        quantity="catalog rows",
        rate=rows / wall / args.workers,
        figure=f"lensdask select: {rows:,} rows in {wall:.1f} s on {args.workers} workers x "
        "1 thread (CLI, start-up included)",
    )
    print(f"\nlensdask: {counts['lensdask select']}")
    print(f"duckdb:   {counts['duckdb']}")
    print_gap(catalog, workers=args.workers)


def print_gap(catalog: Path, *, workers: int, n_files: int = 60) -> None:
    """Where the time goes: cluster start-up, and one file read by each engine in-process on
    one thread (lensdask's pyarrow read + cuts vs DuckDB's reader with the same filter)."""
    import time

    import duckdb
    from distributed import Client, LocalCluster

    from lensdask.catalog.select import read_tile_targets
    from lensdask.config import SelectConfig

    start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster:
        Client(cluster).close()
        pass
    startup = time.perf_counter() - start
    files = sorted(catalog.glob("*.parquet"))[:n_files]
    start = time.perf_counter()
    for path in files:
        read_tile_targets(path, config=SelectConfig())
    ours = (time.perf_counter() - start) / len(files)
    con = duckdb.connect()
    con.sql("SET threads = 1")
    query = DUCKDB_SQL.split("COPY (")[1].split(") TO")[0].replace("{catalog}/*.parquet", "{path}")
    start = time.perf_counter()
    for path in files:
        con.sql(query.format(path=path)).to_arrow_table()  # drained, not a lazy reader
    duck = (time.perf_counter() - start) / len(files)
    print("\nwhere the time goes (one thread, in-process, per catalog file):")
    print(f"  LocalCluster start-up ({workers} workers): {startup:.1f} s")
    print(f"  lensdask read_tile_targets (pyarrow + cuts): {ours * 1000:.1f} ms")
    print(f"  DuckDB, same columns and filter:             {duck * 1000:.1f} ms")


def duckdb_script(sql: str, workdir: Path) -> Path:
    """A Python script that runs the statements of ``sql`` in DuckDB and prints results."""
    path = workdir / "duckdb_select.py"
    path.write_text(
        "import duckdb\n"
        "con = duckdb.connect()\n"
        f"for statement in {sql!r}.split(';'):\n"
        "    if statement.strip():\n"
        "        result = con.sql(statement)\n"
        "        if result is not None:\n"
        "            print(result.fetchall())\n"
    )
    return path


if __name__ == "__main__":
    main()
