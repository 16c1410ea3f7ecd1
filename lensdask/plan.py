"""``lensdask run --dry-run``: what a job would do, without doing it.

For each stage the job runs: its work units (one Dask task each: tiles, simulation
batches, score files), the rows it handles and an estimate of the size of its output, from
the job's configuration and, for real catalogs, the Parquet footers or FITS headers of the
inputs (nothing else is read). Counts of targets and candidates of real surveys are
estimated with the fractions of KiDS DR4 (:data:`BG_FRACTION` and the reference run's
candidate rates); a mock survey's come from its configuration. Tasks scale with tiles and
batches, never with galaxies: that is what keeps the scheduler small.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from pathlib import Path

from lensdask.config import JobConfig

BG_FRACTION = 0.032
"""Fraction of catalog sources that are bright galaxies (KiDS DR4: 3.8M of 120M)."""
LRG_FRACTION = 0.034
"""Fraction of the bright galaxies that are LRGs (KiDS DR4: 127k of 3.8M)."""
CANDIDATE_RATES = {"LRG": 0.0224, "BG": 0.00093}
"""Fractions of each sample above the default thresholds in the reference run."""
CATALOG_ROW_BYTES = 60
"""Bytes per catalog row in Parquet (measured: 6.7 GiB for 120M rows of the mock KiDS)."""
RESNET18_PARAMS = 11.2e6
"""Parameters of the full ResNet-18 (width 1); about width^2 times that for narrower ones."""
STAMP_BYTES = 30_000
"""Bytes of the two PNG stamps (colour and r band) of one candidate."""


@dataclass(frozen=True)
class StagePlan:
    """What one stage would do."""

    stage: str
    tasks: int | None
    """Dask tasks (work units); None where the inputs are not there to count."""
    unit: str
    """What a task handles (``tile``, ``batch``, ...)."""
    rows: int | None
    """Sources, targets, cutouts or examples handled (None: unknown)."""
    output_bytes: float | None
    """Estimated size of the stage's output (None: unknown)."""
    note: str = ""


def catalog_size(config: JobConfig) -> tuple[int | None, int | None]:
    """Catalog files (tiles) and rows of the job's catalog, where they can be known."""
    if config.mock_survey is not None:
        mock = config.mock_survey
        area = mock.tiles * mock.tile_size**2
        return mock.tiles, round(area * (mock.density + mock.lrg_density))
    if config.ingest is not None:
        source = config.ingest.source
        files = sorted(glob.glob(str(Path(source) / config.ingest.pattern))) if source else []
        return (len(files) or None), (fits_rows(files) if files else None)
    return parquet_size(config.catalog)


def fits_rows(files: list[str]) -> int | None:
    """Rows of FITS tables from their headers (NAXIS2 of the first table HDU)."""
    from astropy.io import fits

    total = 0
    for path in files:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            tables = [hdu for hdu in hdul if isinstance(hdu, fits.BinTableHDU | fits.TableHDU)]
            if not tables:
                return None
            total += tables[0].header["NAXIS2"]
    return total


def parquet_size(path: Path | None) -> tuple[int | None, int | None]:
    """Files and rows of a Parquet file or folder, from the footers."""
    import pyarrow.parquet as pq

    from lensdask.catalog.select import CatalogError, catalog_files

    try:
        files = catalog_files(path) if path is not None else []
    except CatalogError:
        files = []
    if not files:
        return None, None
    return len(files), sum(pq.read_metadata(f).num_rows for f in files)


