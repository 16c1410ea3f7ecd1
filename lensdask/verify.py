"""``lensdask verify WORKDIR``: audit a job's outputs for damage and staleness.

Every output of a stage under the job's workdir is checked from its manifest
(:mod:`lensdask.units`), one Dask task per unit:

- damaged: a file missing or of another size, a small file whose SHA-256 differs from its
  marker's, a Parquet page or a Zarr chunk that fails its checksum (every file is read
  once, whole);
- stale: an output whose stage did not finish its last run (no manifest), a unit whose
  marker changed since, a unit left outside the last finished run, or a unit made from
  other upstream units than the workdir holds now (its lineage).

An output that is one Parquet file and no units (the candidates, which their stage writes
again on every run) is read whole, verifying its page checksums.

With ``invalidate``, damaged units have their completion taken back
(:func:`lensdask.units.invalidate`), so that the next run of their stage remakes them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask import stages as table
from lensdask.runner import UnitReport, run_units
from lensdask.units import (
    MARKER_DIR,
    StaleOutputError,
    damage,
    has_units,
    invalidate,
    marker_digest,
    read_manifest,
    read_marker,
)

logger = logging.getLogger(__name__)

STAGE = "verify"


@dataclass(frozen=True)
class Finding:
    """Something wrong with a unit of an output."""

    output: str
    """The output's artifact name (``cutouts``; ``scores/<model_id>`` for scores)."""
    unit: str
    kind: str
    """``damaged`` or ``stale``."""
    reason: str


@dataclass
class VerifyReport:
    """What :func:`verify_workdir` checked and found."""

    outputs: dict[str, Path] = field(default_factory=dict)
    units: int = 0
    findings: list[Finding] = field(default_factory=list)
    tasks: UnitReport | None = None


def job_outputs(workdir: str | Path) -> dict[str, Path]:
    """The outputs of stages under ``workdir``, by artifact name (each model's scores apart)."""
    workdir = Path(workdir)
    found: dict[str, Path] = {}
    for stage in table.STAGES:
        for artifact, rel in stage.outputs.items():
            root = workdir / rel
            if has_units(root):
                found[artifact] = root
            elif root.is_dir():
                for sub in sorted(root.iterdir()):
                    if sub.is_dir() and not sub.name.startswith(("_", ".")) and has_units(sub):
                        found[f"{artifact}/{sub.name}"] = sub
    return found


def audit_unit(item: tuple[str, str, str]) -> str | None:
    """What is wrong with one unit of an output (None: nothing): its marker against the
    manifest, its files against the marker, and every Parquet page and Zarr chunk of it
    against its checksum."""
    root, unit, digest = Path(item[0]), item[1], item[2]
    marker = read_marker(root, unit)
    if marker is None:
        return "its completion marker is gone"
    if marker_digest(marker) != digest:
        return "its marker changed since its stage's last finished run"
    problem = damage(root, marker)
    if problem:
        return problem
    for rel in marker.files:
        try:
            _read_whole(root, rel)
        except Exception as err:
            return f"{root / rel}: cannot be read: {type(err).__name__}: {err}"
    return None


def _read_whole(root: Path, rel: str) -> None:
    """Read one file of a unit whole, verifying the checksums its format carries."""
    if rel.endswith(".parquet"):
        from lensdask.formats.parquet import read_file

        read_file(root / rel)
    elif "/c/" in f"/{rel}":
        import zarr

        array_path, _, coords = f"/{rel}".rpartition("/c/")
        array = zarr.open_array(str(root / array_path.lstrip("/")), mode="r")
        grid = array.shards or array.chunks
        index = [int(c) for c in coords.split("/")]
        array[tuple(slice(i * g, (i + 1) * g) for i, g in zip(index, grid, strict=True))]
    elif rel.endswith(".json"):
        json.loads((root / rel).read_text())


def verify_workdir(
    workdir: str | Path,
    *,
    client: Any,
    invalidate_damaged: bool = False,
    progress: bool = True,
) -> VerifyReport:
    """Audit every stage output under ``workdir`` on the cluster of ``client``.

    Parameters
    ----------
    workdir : path
        A job's workdir.
    client : distributed.Client
        The injected Dask client: one task per unit.
    invalidate_damaged : bool
        Take back the completion of damaged units, so that a rerun remakes them.
    progress : bool
        Show a progress bar over units.

    Returns
    -------
    VerifyReport
    """
    report = VerifyReport(outputs=job_outputs(workdir))
    if not report.outputs:
        raise FileNotFoundError(f"{workdir}: no output of a lensdask stage to verify")
    identities: dict[str, tuple[dict[str, str], str]] = {}
    names, items = [], []
    for output, root in report.outputs.items():
        try:
            manifest = read_manifest(root)
        except StaleOutputError as err:
            report.findings.append(Finding(output, "-", "stale", str(err)))
            continue
        identities[output.split("/")[0]] = (dict(manifest.units), manifest.digest)
        recorded = set(manifest.units) | set(manifest.failed)
        for path in sorted((root / MARKER_DIR).glob("*.json")):
            if path.stem not in recorded:
                reason = "not part of its stage's last finished run"
                report.findings.append(Finding(output, path.stem, "stale", reason))
        for unit, digest in manifest.units.items():
            names.append(f"{output}:{unit}")
            items.append((str(root), unit, digest))
    report.units = len(items)
    report.tasks = run_units(
        client, audit_unit, names, stage=STAGE, progress=progress, unit_args=items
    )
    for name, (root, unit, _) in zip(names, items, strict=True):
        output = name.rsplit(":", 1)[0]
        failure = next((f for f in report.tasks.failures if f.unit == name), None)
        problem = report.tasks.results.get(name) or (failure and failure.error)
        if problem:
            report.findings.append(Finding(output, unit, "damaged", problem))
            if invalidate_damaged:
                invalidate(Path(root), unit, problem)
            continue
        report.findings += _stale_lineage(output, Path(root), unit, identities)
    report.findings += _damaged_tables(Path(workdir), report)
    report.findings.sort(key=lambda f: (f.output, f.unit))
    return report


def _damaged_tables(workdir: Path, report: VerifyReport) -> list[Finding]:
    """Findings for the stage outputs that are one Parquet file, not units (the
    candidates): each is read whole, verifying its page checksums. They have no completion
    to take back: their stage writes them again on every run."""
    from lensdask.formats.parquet import read_file

    found = []
    for stage in table.STAGES:
        for artifact, rel in stage.outputs.items():
            path = workdir / rel
            if artifact in report.outputs or not (path.is_file() and rel.endswith(".parquet")):
                continue
            report.outputs[artifact] = path
            try:
                read_file(path)
            except Exception as err:
                reason = (
                    f"{path}: cannot be read: {type(err).__name__}: {err}; run {stage.name} again"
                )
                found.append(Finding(artifact, "-", "damaged", reason))
    return found


def _stale_lineage(
    output: str, root: Path, unit: str, identities: dict[str, tuple[dict[str, str], str]]
) -> list[Finding]:
    """Findings for the inputs of ``unit`` made by a stage of this workdir whose current
    units (or whole output) are not the ones it was made from."""
    marker = read_marker(root, unit)
    found = []
    for key, value in (marker.inputs if marker else {}).items():
        artifact, _, part = key.partition("/")
        if artifact not in identities:
            continue  # an input from outside the workdir (a catalog, images, a model)
        units, whole = identities[artifact]
        expected = {units.get(Path(part).stem)} if part else {units.get(unit), whole}
        if value not in expected:
            reason = f"made from other {artifact} than the workdir holds now ({key})"
            found.append(Finding(output, unit, "stale", reason))
    return found
