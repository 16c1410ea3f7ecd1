"""`lensdask run`: the whole chain on a tiny mock survey, --stages, --dry-run and the plan."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.job import load_job
from lensdask.pipeline import chosen_stages, job_stages
from lensdask.plan import plan_job
from lensdask.stages import stage_names

STAGES = stage_names()

ROOT = Path(__file__).resolve().parents[1]

TINY_JOB = """\
workdir: {workdir}
mock_survey: {{tiles: 2, tile_size: 0.05, seed: 11, images: true, bands: [r, g],
               lrg_density: 30000, lens_fraction: 0.25}}
select: {{extra_columns: [TRUE_TYPE, TRUE_LENS]}}
cutouts: {{bands: [r, g]}}
simulate: {{positives: 64, negatives: 32, test_positives: 16, test_negatives: 16,
            batch_size: 32, negative_mix: {{LRG: 0.5, BG: 0.5}}}}
train: {{width: 0.0625, epochs: 1, batch_size: 16, augment: false}}
score: {{}}
candidates: {{thresholds: {{LRG: 0.3, BG: 0.3}}}}
stamps: {{rgb_bands: [r, r, g]}}
"""


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def tiny_job(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(TINY_JOB.format(workdir=tmp_path / "work"))
    return job


@pytest.mark.slow
def test_the_whole_chain_runs_and_resumes(tiny_job, tmp_path, client):
    address = client.scheduler.address
    result = invoke("run", str(tiny_job), "--cluster", address, "--no-progress")
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    cutouts = sum(1 for _ in (work / "cutouts.zarr" / "_units").glob("*.json"))
    scores = pd.read_parquet(work / "scores.parquet")
    targets = pd.read_parquet(work / "targets.parquet")
    assert cutouts == 2 and len(scores) == len(targets) > 50
    candidates = pd.read_parquet(work / "candidates.parquet")
    expected = scores[scores["p_cnn"] > 0.3]
    assert sorted(candidates["ID"]) == sorted(expected["ID"])
    assert {"RAJ2000", "DECJ2000", "MAG_AUTO"} <= set(candidates.columns)
    stamps = list((work / "stamps").rglob("*.png"))
    assert len(stamps) >= len(candidates)  # colour + r stamps and the contact sheets
    report = (work / "performance-report.html").read_text()
    assert "Dask Performance Report" in report and "score" in report
    for line in (
        "model test AUC: ",
        "injected lenses recovered: ",
        f"candidates -> {work / 'candidates.parquet'}",
        f"contact sheets -> {work / 'stamps'}",
        f"performance report -> {work / 'performance-report.html'}",
        f"next: lensdask inspect add-grader NAME --db {work / 'grades.sqlite'}",
    ):
        assert line in result.output
    # a rerun finds everything complete: nothing is written again
    (units,) = (work / "scores.parquet").glob("*/_units")  # one model's scores
    mtime = units.stat().st_mtime_ns
    again = invoke("run", str(tiny_job), "--cluster", address, "--no-progress")
    assert again.exit_code == 0, again.output
    assert "cutouts scored now: 0" in again.output
    assert units.stat().st_mtime_ns == mtime
    # one stage again, with another threshold
    (work / "candidates.parquet").unlink()
    only = invoke("run", str(tiny_job), "--stages", "candidates", "--cluster", address)
    assert only.exit_code == 0, only.output
    assert "targets selected" not in only.output
    assert (work / "candidates.parquet").exists()


def test_stages_are_checked_and_inputs_named(tiny_job, tmp_path, client):
    address = client.scheduler.address
    bad = CliRunner().invoke(main, ["run", str(tiny_job), "--stages", "score,grade"])
    assert bad.exit_code == 1 and "unknown stage(s) ['grade']" in bad.output
    config = load_job(tiny_job)
    with pytest.raises(ValueError, match="no section for ingest"):
        chosen_stages(config, ["ingest"])
    assert chosen_stages(config, ["score", "select"]) == ["select", "score"]
    missing = CliRunner().invoke(
        main, ["run", str(tiny_job), "--stages", "score", "--cluster", address]
    )
    assert missing.exit_code == 1
    assert f"score: needs the cutout store at {tmp_path / 'work' / 'cutouts.zarr'}" in (
        missing.output
    )


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", str(ROOT / "jobs" / "demo.yaml"), "--dry-run")
    assert result.exit_code == 0, result.output
    table = result.output.split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split() for line in table}
    assert list(rows)[:-1] == job_stages(load_job(ROOT / "jobs" / "demo.yaml"))
    assert rows["mock-survey"][1:3] == ["4", "tile"]
    assert rows["simulate"][1:3] == [str(math.ceil(3000 / 250) + math.ceil(400 / 250)), "batch"]
    assert rows["train"][1:3] == ["1", "model"]
    assert "cluster: local (no batch jobs)" in result.output
    assert not (tmp_path / "lensdask-demo").exists()


def test_dry_run_on_slurm_shows_the_worker_job_script(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)
    job = ROOT / "jobs" / "demo.yaml"
    result = invoke("run", str(job), "--dry-run", "--cluster", "slurm", "--workers", "3")
    assert result.exit_code == 0, result.output
    assert "3 worker job(s), each submitted as:" in result.output
    assert "#SBATCH -t 04:00:00" in result.output
    assert "--lifetime 230m --lifetime-stagger 5m" in result.output
    assert not (tmp_path / "lensdask-demo").exists()


def test_an_lsst_sized_plan_has_tasks_per_tile_and_batch_not_per_galaxy():
    config = load_job(ROOT / "jobs" / "lsst.yaml")
    plans = {plan.stage: plan for plan in plan_job(config, chosen_stages(config, None))}
    assert plans["mock-survey"].rows > 2e9
    for stage in ("mock-survey", "select", "cutouts", "score", "stamps"):
        assert plans[stage].tasks == 18_000, stage
    sim = config.simulate
    assert plans["simulate"].tasks == math.ceil(
        (sim.positives + sim.negatives) / sim.batch_size
    ) + math.ceil((sim.test_positives + sim.test_negatives) / sim.batch_size)
    assert sum(plan.tasks for plan in plans.values()) < 2e5 < plans["cutouts"].rows
    # cutouts: targets x 3 bands x 101 x 101 float32
    assert plans["cutouts"].output_bytes == plans["cutouts"].rows * 3 * 101 * 101 * 4


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_job_loads_and_plans(job):
    config = load_job(job)
    stages = chosen_stages(config, None)
    assert set(stages) <= set(STAGES) and "select" in stages
    assert len(plan_job(config, stages)) == len(stages)
