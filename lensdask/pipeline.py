"""``lensdask run``: the stages of a job file, chained, each skipping what is complete.

Layout of the job's ``workdir``::

    workdir/survey/           mock survey (catalog/, images/) when the job has mock_survey
    workdir/catalog/          ingested catalog when the job has ingest
    workdir/targets.parquet/  the BG/LRG targets
    workdir/cutouts.zarr/     cutouts of the targets, when the job has a cutouts section
    workdir/trainset.zarr/    the training set, when the job has a simulate section
    workdir/model/            the trained classifier, when the job has a train section
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask.config import JobConfig
from lensdask.runner import UnitReport

logger = logging.getLogger(__name__)


@dataclass
class JobResult:
    """Where a job's outputs are and what each stage reported."""

    outputs: dict[str, Path] = field(default_factory=dict)
    reports: list[UnitReport] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """Human-readable lines: counts, then where each output is."""
        lines = [f"{key}: {value}" for key, value in self.counts.items()]
        lines += [f"{name} -> {path}" for name, path in self.outputs.items()]
        return lines


def run_job(config: JobConfig, *, client: Any, progress: bool = True) -> JobResult:
    """Run every stage configured in ``config`` on the cluster of ``client``.

    Parameters
    ----------
    config : JobConfig
        The job.
    client : distributed.Client
        The injected Dask client.
    progress : bool
        Show progress bars.

    Returns
    -------
    JobResult
    """
    from lensdask.catalog.select import select_targets

    result = JobResult()
    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if config.mock_survey is not None:
        from lensdask.mock.survey import CATALOG_DIR, make_mock_survey

        survey = make_mock_survey(
            workdir / "survey", config=config.mock_survey, client=client, progress=progress
        )
        result.reports.append(survey.units)
        result.outputs["mock survey"] = survey.out
        catalog = survey.out / CATALOG_DIR
    elif config.ingest is not None:
        from lensdask.catalog.ingest import ingest_catalogs

        if config.ingest.source is None:
            raise ValueError("ingest.source: the folder of FITS catalogs is not set")
        catalog = workdir / "catalog"
        ingest = ingest_catalogs(
            config.ingest.source, catalog, config=config.ingest, client=client, progress=progress
        )
        result.reports.append(ingest.units)
    else:
        catalog = config.catalog
    result.outputs["catalog"] = catalog
    selection = select_targets(
        catalog,
        workdir / "targets.parquet",
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
    if config.cutouts is not None:
        from lensdask.cutouts.make import make_cutouts
        from lensdask.mock.survey import IMAGES_DIR

        images = config.images
        if images is None:
            if config.mock_survey is None or not config.mock_survey.images:
                raise ValueError(
                    "cutouts: set `images:` to the folder of tile images (or make a mock "
                    "survey with `images: true`)"
                )
            images = workdir / "survey" / IMAGES_DIR
        cutouts = make_cutouts(
            selection.out,
            images,
            workdir / "cutouts.zarr",
            config=config.cutouts,
            client=client,
            progress=progress,
        )
        result.reports.append(cutouts.units)
        result.outputs["cutouts"] = cutouts.out
        result.counts["cutouts written now"] = cutouts.counts["cutouts"]
    if config.simulate is not None:
        if config.cutouts is None:
            raise ValueError("simulate: the job needs a cutouts section to build a training set")
        from lensdask.lensing.simulate import simulate_lenses

        trainset = simulate_lenses(
            workdir / "cutouts.zarr",
            workdir / "trainset.zarr",
            config=config.simulate,
            client=client,
            targets=selection.out,
            progress=progress,
        )
        result.reports.append(trainset.units)
        result.outputs["training set"] = trainset.out
        if trainset.plot is not None:
            result.outputs["training examples"] = trainset.plot
        for split, kinds in trainset.counts.items():
            result.counts[f"{split} examples"] = sum(kinds.values())
    if config.train is not None:
        from lensdask.nn.train import train_model

        if config.simulate is None:
            raise ValueError("train: the job needs a simulate section to make a training set")
        trained = train_model(
            workdir / "trainset.zarr",
            workdir / "model",
            config=config.train,
            client=client,
            progress=progress,
        )
        result.outputs["model"] = trained.out
        result.counts["model test AUC"] = round(trained.card["test_metrics"]["auc"], 4)
    return result
