"""The ``lensdask`` command: one subcommand per stage, and ``run`` for a whole job.

Every subcommand takes the same cluster options (``--cluster``, ``--workers``, ...),
prints the Dask dashboard link when the cluster is up, shows a progress bar per stage, and
exits with 0 when everything completed, 3 when some units (tiles) failed while the rest
completed (the failed ones are listed and in ``_failures.csv``), 2 on bad usage and 1 on
any other error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from lensdask import __version__
from lensdask.cluster import ClusterSpec
from lensdask.runner import EXIT_PARTIAL, UnitReport

logger = logging.getLogger("lensdask")


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the cluster options shared by every subcommand."""
    options = [
        click.option(
            "--cluster",
            default="local",
            show_default=True,
            help="local (LocalCluster), cuda (LocalCUDACluster, one worker per GPU), slurm or "
            "pbs (dask-jobqueue, deploy/jobqueue.yaml), or a scheduler address tcp://host:port.",
        ),
        click.option(
            "--workers", type=int, default=None, help="Workers (local) or jobs (slurm/pbs)."
        ),
        click.option(
            "--threads-per-worker", type=int, default=1, show_default=True, help="Local only."
        ),
        click.option("--memory-limit", default="auto", show_default=True, help="Per local worker."),
        click.option(
            "--dashboard-address",
            default="127.0.0.1:8787",
            show_default=True,
            help="Where the Dask dashboard listens (loopback by default).",
        ),
        click.option(
            "--jobqueue-config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="dask-jobqueue YAML for slurm/pbs (default deploy/jobqueue.yaml).",
        ),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def job_option(section: str, what: str) -> Callable[..., Any]:
    """The ``--job`` option of a stage command: take section ``section`` of a job file."""
    return click.option(
        "--job",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=f"Take the {section} section ({what}) from this job file.",
    )


def section_config(job: Path | None, section: str, default: Any, overrides: dict[str, Any]):
    """The configuration of a stage: the job file's section (or ``default``), with the
    command-line options that were given (not None) replacing its values."""
    import dataclasses

    from lensdask.config import load_job

    config = (getattr(load_job(job), section) if job else None) or default
    given = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(config, **given)


@contextlib.contextmanager
def cluster_client(opts: dict[str, Any]) -> Iterator[Any]:
    """Start the cluster the command-line options name, print the dashboard link."""
    from lensdask.cluster import connect

    spec = ClusterSpec(
        kind=opts.pop("cluster"),
        n_workers=opts.pop("workers"),
        threads_per_worker=opts.pop("threads_per_worker"),
        memory_limit=opts.pop("memory_limit"),
        dashboard_address=opts.pop("dashboard_address"),
        jobqueue_config=opts.pop("jobqueue_config"),
    )
    with connect(spec) as client:
        click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn lensdask's input errors into a one-line message and exit status 1."""
    from lensdask.catalog.schema import SchemaError
    from lensdask.config import ConfigError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, SchemaError, OSError, ValueError, ImportError) as err:
            raise click.ClickException(str(err)) from err

    return wrapper


def finish(reports: list[UnitReport]) -> None:
    """Exit with :data:`EXIT_PARTIAL` when some units failed, listing them."""
    failures = [failure for report in reports for failure in report.failures]
    if failures:
        for failure in failures:
            click.echo(f"FAILED {failure.stage} {failure.unit}: {failure.error}", err=True)
        click.echo(f"{len(failures)} unit(s) failed; the others completed", err=True)
        sys.exit(EXIT_PARTIAL)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lensdask")
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(verbose: int, quiet: bool) -> None:
    """lensdask: find strong gravitational lenses in wide imaging surveys with Dask.

    Stages, each a command: mock-survey (or ingest) -> select -> cutouts -> simulate ->
    train (evaluate recomputes the test metrics).
    `lensdask run JOB.yaml` chains them from one job file. Every command starts or joins a
    Dask cluster (--cluster) and prints its dashboard link.
    """
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)


