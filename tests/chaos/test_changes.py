"""Chaos: the job changed under a finished workdir (other tiles, other simulation sizes and
thresholds; another model with a tile that fails), then rerun: the outputs equal a clean
run of the new job (issue 16, item 8)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from compare import assert_same, diff_rows, snapshot
from suite import STAGES, check_ok, copy_outputs, invoke

from lensdask.runner import EXIT_PARTIAL
from lensdask.units import MARKER_DIR, SUPERSEDED_DIR, planned_units


@pytest.mark.slow
def test_a_config_change_that_removes_and_adds_units(tmp_path, work, client, survey, clean):
    base, new = clean("base"), clean("new")
    copy_outputs(base.work, work, STAGES)
    # catalog B: tile 0 goes, tile 2 comes, tile 1 stays; train-00002 goes, test-00001
    # comes; thresholds that leave out half the LRGs and every BG
    job = survey.write_job(tmp_path / "job.yaml", work, "new")
    check_ok(invoke(client, "run", job))
    assert_same(new.rows, work)
    gone = survey.tiles[0]
    for out in ("targets.parquet", "cutouts.zarr", f"scores.parquet/{survey.model_id('one')}"):
        assert (work / out / SUPERSEDED_DIR / gone).is_dir(), out
    # the training set's plan changed: it is remade whole, with no marker of a batch
    # outside the new plan (train-00002) left
    markers = work / "trainset.zarr" / MARKER_DIR
    assert {path.stem for path in markers.glob("*.json")} == set(
        planned_units(work / "trainset.zarr")
    )


@pytest.mark.slow
def test_a_model_swap_with_a_failing_tile(tmp_path, work, client, survey, clean):
    one, two = clean("base"), clean("two")
    first, second = survey.model_id("one"), survey.model_id("two")
    copy_outputs(one.work, work, STAGES)
    # the second model's scoring fails on one tile: its r band is gone
    tile = survey.tiles[0]
    shutil.rmtree(work / "cutouts.zarr" / tile / "r")
    job = survey.write_job(tmp_path / "job.yaml", work, "two")
    result = invoke(client, "run", job, "--stages", "score,candidates")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"FAILED score {tile}" in result.output
    here = snapshot(work)
    # the first model's scores are untouched; the second's are a clean run's, less the tile
    assert diff_rows("scores", one.rows[f"scores/{first}"], here[f"scores/{first}"]).ok
    clean_second = two.rows[f"scores/{second}"]
    kept = clean_second[~clean_second["key"].str.startswith(f"{tile}/")]
    diff = diff_rows("scores", kept, here[f"scores/{second}"])
    assert diff.ok, diff
    candidates = pd.read_parquet(work / "candidates.parquet")
    expected = pd.read_parquet(two.work / "candidates.parquet")
    expected = expected[expected["THELI_NAME"] != tile].reset_index(drop=True)
    pd.testing.assert_frame_equal(candidates, expected)
    # the whole job again: the tile's cutouts are remade, the second model scores it
    check_ok(invoke(client, "run", job))
    assert_same({**two.rows, f"scores/{first}": one.rows[f"scores/{first}"]}, work)
