"""Run work units on a Dask cluster with a progress bar, and turn failures into data.

This is the one place where stages submit their units: one task per unit (never per
galaxy), a progress bar over :func:`distributed.as_completed`, failures collected by unit
name instead of stopping the job, and a failures table written next to the outputs.

A unit that fails for a reason that another attempt cannot change (:func:`is_deterministic`:
a missing, unreadable or damaged input, a bad value) fails at once; any other failure (a
lost worker, a full disk, an unexpected error) is retried by Dask. Each failure is logged
once, at DEBUG level with its traceback; the commands print one line per failed unit.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FAILURES_FILE = "_failures.csv"
EXIT_PARTIAL = 3
"""Exit status of a command whose units failed (the rest, if any, completed)."""


@dataclass(frozen=True)
class Failure:
    """A unit that failed, with the error it raised."""

    unit: str
    stage: str
    error: str
    attempts: int


@dataclass(frozen=True)
class UnitError:
    """What a unit returns instead of raising when it failed for good (see
    :func:`is_deterministic`): Dask does not retry it."""

    error: str
    """The exception, on one line (type and message)."""
    traceback: str
    """The full traceback, for the log."""
    attempts: int = 1
    """How many times the unit was tried."""


def is_deterministic(exc: BaseException) -> bool:
    """Whether another attempt of a unit that raised ``exc`` would fail the same way.

    True for a missing or unreadable input (:class:`FileNotFoundError`,
    :class:`PermissionError`, :class:`IsADirectoryError`, :class:`NotADirectoryError`), an
    input whose content is wrong (an :class:`OSError` without an ``errno``, as readers raise
    for a damaged or foreign file: lensdask's ``CatalogError``, pyarrow's and astropy's
    read errors) and bad values (:class:`ValueError`, which lensdask's ``SchemaError``,
    ``ModelError`` and ``ConfigError`` are, and :class:`KeyError`). False for what may
    pass: an :class:`OSError` of the system (a full disk, a lost mount: it has an
    ``errno``), lost connections and timeouts, memory, and any other exception.
    """
    if isinstance(exc, ConnectionError | TimeoutError):
        return False
    if isinstance(
        exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    ):
        return True
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, ValueError | KeyError)


def _attempt(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one unit; a deterministic failure comes back as a :class:`UnitError` instead of
    an exception, so that Dask does not retry it (nor the worker log it)."""
    try:
        return func(*args, **kwargs)
    except Exception as exc:
        if not is_deterministic(exc):
            raise
        return UnitError(one_line(exc), traceback.format_exc())


def _attempt_batch(
    func: Callable[..., Any], firsts: Sequence[Any], *args: Any, retries: int, **kwargs: Any
) -> list[Any]:
    """Run several units in one task, one after the other, each committed on its own: what
    each returned, or a :class:`UnitError` where it failed (after ``retries`` more attempts
    of a failure that may pass), so that one unit's failure never redoes the others."""
    outcomes = []
    for first in firsts:
        for attempt in range(retries + 1):
            try:
                outcomes.append(func(first, *args, **kwargs))
                break
            except Exception as exc:
                if is_deterministic(exc) or attempt == retries:
                    outcomes.append(UnitError(one_line(exc), traceback.format_exc(), attempt + 1))
                    break
    return outcomes


