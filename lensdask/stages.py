"""The stage table: every stage of lensdask described once, in run order.

``lensdask run``, ``--stages``, ``--dry-run``, the job loader and the stage commands of the
command line are all made from :data:`STAGES`. A stage is a module with a run function
(``run(config, io, *, client, progress, **options) -> StageOutcome``) and a
:class:`Stage` entry here naming it; adding a stage is writing the module and adding its
entry (docs/architecture.md, "Adding a stage").

This module is cheap to import (the standard library and :mod:`lensdask.config`): the
command line is built from it without importing Dask, NumPy or TensorFlow. Run and plan
functions are named as ``"module:function"`` and imported only when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask import config as cfg
from lensdask.storage import as_path

ARTIFACTS: Mapping[str, str] = {
    "survey": "the mock survey",
    "catalog": "the catalog (Parquet file or folder)",
    "images": "the tile images (<tile>_<band>.fits)",
    "truth": "the truth tables of injected lenses (a mock survey's lenses/)",
    "targets": "the targets",
    "cutouts": "the cutout store",
    "trainset": "the training set",
    "model": "a model (a train section, or `model:`)",
    "scores": "the scores",
    "candidates": "the candidates",
    "stamps": "the stamps",
    "image_index": "the image index (lensdask index-images)",
    "grades": "the grades (a grades CSV: lensdask inspect export)",
    "finetuned_model": "the fine-tuned model",
}
"""What each artifact the stages read and write is, for messages. An artifact is a file or
folder a stage writes (a name among the stages' ``outputs``); a job file gives the path of
one it does not make by its name as a top-level key (``catalog:``, ``images:``,
``model:``), and stage commands take the inputs they read as ``--<name>``."""


def describe(artifact: str) -> str:
    """What ``artifact`` is, for messages."""
    return ARTIFACTS.get(artifact, f"the {artifact}")


def artifact_names() -> list[str]:
    """Every artifact some stage of :data:`STAGES` writes or reads (the grades are read
    only: a job gives their path)."""
    names = [
        name
        for stage in STAGES
        for name in [*stage.outputs, *(item.artifact for item in stage.inputs)]
    ]
    return list(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class Input:
    """An artifact a stage reads."""

    artifact: str
    """Name of the artifact (an output of an earlier stage)."""
    required: bool = True
    """The stage fails without it (otherwise it is used where it exists)."""
    argument: bool = False
    """The stage command takes it as its positional argument (else as ``--<artifact>``)."""
    help: str = ""
    """Help of the command-line argument or option."""


@dataclass(frozen=True, kw_only=True)
class Option:
    """A command-line option of a stage command that is not a field of its configuration
    (passed to the run function as a keyword argument)."""

    name: str
    """Keyword of the run function; the option is ``--name`` with dashes."""
    help: str
    kind: str = "path"
    """``path`` (a file), ``flag`` or ``float``."""
    into: tuple[str, str] | None = None
    """Instead of a keyword: the configuration's mapping field and key the value goes into
    (``("thresholds", "LRG")``)."""
    local: bool = False
    """A flag that runs the stage in this process, without a Dask cluster."""


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage: its name, job section, inputs, outputs and functions."""

    name: str
    """Command name and ``--stages`` name (``mock-survey``)."""
    config: type
    """Configuration dataclass of its job section (in :mod:`lensdask.config`)."""
    run: str
    """``"module:function"`` of the run function."""
    doc: str
    """Help of the stage command (first line: the one-line summary)."""
    outputs: Mapping[str, str]
    """Artifacts it writes -> their path under the job's workdir; the first is the output
    of the stage command (``--out``, or its argument when it reads nothing)."""
    inputs: tuple[Input, ...] = ()
    """Artifacts it reads."""
    plan: str | None = None
    """``"module:function"`` of its ``--dry-run`` plan (``plan(config, sizes)``)."""
    options: tuple[Option, ...] = ()
    """Command-line options that are not configuration fields."""
    arguments: tuple[str, ...] = ()
    """Configuration fields the stage command takes as positional arguments."""
    always: bool = False
    """Runs in every job, with the default configuration where the job has no section."""
    check: str | None = None
    """``"module:function"`` of its pre-flight check, ``check(config, io) -> list[str]``:
    the problems of its inputs and configuration that would fail every unit (each naming
    the file, column or parameter), found in seconds from footers and attributes before
    any cluster starts. Inputs in ``io.made`` are not there yet and are not checked."""
    worker_imports: tuple[str, ...] = ()
    """Libraries its units import that its run module does not (those it imports where
    used: astropy, zarr), for :attr:`preload`."""

    @property
    def preload(self) -> tuple[str, ...]:
        """Modules the local workers of its command start with, so that its first units
        import nothing: its run module and :attr:`worker_imports`."""
        return (self.run.partition(":")[0], *self.worker_imports)

    @property
    def section(self) -> str:
        """Key of the job file's section: the name with underscores."""
        return self.name.replace("-", "_")

    @property
    def out(self) -> str:
        """The artifact the stage command writes (``--out``)."""
        return next(iter(self.outputs))

    def run_function(self) -> Callable[..., StageOutcome]:
        """The run function (imported now)."""
        return _resolve(self.run)

    def plan_function(self) -> Callable[..., Any] | None:
        """The plan function (imported now), or None."""
        return _resolve(self.plan) if self.plan else None

    def check_function(self) -> Callable[..., list[str]] | None:
        """The pre-flight check (imported now), or None."""
        return _resolve(self.check) if self.check else None


@dataclass(frozen=True)
class StageIO:
    """The paths a stage reads and writes, by artifact name."""

    stage: str
    paths: Mapping[str, Path | None]
    made: frozenset[str] = frozenset()
    """Inputs that an earlier stage of the same run makes: not there before the run starts
    (pre-flight checks leave them out)."""

    def need(self, name: str) -> Path:
        """The path of input ``name``, which must exist."""
        path = self.paths.get(name)
        if path is None:
            raise FileNotFoundError(
                f"{self.stage}: needs {describe(name)}: give its path (`{name}:` in "
                f"the job file, --{name} on the command line)"
            )
        path = as_path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"{self.stage}: needs {describe(name)} at {path}; run the stage that makes it first"
            )
        return path

    def optional(self, name: str) -> Path | None:
        """The path of input ``name`` where it exists, else None."""
        path = self.paths.get(name)
        return as_path(path) if path is not None and as_path(path).exists() else None

    def out(self, name: str) -> Path:
        """Where output ``name`` goes."""
        path = self.paths.get(name)
        if path is None:
            raise ValueError(f"{self.stage}: no path for its output {name}")
        return as_path(path)


