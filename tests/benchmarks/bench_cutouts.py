"""Benchmark: cutouts/s of `lensdask cutouts` against a Cutout2D loop, and a worker's memory.

Part 1 (speed). Makes (once) a mock survey of ``--tiles`` tiles of ``--tile-size`` deg with
r-band images (0.6 deg = 10800 x 10800 px) and selects its targets; then runs, alternately
and ``--repeat`` times each, on the same FITS files (in the page cache):

- `lensdask cutouts --workers 1` and `--workers 2` as users run them (a subprocess: imports,
  cluster start-up, Zarr write and completion markers included; fresh store each time);
- :func:`lensdask.cutouts.make.make_cutouts` in this process on an already-running
  ``LocalCluster`` of 1 and 2 workers (so cluster start-up is timed apart), with the
  workers' busy time from the task stream;
- a loop of ``astropy.nddata.Cutout2D`` per target (one process, the tile opened with
  ``memmap=True``, ``.data`` copied into a preallocated array; no write).

It prints cutouts/s, the ratios to the Cutout2D loop, checks that the store's pixels equal
the loop's, and times the kernel's steps on one tile in-process (where the time goes).

Part 2 (memory). Makes (once) one full-size tile (``--full-pixels``, 21000 px: ~1.7 GB of
float32) and cuts it with one worker: the whole process tree of `lensdask cutouts
--workers 1` sampled per process, and a 1-worker ``LocalCluster`` whose worker pid is
sampled (RSS, and its anonymous and file-backed parts from /proc) plus the kernel's
high-water mark of its RSS (``VmHWM``); then, optionally, the same command under
``--memory-limit`` (Dask's nanny counts RSS, file-backed pages included).

    .venv/bin/python tests/benchmarks/bench_cutouts.py --workdir /tmp/lensdask-bench
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import add_calibration_options, record_calibration, run_measured

GiB = 2**30
MiB = 2**20


def lensdask_cli() -> str:
    """The `lensdask` entry point next to this Python."""
    return str(Path(sys.executable).with_name("lensdask"))


def cluster_options(workers: int) -> list[str]:
    return ["--workers", str(workers), "--no-progress", "--dashboard-address", ":0"]


def ensure_survey(
    folder: Path,
    *,
    tiles: int,
    tile_size: float,
    image_pixels: int | None = None,
    seed: int = 2020,
    workers: int = 2,
) -> tuple[Path, Path]:
    """Make (or reuse) a mock survey with r-band images and its targets; (targets, images)."""
    cmd = [lensdask_cli(), "-q", "mock-survey", str(folder), "--tiles", str(tiles)]
    cmd += ["--tile-size", str(tile_size), "--images", "--bands", "r", "--seed", str(seed)]
    if image_pixels:
        cmd += ["--image-pixels", str(image_pixels)]
    done_before = len(list((folder / "_units").glob("*.json")))
    gen = run_measured([*cmd, *cluster_options(workers)])  # a rerun skips complete tiles
    images = folder / "images"
    sizes = [path.stat().st_size for path in images.glob("*.fits")]
    if done_before < tiles:
        print(
            f"  mock-survey {folder.name}: {gen.wall:.1f} s ({workers} workers, "
            f"{tiles - done_before} tiles made), peak {gen.peak_rss / GiB:.2f} GiB"
        )
    else:
        print(f"  mock-survey {folder.name}: already there (reused)")
    print(f"  {len(sizes)} r-band image(s), {sum(sizes) / GiB:.2f} GiB")
    targets = folder / "targets.parquet"
    if not (targets / "_summary.json").exists():
        shutil.rmtree(targets, ignore_errors=True)
        cmd = [lensdask_cli(), "-q", "select", str(folder / "catalog"), "--out", str(targets)]
        run_measured([*cmd, *cluster_options(workers)])
    return targets, images


def read_targets(targets: Path):
    """The targets' ID, RA, Dec and tile, as a pyarrow Table."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(targets), format="parquet")
    return dataset.to_table(columns=["ID", "RAJ2000", "DECJ2000", "THELI_NAME"])


def image_shape(path: Path) -> tuple[int, int]:
    from astropy.io import fits

    header = fits.getheader(path)
    return header["NAXIS2"], header["NAXIS1"]


