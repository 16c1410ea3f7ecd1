"""The job of the chaos suite: its stages and outputs, its configurations, the mock survey
it runs on, and how a case runs a command and copies a clean run's outputs."""

from __future__ import annotations

import contextvars
import shutil
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result
from compare import Rows

STAGES = ("select", "cutouts", "simulate", "score", "candidates", "stamps")
"""The data stages of the job, in run order."""

OUTPUTS = {
    "select": ("targets.parquet",),
    "cutouts": ("cutouts.zarr",),
    "simulate": ("trainset.zarr", "trainset_examples.png"),
    "score": ("scores.parquet",),
    "candidates": ("candidates.parquet", "candidates_summary.json", "candidates_p_cnn.png"),
    "stamps": ("stamps",),
}
"""What each stage writes in the workdir."""

SIMULATE = {
    "base": "{positives: 32, negatives: 16, test_positives: 8, test_negatives: 8, batch_size: 16}",
    # fewer training batches (train-00002 goes), two test batches (test-00001 comes)
    "new": "{positives: 16, negatives: 16, test_positives: 16, test_negatives: 16, batch_size: 16}",
}
THRESHOLDS = {"base": "{LRG: 0.0, BG: 0.0}", "new": "{LRG: 0.62, BG: 0.99}"}

JOB = """\
workdir: {workdir}
catalog: {catalog}
images: {images}
model: {model}
select: {{}}
cutouts: {{bands: [r, g]}}
simulate: {simulate}
score: {{}}
candidates: {{thresholds: {thresholds}}}
stamps: {{rgb_bands: [g, r, g], sheet_columns: 4, sheet_rows: 2, sheet_limit: 8}}
"""


@dataclass(frozen=True)
class Config:
    """A job of the suite: which tiles (catalog ``A`` or ``B``: :meth:`Survey.use_catalog`),
    which model, which simulation sizes and thresholds (``base`` or ``new``)."""

    catalog: str = "A"
    model: str = "one"
    settings: str = "base"


CONFIGS = {
    "base": Config(),
    "two": Config(model="two"),  # the base job scored with the other model
    "new": Config(catalog="B", settings="new"),  # other tiles, simulation and thresholds
}


@dataclass(frozen=True)
class Survey:
    """The mock survey (3 tiles), its catalog folder, which holds tiles 0 and 1 (``A``) or
    tiles 1 and 2 (``B``), and two models."""

    root: Path
    tiles: tuple[str, ...]

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    def use_catalog(self, name: str) -> None:
        """Put the tiles of catalog ``name`` in the catalog folder: hard links to the
        survey's files, so that a tile's file keeps its path, size and time from one
        catalog to the other (and its targets stay complete)."""
        chosen = {"A": self.tiles[:2], "B": self.tiles[1:]}[name]
        self.catalog.mkdir(exist_ok=True)
        for path in self.catalog.glob("*.parquet"):
            if path.stem not in chosen:
                path.unlink()
        for tile in chosen:
            link = self.catalog / f"{tile}.parquet"
            if not link.exists():
                link.hardlink_to(self.root / "survey" / "catalog" / f"{tile}.parquet")

    @property
    def images(self) -> Path:
        return self.root / "survey" / "images"

    def model(self, name: str) -> Path:
        return self.root / f"model-{name}"

    def model_id(self, name: str) -> str:
        from lensdask.formats.model_dir import read_card

        return read_card(self.model(name))["model_id"]

    def write_job(self, path: Path, work: Path, config: Config | str = "base") -> Path:
        config = CONFIGS[config] if isinstance(config, str) else config
        self.use_catalog(config.catalog)
        path.write_text(
            JOB.format(
                workdir=work,
                catalog=self.catalog,
                images=self.images,
                model=self.model(config.model),
                simulate=SIMULATE[config.settings],
                thresholds=THRESHOLDS[config.settings],
            )
        )
        return path


def invoke(client, *args: object) -> Result:
    """A lensdask command on the test cluster, in this process.

    It runs in an empty :class:`contextvars.Context`: the fixture ``client`` (entered with
    ``with``) is the current client of the test's context, and ``lensdask.runner.run_units``
    follows its futures with ``distributed.as_completed``, which runs on the current
    client's event loop, not on the loop of the command's own client: two threads then
    write to one connection, and the command fails in tornado (``assert 0 < size``) or
    hangs for good.
    """
    from lensdask.cli import main

    extra = ["--cluster", client.scheduler.address, "--no-progress"]
    args = [*map(str, args), *extra]
    return contextvars.Context().run(CliRunner().invoke, main, args)


def check_ok(result: Result) -> Result:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    return result


@dataclass(frozen=True)
class CleanRun:
    work: Path
    """A copy of its workdir (the run itself was at :func:`work`'s path)."""
    rows: dict[str, Rows]
    """The outputs, read through the manifests (:func:`compare.snapshot`)."""


def copy_outputs(source: Path, work: Path, stages: tuple[str, ...]) -> None:
    """Copy what ``stages`` wrote in workdir ``source`` into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        for name in OUTPUTS[stage]:
            path = source / name
            if path.is_dir():
                shutil.copytree(path, work / name, symlinks=True)
            elif path.exists():
                shutil.copy2(path, work / name)


def upstream(stage: str) -> tuple[str, ...]:
    """The stages before ``stage``."""
    return STAGES[: STAGES.index(stage)]
