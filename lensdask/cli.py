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
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from lensdask import __version__
from lensdask.cluster import ClusterSpec
from lensdask.config import SCHEDULES
from lensdask.nn import set_backend_env
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
            "--workers",
            type=int,
            default=None,
            help="Workers (local; default: the cores) or batch jobs kept running (slurm/pbs; "
            "default 1).",
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
        click.option(
            "--interface",
            default=None,
            help="slurm/pbs: network interface of scheduler and workers, e.g. ib0 for workers "
            "on other nodes [the jobqueue YAML's: lo, one node].",
        ),
        click.option(
            "--gpus-per-job",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="slurm/pbs: GPUs per batch job (the *-gpu section of the jobqueue YAML; one "
            "dask-cuda worker per GPU).",
        ),
        click.option(
            "--tls-ca-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="TLS for a shared cluster: the CA certificate (PEM). With --tls-cert and "
            "--tls-key, every Dask connection is mutual TLS and plain TCP is refused.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="TLS certificate (PEM) of scheduler, workers and client, signed by the CA.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Private key (PEM) of --tls-cert.",
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
def cluster_client(opts: dict[str, Any], *, report: Path) -> Iterator[Any]:
    """Start the cluster the command-line options name, print the dashboard link, and save
    the Dask performance report of what runs on it at ``report``."""
    from lensdask.cluster import connect

    report.parent.mkdir(parents=True, exist_ok=True)
    with connect(cluster_spec(opts)) as client, performance_report(report):
        click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def report_path(out: Path) -> Path:
    """Where a stage command saves its performance report: next to its output ``out``,
    as ``<out stem>_performance.html``."""
    return out.with_name(f"{out.stem}_performance.html")


def cluster_spec(opts: dict[str, Any]) -> ClusterSpec:
    """The cluster of the command-line options (taken out of ``opts``)."""
    return ClusterSpec(
        kind=opts.pop("cluster"),
        n_workers=opts.pop("workers"),
        threads_per_worker=opts.pop("threads_per_worker"),
        memory_limit=opts.pop("memory_limit"),
        dashboard_address=opts.pop("dashboard_address"),
        jobqueue_config=opts.pop("jobqueue_config"),
        interface=opts.pop("interface"),
        gpus_per_job=opts.pop("gpus_per_job"),
        tls_ca_file=opts.pop("tls_ca_file"),
        tls_cert=opts.pop("tls_cert"),
        tls_key=opts.pop("tls_key"),
    )


def performance_report(path: Path) -> contextlib.AbstractContextManager[Any]:
    """Dask's performance report of what runs inside, saved as HTML at ``path`` (nothing,
    with a warning, where bokeh, which draws it, is not installed)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        logger.warning("no performance report: bokeh is not installed")
        return contextlib.nullcontext()
    from distributed import performance_report

    return performance_report(filename=str(path))


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
    train (evaluate recomputes the test metrics) -> score -> candidates -> stamps; then
    human grading (inspect, or zooniverse for citizen science) -> rank.
    `lensdask run JOB.yaml` chains the stages from one job file. Every command that
    computes starts or joins a Dask cluster (--cluster) and prints its dashboard link.
    """
    # before any Keras backend is imported here or in the workers this process starts
    set_backend_env()
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
    with cluster_client(opts, report=report_path(out)) as client:
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
    with cluster_client(opts, report=report_path(out)) as client:
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
    with cluster_client(opts, report=report_path(out)) as client:
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
    with cluster_client(opts, report=report_path(out)) as client:
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
@click.option("--learning-rate", type=float, help="Adam (peak) learning rate [1e-3].")
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    help="Learning rate: warm-up and cosine decay over the epochs, or halved on plateaus [cosine].",
)
@click.option("--patience", type=int, help="Early-stopping patience, epochs [5].")
@click.option("--seed", type=int, help="Seed of weights, shuffling, augmentation [0].")
@click.option(
    "--arbitrary-rotation/--no-arbitrary-rotation",
    default=None,
    help="Also augment by arbitrary angles and zooms (bilinear resampling, which smooths the "
    "noise) [off].",
)
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

    names = (
        "width",
        "epochs",
        "batch_size",
        "learning_rate",
        "schedule",
        "patience",
        "seed",
        "arbitrary_rotation",
    )
    overrides = {name: opts.pop(name) for name in names}
    config = section_config(job, "train", TrainConfig(), overrides)
    if in_process:
        report = train_model(trainset, out, config=config, progress=not no_progress)
    else:
        with cluster_client(opts, report=report_path(out)) as client:
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
    for name, rows in metrics.get("auc_by_bin", {}).items():
        parts = [
            f"{r['low']:g}-{r['high']:g}: "
            + ("-" if r["auc"] is None else f"{r['auc']:.3f}")
            + f" ({r['positives']})"
            for r in rows
        ]
        click.echo(f"  AUC by {name}: " + ", ".join(parts))
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