# ----------------------------------------------------------------------------- peers


def cutout2d_loop(table, images: Path, *, size: int = 101) -> tuple[float, dict[str, np.ndarray]]:
    """Cutout2D per target on the memory-mapped tile; (seconds, cutouts by ID)."""
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D, NoOverlapError
    from astropy.wcs import WCS

    tiles = table["THELI_NAME"].to_numpy(zero_copy_only=False)
    ra = table["RAJ2000"].to_numpy()
    dec = table["DECJ2000"].to_numpy()
    ids = table["ID"].to_numpy(zero_copy_only=False)
    out = np.full((len(ids), size, size), np.nan, dtype=np.float32)
    done = np.zeros(len(ids), dtype=bool)
    start = time.perf_counter()
    for tile in np.unique(tiles):
        with fits.open(images / f"{tile}_r.fits", memmap=True) as hdul:
            data = hdul[0].data
            wcs = WCS(hdul[0].header).celestial
            for i in np.flatnonzero(tiles == tile):
                try:
                    cut = Cutout2D(
                        data,
                        SkyCoord(ra[i], dec[i], unit="deg"),
                        (size, size),
                        wcs=wcs,
                        mode="partial",
                        fill_value=np.nan,
                    )
                except NoOverlapError:
                    continue
                out[i] = cut.data
                done[i] = True
            del data
    seconds = time.perf_counter() - start
    return seconds, {ids[i]: out[i] for i in np.flatnonzero(done)}


def run_cli(targets: Path, images: Path, out: Path, *, workers: int, extra=()) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [lensdask_cli(), "-q", "cutouts", str(targets), "--images", str(images)]
    run = run_measured([*cmd, "--out", str(out), "--bands", "r", *extra, *cluster_options(workers)])
    return run.wall


@dataclass
class InProcess:
    startup: float
    wall: float
    busy: float
    """Sum over tasks of their compute time in the workers, seconds."""
    cutouts: int
    first: list[float]
    """Compute time of the first task on each worker (imports, first use of astropy), s."""
    steady: float
    """Cutouts per second of one worker over its later tasks."""


def run_in_process(targets: Path, images: Path, out: Path, *, workers: int) -> InProcess:
    """make_cutouts on an already-running LocalCluster; cluster start-up timed apart."""
    from distributed import Client, LocalCluster, get_task_stream

    from lensdask.config import CutoutConfig
    from lensdask.cutouts.make import make_cutouts

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        startup = time.perf_counter() - start
        with get_task_stream(client) as stream:
            start = time.perf_counter()
            report = make_cutouts(
                targets,
                images,
                out,
                config=CutoutConfig(bands=("r",)),
                client=client,
                progress=False,
            )
            wall = time.perf_counter() - start
    if report.units.failures:
        raise RuntimeError(f"make_cutouts failed: {report.units.failures}")
    by_worker: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for task in stream.data:
        key = task["key"]
        unit = (ast.literal_eval(key) if isinstance(key, str) else key)[1]
        for s in task["startstops"]:
            if s["action"] == "compute":
                n = report.units.results[unit]["cutouts"]
                by_worker[task["worker"]].append((s["start"], s["stop"] - s["start"], n))
    busy = sum(t for tasks in by_worker.values() for _, t, _ in tasks)
    first = [min(tasks)[1] for tasks in by_worker.values()]
    later = [task for tasks in by_worker.values() for task in sorted(tasks)[1:]]
    steady = sum(n for _, _, n in later) / sum(t for _, t, _ in later) if later else np.nan
    return InProcess(startup, wall, busy, report.counts["cutouts"], first, steady)


