"""The capacity model of ``lensdask run --dry-run``: what a job costs in bytes, core-hours,
GPU-hours and wall time.

Each stage's plan (:class:`lensdask.plan.StagePlan`) counts the work its cost scales with
(``catalog rows``, ``cutouts``, ``model images``, ...); the calibration file
``lensdask/capacity.json`` gives, per stage, mode and quantity, the rate the benchmarks of
``tests/benchmarks`` measured (units per second on one core, or on one GPU worker holding
some cores) with where it comes from, or marks it as an estimate and says why. The
benchmarks that measure a figure rewrite their own entry (``--update-calibration``,
:func:`update_entry`).

A stage runs on GPU workers (mode ``gpu``) when GPUs are given and the calibration has a
``gpu`` mode for it (training, scoring), else on cores. Wall time assumes the stage's tasks
spread over the cores and GPUs given, one core (or one GPU worker) per task, and that the
stages run one after another. This module imports only the standard library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("capacity.json")
"""The calibration shipped with lensdask."""
MODES = ("cpu", "gpu")
"""How a stage can run: on cores, or on GPU workers (``--gpus``)."""
PER = ("core", "GPU worker")
"""What a rate is per."""


class CalibrationError(ValueError):
    """The calibration file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Rate:
    """One calibrated per-unit cost."""

    rate: float
    """Units per second on one core, or on one GPU worker."""
    per: str
    """``core`` or ``GPU worker``."""
    cores: int = 1
    """Cores one unit of ``per`` holds (a GPU worker's threads)."""
    estimate: str = ""
    """Why this is an estimate rather than a measurement (empty: measured)."""


@dataclass(frozen=True)
class Calibration:
    """The per-unit costs: stage -> mode -> quantity -> :class:`Rate`."""

    stages: Mapping[str, Mapping[str, Mapping[str, Rate]]]
    path: Path
    """The file they were read from."""

    def modes(self, stage: str) -> Mapping[str, Mapping[str, Rate]]:
        """The modes of ``stage`` (empty where the file has no entry for it)."""
        return self.stages.get(stage, {})


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read and check the calibration file (default: :data:`DEFAULT_PATH`).

    Raises
    ------
    CalibrationError
        Where the file cannot be read or an entry is malformed (naming the file and the
        entry: ``score.gpu.images``).
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CalibrationError(f"{path}: cannot read the calibration: {err}") from err
    return Calibration(parse_stages(data, path=path), path)


def parse_stages(data: Any, *, path: Path) -> dict[str, dict[str, dict[str, Rate]]]:
    """The :class:`Rate` entries of a calibration document, checked."""
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise CalibrationError(f"{path}: needs an object `stages` (stage -> mode -> quantity)")
    parsed: dict[str, dict[str, dict[str, Rate]]] = {}
    for stage, modes in stages.items():
        if not isinstance(modes, dict) or not modes or set(modes) - set(MODES):
            raise CalibrationError(f"{path}: {stage}: modes must be among {', '.join(MODES)}")
        parsed[stage] = {}
        for mode, quantities in modes.items():
            if not isinstance(quantities, dict) or not quantities:
                raise CalibrationError(f"{path}: {stage}.{mode}: needs quantity -> entry")
            parsed[stage][mode] = {
                quantity: parse_entry(entry, where=f"{path}: {stage}.{mode}.{quantity}")
                for quantity, entry in quantities.items()
            }
    return parsed


def parse_entry(entry: Any, *, where: str) -> Rate:
    """One entry as a :class:`Rate`; ``where`` names it in errors."""
    if not isinstance(entry, dict):
        raise CalibrationError(f"{where}: an entry is an object, got {entry!r}")
    rate = entry.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise CalibrationError(f"{where}: rate must be a number > 0, got {rate!r}")
    per = entry.get("per")
    if per not in PER:
        raise CalibrationError(f"{where}: per must be one of {PER}, got {per!r}")
    cores = entry.get("cores", 1)
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise CalibrationError(f"{where}: cores must be an integer >= 1, got {cores!r}")
    estimate = entry.get("estimate", "")
    if not isinstance(estimate, str):
        raise CalibrationError(f"{where}: estimate must be a reason (text), got {estimate!r}")
    source = entry.get("source")
    needed = ("script", "date") if estimate else ("script", "date", "machine", "figure")
    if not isinstance(source, dict) or not all(
        isinstance(source.get(key), str) and source[key].strip() for key in needed
    ):
        raise CalibrationError(
            f"{where}: source must give {', '.join(needed)} (or the entry an `estimate`)"
        )
    return Rate(float(rate), per, cores, estimate)


