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

from lensdask.config import (
    CandidateConfig,
    CutoutConfig,
    IngestConfig,
    MockSurveyConfig,
    ScoreConfig,
    SelectConfig,
    SimulateConfig,
    StampConfig,
    TrainConfig,
)
from lensdask.job import JobConfig

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
    return parquet_size(config.path("catalog"))


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

    from lensdask.formats.parquet import CatalogError, dataset_files

    try:
        files = dataset_files(path) if path is not None else []
    except CatalogError:
        files = []
    if not files:
        return None, None
    return len(files), sum(pq.read_metadata(f).num_rows for f in files)


@dataclass(frozen=True)
class JobSizes:
    """Sizes of a job that the stages' plans share, from its configuration and inputs."""

    tiles: int | None
    """Catalog files (tiles); None where the inputs are not there to count."""
    sources: int | None
    """Catalog rows."""
    bg: int | None
    """Bright galaxies (all targets)."""
    lrg: int | None
    """LRGs among them."""
    stamp_bytes: int
    """Bytes of one cutout in one band."""

    @property
    def candidates(self) -> int | None:
        """Candidates at the reference run's rates."""
        if self.bg is None or self.lrg is None:
            return None
        return round(
            self.lrg * CANDIDATE_RATES["LRG"] + (self.bg - self.lrg) * CANDIDATE_RATES["BG"]
        )


def job_sizes(config: JobConfig) -> JobSizes:
    """The :class:`JobSizes` of ``config``."""
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
    return JobSizes(tiles, sources, bg, lrg_total, size * size * 4)


def plan_job(config: JobConfig, stages: list[str]) -> list[StagePlan]:
    """The plan of ``stages`` (from :func:`lensdask.pipeline.chosen_stages`) of ``config``:
    each stage's plan function of the stage table, or unknowns where it has none."""
    from lensdask.stages import stage_named

    sizes = job_sizes(config)
    plans = []
    for name in stages:
        stage = stage_named(name)
        plan = stage.plan_function()
        section = getattr(config, stage.section)
        plans.append(plan(section, sizes) if plan else StagePlan(name, None, "unit", None, None))
    return plans


def plan_mock_survey(mock: MockSurveyConfig, sizes: JobSizes) -> StagePlan:
    """The mock survey: a task per tile, the catalog and the images."""
    images = mock.tiles * len(mock.bands) * mock.image_size**2 * 4 if mock.images else 0
    sources = sizes.sources or 0
    return StagePlan(
        "mock-survey",
        mock.tiles,
        "tile",
        sizes.sources,
        sources * CATALOG_ROW_BYTES + images,
        f"{len(mock.bands)} band images of {mock.image_size} px" if mock.images else "",
    )


def plan_ingest(ingest: IngestConfig, sizes: JobSizes) -> StagePlan:
    """The ingest: a task per FITS catalog."""
    return StagePlan(
        "ingest",
        sizes.tiles,
        "file",
        sizes.sources,
        sizes.sources and sizes.sources * CATALOG_ROW_BYTES,
        "" if sizes.tiles else f"no catalogs found in {ingest.source}",
    )


def plan_select(select: SelectConfig, sizes: JobSizes) -> StagePlan:
    """The selection: a task per catalog file."""
    return StagePlan(
        "select",
        sizes.tiles,
        "file",
        sizes.bg,
        sizes.bg and sizes.bg * CATALOG_ROW_BYTES,
        "" if sizes.lrg is None else f"~{sizes.lrg:,} LRGs",
    )


def plan_cutouts(cutouts: CutoutConfig, sizes: JobSizes) -> StagePlan:
    """The cutouts: a task per tile, every target in every band."""
    bands = len(cutouts.bands)
    return StagePlan(
        "cutouts",
        sizes.tiles,
        "tile",
        sizes.bg,
        sizes.bg and sizes.bg * bands * sizes.stamp_bytes,
        f"{bands} band(s)",
    )


def plan_simulate(sim: SimulateConfig, sizes: JobSizes) -> StagePlan:
    """The training set: a task per batch of each split."""
    train_val = sim.positives + sim.negatives
    test = sim.test_positives + sim.test_negatives
    batches = math.ceil(train_val / sim.batch_size) + math.ceil(test / sim.batch_size)
    return StagePlan(
        "simulate",
        batches,
        "batch",
        train_val + test,
        (train_val + test) * sizes.stamp_bytes,
        f"{sim.positives:,} mock lenses, {sim.negatives:,} negatives + test",
    )


def plan_train(train: TrainConfig, sizes: JobSizes) -> StagePlan:
    """The training: one task; the model, its checkpoint and its optimiser state."""
    params = RESNET18_PARAMS * train.width**2
    return StagePlan(
        "train",
        1,
        "model",
        None,
        params * 4 * 3,
        f"width {train.width}, up to {train.epochs} epochs, on one (GPU) worker",
    )


def plan_score(score: ScoreConfig, sizes: JobSizes) -> StagePlan:
    """The scores: a task per tile, a row per target."""
    return StagePlan("score", sizes.tiles, "tile", sizes.bg, sizes.bg and sizes.bg * 40)


def plan_candidates(candidates: CandidateConfig, sizes: JobSizes) -> StagePlan:
    """The candidates, at the reference run's rates."""
    n = sizes.candidates
    return StagePlan(
        "candidates", sizes.tiles, "score file", n, n and n * 100, "rates of the reference run"
    )


def plan_stamps(stamps: StampConfig, sizes: JobSizes) -> StagePlan:
    """The stamps: a task per tile, two PNGs per candidate."""
    n = sizes.candidates
    return StagePlan("stamps", sizes.tiles, "tile", n, n and n * STAMP_BYTES)


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
