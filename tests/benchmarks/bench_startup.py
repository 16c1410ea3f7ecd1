"""Benchmark: the fixed costs of a small job, phase by phase.

Measures, alternately and ``--repeat`` times each (median), every phase in a fresh Python
process as a stage command meets it:

- ``lensdask --help`` and ``lensdask <stage> --help`` (whole commands);
- importing ``lensdask.cli`` and the stage's modules (its run function, what its pre-flight
  check and its error handling import), with the heavy libraries that came with them;
- starting its cluster with :func:`lensdask.cluster.connect` (``--workers`` local workers,
  dashboard on, lensdask's worker plugins registered), two ways: workers spawned as Dask
  does by default (``preload=()``), and workers forked from a fork server that has
  imported the stage's modules (``preload=stage.preload``, what the stage commands do);
- the first task on each worker: importing what the stage's units import
  (:attr:`lensdask.stages.Stage.preload`), as its first unit would;
- saving the Dask performance report of a one-task run (what every command does at its end);
- closing the cluster;

then runs the whole stage command (``lensdask cutouts`` by default) on a one-tile mock survey
of ``--targets``-ish targets, so that its wall time is nearly all fixed cost.

    .venv/bin/python tests/benchmarks/bench_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured

HEAVY = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "astropy",
    "zarr",
    "distributed",
    "bokeh",
    "matplotlib",
    "tensorflow",
    "keras",
)

PHASES = r"""
import json, sys, time

def main():
    stage_name, workers, preload, report = sys.argv[1:5]
    workers, preload = int(workers), preload == "1"
    times = {}
    start = time.perf_counter()
    import lensdask.cli
    from lensdask.stages import stage_named
    stage = stage_named(stage_name)
    times["import lensdask.cli"] = time.perf_counter() - start
    start = time.perf_counter()
    from lensdask.cli.stages import handle_errors
    from lensdask.preflight import check_stage  # noqa: F401
    handle_errors(lambda: None)()
    stage.run_function()
    if stage.check:
        stage.check_function()
    times["import the stage's modules"] = time.perf_counter() - start
    heavy = [m for m in HEAVY if m in sys.modules]
    start = time.perf_counter()
    from pathlib import Path
    from lensdask.cli.cluster import performance_report
    from lensdask.cluster import ClusterSpec, connect
    spec = ClusterSpec(
        n_workers=workers, dashboard_address="127.0.0.1:0",
        preload=stage.preload if preload else (),
    )
    with connect(spec) as client:
        client.wait_for_workers(workers)
        times["start the cluster"] = time.perf_counter() - start

        def first_imports(modules):
            import importlib, time
            begin = time.perf_counter()
            for module in modules:
                importlib.import_module(module)
            return time.perf_counter() - begin

        start = time.perf_counter()
        futures = [
            client.submit(first_imports, stage.preload, workers=[address], pure=False)
            for address in client.scheduler_info()["workers"]
        ]
        client.gather(futures)
        times["first task's imports (wall)"] = time.perf_counter() - start
        start = time.perf_counter()
        with performance_report(Path(report)):
            client.submit(sum, [1, 2]).result()
        times["performance report"] = time.perf_counter() - start
        close = time.perf_counter()
    times["close the cluster"] = time.perf_counter() - close
    print(json.dumps({"times": times, "heavy": heavy}))

HEAVY = %r
if __name__ == "__main__":
    main()
"""


def lensdask_cli() -> str:
    return str(Path(sys.executable).with_name("lensdask"))


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def phases(stage: str, workers: int, *, preload: bool, folder: Path) -> dict:
    """One fresh process through the phases of a stage command; seconds by phase."""
    script = folder / "phases.py"
    script.write_text(PHASES % (HEAVY,))
    out = run_measured(
        [
            sys.executable,
            str(script),
            stage,
            str(workers),
            "1" if preload else "0",
            str(folder / "report.html"),
        ]
    ).output
    return json.loads(out.strip().splitlines()[-1])


def tiny_survey(folder: Path) -> tuple[Path, Path]:
    """A one-tile mock survey of 0.05 deg (900 x 900 px) and its targets (a few)."""
    if not (folder / "targets.parquet" / "_manifest.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        common = ["--workers", "1", "--no-progress", "--dashboard-address", ":0"]
        run_measured(
            [
                lensdask_cli(),
                "-q",
                "mock-survey",
                str(folder),
                "--tiles",
                "1",
                "--tile-size",
                "0.05",
                "--images",
                "--bands",
                "r",
                "--seed",
                "1",
                *common,
            ]
        )
        run_measured(
            [
                lensdask_cli(),
                "-q",
                "select",
                str(folder / "catalog"),
                "--out",
                str(folder / "targets.parquet"),
                *common,
            ]
        )
    return folder / "targets.parquet", folder / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--stage", default="cutouts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = args.workdir / "startup"
    folder.mkdir(parents=True, exist_ok=True)
    targets, images = tiny_survey(args.workdir / "startup-survey")

    helps: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, dict[str, list[float]]] = {
        "spawned": defaultdict(list),
        "forked": defaultdict(list),
    }
    heavy: list[str] = []
    command: list[float] = []
    for _ in range(args.repeat):
        helps["lensdask --help"].append(wall([lensdask_cli(), "--help"]))
        helps[f"lensdask {args.stage} --help"].append(wall([lensdask_cli(), args.stage, "--help"]))
        for name, preload in (("spawned", False), ("forked", True)):
            result = phases(args.stage, args.workers, preload=preload, folder=folder)
            heavy = result["heavy"]
            for phase, seconds in result["times"].items():
                runs[name][phase].append(seconds)
        if args.stage == "cutouts":
            out = folder / "cutouts.zarr"
            shutil.rmtree(out, ignore_errors=True)
            command.append(
                run_measured(
                    [
                        lensdask_cli(),
                        "-q",
                        "cutouts",
                        str(targets),
                        "--images",
                        str(images),
                        "--bands",
                        "r",
                        "--out",
                        str(out),
                        "--workers",
                        str(args.workers),
                        "--no-progress",
                        "--dashboard-address",
                        ":0",
                    ]
                ).wall
            )

    print(f"median of {args.repeat}, seconds; {args.workers} local workers")
    for name, walls in helps.items():
        print(f"  {name:<44}{statistics.median(walls):>8.2f}")
    print(f"\nphases of `lensdask {args.stage}` (each run in a fresh process)")
    print(f"  {'phase':<44}{'spawned':>8}{'forked':>8}")
    for phase in runs["spawned"]:
        spawned = statistics.median(runs["spawned"][phase])
        forked = statistics.median(runs["forked"][phase])
        print(f"  {phase:<44}{spawned:>8.2f}{forked:>8.2f}")
    fixed = (
        "import lensdask.cli",
        "import the stage's modules",
        "start the cluster",
        "first task's imports (wall)",
    )
    for name in ("spawned", "forked"):
        total = sum(statistics.median(runs[name][phase]) for phase in fixed)
        print(f"  start-up, {name} workers (imports + cluster + first imports): {total:.2f} s")
    print(f"  heavy modules the client has imported before the cluster: {', '.join(heavy)}")
    if command:
        print(
            f"\n`lensdask cutouts` on a one-tile survey ({targets.parent.name}), whole "
            f"command: {statistics.median(command):.2f} s"
        )


if __name__ == "__main__":
    main()