def kernel_steps(targets: Path, images: Path, tile: str, workdir: Path) -> dict[str, float]:
    """Seconds of each step of one tile's cutouts in-process, with the library's kernels."""
    from lensdask.config import CutoutConfig
    from lensdask.cutouts.extract import centre_inside, extract_stamps_by_rows, sky_to_pixel
    from lensdask.cutouts.make import open_image, row_reader
    from lensdask.formats.cutout_store import write_tile_group
    from lensdask.formats.targets import load_tile_targets, tile_sources

    config = CutoutConfig(bands=("r",))
    steps: dict[str, float] = {}
    start = time.perf_counter()
    sources = tile_sources(targets)[tile]
    table = load_tile_targets(tile, sources)
    steps["read targets"] = time.perf_counter() - start
    start = time.perf_counter()
    hdul, image, wcs, _ = open_image(images / f"{tile}_r.fits", hdu=0)
    steps["open FITS + WCS"] = time.perf_counter() - start
    start = time.perf_counter()
    x, y = sky_to_pixel(table["RAJ2000"].to_numpy(), table["DECJ2000"].to_numpy(), wcs)
    keep = np.flatnonzero(centre_inside(x, y, image.shape))
    steps["sky_to_pixel"] = time.perf_counter() - start
    start = time.perf_counter()
    stamps = extract_stamps_by_rows(row_reader(hdul, 0), image.shape, x[keep], y[keep])
    steps["extract_stamps_by_rows (a memory map per block of rows)"] = time.perf_counter() - start
    hdul.close()
    folder = workdir / "kernel-steps.zarr"
    shutil.rmtree(folder, ignore_errors=True)
    ids = table["ID"].to_numpy(zero_copy_only=False)[keep].astype(str)
    start = time.perf_counter()
    write_tile_group(
        folder,
        {"r": stamps.data},
        {"ID": ids, "edge": stamps.edge, "nonfinite_fraction": stamps.nonfinite_fraction[:, None]},
        attrs={"tile": tile},
        chunk=config.chunk,
        compression_level=config.compression_level,
    )
    steps[f"write_tile_group (chunk {config.chunk}, zstd {config.compression_level})"] = (
        time.perf_counter() - start
    )
    shutil.rmtree(folder, ignore_errors=True)
    steps["(cutouts)"] = keep.size
    return steps