@dataclass(frozen=True)
class StageCost:
    """What one stage costs."""

    stage: str
    read_bytes: float | None
    written_bytes: float | None
    core_hours: float | None
    """Core-hours, the cores of GPU workers included (None: unknown)."""
    gpu_hours: float | None
    """GPU-hours (0 on cores only; None: unknown)."""
    wall_hours: float | None
    """Hours on the cores and GPUs given (None: unknown)."""
    limit: str = ""
    """What bounds the wall time: ``cores``, ``GPUs`` or the stage's tasks."""
    mode: str = "cpu"
    estimated: bool = False
    """Some of the rates used are estimates, not measurements."""
    missing: tuple[str, ...] = ()
    """Quantities of the plan the calibration has no rate for."""


def stage_cost(
    plan: Any,
    calibration: Calibration,
    *,
    cores: int,
    gpus: int = 0,
    read_bandwidth: float | None = None,
) -> StageCost:
    """The cost of one stage's plan.

    Parameters
    ----------
    plan : lensdask.plan.StagePlan
        Its ``work`` (quantity -> units), ``tasks``, ``read_bytes`` and ``output_bytes``.
    calibration : Calibration
    cores : int
        Cores of the cluster (>= 1).
    gpus : int
        GPUs of the cluster; 0: every stage runs on cores.
    read_bandwidth : float, optional
        bytes/s the storage delivers to the whole cluster; None: reading is not counted
        (the calibrated rates read from the page cache or a local disk), nor are reads
        the plan cannot size.

    Returns
    -------
    StageCost
        Core-seconds: sum over quantities of units / rate (times a GPU worker's cores for
        GPU rates); GPU-seconds likewise for GPU rates; wall time: the largest of the
        core-seconds over the cores, the GPU-seconds over the GPUs (at most one core or GPU
        working per task) and the bytes read over ``read_bandwidth``.
    """
    if cores < 1 or gpus < 0:
        raise ValueError(f"cores must be >= 1 and gpus >= 0, got cores={cores}, gpus={gpus}")
    modes = calibration.modes(plan.stage)
    mode = "gpu" if gpus and "gpu" in modes else "cpu"
    rates = modes.get(mode, {})
    work = {quantity: units for quantity, units in plan.work.items() if units != 0}
    missing = tuple(quantity for quantity in work if quantity not in rates)
    core_s = gpu_s = 0.0
    known = bool(work) and not missing and None not in work.values()
    if known:
        for quantity, units in work.items():
            rate = rates[quantity]
            seconds = units / rate.rate
            core_s += seconds * rate.cores
            if rate.per == "GPU worker":
                gpu_s += seconds
    tasks = plan.tasks if plan.tasks is not None else math.inf
    wall = limit = None
    if known:
        usable_cores = min(cores, tasks * _cores_per_task(rates, work))
        on_cores = core_s / usable_cores
        on_gpus = gpu_s / min(gpus, tasks) if gpu_s else 0.0
        reading = (plan.read_bytes or 0) / read_bandwidth if read_bandwidth else 0.0
        wall = max(on_cores, on_gpus, reading) / 3600
        if reading > max(on_cores, on_gpus):
            limit = "reading"
        elif on_gpus >= on_cores:
            limit = "GPUs" if gpus <= tasks else _tasks(plan.tasks)
        else:
            limit = "cores" if usable_cores == cores else _tasks(plan.tasks)
    return StageCost(
        plan.stage,
        plan.read_bytes,
        plan.output_bytes,
        core_s / 3600 if known else None,
        gpu_s / 3600 if known else None,
        wall,
        limit or "",
        mode,
        any(rates[q].estimate for q in work if q in rates),
        missing,
    )


def _tasks(n: int) -> str:
    return "1 task" if n == 1 else f"{n:,} tasks"


def _cores_per_task(rates: Mapping[str, Rate], work: Mapping[str, Any]) -> int:
    """Cores one task keeps busy: a GPU worker's, else one."""
    return max((rates[q].cores for q in work if rates[q].per == "GPU worker"), default=1)


def job_costs(
    plans: Sequence[Any],
    calibration: Calibration,
    *,
    cores: int,
    gpus: int = 0,
    read_bandwidth: float | None = None,
) -> list[StageCost]:
    """The :class:`StageCost` of every plan (:func:`stage_cost`)."""
    return [
        stage_cost(plan, calibration, cores=cores, gpus=gpus, read_bandwidth=read_bandwidth)
        for plan in plans
    ]


