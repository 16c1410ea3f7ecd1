"""The stage table: a stage added to it alone is a job section, a command and a step of
``lensdask run``; every stage's command is made from its table entry."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import lensdask.stages
from lensdask.cli import main
from lensdask.config import ConfigError
from lensdask.job import load_job
from lensdask.stages import STAGES, Input, Stage, StageIO, StageOutcome


@dataclass(frozen=True, kw_only=True)
class CountConfig:
    """Counting the targets by the values of one column."""

    column: str = "sample"
    """Column of the targets whose values are counted."""
    least: int = 0
    """Values with fewer targets than this are left out."""


def run_count(config: CountConfig, io: StageIO, *, client, progress: bool = True) -> StageOutcome:
    """The toy stage: the targets are read by a task on the cluster."""
    targets = client.submit(pd.read_parquet, io.need("targets"), columns=[config.column])
    counts = targets.result()[config.column].value_counts()
    counts = {str(k): int(v) for k, v in counts.items() if v >= config.least}
    out = io.out("counts")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(counts, sort_keys=True))
    return StageOutcome(
        outputs={"counts": out},
        counts={"values counted": len(counts)},
        lines=[f"count: {len(counts)} values -> {out}"],
    )


COUNT = Stage(
    name="count",
    config=CountConfig,
    run=f"{__name__}:run_count",
    inputs=(Input(artifact="targets", argument=True),),
    outputs={"counts": "counts.json"},
    doc="Count the TARGETS by the values of one column.",
)


@pytest.fixture
def toy_table(monkeypatch):
    """The stage table with the toy stage added after the others."""
    monkeypatch.setattr(lensdask.stages, "STAGES", (*STAGES, COUNT))


def invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_a_stage_added_to_the_table_runs_in_a_job(toy_table, tmp_path, client):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\n"
        "mock_survey: {tiles: 1, tile_size: 0.05, seed: 5}\n"
        "count: {column: sample, least: 2}\n"
    )
    assert load_job(job).count == CountConfig(column="sample", least=2)
    result = invoke("run", job, "--cluster", client.scheduler.address, "--no-progress")
    assert result.exit_code == 0, result.output
    targets = pd.read_parquet(tmp_path / "work" / "targets.parquet")
    expected = targets["sample"].value_counts()
    expected = {k: int(v) for k, v in expected.items() if v >= 2}
    assert json.loads((tmp_path / "work" / "counts.json").read_text()) == expected
    assert f"values counted: {len(expected)}" in result.output
    assert f"counts -> {tmp_path / 'work' / 'counts.json'}" in result.output
    plan = invoke("run", job, "--dry-run")
    assert plan.exit_code == 0 and "\ncount " in plan.output


def test_a_stage_added_to_the_table_is_a_command(toy_table, tmp_path, client):
    listing = invoke("--help").output
    assert "count" in listing and "Count the TARGETS" in listing
    help_text = invoke("count", "--help").output
    assert "Column of the targets whose values are counted." in help_text
    assert "[default: sample]" in help_text and "--cluster" in help_text
    targets = tmp_path / "targets.parquet"
    pd.DataFrame({"sample": ["LRG", "BG", "BG"], "ID": ["a", "b", "c"]}).to_parquet(targets)
    out = tmp_path / "n.json"
    result = invoke(
        "count", targets, "--out", out, "--least", 2, "--cluster", client.scheduler.address
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {"BG": 2}


def test_every_stage_command_takes_its_configuration_fields_and_a_job():
    from lensdask.cli.fields import configurable

    for stage in lensdask.stages.STAGES:
        text = invoke(stage.name, "--help").output
        assert "--job" in text and "--cluster" in text, stage.name
        for field in configurable(stage.config):
            if field.name not in stage.arguments:
                assert "--" + field.name.replace("_", "-") in text, (stage.name, field.name)


def test_command_line_values_replace_the_job_sections(tmp_path, client):
    job = tmp_path / "job.yaml"
    job.write_text("catalog: x\ncandidates: {thresholds: {LRG: 0.5}, match_radius: 2.0}\n")
    from lensdask.cli.fields import apply_options
    from lensdask.cli.stages import job_section

    stage = lensdask.stages.stage_named("candidates")
    config = job_section(stage, job)
    assert config.thresholds == {"LRG": 0.5, "BG": 0.98} and config.match_radius == 2.0
    changed = apply_options(
        config,
        {"thresholds": "BG=0.9", "theta_e_bins": "1,2,4", "match_radius": None},
        section="candidates",
    )
    assert changed.thresholds == {"LRG": 0.5, "BG": 0.9}
    assert changed.theta_e_bins == (1.0, 2.0, 4.0) and changed.match_radius == 2.0
    assert dataclasses.replace(changed, thresholds=config.thresholds) != config
    with pytest.raises(ConfigError, match=r"candidates\.thresholds: expected KEY=VALUE"):
        apply_options(config, {"thresholds": "0.9"}, section="candidates")


def test_an_artifact_comes_from_one_place(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("catalog: c.parquet\nmodel: m\ntrain: {}\n")
    with pytest.raises(ConfigError, match="takes its model from exactly one of: model"):
        load_job(path)
    path.write_text("catalog: c.parquet\nscore: {}\nmodel: elsewhere/m\n")
    job = load_job(path)
    assert job.path("model") == Path("elsewhere/m")
    assert job.path("cutouts") == job.workdir / "cutouts.zarr"