@main.command("score")
@click.argument("cutouts", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The model directory (model.keras + card.json) from `lensdask train`.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("scores.parquet"),
    show_default=True,
    help="The scores folder: one Parquet file per tile.",
)
@job_option("score", "batch size, read chunk")
@click.option("--batch-size", type=int, help="Images per model call [1024 on GPU, 256 on CPU].")
@cluster_options
@handle_errors
def score_cmd(
    cutouts: Path, model_dir: Path, out: Path, job: Path | None, no_progress: bool, **opts: Any
) -> None:
    """Score every cutout of the store CUTOUTS with the classifier: p_cnn per target.

    The model is loaded once on every worker (a GPU worker with --cluster cuda) and stays
    there; one task per tile reads its cutouts, normalises them as the model card says and
    predicts in batches of one fixed size. Writes OUT/<tile>.parquet (ID, THELI_NAME,
    sample, p_cnn, model_id), one row per cutout, and checks the row counts against the
    cutout store at the end. A rerun scores only tiles not scored with this model.
    """
    from lensdask.config import ScoreConfig
    from lensdask.score.scoring import score_cutouts

    config = section_config(job, "score", ScoreConfig(), {"batch_size": opts.pop("batch_size")})
    with cluster_client(opts, report=report_path(out)) as client:
        report = score_cutouts(
            cutouts, model_dir, out, config=config, client=client, progress=not no_progress
        )
    parts = ", ".join(f"{n} {sample}" for sample, n in sorted(report.per_sample.items()))
    click.echo(
        f"score: {report.rows} cutouts scored now ({parts or 'none'}) in {report.written} "
        f"tiles, {report.skipped} tiles already scored, {len(report.units.failures)} failed; "
        f"model {report.model_id} -> {report.out}"
    )
    for problem in report.problems:
        click.echo(f"MISSING {problem}", err=True)
    finish([report.units])
    if report.problems:
        sys.exit(EXIT_PARTIAL)