@main.command("mock-survey")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tiles", type=int, default=4, show_default=True, help="Number of tiles.")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed.")
@click.option(
    "--tile-size", type=float, default=1.0, show_default=True, help="Side of a tile, deg (<= 1)."
)
@click.option("--density", type=float, default=119_300.0, show_default=True, help="Sources/deg^2.")
@click.option("--images/--no-images", default=False, show_default=True, help="Write tile images.")
@click.option(
    "--image-pixels",
    type=int,
    default=None,
    help="Side of the tile images, px (default: the tile; more adds a margin of sky).",
)
@click.option(
    "--bands", default="r,g,i", show_default=True, help="Image bands (KiDS seeing and depth)."
)
@click.option(
    "--lrg-density",
    type=float,
    default=0.0,
    show_default=True,
    help="Extra LRGs per deg^2 (r 17-20, z 0.15-0.5, passing the LRG cuts) on top of the "
    "natural ~135/deg^2: enough LRG cutouts for a training set from a small area.",
)
@click.option(
    "--lens-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of LRGs with a lensed source painted into the images (needs --images); "
    "the truth goes to OUT/lenses/<tile>.parquet and the catalog's TRUE_LENS.",
)
@click.option(
    "--lens-bg-fraction",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of the other BGs (not LRGs) with a lensed source (needs --images).",
)
@click.option(
    "--spiral-fraction",
    type=float,
    default=0.05,
    show_default=True,
    help="Fraction of galaxies brighter than r = 21 that are spirals (two blue arms).",
)
@click.option(
    "--ring-fraction",
    type=float,
    default=0.03,
    show_default=True,
    help="Fraction of galaxies brighter than r = 21 that are ring galaxies (blue ring of "
    "1-4 arcsec around a red core).",
)
@click.option(
    "--merger-fraction",
    type=float,
    default=0.03,
    show_default=True,
    help="Fraction of galaxies brighter than r = 21 that are mergers (a companion 1-3 "
    "arcsec away and a tidal tail).",
)
@cluster_options
@handle_errors
def mock_survey_cmd(
    out: Path,
    tiles: int,
    seed: int,
    tile_size: float,
    density: float,
    images: bool,
    image_pixels: int | None,
    bands: str,
    lrg_density: float,
    lens_fraction: float,
    lens_bg_fraction: float,
    spiral_fraction: float,
    ring_fraction: float,
    merger_fraction: float,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Generate a mock KiDS-like survey into OUT.

    Writes OUT/catalog/<tile>.parquet (KiDS DR4 columns plus truth columns) and, with
    --images, OUT/images/<tile>_<band>.fits (TAN WCS, 0.2"/px, Moffat PSF, KiDS depth).
    Spirals, rings and mergers (TRUE_TYPE) are among the bright galaxies; with
    --lens-fraction, lensed arcs are painted around LRGs and their parameters written to
    OUT/lenses/<tile>.parquet (lens priors: the mock_survey.lenses section of a job file).
    Deterministic for a given seed, whatever the number of workers; a rerun skips
    complete tiles. A full 1 deg^2 tile has ~120k sources and 18000x18000 px images.
    """
    from lensdask.config import BandSpec, MockSurveyConfig
    from lensdask.mock.survey import make_mock_survey

    config = MockSurveyConfig(
        tiles=tiles,
        seed=seed,
        tile_size=tile_size,
        density=density,
        images=images,
        image_pixels=image_pixels,
        bands=tuple(BandSpec.kids(name.strip()) for name in bands.split(",")),
        lrg_density=lrg_density,
        lens_fraction=lens_fraction,
        lens_bg_fraction=lens_bg_fraction,
        spiral_fraction=spiral_fraction,
        ring_fraction=ring_fraction,
        merger_fraction=merger_fraction,
    )
    with cluster_client(opts) as client:
        report = make_mock_survey(out, config=config, client=client, progress=not no_progress)
    click.echo(
        f"mock survey: {report.written} tiles written, {report.skipped} already complete, "
        f"{report.rows_written} sources written -> {report.out}"
    )
    finish([report.units])


@main.command("select")
@click.argument("catalog", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("targets.parquet"),
    show_default=True,
    help="Targets dataset (a folder of Parquet files).",
)
@job_option("select", "cuts, column map")
@cluster_options
@handle_errors
def select_cmd(catalog: Path, out: Path, job: Path | None, no_progress: bool, **opts: Any) -> None:
    """Select BG and LRG targets from the Parquet CATALOG (file or folder).

    BG: SG2DPHOT == 0 and MAG_AUTO <= 21. LRG (subset of BG, listed once as LRG):
    MAG_AUTO < 14 + c_par/0.3, |c_perp| < 0.2, MAG_AUTO <= 20 from the GAaP colours
    (Li et al. 2020). One task per catalog file; counts per tile and sample go to the log,
    OUT/_summary.json and OUT/_tiles.csv.
    """
    from lensdask.catalog.select import select_targets
    from lensdask.config import SelectConfig

    config = section_config(job, "select", SelectConfig(), {})
    with cluster_client(opts) as client:
        report = select_targets(
            catalog, out, config=config, client=client, progress=not no_progress
        )
    click.echo(
        f"select: {report.total('rows')} targets ({report.total('LRG')} LRG, "
        f"{report.total('BG')} BG) -> {report.out}"
    )
    finish([report.units])


@main.command("cutouts")
@click.argument("targets", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of the tile images (<tile>_<band>.fits).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("cutouts.zarr"),
    show_default=True,
    help="The Zarr cutout store.",
)
@click.option(
    "--bands", default="r,g,i", show_default=True, help="Bands; the first decides on-tile."
)
@click.option("--size", type=int, default=101, show_default=True, help="Cutout side, px.")
@click.option(
    "--image-pattern", default="{tile}_{band}.fits", show_default=True, help="Image file names."
)
@cluster_options
@handle_errors
def cutouts_cmd(
    targets: Path,
    images: Path,
    out: Path,
    bands: str,
    size: int,
    image_pattern: str,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Cut 101x101 stamps of the TARGETS (Parquet) from the tile images into a Zarr store.

    One task per tile opens the tile's FITS images memory-mapped and slices all its stamps;
    pixel values equal astropy's Cutout2D (mode partial, NaN outside the image). Each tile
    is committed whole with a completion marker; a rerun skips complete tiles. Targets
    whose centre is off their tile are skipped and counted.
    """
    from lensdask.config import CutoutConfig
    from lensdask.cutouts.make import make_cutouts

    config = CutoutConfig(
        bands=tuple(band.strip() for band in bands.split(",")),
        size=size,
        image_pattern=image_pattern,
    )
    with cluster_client(opts) as client:
        report = make_cutouts(
            targets, images, out, config=config, client=client, progress=not no_progress
        )
    click.echo(
        f"cutouts: {report.written} tiles written, {report.skipped} already complete, "
        f"{len(report.units.failures)} failed; {report.counts['cutouts']} cutouts "
        f"({report.counts['edge']} at an image border), {report.counts['outside']} targets "
        f"outside their tile -> {report.out}"
    )
    finish([report.units])


@main.command("simulate")
@click.argument("cutouts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("trainset.zarr"),
    show_default=True,
    help="The training set (Zarr) to write.",
)
@click.option(
    "--targets",
    type=click.Path(exists=True, path_type=Path),
    help="Targets dataset; its TRUE_TYPE/TRUE_LENS columns (mock surveys) pick the negatives.",
)
@job_option("simulate", "sizes, priors, PSF")
@click.option("--positives", type=int, help="Mock lenses in train + validation [200000].")
@click.option("--negatives", type=int, help="Real negatives in train + validation [18000].")
@click.option("--test-positives", type=int, help="Mock lenses in the test split [2000].")
@click.option("--test-negatives", type=int, help="Real LRGs in the test split [2000].")
@click.option("--batch-size", type=int, help="Examples per task and Zarr chunk [512].")
@click.option("--seed", type=int, help="Run seed [0].")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Examples PNG.")
@cluster_options
@handle_errors
def simulate_cmd(
    cutouts: Path,
    out: Path,
    targets: Path | None,
    job: Path | None,
    plot: Path | None,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Build a training set from the cutout store CUTOUTS: mock lenses painted on real LRG
    cutouts (SIE + shear + Gaussian-random-field deflector, Sersic source with clumps,
    PSF-convolved, arc peak scaled to the LRG's) and real negatives (LRGs, BGs, and the
    spirals, rings and mergers of a mock survey), normalised to [0, 255].

    One task per batch; the same seed gives the same bytes on any number of workers, and a
    rerun redoes only the batches not complete. The test split's LRGs are kept out of the
    training and validation splits. Writes OUT and a PNG of examples next to it.
    """

    from lensdask.config import SimulateConfig
    from lensdask.lensing.simulate import simulate_lenses

    names = ("positives", "negatives", "test_positives", "test_negatives", "batch_size", "seed")
    overrides = {name: opts.pop(name) for name in names}
    config = section_config(job, "simulate", SimulateConfig(), overrides)
    with cluster_client(opts) as client:
        report = simulate_lenses(
            cutouts,
            out,
            config=config,
            client=client,
            targets=targets,
            plot=plot,
            progress=not no_progress,
        )
    for split, kinds in report.counts.items():
        parts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        click.echo(f"simulate: {split}: {parts}")
    click.echo(
        f"simulate: {report.written} batches written, {report.skipped} already complete, "
        f"{len(report.units.failures)} failed -> {report.out}"
    )
    if report.plot:
        click.echo(f"examples -> {report.plot}")
    finish([report.units])


@main.command("train")
@click.argument("trainset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("model"),
    show_default=True,
    help="The model directory (model.keras, card.json, plots, checkpoints).",
)
@job_option("train", "width, epochs, learning rate")
@click.option("--width", type=float, help="Filter width multiplier (1: full ResNet-18) [1.0].")
@click.option("--epochs", type=int, help="Most epochs [30].")
@click.option("--batch-size", type=int, help="Examples per step [64].")
@click.option("--learning-rate", type=float, help="Adam learning rate [1e-3].")
@click.option("--patience", type=int, help="Early-stopping patience, epochs [5].")
@click.option("--seed", type=int, help="Seed of weights, shuffling, augmentation [0].")
@click.option(
    "--in-process", is_flag=True, help="Train in this process instead of on a Dask worker."
)
@cluster_options
@handle_errors
def train_cmd(
    trainset: Path,
    out: Path,
    job: Path | None,
    in_process: bool,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Train the ResNet-18 classifier on TRAINSET (from `lensdask simulate`) into OUT.

    Runs as one task on one worker (a GPU worker where the cluster has one, with mixed
    precision), checkpoints every epoch and resumes from the last checkpoint when rerun,
    stops early on the validation loss, and evaluates the best model on the test split
    (ROC curve, AUC, TPR/FPR at p_CNN = 0.25, 0.5, 0.75). Writes model.keras, card.json,
    history.csv, roc.png and p_cnn_test.png.
    """

    from lensdask.config import TrainConfig
    from lensdask.nn.train import train_model

    names = ("width", "epochs", "batch_size", "learning_rate", "patience", "seed")
    overrides = {name: opts.pop(name) for name in names}
    config = section_config(job, "train", TrainConfig(), overrides)
    if in_process:
        report = train_model(trainset, out, config=config, progress=not no_progress)
    else:
        with cluster_client(opts) as client:
            report = train_model(
                trainset, out, config=config, client=client, progress=not no_progress
            )
    echo_metrics(report.card["test_metrics"], report.card["model_id"], out)


def echo_metrics(metrics: dict[str, Any], model_id: str, out: Path) -> None:
    """Print test metrics the way `train` and `evaluate` both report them."""
    click.echo(
        f"model {model_id}: test AUC {metrics['auc']:.4f}, TPR at FPR 1% "
        f"{metrics['tpr_at_fpr_1pct']:.3f} ({metrics['positives']} lenses, "
        f"{metrics['negatives']} negatives)"
    )
    for rate in metrics["rates"]:
        click.echo(
            f"  p_CNN > {rate['threshold']:.2f}: TPR {rate['tpr']:.3f}, FPR {rate['fpr']:.4f}"
        )
    click.echo(f"model, card and plots -> {out}")


@main.command("evaluate")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("trainset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for roc.png, p_cnn_test.png and metrics.json [MODEL_DIR].",
)
@handle_errors
def evaluate_cmd(model_dir: Path, trainset: Path, out: Path | None) -> None:
    """Recompute the test-split ROC curve, AUC, rates and plots of MODEL_DIR on TRAINSET."""
    from lensdask.nn.card import read_card
    from lensdask.nn.evaluate import evaluate_model

    metrics = evaluate_model(model_dir, trainset, out=out)
    echo_metrics(metrics.as_dict(), read_card(model_dir)["model_id"], out or model_dir)


@main.command("ingest")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Catalog folder to write (one Parquet file per tile).",
)
@job_option("ingest", "column map, pattern, HDU")
@cluster_options
@handle_errors
def ingest_cmd(source: Path, out: Path, job: Path | None, no_progress: bool, **opts: Any) -> None:
    """Turn the per-tile FITS catalogs in SOURCE into the Parquet catalog layout.

    Columns are renamed to the KiDS DR4 names with the job's ingest.column_map (for other
    surveys); the tile name comes from THELI_NAME or the file name. One task per file.
    """
    from lensdask.catalog.ingest import ingest_catalogs
    from lensdask.config import IngestConfig

    config = section_config(job, "ingest", IngestConfig(), {})
    with cluster_client(opts) as client:
        report = ingest_catalogs(
            source, out, config=config, client=client, progress=not no_progress
        )
    click.echo(f"ingest: {report.rows} sources from {report.files} files -> {out}")
    finish([report.units])


@main.command("run")
@click.argument("job", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@cluster_options
@handle_errors
def run_cmd(job: Path, no_progress: bool, **opts: Any) -> None:
    """Run the job file JOB: every stage it configures, skipping what is complete.

    Today: mock-survey (when the job has a mock_survey section) or ingest, then select,
    then cutouts (when the job has a cutouts section), then simulate and train (simulate
    and train sections). Outputs go under the job's workdir.
    """
    from lensdask.config import load_job
    from lensdask.pipeline import run_job

    config = load_job(job)
    with cluster_client(opts) as client:
        result = run_job(config, client=client, progress=not no_progress)
    for line in result.summary_lines():
        click.echo(line)
    finish(result.reports)


if __name__ == "__main__":  # pragma: no cover
    main()
