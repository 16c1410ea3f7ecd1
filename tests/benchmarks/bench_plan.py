"""Benchmark: the dry-run plan of an LSST-sized job, and the scheduler memory its widest
stage takes.

Prints the plan of ``--job`` (default ``jobs/lsst.yaml``: 18,000 tiles, ~2.1 billion
sources), then submits, the way every stage does (:func:`lensdask.runner.run_units`: one
task per unit, one ``client.map``), as many tasks as the plan's widest stage has units,
with arguments of a stage's size, to a 2-worker LocalCluster, and samples the scheduler's
resident memory while they run. The same is done with a tenth of the tasks, to show the
growth per task. The tasks do nothing; what is measured is the scheduler's bookkeeping,
which depends on the number of tasks, never on the galaxies behind them.

    python tests/benchmarks/bench_plan.py
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def unit_task(unit: str, out: Path, *, chash: str, config: dict) -> dict:
    """A no-op unit that returns a summary of a stage's size."""
    return {"unit": unit, "rows": 3800, "per_sample": {"LRG": 130, "BG": 3670}}


def scheduler_rss(client) -> int:
    import psutil

    return client.run_on_scheduler(lambda: psutil.Process().memory_info().rss)


def measure(client, units: int) -> tuple[float, int, float]:
    """Seconds, peak scheduler RSS growth (bytes) and tasks/s for ``units`` tasks."""
    from lensdask.runner import run_units

    base = scheduler_rss(client)
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, scheduler_rss(client))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    config = {"bands": ["r", "g", "i"], "size": 101, "chunk": 256, "images": "/data/lsst"}
    report = run_units(
        client,
        unit_task,
        [f"LSST_{k:05d}" for k in range(units)],
        Path("/data/lsst/cutouts.zarr"),
        stage="bench",
        progress=False,
        chash="0123456789abcdef",
        config=config,
    )
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    assert report.ok and len(report.results) == units
    return wall, peak - base, units / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "lsst.yaml")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from lensdask.job import load_job
    from lensdask.pipeline import chosen_stages
    from lensdask.plan import format_bytes, plan_job, plan_lines

    config = load_job(args.job)
    plans = plan_job(config, chosen_stages(config, None))
    print("\n".join(plan_lines(plans)))
    widest = max(plan.tasks or 0 for plan in plans)
    total_rows = max(plan.rows or 0 for plan in plans)
    print(f"\nwidest stage: {widest:,} tasks for up to {total_rows:,} rows")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        measure(client, 200)  # warm-up
        for units in (widest // 10, widest):
            wall, grew, rate = measure(client, units)
            print(
                f"{units:>7,} tasks: scheduler RSS +{format_bytes(grew)} at peak "
                f"({grew / units / 1024:.1f} KiB per task), {wall:.1f} s, {rate:,.0f} tasks/s"
            )
        print(f"scheduler RSS after: {format_bytes(scheduler_rss(client))}")


if __name__ == "__main__":
    main()