def check_identical(store: Path, loop: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(compared, identical, missing from the store) of the store against the loop."""
    from lensdask.formats.cutout_store import complete_tiles, read_tile

    compared = identical = 0
    seen = set()
    for tile in complete_tiles(store):
        got = read_tile(store, tile, bands=("r",))
        for key, image in zip(got.ids, got.images["r"], strict=True):
            seen.add(key)
            if key in loop:
                compared += 1
                identical += np.array_equal(image, loop[key], equal_nan=True)
    return compared, identical, len(set(loop) - seen)


# ----------------------------------------------------------------------------- memory


@dataclass
class Peak:
    rss: int = 0
    anon: int = 0
    file: int = 0
    name: str = ""


@dataclass
class TreeSampler:
    """Samples the RSS (and RssAnon, RssFile) of a set of processes, per process."""

    pids: dict[int, str] = field(default_factory=dict)
    root: int | None = None
    """If given, also sample every descendant of this pid as it appears."""
    interval: float = 0.05
    peaks: dict[int, Peak] = field(default_factory=dict)
    tree_peak: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = dict(self.pids)
            if self.root is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    root = psutil.Process(self.root)
                    pids.setdefault(self.root, "root")
                    for child in root.children(recursive=True):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            pids.setdefault(child.pid, describe(child))
            total = 0
            for pid, name in pids.items():
                status = proc_status(pid)
                if status is None:
                    continue
                peak = self.peaks.setdefault(pid, Peak(name=name))
                peak.rss = max(peak.rss, status["VmRSS"])
                peak.anon = max(peak.anon, status["RssAnon"])
                peak.file = max(peak.file, status["RssFile"] + status["RssShmem"])
                total += status["VmRSS"]
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(self.interval)


def proc_status(pid: int) -> dict[str, int] | None:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, bytes (None once gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0]) * 1024
    return values if len(values) == 5 else None


def describe(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "worker"
    return proc.name()


def worker_memory(targets: Path, images: Path, out: Path, *, memory_limit: str) -> None:
    """Peak memory of each process while one worker cuts one full-size tile."""
    from distributed import Client, LocalCluster

    from lensdask.config import CutoutConfig
    from lensdask.cutouts.make import make_cutouts

    # the CLI as users run it: its whole process tree, per process
    shutil.rmtree(out, ignore_errors=True)
    cmd = [lensdask_cli(), "-q", "cutouts", str(targets), "--images", str(images)]
    cmd += ["--out", str(out), "--bands", "r", *cluster_options(1)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeSampler(root=proc.pid) as sampler:
        output, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(output.decode()[-3000:])
    print(
        f"\n`lensdask cutouts --workers 1`: {wall:.1f} s; peak of the process tree (sum) "
        f"{sampler.tree_peak / GiB:.2f} GiB"
    )
    print_peaks(sampler.peaks, root_name="CLI: scheduler + client + nanny")

    # in-process: scheduler and client here, the worker sampled by its pid
    shutil.rmtree(out, ignore_errors=True)
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=memory_limit,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1)
        worker_pid = next(iter(client.run(os.getpid).values()))
        pids = {os.getpid(): "this process: scheduler + client + nanny", worker_pid: "worker"}
        before = {pid: proc_status(pid) for pid in pids}
        with TreeSampler(pids=pids, interval=0.02) as sampler:
            start = time.perf_counter()
            report = make_cutouts(
                targets,
                images,
                out,
                config=CutoutConfig(bands=("r",)),
                client=client,
                progress=False,
            )
            wall = time.perf_counter() - start
        hwm = (proc_status(worker_pid) or {}).get("VmHWM", 0)
    print(
        f"\nmake_cutouts on a running 1-worker LocalCluster: {wall:.1f} s, "
        f"{report.counts['cutouts']} cutouts"
    )
    print_peaks(sampler.peaks, before=before)
    # VmHWM, not getrusage's ru_maxrss: a spawned process inherits its parent's ru_maxrss
    print(f"  worker VmHWM (the kernel's high-water mark of its RSS, exact): {hwm / GiB:.2f} GiB")


def print_peaks(peaks: dict[int, Peak], *, before=None, root_name: str = "") -> None:
    print(f"  {'process':<44}{'RSS':>9}{'anon':>9}{'file':>9}  GiB (peaks, sampled)")
    for pid, peak in peaks.items():
        name = root_name if peak.name == "root" and root_name else peak.name
        print(f"  {name:<44}{peak.rss / GiB:>9.2f}{peak.anon / GiB:>9.2f}{peak.file / GiB:>9.2f}")
        if before and before.get(pid):
            b = before[pid]
            print(
                f"  {'  at rest before the run':<44}{b['VmRSS'] / GiB:>9.2f}"
                f"{b['RssAnon'] / GiB:>9.2f}{(b['RssFile'] + b['RssShmem']) / GiB:>9.2f}"
            )


# ----------------------------------------------------------------------------- main


def speed(args: argparse.Namespace) -> None:
    folder = args.workdir / f"cutouts-survey-{args.tiles}x{args.tile_size:g}deg"
    print(f"speed: {args.tiles} tiles of {args.tile_size:g} deg, r band")
    targets, images = ensure_survey(
        folder, tiles=args.tiles, tile_size=args.tile_size, workers=args.workers
    )
    table = read_targets(targets)
    tiles = sorted(set(table["THELI_NAME"].to_pylist()))
    ny, nx = image_shape(images / f"{tiles[0]}_r.fits")
    print(f"  {table.num_rows:,} targets on {len(tiles)} tiles of {nx} x {ny} px")

    runs: dict[str, list[float]] = defaultdict(list)
    busy: dict[str, list[float]] = defaultdict(list)
    startup: list[float] = []
    first: list[float] = []
    steady: list[float] = []
    loop: dict[str, np.ndarray] = {}
    n_cut = 0
    for _ in range(args.repeat):
        seconds, loop = cutout2d_loop(table, images)
        runs["Cutout2D loop (1 process, no write)"].append(seconds)
        for workers in (1, 2):
            runs[f"lensdask cutouts --workers {workers} (CLI)"].append(
                run_cli(targets, images, folder / "cutouts-cli.zarr", workers=workers)
            )
        for workers in (1, 2):
            result = run_in_process(targets, images, folder / "cutouts.zarr", workers=workers)
            name = f"make_cutouts, running cluster of {workers}"
            runs[name].append(result.wall)
            busy[name].append(result.busy)
            startup.append(result.startup)
            first.extend(result.first)
            steady.append(result.steady)
            n_cut = result.cutouts

    base = statistics.median(runs["Cutout2D loop (1 process, no write)"])
    print(f"\n{n_cut:,} cutouts (101 x 101 px); median of {args.repeat} runs each")
    print(f"{'peer':<46}{'wall s':>8}{'cutouts/s':>11}{'x Cutout2D':>12}{'busy s':>8}")
    for name, walls in runs.items():
        wall = statistics.median(walls)
        work = f"{statistics.median(busy[name]):>8.2f}" if name in busy else ""
        print(f"{name:<46}{wall:>8.2f}{n_cut / wall:>11,.0f}{base / wall:>12.1f}{work}")
    print(
        f"  (busy s: sum of the tiles' task compute times in the workers; LocalCluster "
        f"start-up, not included above: median {statistics.median(startup):.1f} s)"
    )

    rate = statistics.median(steady)
    record_calibration(
        args,
        stage="cutouts",
        mode="cpu",
        quantity="cutouts",
        rate=rate,
        figure=f"steady state {rate:,.0f} cutouts/s a single-threaded worker (tasks after "
        f"each worker's first; {nx} x {ny} px plain FITS, Zarr write included)",
    )
    print(
        f"  worker tasks: the first on each worker {statistics.median(first):.2f} s (median), "
        f"later ones {len(table) / len(tiles) / rate:.2f} s a tile = {rate:,.0f} cutouts/s a "
        f"worker\n  steady state, 2 workers x that: {2 * rate:,.0f} cutouts/s = "
        f"{2 * rate * base / n_cut:.1f}x the Cutout2D loop"
    )

    compared, identical, missing = check_identical(folder / "cutouts.zarr", loop)
    print(
        f"\npixels: {identical}/{compared} cutouts identical to Cutout2D "
        f"(NaN = NaN); {missing} of the loop's cutouts missing from the store"
    )

    print(f"\nwhere the time goes: one tile ({tiles[0]}) in-process, kernel by kernel")
    steps = kernel_steps(targets, images, tiles[0], args.workdir)
    count = steps.pop("(cutouts)")
    total = sum(steps.values())
    for name, seconds in steps.items():
        print(f"  {name:<44}{seconds * 1000:>8.1f} ms")
    print(
        f"  {'total':<44}{total * 1000:>8.1f} ms = {count / total:,.0f} cutouts/s for "
        f"{count} cutouts"
    )


def memory(args: argparse.Namespace) -> None:
    folder = args.workdir / f"cutouts-survey-1x1deg-{args.full_pixels}px"
    print(f"\nmemory: one 1 deg tile, {args.full_pixels} x {args.full_pixels} px, r band")
    targets, images = ensure_survey(
        folder, tiles=1, tile_size=1.0, image_pixels=args.full_pixels, workers=1
    )
    path = next(images.glob("*_r.fits"))
    ny, nx = image_shape(path)
    print(
        f"  {read_targets(targets).num_rows:,} targets; image {nx} x {ny} px float32 = "
        f"{nx * ny * 4 / GiB:.2f} GiB ({path.stat().st_size / GiB:.2f} GiB file)"
    )
    worker_memory(targets, images, folder / "cutouts.zarr", memory_limit=args.memory_limit)
    for limit in args.try_limit:
        try:
            wall = run_cli(
                targets,
                images,
                folder / "cutouts-limit.zarr",
                workers=1,
                extra=("--memory-limit", limit),
            )
            marker = json.loads(
                next((folder / "cutouts-limit.zarr" / "_units").glob("*.json")).read_text()
            )
            print(f"\n--memory-limit {limit}: completed in {wall:.1f} s, {marker['rows']} cutouts")
        except (RuntimeError, StopIteration) as err:
            print(f"\n--memory-limit {limit}: FAILED: {str(err)[-600:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--tiles", type=int, default=4, help="tiles of the speed survey")
    parser.add_argument("--tile-size", type=float, default=0.6, help="deg (0.6: 10800 px)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="for generating the data")
    parser.add_argument("--full-pixels", type=int, default=21000, help="0: skip part 2")
    parser.add_argument("--memory-limit", default="auto", help="of the part-2 worker")
    parser.add_argument(
        "--try-limit",
        nargs="*",
        default=["1GiB"],
        help="part 2: also run the CLI with these --memory-limit values",
    )
    parser.add_argument("--skip-speed", action="store_true")
    add_calibration_options(parser)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_speed:
        speed(args)
    if args.full_pixels:
        memory(args)


if __name__ == "__main__":
    main()
