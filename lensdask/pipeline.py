"""``lensdask run``: the stages of a job file, chained, each skipping what is complete.

Layout of the job's ``workdir``::

    workdir/survey/             mock survey (catalog/, images/, lenses/) with mock_survey
    workdir/catalog/            ingested catalog with ingest
    workdir/targets.parquet/    the BG/LRG targets
    workdir/cutouts.zarr/       cutouts of the targets (cutouts section)
    workdir/trainset.zarr/      the training set (simulate section)
    workdir/model/              the trained classifier (train section; or `model:` a path)
    workdir/scores.parquet/     p_cnn of every cutout (score section)
    workdir/candidates.parquet  the candidates, with _summary.json, _p_cnn.png and, for a
                                mock survey with injected lenses, _completeness.csv/.png
    workdir/stamps/             colour stamps and contact sheets (stamps section)
    workdir/performance-report.html   the Dask performance report of the last run

A stage runs when the job configures it (:func:`job_stages`); ``stages`` picks a subset,
whose inputs must then exist from an earlier run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask.config import JobConfig
from lensdask.runner import UnitReport

logger = logging.getLogger(__name__)

STAGES = (
    "mock-survey",
    "ingest",
    "select",
    "cutouts",
    "simulate",
    "train",
    "score",
    "candidates",
    "stamps",
)
"""Every stage, in run order."""
REPORT_FILE = "performance-report.html"


@dataclass(frozen=True)
class JobPaths:
    """Where each stage of a job reads and writes."""

    workdir: Path
    catalog: Path
    images: Path | None
    model: Path

    @classmethod
    def of(cls, config: JobConfig) -> JobPaths:
        """The paths of ``config``'s job."""
        from lensdask.mock.survey import CATALOG_DIR, IMAGES_DIR

        workdir = config.workdir
        if config.mock_survey is not None:
            catalog = workdir / "survey" / CATALOG_DIR
        elif config.ingest is not None:
            catalog = workdir / "catalog"
        else:
            catalog = config.catalog
        images = config.images
        if images is None and config.mock_survey is not None and config.mock_survey.images:
            images = workdir / "survey" / IMAGES_DIR
        return cls(
            workdir=workdir, catalog=catalog, images=images, model=config.model or workdir / "model"
        )

    @property
    def survey(self) -> Path:
        return self.workdir / "survey"

    @property
    def targets(self) -> Path:
        return self.workdir / "targets.parquet"

    @property
    def cutouts(self) -> Path:
        return self.workdir / "cutouts.zarr"

    @property
    def trainset(self) -> Path:
        return self.workdir / "trainset.zarr"

    @property
    def scores(self) -> Path:
        return self.workdir / "scores.parquet"

    @property
    def candidates(self) -> Path:
        return self.workdir / "candidates.parquet"

    @property
    def stamps(self) -> Path:
        return self.workdir / "stamps"

    @property
    def truth(self) -> Path:
        from lensdask.mock.survey import LENSES_DIR

        return self.survey / LENSES_DIR


@dataclass
class JobResult:
    """Where a job's outputs are and what each stage reported."""

    outputs: dict[str, Path] = field(default_factory=dict)
    reports: list[UnitReport] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    """The stages that ran."""
    next_steps: list[str] = field(default_factory=list)
    """Commands for what comes after the job (grading)."""

    def summary_lines(self) -> list[str]:
        """Human-readable lines: counts, where each output is, then the next steps."""
        lines = [f"{key}: {value}" for key, value in self.counts.items()]
        lines += [f"{name} -> {path}" for name, path in self.outputs.items()]
        lines += [f"next: {step}" for step in self.next_steps]
        return lines


def job_stages(config: JobConfig) -> list[str]:
    """The stages ``config`` configures, in run order."""
    configured = {
        "mock-survey": config.mock_survey is not None,
        "ingest": config.ingest is not None,
        "select": True,
        "cutouts": config.cutouts is not None,
        "simulate": config.simulate is not None,
        "train": config.train is not None,
        "score": config.score is not None,
        "candidates": config.candidates is not None,
        "stamps": config.stamps is not None,
    }
    return [stage for stage in STAGES if configured[stage]]


def chosen_stages(config: JobConfig, stages: Sequence[str] | None) -> list[str]:
    """The stages to run: all configured ones, or those of ``stages`` (checked)."""
    configured = job_stages(config)
    if stages is None:
        return configured
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    missing = [stage for stage in stages if stage not in configured]
    if missing:
        raise ValueError(
            f"--stages: the job has no section for {', '.join(missing)} "
            f"(it configures {', '.join(configured)})"
        )
    return [stage for stage in configured if stage in stages]


def run_job(
    config: JobConfig,
    *,
    client: Any,
    stages: Sequence[str] | None = None,
    progress: bool = True,
) -> JobResult:
    """Run the stages of ``config`` on the cluster of ``client``.

    Parameters
    ----------
    config : JobConfig
        The job.
    client : distributed.Client
        The injected Dask client.
    stages : sequence of str, optional
        Run only these stages (of :data:`STAGES`); their inputs must exist.
    progress : bool
        Show progress bars.

    Returns
    -------
    JobResult
    """
    result = JobResult()
    paths = JobPaths.of(config)
    paths.workdir.mkdir(parents=True, exist_ok=True)
    for stage in chosen_stages(config, stages):
        logger.info("run: stage %s", stage)
        RUNNERS[stage](config, paths, client, progress, result)
        result.stages.append(stage)
    return result


def _need(path: Path | None, what: str, stage: str) -> Path:
    if path is None or not Path(path).exists():
        raise FileNotFoundError(
            f"{stage}: needs {what} at {path}; run the stage that makes it first"
        )
    return Path(path)