def plan_job(config: JobConfig, stages: list[str]) -> list[StagePlan]:
    """The plan of ``stages`` (from :func:`lensdask.pipeline.chosen_stages`) of ``config``."""
    tiles, sources = catalog_size(config)
    if config.mock_survey is not None:
        mock = config.mock_survey
        lrg = round(mock.tiles * mock.tile_size**2 * mock.lrg_density)
        bg = None if sources is None else round((sources - lrg) * BG_FRACTION) + lrg
        lrg_total = None if bg is None else round((bg - lrg) * LRG_FRACTION) + lrg
    else:
        bg = None if sources is None else round(sources * BG_FRACTION)
        lrg_total = None if bg is None else round(bg * LRG_FRACTION)
    size = config.cutouts.size if config.cutouts else 101
    stamp_bytes = size * size * 4
    plans: dict[str, StagePlan] = {}
    if config.mock_survey is not None:
        mock = config.mock_survey
        images = mock.tiles * len(mock.bands) * mock.image_size**2 * 4 if mock.images else 0
        plans["mock-survey"] = StagePlan(
            "mock-survey",
            mock.tiles,
            "tile",
            sources,
            sources * CATALOG_ROW_BYTES + images,
            f"{len(mock.bands)} band images of {mock.image_size} px" if mock.images else "",
        )
    if config.ingest is not None:
        plans["ingest"] = StagePlan(
            "ingest",
            tiles,
            "file",
            sources,
            sources and sources * CATALOG_ROW_BYTES,
            "" if tiles else f"no catalogs found in {config.ingest.source}",
        )
    plans["select"] = StagePlan(
        "select",
        tiles,
        "file",
        bg,
        bg and bg * CATALOG_ROW_BYTES,
        "" if lrg_total is None else f"~{lrg_total:,} LRGs",
    )
    if config.cutouts is not None:
        bands = len(config.cutouts.bands)
        plans["cutouts"] = StagePlan(
            "cutouts", tiles, "tile", bg, bg and bg * bands * stamp_bytes, f"{bands} band(s)"
        )
    if config.simulate is not None:
        sim = config.simulate
        train_val = sim.positives + sim.negatives
        test = sim.test_positives + sim.test_negatives
        batches = math.ceil(train_val / sim.batch_size) + math.ceil(test / sim.batch_size)
        plans["simulate"] = StagePlan(
            "simulate",
            batches,
            "batch",
            train_val + test,
            (train_val + test) * stamp_bytes,
            f"{sim.positives:,} mock lenses, {sim.negatives:,} negatives + test",
        )
    if config.train is not None:
        params = RESNET18_PARAMS * config.train.width**2
        plans["train"] = StagePlan(
            "train",
            1,
            "model",
            None,
            params * 4 * 3,
            f"width {config.train.width}, up to {config.train.epochs} epochs, on one (GPU) worker",
        )
    if config.score is not None:
        plans["score"] = StagePlan("score", tiles, "tile", bg, bg and bg * 40)
    if config.candidates is not None:
        n = None
        if bg is not None:
            n = round(lrg_total * CANDIDATE_RATES["LRG"] + (bg - lrg_total) * CANDIDATE_RATES["BG"])
        plans["candidates"] = StagePlan(
            "candidates", tiles, "score file", n, n and n * 100, "rates of the reference run"
        )
    if config.stamps is not None:
        n = plans["candidates"].rows if "candidates" in plans else None
        plans["stamps"] = StagePlan("stamps", tiles, "tile", n, n and n * STAMP_BYTES)
    return [plans[stage] for stage in stages if stage in plans]


def format_bytes(value: float | None) -> str:
    """``1.2 GiB``-style size, or ``?``."""
    if value is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plan_lines(plans: list[StagePlan]) -> list[str]:
    """The plan as a table of text lines, with totals."""
    lines = [f"{'stage':<12} {'tasks':>8} {'per task':<11} {'rows':>15} {'output':>10}  note"]
    for plan in plans:
        rows = "?" if plan.rows is None else f"{plan.rows:,}"
        tasks = "?" if plan.tasks is None else f"{plan.tasks:,}"
        lines.append(
            f"{plan.stage:<12} {tasks:>8} {plan.unit:<11} {rows:>15} "
            f"{format_bytes(plan.output_bytes):>10}  {plan.note}".rstrip()
        )
    total = sum(plan.output_bytes or 0 for plan in plans)
    tasks = sum(plan.tasks or 0 for plan in plans)
    unknown = any(plan.tasks is None or plan.output_bytes is None for plan in plans)
    lines.append(
        f"{'total':<12} {tasks:>8,} {'':<11} {'':>15} {format_bytes(total):>10}"
        + ("  (more where ? stands)" if unknown else "")
    )
    return lines