def _total(values: Sequence[float | None]) -> tuple[float, bool]:
    """Sum of the known values, and whether some were unknown."""
    return sum(v for v in values if v is not None), any(v is None for v in values)


def _shown(path: Path) -> str:
    """The shipped calibration as ``lensdask/capacity.json``, another by its path."""
    return "lensdask/capacity.json" if path == DEFAULT_PATH else str(path)


def _hours(value: float | None) -> str:
    if value is None:
        return "?"
    if value == 0:
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _wall(hours: float | None) -> str:
    if hours is None:
        return "?"
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:,.1f} d"


def capacity_lines(
    costs: Sequence[StageCost],
    *,
    cores: int,
    gpus: int,
    calibration: Calibration,
    read_bandwidth: float | None = None,
) -> list[str]:
    """The costs as a table of text lines (under 100 characters), with totals and what
    bounds the longest stage."""
    from lensdask.plan import format_bytes

    devices = f"{cores:,} cores" + (f" and {gpus:,} GPUs" if gpus else ", no GPU")
    if read_bandwidth:
        devices += f", reading {read_bandwidth / 1e9:g} GB/s"
    lines = [
        f"capacity on {devices} (per-unit costs: {_shown(calibration.path)})",
        f"{'stage':<12} {'read':>10} {'written':>10} {'core-h':>11} {'GPU-h':>9} "
        f"{'wall':>10}  limit",
    ]
    for cost in costs:
        mark = "*" if cost.estimated else " "
        limit = cost.limit
        if cost.mode == "gpu" and limit != "GPUs":
            limit += " on GPU workers"
        if cost.missing:
            limit = f"no rate for {', '.join(cost.missing)}"
        lines.append(
            f"{cost.stage:<12} {format_bytes(cost.read_bytes):>10} "
            f"{format_bytes(cost.written_bytes):>10} {_hours(cost.core_hours):>10}{mark} "
            f"{_hours(cost.gpu_hours):>9} {_wall(cost.wall_hours):>10}  {limit}".rstrip()
        )
    read, read_unknown = _total([c.read_bytes for c in costs])
    written, written_unknown = _total([c.written_bytes for c in costs])
    core_h, core_unknown = _total([c.core_hours for c in costs])
    gpu_h, gpu_unknown = _total([c.gpu_hours for c in costs])
    wall, wall_unknown = _total([c.wall_hours for c in costs])
    unknown = read_unknown or written_unknown or core_unknown or gpu_unknown or wall_unknown
    lines.append(
        f"{'total':<12} {format_bytes(read):>10} {format_bytes(written):>10} "
        f"{_hours(core_h):>10}  {_hours(gpu_h):>9} {_wall(wall):>10}"
        + ("  (more where ? stands)" if unknown else "")
    )
    if any(cost.estimated for cost in costs):
        lines.append(f"* uses estimates, not measurements ({_shown(calibration.path)} says why)")
    timed = [cost for cost in costs if cost.wall_hours]
    if timed:
        longest = max(timed, key=lambda cost: cost.wall_hours or 0)
        lines.append(
            f"longest stage: {longest.stage}, {_wall(longest.wall_hours)} of "
            f"{_wall(wall)}, bound by its {longest.limit}"
        )
    return lines


def update_entry(
    path: str | Path,
    *,
    stage: str,
    mode: str,
    quantity: str,
    rate: float,
    source: Mapping[str, str],
    per: str = "core",
    cores: int | None = None,
) -> None:
    """Replace one entry of the calibration file at ``path`` with a measured ``rate``
    (no ``estimate``), leaving every other entry as it is.

    Parameters
    ----------
    path : path
        The calibration file (:data:`DEFAULT_PATH` for the shipped one).
    stage, mode, quantity : str
        The entry (``select``, ``cpu``, ``catalog rows``); it may be new.
    rate : float
        Units per second per ``per``.
    source : mapping
        ``script``, ``command``, ``date``, ``machine``, ``figure``.
    per : str
        ``core`` or ``GPU worker``.
    cores : int, optional
        Cores a GPU worker holds.
    """
    from lensdask.formats.files import write_text_atomic

    path = Path(path)
    data = json.loads(path.read_text())
    entry: dict[str, Any] = {"rate": round(rate, 4), "per": per}
    if cores is not None:
        entry["cores"] = cores
    entry["source"] = dict(source)
    parse_entry(entry, where=f"{path}: {stage}.{mode}.{quantity}")
    modes = data.setdefault("stages", {}).setdefault(stage, {})
    modes.setdefault(mode, {})[quantity] = entry
    parse_stages(data, path=path)
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
