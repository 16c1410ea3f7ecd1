"""``lensdask run --dry-run``: what a job would do, without doing it.

For each stage the job runs: its work units (one Dask task each: tiles, simulation
batches, score files), the rows it handles and an estimate of the size of its output, from
the job's configuration and, for real catalogs, the Parquet footers or FITS headers of the
inputs (nothing else is read). Each plan also says how much it reads and the work its cost
scales with (:attr:`StagePlan.work`), which :mod:`lensdask.capacity` prices in core-hours
and GPU-hours. Counts of targets and candidates of real surveys are
estimated with the fractions of KiDS DR4 (:data:`BG_FRACTION` and the reference run's
candidate rates); a mock survey's come from its configuration. Tasks scale with tiles and
batches, never with galaxies: that is what keeps the scheduler small.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lensdask.config import (
    CandidateConfig,
    CutoutConfig,
    FinetuneConfig,
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
REFERENCE_STAMP_PIXELS = 101 * 101
"""Pixels of the cutouts the per-unit costs of ``lensdask/capacity.json`` were measured on:
work on larger cutouts counts in multiples of it (cutting, simulating and the network's
convolutions all grow with the pixels)."""
COMPRESSED_BYTES_PER_PIXEL = {"RICE_1": 4 * 359 / 1682, "GZIP_2": 4 * 1472 / 1682}
"""File bytes per pixel of tile-compressed images (``bench_compressed.py``: a 1682 MiB
float32 tile is 359 MiB as RICE_1 and 1472 MiB as GZIP_2); others count as plain."""


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
    read_bytes: float | None = None
    """Estimated bytes the stage reads (None: unknown)."""
    work: Mapping[str, float | None] = field(default_factory=dict)
    """What the stage's cost scales with, by quantity (``catalog rows``, ``cutouts``, ...;
    None: unknown): the quantities that ``lensdask/capacity.json`` gives a rate for."""


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
    from lensdask.formats.parquet import CatalogError, dataset_files, read_metadata

    try:
        files = dataset_files(path) if path is not None else []
    except CatalogError:
        files = []
    if not files:
        return None, None
    return len(files), sum(read_metadata(f).num_rows for f in files)


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
    image_pixels: int | None = None
    """Pixels of the tile images in one band, all tiles (None: unknown)."""
    compression: str | None = None
    """Tile compression of the images (``RICE_1``, ...; None: plain)."""
    model_width: float = 1.0
    """Width of the job's network (1.0 where it takes a model from elsewhere)."""
    train_examples: int | None = None
    """Examples of the training and validation splits (None: a training set from
    elsewhere)."""

    @property
    def stamp_factor(self) -> float:
        """A cutout's pixels in units of :data:`REFERENCE_STAMP_PIXELS`."""
        return self.stamp_bytes / 4 / REFERENCE_STAMP_PIXELS

    def image_read_bytes(self, bands: int) -> float | None:
        """File bytes of the tile images of ``bands`` bands."""
        if self.image_pixels is None:
            return None
        per_pixel = COMPRESSED_BYTES_PER_PIXEL.get(self.compression or "", 4)
        return self.image_pixels * bands * per_pixel

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
    mock = config.mock_survey
    images = mock is not None and mock.images
    return JobSizes(
        tiles,
        sources,
        bg,
        lrg_total,
        size * size * 4,
        image_pixels=mock.tiles * mock.image_size**2 if images else None,
        compression=mock.compress if images else None,
        model_width=config.train.width if config.train is not None else 1.0,
        train_examples=sim.positives + sim.negatives if (sim := config.simulate) else None,
    )


def scaled(count: int | None, factor: float) -> float | None:
    """``count * factor``, or None where the count is unknown."""
    return None if count is None else count * factor


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
    pixels = mock.tiles * len(mock.bands) * mock.image_size**2 if mock.images else 0
    sources = sizes.sources or 0
    return StagePlan(
        "mock-survey",
        mock.tiles,
        "tile",
        sizes.sources,
        sources * CATALOG_ROW_BYTES + pixels * 4,
        f"{len(mock.bands)} band images of {mock.image_size} px" if mock.images else "",
        read_bytes=0,
        work={"catalog rows": sizes.sources, "image pixels": pixels},
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
        work={"catalog rows": sizes.sources},
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
        # every column of every row at most: the selection reads only the columns it needs
        read_bytes=scaled(sizes.sources, CATALOG_ROW_BYTES),
        work={"catalog rows": sizes.sources},
    )


