"""Nothing stale: every stage's output is exactly what its current inputs plan, and readers
take only units whose lineage matches (the reproductions of issue 16, items 1 and 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.formats.model_dir import read_card
from lensdask.runner import EXIT_PARTIAL
from lensdask.units import SUPERSEDED_DIR, read_manifest

JOB = """\
workdir: {workdir}
mock_survey: {{tiles: 3, tile_size: 0.04, seed: 21, images: true, bands: [r, g],
               lrg_density: 20000}}
model: {model}
select: {{bg_mag_max: {bg}, lrg_mag_max: {lrg}}}
cutouts: {{bands: [r, g], size: {size}}}
score: {{}}
candidates: {{thresholds: {{LRG: 0.0, BG: 0.0}}}}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    from lensdask.testing import write_untrained_model

    root = tmp_path_factory.mktemp("models")
    return write_untrained_model(root / "one", seed=1), write_untrained_model(root / "two", seed=2)


def run(job: Path, client, *extra: str):
    args = ["run", str(job), *extra, "--cluster", client.scheduler.address, "--no-progress"]
    return CliRunner().invoke(main, args)


def write_job(path: Path, *, model: Path, bg=21.0, lrg=20.0, size=101) -> Path:
    path.write_text(
        JOB.format(workdir=path.parent / "work", model=model, bg=bg, lrg=lrg, size=size)
    )
    return path


def scores_of(work: Path, model: Path) -> pd.DataFrame:
    return pd.read_parquet(work / "scores.parquet" / read_card(model)["model_id"])


@pytest.mark.slow
def test_tightened_cuts_leave_no_stale_units(tmp_path, client, models):
    one, _ = models
    job = write_job(tmp_path / "job.yaml", model=one)
    assert run(job, client).exit_code == 0
    work = tmp_path / "work"
    before = read_manifest(work / "cutouts.zarr").units
    # brighter cuts: some tiles have no target left
    write_job(job, model=one, bg=17.1, lrg=17.1)
    result = run(job, client)
    assert result.exit_code == 0, result.output
    targets = pd.read_parquet(work / "targets.parquet")
    assert len(targets) > 0
    tiles = set(targets["THELI_NAME"])
    assert tiles < set(before)  # the test needs a tile emptied by the cuts
    assert set(read_manifest(work / "cutouts.zarr").units) == tiles
    for gone in set(before) - tiles:
        assert not (work / "cutouts.zarr" / gone).exists()
        assert (work / "cutouts.zarr" / SUPERSEDED_DIR / gone).is_dir()
    scores = scores_of(work, one)
    assert sorted(scores["ID"]) == sorted(targets["ID"])
    assert len(pd.read_parquet(work / "scores.parquet")) == len(targets)  # none left behind
    candidates = pd.read_parquet(work / "candidates.parquet")
    assert sorted(candidates["ID"]) == sorted(targets["ID"])  # threshold 0: all of them
    assert candidates["MAG_AUTO"].notna().all()


@pytest.mark.slow
def test_a_new_model_never_mixes_with_the_old_ones_scores(tmp_path, client, models):
    one, two = models
    job = write_job(tmp_path / "job.yaml", model=one)
    assert run(job, client).exit_code == 0
    work = tmp_path / "work"
    old = scores_of(work, one)
    # the second model's scoring fails on one tile
    (tile,) = sorted(set(old["THELI_NAME"]))[:1]
    shutil.rmtree(work / "cutouts.zarr" / tile / "r")
    write_job(job, model=two)
    result = run(job, client, "--stages", "score,candidates")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"FAILED score {tile}" in result.output
    assert f"MISSING candidates: {tile}: not scored" in result.output
    pd.testing.assert_frame_equal(scores_of(work, one), old)  # the first model's are kept
    candidates = pd.read_parquet(work / "candidates.parquet")
    assert set(candidates["model_id"]) == {read_card(two)["model_id"]}
    assert tile not in set(candidates["THELI_NAME"])
    assert sorted(candidates["ID"]) == sorted(old.loc[old["THELI_NAME"] != tile, "ID"])


@pytest.mark.slow
def test_candidates_refuse_scores_of_other_cutouts(tmp_path, client, models):
    one, _ = models
    job = write_job(tmp_path / "job.yaml", model=one, size=101)
    assert run(job, client).exit_code == 0
    write_job(job, model=one, size=51)
    assert run(job, client, "--stages", "cutouts").exit_code == 0
    result = run(job, client, "--stages", "candidates")
    assert result.exit_code == 1
    assert "were made from other cutouts" in result.output
    assert "run lensdask score again" in result.output