def _mock_survey(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.mock.survey import make_mock_survey

    survey = make_mock_survey(
        paths.survey, config=config.mock_survey, client=client, progress=progress
    )
    result.reports.append(survey.units)
    result.outputs["mock survey"] = survey.out


def _ingest(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.catalog.ingest import ingest_catalogs

    if config.ingest.source is None:
        raise ValueError("ingest.source: the folder of FITS catalogs is not set")
    ingest = ingest_catalogs(
        config.ingest.source, paths.catalog, config=config.ingest, client=client, progress=progress
    )
    result.reports.append(ingest.units)
    result.outputs["catalog"] = paths.catalog


def _select(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.catalog.select import select_targets

    selection = select_targets(
        _need(paths.catalog, "the catalog", "select"),
        paths.targets,
        config=config.select,
        client=client,
        progress=progress,
    )
    result.reports.append(selection.units)
    result.outputs["targets"] = selection.out
    result.counts.update(
        {
            "targets selected": selection.total("rows"),
            "LRG": selection.total("LRG"),
            "BG (not LRG)": selection.total("BG"),
        }
    )


def _cutouts(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.cutouts.make import make_cutouts

    if paths.images is None:
        raise ValueError(
            "cutouts: set `images:` to the folder of tile images (or make a mock survey with "
            "`images: true`)"
        )
    cutouts = make_cutouts(
        _need(paths.targets, "the targets", "cutouts"),
        paths.images,
        paths.cutouts,
        config=config.cutouts,
        client=client,
        progress=progress,
    )
    result.reports.append(cutouts.units)
    result.outputs["cutouts"] = cutouts.out
    result.counts["cutouts written now"] = cutouts.counts["cutouts"]


def _simulate(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.lensing.simulate import simulate_lenses

    trainset = simulate_lenses(
        _need(paths.cutouts, "the cutout store", "simulate"),
        paths.trainset,
        config=config.simulate,
        client=client,
        targets=paths.targets,
        progress=progress,
    )
    result.reports.append(trainset.units)
    result.outputs["training set"] = trainset.out
    if trainset.plot is not None:
        result.outputs["training examples"] = trainset.plot
    for split, kinds in trainset.counts.items():
        result.counts[f"{split} examples"] = sum(kinds.values())


def _train(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.nn.train import train_model

    trained = train_model(
        _need(paths.trainset, "the training set", "train"),
        paths.model,
        config=config.train,
        client=client,
        progress=progress,
    )
    result.outputs["model"] = trained.out
    result.outputs["ROC curve"] = trained.out / "roc.png"
    result.counts["model test AUC"] = round(trained.card["test_metrics"]["auc"], 4)


def _score(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.score.scoring import score_cutouts

    scores = score_cutouts(
        _need(paths.cutouts, "the cutout store", "score"),
        _need(paths.model, "a model (a train section, or `model:`)", "score"),
        paths.scores,
        config=config.score,
        client=client,
        progress=progress,
    )
    result.reports.append(scores.units)
    result.outputs["scores"] = scores.out
    result.counts["cutouts scored now"] = scores.rows
    if scores.problems:
        raise RuntimeError(f"score: the scores do not match the cutouts: {scores.problems[:3]}")


def _candidates(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.score.candidates import select_candidates

    truth = paths.truth if paths.truth.is_dir() else None
    picked = select_candidates(
        _need(paths.scores, "the scores", "candidates"),
        paths.candidates,
        config=config.candidates,
        client=client,
        targets=paths.targets,
        truth=truth,
        known=config.candidates.known,
        progress=progress,
    )
    result.reports.append(picked.units)
    for sample, entry in picked.summary["samples"].items():
        result.counts[f"{sample} candidates"] = (
            f"{entry['candidates']} of {entry['scored']} ({100 * entry['fraction']:.2f}%)"
        )
    if "completeness" in picked.summary:
        c = picked.summary["completeness"]
        result.counts["injected lenses recovered"] = (
            f"{c['recovered']} of {c['scored']} scored ({100 * c['completeness']:.0f}%)"
        )
    if "known" in picked.summary:
        k = picked.summary["known"]
        result.counts["known lenses recovered"] = f"{k['recovered']} of {k['known']}"
    result.outputs.update(picked.files)


def _stamps(config: JobConfig, paths: JobPaths, client: Any, progress: bool, result):
    from lensdask.review.stamps import make_stamps

    stamps = make_stamps(
        _need(paths.candidates, "the candidates", "stamps"),
        _need(paths.cutouts, "the cutout store", "stamps"),
        paths.stamps,
        config=config.stamps,
        client=client,
        progress=progress,
    )
    result.reports.extend([stamps.units, stamps.sheet_units])
    result.outputs["stamps"] = stamps.out
    if stamps.sheets:
        result.outputs["contact sheets"] = stamps.sheets[0].parent
    result.counts["candidates with stamps"] = stamps.stamps
    db = paths.workdir / "grades.sqlite"
    result.next_steps += [
        f"lensdask inspect add-grader NAME --db {db}   (a grading link per grader)",
        f"lensdask inspect {paths.candidates} --stamps {paths.stamps} --db {db}",
        f"lensdask inspect export --db {db} --out grades.csv && lensdask rank --scores "
        f"{paths.candidates} --grades grades.csv --out {paths.workdir / 'ranking.ecsv'}",
    ]


RUNNERS: dict[str, Callable[..., None]] = {
    "mock-survey": _mock_survey,
    "ingest": _ingest,
    "select": _select,
    "cutouts": _cutouts,
    "simulate": _simulate,
    "train": _train,
    "score": _score,
    "candidates": _candidates,
    "stamps": _stamps,
}