def plan_cutouts(cutouts: CutoutConfig, sizes: JobSizes) -> StagePlan:
    """The cutouts: a task per tile, every target in every band."""
    bands = len(cutouts.bands)
    images = sizes.image_read_bytes(bands)
    targets = scaled(sizes.bg, CATALOG_ROW_BYTES)
    work = {"cutouts": scaled(sizes.bg, bands * sizes.stamp_factor)}
    if sizes.compression is not None:
        # a tile's stamps lie all over it, so the whole image is decompressed once
        work[f"{sizes.compression} pixels"] = scaled(sizes.image_pixels, bands)
    return StagePlan(
        "cutouts",
        sizes.tiles,
        "tile",
        sizes.bg,
        sizes.bg and sizes.bg * bands * sizes.stamp_bytes,
        f"{bands} band(s)",
        read_bytes=None if images is None or targets is None else images + targets,
        work=work,
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
        read_bytes=(train_val + test) * sizes.stamp_bytes,  # a host or negative cutout each
        work={"examples": (train_val + test) * sizes.stamp_factor},
    )


def plan_train(train: TrainConfig, sizes: JobSizes) -> StagePlan:
    """The training: a task per network (one, or each member of a committee); each
    network's model, checkpoint and optimiser state.

    The work counts every epoch of the budget over the training and validation splits, in
    units of the full network on a 101 x 101 px cutout (a network of width w costs about
    w^2 of it), summed over the networks."""
    widths = train.member_widths or (train.width,) * train.members
    squares = sum(width**2 for width in widths)
    examples = sizes.train_examples
    where = (
        "on one (GPU) worker"
        if train.members == 1
        else f"a committee of {train.members}, one task per member on as many (GPU) workers"
    )
    shown = train.width if not train.member_widths else ",".join(f"{w:g}" for w in widths)
    return StagePlan(
        "train",
        train.members,
        "model",
        None,
        RESNET18_PARAMS * squares * 4 * 3,
        f"width {shown}, up to {train.epochs} epochs, {where}",
        read_bytes=scaled(examples, train.members * train.epochs * sizes.stamp_bytes),
        work={"example-epochs": scaled(examples, train.epochs * squares * sizes.stamp_factor)},
    )


def plan_finetune(finetune: FinetuneConfig, sizes: JobSizes) -> StagePlan:
    """The fine-tune: one task; a model the size of its parent's (not known before it)."""
    return StagePlan(
        "finetune",
        1,
        "model",
        None,
        None,
        f"up to {finetune.epochs} epochs from the parent's weights, on one (GPU) worker",
    )


def plan_score(score: ScoreConfig, sizes: JobSizes) -> StagePlan:
    """The scores: a task per tile, a row per target.

    The work: ``images`` (reading and normalising a cutout, by its pixels), ``model
    images`` (the network on it: its width squared, times the pixels of its input, which
    is the model's 101 x 101 where the cutouts are resampled) and ``resampled stamps``."""
    model_input = 1.0 if score.resample else sizes.stamp_factor
    work = {
        "images": scaled(sizes.bg, sizes.stamp_factor),
        "model images": scaled(sizes.bg, sizes.model_width**2 * model_input),
    }
    if score.resample:
        work["resampled stamps"] = sizes.bg
    return StagePlan(
        "score",
        sizes.tiles,
        "tile",
        sizes.bg,
        sizes.bg and sizes.bg * 40,
        "resampled to the model's pixel scale" if score.resample else "",
        read_bytes=scaled(sizes.bg, sizes.stamp_bytes),
        work=work,
    )


def plan_candidates(candidates: CandidateConfig, sizes: JobSizes) -> StagePlan:
    """The candidates, at the reference run's rates."""
    n = sizes.candidates
    return StagePlan(
        "candidates",
        sizes.tiles,
        "score file",
        n,
        n and n * 100,
        "rates of the reference run",
        read_bytes=scaled(sizes.bg, 40),
        work={"score rows": sizes.bg},
    )


def plan_stamps(stamps: StampConfig, sizes: JobSizes) -> StagePlan:
    """The stamps: a task per tile, two PNGs per candidate."""
    n = sizes.candidates
    return StagePlan(
        "stamps",
        sizes.tiles,
        "tile",
        n,
        n and n * STAMP_BYTES,
        # the colour stamps' three bands of each candidate's cutout
        read_bytes=scaled(n, 3 * sizes.stamp_bytes),
        work={"candidates": n},
    )


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