@dataclass
class StageOutcome:
    """What a run function reports: for the stage command, for ``lensdask run``, and the
    unit reports that decide the exit status."""

    reports: list[Any] = field(default_factory=list)
    """The :class:`lensdask.runner.UnitReport` of each batch of units it ran."""
    lines: list[str] = field(default_factory=list)
    """What the stage command prints."""
    counts: dict[str, Any] = field(default_factory=dict)
    """Counts ``lensdask run`` prints (``targets selected: 1234``)."""
    outputs: dict[str, Path] = field(default_factory=dict)
    """Where its outputs are, by description."""
    next_steps: list[str] = field(default_factory=list)
    """Commands for what comes after (grading)."""
    problems: list[str] = field(default_factory=list)
    """Inconsistencies found after the units ran (rows missing): a partial result."""


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage(
        name="mock-survey",
        config=cfg.MockSurveyConfig,
        run="lensdask.mock.survey:run",
        plan="lensdask.plan:plan_mock_survey",
        outputs={
            "survey": "survey",
            "catalog": "survey/catalog",
            "images": "survey/images",
            "truth": "survey/lenses",
        },
        doc="""Generate a mock KiDS-like survey into OUT.

        Writes OUT/catalog/<tile>.parquet (KiDS DR4 columns plus truth columns) and, with
        --images, OUT/images/<tile>_<band>.fits (TAN WCS, 0.2"/px, Moffat PSF, KiDS depth).
        Spirals, rings and mergers (TRUE_TYPE) are among the bright galaxies; with
        --lens-fraction, lensed arcs are painted around LRGs and their parameters written
        to OUT/lenses/<tile>.parquet (lens priors: the mock_survey.lenses section of a job
        file). Deterministic for a given seed, whatever the number of workers; a rerun
        skips complete tiles. A full 1 deg^2 tile has ~120k sources and 18000x18000 px
        images.""",
    ),
    Stage(
        name="ingest",
        config=cfg.IngestConfig,
        run="lensdask.catalog.ingest:run",
        plan="lensdask.plan:plan_ingest",
        check="lensdask.preflight:check_ingest",
        outputs={"catalog": "catalog"},
        arguments=("source",),
        doc="""Turn the per-tile FITS catalogs in SOURCE into the Parquet catalog layout.

        Columns are renamed to the KiDS DR4 names with the job's ingest.column_map (for
        other surveys); the tile name comes from THELI_NAME or the file name. One task per
        file.""",
    ),
    Stage(
        name="index-images",
        config=cfg.ImageIndexConfig,
        run="lensdask.images.index:run",
        arguments=("source",),
        inputs=(
            Input(
                artifact="images",
                required=False,
                help="In a job, the `images:` folder indexed when the section sets no source.",
            ),
        ),
        outputs={"image_index": "images.parquet"},
        doc="""Index the survey's images in SOURCE (a folder or a glob): one row per file
        (tile, band, path, HDU, weight and flag maps, compression, size, pixel scale, WCS
        footprint, seeing).

        Images are found by a name template (--template, or --preset kids-dr4:
        KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits[.fz] with its _wei and _msk maps under the
        catalog's tile key KIDS_{ra}_{dec}), by a manifest table (--manifest: path, band;
        optional tile, hdu, weight_path, flag_path), or else by reading every FITS file's
        headers (band from FILTER through the band map, tile from OBJECT, else the file's
        own name), so renamed files (ESO's ADP.*.fits) are recognised. Headers only, one
        task per batch of files; a rerun reads only the batches whose files changed.""",
    ),
    Stage(
        name="select",
        config=cfg.SelectConfig,
        run="lensdask.catalog.select:run",
        plan="lensdask.plan:plan_select",
        check="lensdask.preflight:check_select",
        always=True,
        inputs=(Input(artifact="catalog", argument=True),),
        outputs={"targets": "targets.parquet"},
        doc="""Select BG and LRG targets from the Parquet CATALOG (file or folder).

        BG: SG2DPHOT == 0 and MAG_AUTO <= 21. LRG (subset of BG, listed once as LRG):
        MAG_AUTO < 14 + c_par/0.3, |c_perp| < 0.2, MAG_AUTO <= 20 from the GAaP colours
        (Li et al. 2020): the kids-dr4 preset. --preset lsst or euclid selects on those
        surveys' columns; --samples gives expressions for BG and LRG. One task per catalog
        file; counts per tile and sample go to the log, OUT/_summary.json and
        OUT/_tiles.csv.""",
    ),
    Stage(
        name="cutouts",
        config=cfg.CutoutConfig,
        run="lensdask.cutouts.make:run",
        plan="lensdask.plan:plan_cutouts",
        check="lensdask.preflight:check_cutouts",
        worker_imports=("astropy.io.fits", "astropy.wcs", "zarr"),
        inputs=(
            Input(artifact="targets", argument=True),
            Input(
                artifact="images",
                required=False,
                help="Folder of the tile images named by --image-pattern (without an image index).",
            ),
            Input(
                artifact="image_index",
                required=False,
                help="The image index (lensdask index-images): each tile's images, HDUs and "
                "compression, whatever their names.",
            ),
            Input(
                artifact="catalog",
                required=False,
                help="The catalog the targets were selected from: each tile's PSF is measured "
                "on its SG2DPHOT stars and recorded (without it, only from --psf-keyword).",
            ),
        ),
        outputs={"cutouts": "cutouts.zarr"},
        doc="""Cut 101x101 stamps of the TARGETS (Parquet) from the tile images into a Zarr
        store.

        The images of each tile come from the image index (--image-index) or, without one,
        from the images folder by --image-pattern. One task per tile opens its FITS images
        (plain ones memory-mapped, tile-compressed ones read by section) and slices all its
        stamps; pixel values equal astropy's Cutout2D (mode partial, NaN outside the
        image). Each tile is committed whole with a completion marker; a rerun skips
        complete tiles. Targets whose centre is off their tile are skipped and named.""",
    ),
    Stage(
        name="simulate",
        config=cfg.SimulateConfig,
        run="lensdask.lensing.simulate:run",
        plan="lensdask.plan:plan_simulate",
        check="lensdask.preflight:check_simulate",
        inputs=(
            Input(artifact="cutouts", argument=True),
            Input(
                artifact="targets",
                required=False,
                help="Targets dataset; its TRUE_TYPE/TRUE_LENS columns (mock surveys) pick "
                "the negatives.",
            ),
        ),
        outputs={"trainset": "trainset.zarr"},
        options=(Option(name="plot", help="PNG of examples [next to OUT]."),),
        doc="""Build a training set from the cutout store CUTOUTS.

        Mock lenses painted on real LRG cutouts (SIE + shear + Gaussian-random-field
        deflector, Sersic source with clumps, PSF-convolved, arc peak scaled to the LRG's)
        and real negatives (LRGs, BGs, and the spirals, rings and mergers of a mock
        survey), normalised to [0, 255]. One task per batch; the same seed gives the same
        bytes on any number of workers, and a rerun redoes only the batches not complete.
        The test split's LRGs are kept out of the training and validation splits. Writes
        OUT and a PNG of examples next to it.""",
    ),
    Stage(
        name="train",
        config=cfg.TrainConfig,
        run="lensdask.nn.train:run",
        plan="lensdask.plan:plan_train",
        check="lensdask.preflight:check_train",
        inputs=(Input(artifact="trainset", argument=True),),
        outputs={"model": "model"},
        options=(
            Option(
                name="in_process",
                kind="flag",
                local=True,
                help="Train in this process instead of on a Dask worker.",
            ),
        ),
        doc="""Train the ResNet-18 classifier on TRAINSET (from `lensdask simulate`) into OUT.

        Runs as one task on one worker (a GPU worker where the cluster has one, with mixed
        precision), checkpoints every epoch and resumes from the last checkpoint when
        rerun, stops early on the validation loss, and evaluates the best model on the
        test split (ROC curve, AUC, TPR/FPR at p_CNN = 0.25, 0.5, 0.75). Writes
        model.keras, card.json, history.csv, roc.png and p_cnn_test.png.""",
    ),
    Stage(
        name="score",
        config=cfg.ScoreConfig,
        run="lensdask.score.scoring:run",
        plan="lensdask.plan:plan_score",
        check="lensdask.preflight:check_score",
        inputs=(
            Input(artifact="cutouts", argument=True),
            Input(
                artifact="model",
                help="The model directory (model.keras + card.json) from `lensdask train`.",
            ),
        ),
        outputs={"scores": "scores.parquet"},
        doc="""Score every cutout of the store CUTOUTS with the classifier: p_cnn per target.

        The model is loaded once on every worker (a GPU worker with --cluster cuda) and
        stays there; one task per tile reads its cutouts, normalises them as the model card
        says and predicts in batches of one fixed size. Writes OUT/<tile>.parquet (ID,
        THELI_NAME, sample, p_cnn, model_id), one row per cutout, and checks the row
        counts against the cutout store at the end. A rerun scores only tiles not scored
        with this model.""",
    ),
    Stage(
        name="candidates",
        config=cfg.CandidateConfig,
        run="lensdask.score.candidates:run",
        plan="lensdask.plan:plan_candidates",
        check="lensdask.preflight:check_candidates",
        inputs=(
            Input(artifact="scores", argument=True),
            Input(
                artifact="targets",
                required=False,
                help="The targets: add RA/Dec, MAG_AUTO and Z_B to the candidates; match "
                "known lenses.",
            ),
            Input(
                artifact="truth",
                required=False,
                help="Truth tables of injected lenses (a mock survey's lenses/): measure "
                "completeness.",
            ),
            Input(
                artifact="model",
                required=False,
                help="Take the scores of this model, where SCORES holds several models'.",
            ),
            Input(
                artifact="cutouts",
                required=False,
                help="The cutout store: refuse scores made from other cutouts, and report "
                "tiles not scored.",
            ),
            Input(
                artifact="catalog",
                required=False,
                help="The catalog the targets were selected from: known lenses that are not "
                "targets are reported as not selected.",
            ),
        ),
        outputs={"candidates": "candidates.parquet"},
        options=(
            Option(
                name="lrg_threshold",
                kind="float",
                into=("thresholds", "LRG"),
                help="p_cnn above which an LRG is a candidate.",
            ),
            Option(
                name="bg_threshold",
                kind="float",
                into=("thresholds", "BG"),
                help="p_cnn above which a BG is a candidate.",
            ),
        ),
        doc="""Pick the candidates from SCORES (`lensdask score`): p_cnn above each
        sample's threshold (0.75 for LRGs, 0.98 for BGs by default, as Li et al. 2020).

        Prints the candidates and their fraction per sample and writes OUT (by decreasing
        p_cnn), OUT_summary.json and OUT_p_cnn.png (the p_cnn distributions, log scale).
        With --truth (a mock survey's injected lenses) it measures the completeness by
        Einstein radius and arc brightness and the non-lens candidates per 1000 targets;
        with --known it reports which known lenses were recovered, and their p_cnn.""",
    ),
    Stage(
        name="stamps",
        config=cfg.StampConfig,
        run="lensdask.review.stamps:run",
        plan="lensdask.plan:plan_stamps",
        check="lensdask.preflight:check_stamps",
        inputs=(
            Input(artifact="candidates", argument=True),
            Input(
                artifact="cutouts",
                help="The cutout store holding the candidates' cutouts (g, r, i).",
            ),
        ),
        outputs={"stamps": "stamps"},
        options=(
            Option(
                name="ranking",
                help="A ranking table (lensdask rank): the contact sheets show its "
                "candidates by decreasing P instead of all candidates by decreasing p_CNN.",
            ),
        ),
        doc="""Colour stamps of the CANDIDATES (Parquet or CSV) and contact sheets of them.

        For each candidate a 20"x20" colour PNG (i, r, g as red, green, blue; Lupton asinh
        stretch in units of the sky noise; the r band in grey when a band is missing) and
        an r-band PNG, one task per tile, resumable tile by tile; then contact sheets in
        ranked order with IDs and scores (Li et al. 2020, Figure 8), one task per sheet.
        The grading page (lensdask inspect) and the Zooniverse export show these
        stamps.""",
    ),
    Stage(
        name="finetune",
        config=cfg.FinetuneConfig,
        run="lensdask.nn.finetune:run",
        plan="lensdask.plan:plan_finetune",
        check="lensdask.nn.finetune:check_finetune",
        inputs=(
            Input(artifact="model", argument=True),
            Input(artifact="grades", help="Grades CSV (lensdask inspect export)."),
            Input(artifact="candidates", help="The candidates the grades are of."),
            Input(artifact="cutouts", help="The cutout store holding the candidates' cutouts."),
            Input(
                artifact="trainset",
                help="The model's original training set: the replay sample and the test "
                "split the fine-tuned model is evaluated on.",
            ),
        ),
        outputs={"finetuned_model": "model-finetuned"},
        options=(
            Option(
                name="in_process",
                kind="flag",
                local=True,
                help="Fine-tune in this process instead of on a Dask worker.",
            ),
        ),
        doc="""Fine-tune MODEL on graded candidates (lensdask inspect export) into OUT.

        Candidates graded A/B by enough agreeing graders (or with P at or above
        --positive-p) become lenses, those graded C/D hard negatives; a share is held out
        to evaluate. The rest, in augmented copies, is mixed with a replay sample of the
        original TRAINSET and trains from MODEL's weights as one resumable task, like
        train. The card records the parent model, the grades used (per grade and grader)
        and the metrics on the original test split and on the held-out grades. Grades of
        unknown candidates or of candidates without a cutout, too few lenses or
        non-lenses, and a model made for other stamps (band, size, pixel scale,
        normalisation) are refused.""",
    ),
)
"""Every stage, in run order."""


def stage_names() -> list[str]:
    """Names of the stages of :data:`STAGES`, in run order."""
    return [stage.name for stage in STAGES]


def stage_named(name: str) -> Stage:
    """The stage called ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)