def units_per_task(units: int, workers: int, *, most: int = 16) -> int:
    """How many small units one task runs: enough that each task's scheduling and start
    cost is shared, while every worker thread still gets about eight tasks to balance the
    load; at most ``most``."""
    return max(1, min(most, units // max(1, 8 * workers)))


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line."""
    return " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())


@dataclass
class UnitReport:
    """What came back from running a stage's units."""

    stage: str
    results: dict[str, Any] = field(default_factory=dict)
    """Return value of each unit that completed, by unit name."""
    failures: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Units that were complete already and were not run again."""

    @property
    def ok(self) -> bool:
        """True when no unit failed."""
        return not self.failures

    def write_failures(self, out: Path) -> Path | None:
        """Write (or remove) the failures table ``<out>/_failures.csv``."""
        from lensdask.formats.files import write_text_atomic
        from lensdask.storage import as_path, remove

        path = as_path(out) / FAILURES_FILE
        if not self.failures:
            remove(path)
            return None
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["unit", "stage", "error", "attempts"])
        for failure in self.failures:
            writer.writerow([failure.unit, failure.stage, failure.error, failure.attempts])
        write_text_atomic(path, table.getvalue())
        return path


class UnitCounts:
    """Base of a stage's report: how many of its units this run wrote and how many were
    complete already, counted from the report's ``units``."""

    units: UnitReport

    @property
    def written(self) -> int:
        """Units completed by this run."""
        return len(self.units.results)

    @property
    def skipped(self) -> int:
        """Units that were complete already."""
        return len(self.units.skipped)


def run_units(
    client: Any,
    func: Callable[..., Any],
    units: Sequence[str],
    *args: Any,
    stage: str,
    retries: int = 1,
    progress: bool = True,
    unit_args: Sequence[Any] | None = None,
    batch: int = 1,
    **kwargs: Any,
) -> UnitReport:
    """Run ``func(unit_arg, *args, **kwargs)`` as one task per unit (or per ``batch`` units)
    and collect the outcome.

    Parameters
    ----------
    client : distributed.Client
        The injected Dask client.
    func : callable
        The per-unit adaptor; it commits its own output and returns a small summary.
    units : sequence of str
        Unit names, unique; they name the tasks on the dashboard.
    *args, **kwargs
        Passed to every call of ``func`` (small values: configs, paths).
    stage : str
        Stage name, for the task keys, the progress bar and the failures table.
    retries : int
        How many times Dask retries a failing unit (a lost worker, a transient error);
        a deterministic failure (:func:`is_deterministic`) is not retried.
    progress : bool
        Show a progress bar over units (on stderr).
    unit_args : sequence, optional
        The first argument of each call, parallel to ``units``; default the unit names.
    batch : int
        Units per task (:func:`units_per_task`): for many small units, whose scheduling
        would cost more than their work. A task runs its units in turn, each committed on
        its own and failing on its own.

    Returns
    -------
    UnitReport
        Results by unit and the failures; never raises for a failed unit.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    report = UnitReport(stage=stage)
    if not units:
        return report
    if len(set(units)) != len(units):
        raise ValueError(f"{stage}: unit names must be unique")
    firsts = list(units) if unit_args is None else list(unit_args)
    # Task keys are unique per call: a key the scheduler still holds from an earlier call
    # (releases are asynchronous) would hand back that call's result instead of running.
    # One map call, not a submit per unit: the scheduler gets a single graph update.
    run = uuid.uuid4().hex[:8]
    names = list(units)
    if batch > 1:
        groups = [names[i : i + batch] for i in range(0, len(names), batch)]
        starts = range(0, len(names), batch)
        futures_list = client.map(
            functools.partial(_attempt_batch, func, retries=retries),
            [firsts[i : i + batch] for i in starts],
            *([arg] * len(groups) for arg in args),
            key=[(stage, f"{group[0]}+{len(group) - 1}", run) for group in groups],
            retries=retries,
            pure=False,
            **kwargs,
        )
    else:
        groups = [[name] for name in names]
        futures_list = client.map(
            functools.partial(_attempt, func),
            firsts,
            *([arg] * len(firsts) for arg in args),
            key=[(stage, unit, run) for unit in units],
            retries=retries,
            pure=False,
            **kwargs,
        )
    futures = dict(zip(futures_list, groups, strict=True))
    bar = tqdm(total=len(units), desc=stage, unit="unit", disable=not progress)
    try:
        # with_results: results are fetched concurrently, not one round trip per unit
        # loop=: follow the futures on the injected client's loop, not on whichever client
        # is current in this process (two clients in one process would share a connection)
        tracked = as_completed(futures, loop=client.loop, with_results=True, raise_errors=False)
        for future, result in tracked:
            group = futures[future]
            if future.status == "finished":
                outcomes = result if batch > 1 else [result]
            else:
                exc = future.exception()
                trace = "".join(traceback.format_exception(type(exc), exc, future.traceback()))
                lost = UnitError(one_line(exc), trace, retries + 1)
                outcomes = [lost] * len(group)
            for unit, outcome in zip(group, outcomes, strict=True):
                if not isinstance(outcome, UnitError):
                    report.results[unit] = outcome
                    continue
                report.failures.append(Failure(unit, stage, outcome.error, outcome.attempts))
                logger.debug(
                    "%s: unit %s failed after %d attempt(s): %s\n%s",
                    stage,
                    unit,
                    outcome.attempts,
                    outcome.error,
                    outcome.traceback.rstrip(),
                )
                bar.set_postfix(failed=len(report.failures))
            future.release()
            bar.update(len(group))
    finally:
        bar.close()
    report.failures.sort(key=lambda failure: failure.unit)
    return report


def run_stage(
    client: Any,
    func: Callable[..., Any],
    out: Path,
    inputs: Mapping[str, Any],
    *,
    chash: str | Mapping[str, str],
    stage: str,
    lineage: Mapping[str, Mapping[str, str]] | None = None,
    progress: bool = True,
    prepare: Callable[[], Any] | None = None,
    small_units: bool = False,
    **kwargs: Any,
) -> UnitReport:
    """Run the units of a stage that are not complete yet, and record the stage's output.

    Every stage's per-unit adaptor has the signature
    ``func(input, out, *, unit, chash, lineage, **kwargs)``: it makes unit ``unit`` from
    ``input``, commits it under ``out`` and writes its completion marker with hash
    ``chash`` and inputs ``lineage``. When the units have run, units under ``out`` that
    ``inputs`` no longer plans are superseded and the manifest of the output is written
    (:mod:`lensdask.units`).

    Parameters
    ----------
    client : distributed.Client
        The injected Dask client.
    func : callable
        The per-unit adaptor.
    out : path
        The stage's output root (markers in ``out/_units``, failures in
        ``out/_failures.csv``, the manifest in ``out/_manifest.json``).
    inputs : mapping
        Unit name -> the unit's input (a tile, a file path, ...), in run order: every unit
        the stage's inputs and configuration plan.
    chash : str or mapping
        Configuration hash of every unit, or of each unit by name.
    stage : str
        Stage name, for task keys, progress bar, log, failures table and manifest.
    lineage : mapping, optional
        Each unit's inputs' identities (upstream marker digests, model id, ...) by unit; a
        unit whose lineage changed is remade.
    progress : bool
        Show a progress bar over units.
    prepare : callable, optional
        Called once before the units run, only when some are left to run (e.g. to load a
        model on the workers).
    small_units : bool
        Units take well under a second (a catalog file's selection): several run in one
        task (:func:`units_per_task`), each still committed on its own.
    **kwargs
        Passed to every call of ``func`` (configs, folders).

    Returns
    -------
    UnitReport
        Results of the units run now, the units skipped as complete, the failures.
    """
    from lensdask.storage import as_path
    from lensdask.units import (
        Manifest,
        StaleOutputError,
        clear_manifest,
        is_complete,
        lineage_hash,
        marker_digest,
        read_manifest,
        read_marker,
        supersede,
        write_manifest,
    )

    lineage = lineage or {}
    hashes = {
        unit: lineage_hash(chash if isinstance(chash, str) else chash[unit], lineage.get(unit, {}))
        for unit in inputs
    }
    as_path(out).mkdir(parents=True, exist_ok=True)
    todo = [unit for unit in inputs if not is_complete(out, unit, config_hash=hashes[unit])]
    if todo:  # until this run finishes, the output is not a finished run's
        clear_manifest(out)
    logger.info(
        "%s: %d units (%d already complete) -> %s", stage, len(inputs), len(inputs) - len(todo), out
    )
    if todo and prepare is not None:
        prepare()
    report = run_units(
        client,
        _run_unit,
        todo,
        out,
        stage=stage,
        unit_args=[
            (func, inputs[unit], unit, hashes[unit], dict(lineage.get(unit, {}))) for unit in todo
        ],
        progress=progress,
        batch=units_per_task(len(todo), sum(client.nthreads().values())) if small_units else 1,
        **kwargs,
    )
    pending = set(todo)
    report.skipped.extend(unit for unit in inputs if unit not in pending)
    report.write_failures(out)
    supersede(out, keep=inputs)
    failed = {failure.unit for failure in report.failures}
    markers = {unit: read_marker(out, unit) for unit in inputs if unit not in failed}
    manifest = Manifest(
        stage=stage,
        units={unit: marker_digest(m) for unit, m in markers.items() if m is not None},
        failed=tuple(sorted(failed | {unit for unit, m in markers.items() if m is None})),
    )
    try:
        unchanged = read_manifest(out) == manifest
    except StaleOutputError:
        unchanged = False
    if not unchanged:  # a rerun that found everything complete writes nothing
        write_manifest(out, manifest)
    return report


def _run_unit(
    item: tuple[Callable[..., Any], Any, str, str, dict[str, str]], out: Path, **kwargs: Any
) -> Any:
    func, arg, unit, chash, lineage = item
    return func(arg, out, unit=unit, chash=chash, lineage=lineage, **kwargs)