@main.command("candidates")
@click.argument("scores", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("candidates.parquet"),
    show_default=True,
    help="The candidates file; summary, plots and tables are written next to it.",
)
@job_option("candidates", "thresholds, match radius, bins")
@click.option("--lrg-threshold", type=float, help="p_cnn above which an LRG is a candidate [0.75].")
@click.option("--bg-threshold", type=float, help="p_cnn above which a BG is a candidate [0.98].")
@click.option(
    "--targets",
    type=click.Path(exists=True, path_type=Path),
    help="The targets: add RA/Dec, MAG_AUTO and Z_B to the candidates; match known lenses.",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, path_type=Path),
    help="Truth tables of injected lenses (a mock survey's lenses/): measure completeness.",
)
@click.option(
    "--known",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV/Parquet of known lenses (ID or RAJ2000/DECJ2000): report which are recovered.",
)
@cluster_options
@handle_errors
def candidates_cmd(
    scores: Path,
    out: Path,
    job: Path | None,
    lrg_threshold: float | None,
    bg_threshold: float | None,
    targets: Path | None,
    truth: Path | None,
    known: Path | None,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Pick the candidates from SCORES (`lensdask score`): p_cnn above each sample's
    threshold (0.75 for LRGs, 0.98 for BGs by default, as Li et al. 2020).

    Prints the candidates and their fraction per sample and writes OUT (by decreasing
    p_cnn), OUT_summary.json and OUT_p_cnn.png (the p_cnn distributions, log scale). With
    --truth (a mock survey's injected lenses) it measures the completeness by Einstein
    radius and arc brightness and the non-lens candidates per 1000 targets; with --known
    it reports which known lenses were recovered, and their p_cnn.
    """
    import dataclasses

    from lensdask.config import CandidateConfig
    from lensdask.score.candidates import select_candidates

    config = section_config(job, "candidates", CandidateConfig(), {})
    given = {"LRG": lrg_threshold, "BG": bg_threshold}
    thresholds = {**config.thresholds, **{k: v for k, v in given.items() if v is not None}}
    config = dataclasses.replace(config, thresholds=thresholds)
    with cluster_client(opts, report=report_path(out)) as client:
        report = select_candidates(
            scores,
            out,
            config=config,
            client=client,
            targets=targets,
            truth=truth,
            known=known or config.known,
            progress=not no_progress,
        )
    echo_candidates(report.summary)
    for name, path in report.files.items():
        click.echo(f"{name} -> {path}")
    finish([report.units])


def echo_candidates(summary: dict[str, Any]) -> None:
    """Print what `candidates` found: per sample, completeness, known lenses."""
    for sample, entry in summary["samples"].items():
        click.echo(
            f"candidates: {sample}: {entry['candidates']} of {entry['scored']} with p_cnn > "
            f"{entry['threshold']} ({100 * entry['fraction']:.3f}%)"
        )
    if "completeness" in summary:
        c = summary["completeness"]
        false = ", ".join(f"{s} {v:.2f}" for s, v in c["false_per_1000"].items())
        click.echo(
            f"injected lenses: {c['recovered']} of {c['scored']} scored recovered "
            f"({100 * c['completeness']:.1f}%; {c['lenses'] - c['scored']} not scored); "
            f"non-lens candidates per 1000 targets: {false}"
        )
    if "known" in summary:
        k = summary["known"]
        click.echo(
            f"known lenses: {k['recovered']} of {k['known']} recovered "
            f"({100 * k['fraction']:.0f}%; {k['scored']} scored)"
        )


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
    with cluster_client(opts, report=report_path(out)) as client:
        report = ingest_catalogs(
            source, out, config=config, client=client, progress=not no_progress
        )
    click.echo(f"ingest: {report.rows} sources from {report.files} files -> {out}")
    finish([report.units])


@main.command("stamps")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--cutouts",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The cutout store holding the candidates' cutouts (g, r, i).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("stamps"),
    show_default=True,
    help="The stamps folder (PNG stamps per tile, contact sheets in OUT/sheets).",
)
@click.option(
    "--ranking",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A ranking table (lensdask rank): the contact sheets show its candidates by "
    "decreasing P instead of all candidates by decreasing p_CNN.",
)
@job_option("stamps", "bands, stretch, sheet size")
@click.option("--stretch", type=float, help="Lupton linear stretch, in sky-noise sigma [5].")
@click.option("--q", "q", type=float, help="Lupton asinh softening Q [8].")
@click.option("--sheet-columns", type=int, help="Stamps per row of a contact sheet [6].")
@click.option("--sheet-rows", type=int, help="Rows per contact sheet [5].")
@click.option("--sheet-limit", type=int, help="Most candidates on the contact sheets [all].")
@cluster_options
@handle_errors
def stamps_cmd(
    candidates: Path,
    cutouts: Path,
    out: Path,
    ranking: Path | None,
    job: Path | None,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Colour stamps of the CANDIDATES (Parquet or CSV) and contact sheets of them.

    For each candidate a 20"x20" colour PNG (i, r, g as red, green, blue; Lupton asinh
    stretch in units of the sky noise; the r band in grey when a band is missing) and an
    r-band PNG, one task per tile, resumable tile by tile; then contact sheets in ranked
    order with IDs and scores (Li et al. 2020, Figure 8), one task per sheet. The grading
    page (lensdask inspect) and the Zooniverse export show these stamps.
    """
    from lensdask.config import StampConfig
    from lensdask.review.stamps import make_stamps

    names = ("stretch", "q", "sheet_columns", "sheet_rows", "sheet_limit")
    overrides = {name: opts.pop(name) for name in names}
    config = section_config(job, "stamps", StampConfig(), overrides)
    with cluster_client(opts, report=report_path(out)) as client:
        report = make_stamps(
            candidates,
            cutouts,
            out,
            config=config,
            ranking=ranking,
            client=client,
            progress=not no_progress,
        )
    click.echo(
        f"stamps: {report.written} tiles written, {report.skipped} already complete, "
        f"{len(report.units.failures)} failed; {report.stamps} candidates with stamps "
        f"({report.grey} grey for want of a colour band); {len(report.sheets)} contact "
        f"sheets -> {report.out}"
    )
    finish([report.units, report.sheet_units])


class DefaultCommandGroup(click.Group):
    """A command group that runs its default command when the first argument is not one
    of its commands (``lensdask inspect CANDIDATES`` is ``lensdask inspect serve
    CANDIDATES``)."""

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--db`` option: the grades database."""
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("grades.sqlite"),
        show_default=True,
        help="The grades database (SQLite file, created if needed).",
    )(func)


@main.group("inspect", cls=DefaultCommandGroup, default_command="serve")
def inspect_group() -> None:
    """Blind visual inspection of the candidates by several graders, in a web page.

    \b
      lensdask inspect add-grader alice --db grades.sqlite   # prints alice's personal link
      lensdask inspect CANDIDATES --stamps stamps --db grades.sqlite   # serve the page
      lensdask inspect export --db grades.sqlite --out grades.csv

    Graders see the stamps only (never p_CNN nor others' grades), in their own fixed random
    order, and grade with the keys A/B/C/D (10/7/3/0); every grade is stored at once.
    """


@inspect_group.command("serve")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("stamps"),
    show_default=True,
    help="The stamps folder of `lensdask stamps`.",
)
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every interface "
    "(graders on other machines; prefer an SSH tunnel).",
)
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port (0: any).")
@click.option("--mono-band", default="r", show_default=True, help="Band of the single-band stamps.")
@handle_errors
def inspect_serve_cmd(
    candidates: Path, stamps: Path, db: Path, host: str, port: int, mono_band: str
) -> None:
    """Serve the grading page for the CANDIDATES (Parquet or CSV with ID) until Ctrl-C.

    Each grader opens their personal link (from `lensdask inspect add-grader`); a request
    without a valid token is refused. Grades go into the SQLite database at once, so the
    server can be stopped and started again without losing any.
    """
    from lensdask.review.server import make_server
    from lensdask.review.tables import read_candidates

    ids = read_candidates(candidates, require=(), keep_nan=True)["candidate_id"].tolist()
    server = make_server(db, stamps, ids, host=host, port=port, mono_band=mono_band)
    progress = server.app.store.progress()
    click.echo(f"grading {len(ids)} candidates at {server.url} (grades in {db})")
    if not progress:
        click.echo("no graders yet: add them with `lensdask inspect add-grader NAME`", err=True)
    for name, count in progress.items():
        click.echo(f"  {name}: {count} graded")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; every grade is saved", err=True)
    finally:
        server.server_close()


@inspect_group.command("add-grader")
@click.argument("name")
@db_option
@click.option(
    "--url",
    default="http://127.0.0.1:8765",
    show_default=True,
    help="Address graders reach the server at, for the printed link.",
)
@click.option(
    "--reset", is_flag=True, help="Give an existing grader a new link (the old one dies)."
)
@handle_errors
def inspect_add_grader_cmd(name: str, db: Path, url: str, reset: bool) -> None:
    """Add grader NAME and print their personal link (shown once; keep it private)."""
    from lensdask.review.grades import GradeStore
    from lensdask.review.server import grader_link

    token = GradeStore(db).add_grader(name, reset=reset)
    click.echo(grader_link(url, token))


@inspect_group.command("graders")
@db_option
@handle_errors
def inspect_graders_cmd(db: Path) -> None:
    """List the graders and how many candidates each has graded."""
    from lensdask.review.grades import GradeStore

    store = GradeStore(db)
    total = len(store.candidates())
    for name, count in store.progress().items():
        click.echo(f"{name}: {count} of {total} graded")


@inspect_group.command("export")
@db_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("grades.csv"),
    show_default=True,
    help="The grades CSV (candidate_id,grader,grade).",
)
@handle_errors
def inspect_export_cmd(db: Path, out: Path) -> None:
    """Export every grade of the database as CSV candidate_id,grader,grade."""
    from lensdask.review.grades import GradeStore

    if not db.exists():
        raise click.ClickException(f"grades database {db} does not exist")
    rows = GradeStore(db).export_csv(out)
    click.echo(f"{rows} grades -> {out}")


@main.command("rank")
@click.option(
    "--scores",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Candidates or scores (Parquet file or folder, or CSV) with ID or candidate_id and "
    "p_cnn; RAJ2000, DECJ2000, MAG_AUTO, Z_B fill the LaTeX table.",
)
@click.option(
    "--grades",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    multiple=True,
    help="Grades CSV (candidate_id,grader,grade); repeat for several files.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The ranking table: .csv, .ecsv (units, descriptions) or .parquet.",
)
@click.option(
    "--latex",
    type=click.Path(dir_okay=False, path_type=Path),
    help="LaTeX table of the high-quality candidates [OUT with .tex].",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="p_CNN against p_hum plot [OUT_pcnn_phum.png].",
)
@handle_errors
def rank_cmd(
    scores: Path, grades: tuple[Path, ...], out: Path, latex: Path | None, plot: Path | None
) -> None:
    """Rank the graded candidates by P = p_CNN * p_hum (Li et al. 2020, Table 1).

    s_ave is the mean grade (A/B/C/D = 10/7/3/0), s_rms its population standard
    deviation, p_hum = s_ave/10, n_zero the number of D grades; quality is golden for
    P >= 0.7, high for P >= 0.5, else low. Unknown grade letters or candidates, a grader's
    second grade of a candidate and graded candidates without p_cnn are errors naming the
    rows. Also writes the LaTeX table of the high-quality candidates and the plot of p_CNN
    against p_hum marking candidates graded both A and D (Figure 5).
    """
    from lensdask.review.rank import rank_files

    latex = latex or out.with_suffix(".tex")
    plot = plot or out.with_name(f"{out.stem}_pcnn_phum.png")
    table = rank_files(scores, list(grades), out, latex=latex, plot=plot)
    counts = table["quality"].value_counts()
    click.echo(
        f"rank: {len(table)} graded candidates: {counts.get('golden', 0)} golden "
        f"(P >= 0.7), {counts.get('high', 0)} more high-quality (P >= 0.5), "
        f"{counts.get('low', 0)} low -> {out}"
    )
    click.echo(f"LaTeX table -> {latex}; plot -> {plot}")


@main.group("zooniverse")
def zooniverse_group() -> None:
    """Citizen science: a Zooniverse subject manifest of the candidates, and its
    classifications back as grades (for samples too large for a few graders)."""


@zooniverse_group.command("export")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("stamps"),
    show_default=True,
    help="The stamps folder of `lensdask stamps`.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for manifest.csv and images/.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subject order.")
@handle_errors
def zooniverse_export_cmd(candidates: Path, stamps: Path, out: Path, seed: int) -> None:
    """Write a subject manifest (manifest.csv) and images of the CANDIDATES into OUT.

    Upload with the Panoptes CLI (panoptes subject-set upload-subjects SET_ID
    OUT/manifest.csv). Images are named by an opaque key and the rows shuffled; the
    candidate ID is hidden metadata (#candidate_id); p_CNN is not included.
    """
    from lensdask.review.tables import read_candidates
    from lensdask.review.zooniverse import export_subjects

    ids = read_candidates(candidates, require=(), keep_nan=True)["candidate_id"].tolist()
    manifest = export_subjects(ids, stamps, out, seed=seed)
    click.echo(f"zooniverse: {len(ids)} subjects -> {manifest}")


@zooniverse_group.command("import")
@click.argument("classifications", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The grades CSV to write (candidate_id,grader,grade).",
)
@click.option(
    "--scores",
    type=click.Path(exists=True, path_type=Path),
    help="Candidates or scores file: classifications of other IDs are errors.",
)
@click.option("--task", default="T0", show_default=True, help="The task whose answer is the grade.")
@click.option("--workflow-id", help="Take only this workflow's classifications.")
@click.option(
    "--keep-last",
    is_flag=True,
    help="Keep a volunteer's last classification of a subject they classified more than "
    "once (default: an error).",
)
@handle_errors
def zooniverse_import_cmd(
    classifications: Path,
    out: Path,
    scores: Path | None,
    task: str,
    workflow_id: str | None,
    keep_last: bool,
) -> None:
    """Turn a Zooniverse CLASSIFICATIONS export (CSV) into a grades CSV for `lensdask rank`.

    Each classification is the grade of grader zooniverse:<user_name>; the answer to
    TASK is a label starting with A/B/C/D or the answer's index 0-3.
    """
    from lensdask.review.grades import write_grades_csv
    from lensdask.review.tables import read_candidates
    from lensdask.review.zooniverse import import_classifications

    known = (
        read_candidates(scores, require=(), keep_nan=True)["candidate_id"]
        if scores is not None
        else None
    )
    grades = import_classifications(
        classifications, task=task, workflow_id=workflow_id, known=known, keep_last=keep_last
    )
    write_grades_csv(grades, out)
    click.echo(
        f"zooniverse: {len(grades)} grades by {grades['grader'].nunique()} volunteers -> {out}"
    )


@main.command("run")
@click.argument("job", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--stages",
    help="Run only these stages (comma-separated, e.g. score,candidates); their inputs must "
    "exist from an earlier run.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (stages, tasks, rows, output sizes) and the cluster's job script; "
    "run nothing.",
)
@cluster_options
@handle_errors
def run_cmd(job: Path, stages: str | None, dry_run: bool, no_progress: bool, **opts: Any) -> None:
    """Run the job file JOB: every stage it configures, skipping what is complete.

    Stages, in order, each when the job has its section: mock-survey (mock_survey) or
    ingest, select, cutouts, simulate, train, score, candidates, stamps. Outputs go under
    the job's workdir, with the Dask performance report of the run
    (performance-report.html); the end of the output says where everything is.
    """
    from lensdask.config import load_job
    from lensdask.pipeline import REPORT_FILE, chosen_stages, run_job

    config = load_job(job)
    chosen = chosen_stages(config, stages.split(",") if stages else None)
    if dry_run:
        from lensdask.plan import plan_job, plan_lines

        click.echo(f"job {job}: stages {', '.join(chosen)} -> {config.workdir}")
        for line in plan_lines(plan_job(config, chosen)):
            click.echo(line)
        spec = cluster_spec(opts)
        if spec.kind in ("slurm", "pbs"):
            from lensdask.cluster import job_script

            click.echo(f"\n{spec.n_workers or 1} worker job(s), each submitted as:")
            click.echo(job_script(spec))
        else:
            click.echo(f"\ncluster: {spec.kind} (no batch jobs)")
        return
    report = config.workdir / REPORT_FILE
    with cluster_client(opts, report=report) as client:
        result = run_job(config, client=client, stages=chosen, progress=not no_progress)
    if report.exists():
        result.outputs["performance report"] = report
    for line in result.summary_lines():
        click.echo(line)
    finish(result.reports)


if __name__ == "__main__":  # pragma: no cover
    main()
