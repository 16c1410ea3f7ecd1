"""Cutouts without any finite pixel (all NaN, all +inf, all -inf) are never scored: their
p_cnn is NaN, they are flagged in the scores, counted per sample in the score and
candidates summaries, and never become candidates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.config import CandidateConfig
from lensdask.formats.scores import SCORE_COLUMNS, read_score_file
from lensdask.score.candidates import select_candidates
from lensdask.score.scoring import score_cutouts
from lensdask.testing import write_cutout_store

TILES = {"KIDS_7.0_0.5": {"LRG": 6, "BG": 5}, "KIDS_8.0_0.5": {"LRG": 4, "BG": 0}}
BLANK = ((np.inf, "LRG"), (np.nan, "BG"), (-np.inf, "LRG"))
"""Per tile: an all-+inf LRG, an all-NaN BG and an all--inf LRG cutout."""


@pytest.fixture(scope="module")
def blank_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("blank-store")
    store = write_cutout_store(
        root / "cutouts.zarr", TILES, bands=("r", "g"), edge=1, blank=BLANK, seed=3
    )
    # a few +-inf pixels in an otherwise fine cutout: still scored
    import zarr

    array = zarr.open_array(str(store / "KIDS_7.0_0.5" / "r"), mode="r+")
    stamp = array[0]
    stamp[50, 50], stamp[0, 0], stamp[10, 3] = np.inf, -np.inf, np.inf
    array[0] = stamp
    return store


@pytest.fixture(scope="module")
def blank_scores(blank_store, model_dir, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("blank-scores") / "scores.parquet"
    report = score_cutouts(blank_store, model_dir, out, client=client, progress=False)
    return out, report


def test_cutouts_without_finite_pixels_are_not_scored_and_flagged(blank_scores):
    out, report = blank_scores
    scores = pd.read_parquet(out)
    assert list(scores.columns[:5]) == ["ID", "THELI_NAME", "sample", "p_cnn", "model_id"]
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert scores["nonfinite_fraction"].dtype == np.float32
    for tile, samples in TILES.items():
        mine = pd.read_parquet(out / f"{tile}.parquet")
        n = sum(samples.values()) + 1  # one edge cutout
        blank = mine.iloc[n:]
        assert len(blank) == len(BLANK)
        assert blank["p_cnn"].isna().all(), tile
        assert (blank["nonfinite_fraction"] == 1).all(), tile
        assert blank["sample"].tolist() == [sample for _, sample in BLANK]
        fine = mine.iloc[:n]
        assert np.isfinite(fine["p_cnn"]).all(), tile
        assert (fine["nonfinite_fraction"] < 1).all(), tile
    assert report.no_data == {"LRG": 4, "BG": 2}
    assert report.units.ok and report.problems == []
    # the scores' reader accepts them (NaN p_cnn with no data) and flags them
    frame = read_score_file(out / "KIDS_7.0_0.5.parquet")
    assert frame["p_cnn"].isna().sum() == len(BLANK)


def test_a_few_inf_pixels_are_counted_exactly_and_still_scored(blank_scores):
    out, _ = blank_scores
    first = pd.read_parquet(out / "KIDS_7.0_0.5.parquet").iloc[0]
    assert first["nonfinite_fraction"] == np.float32(3 / 101**2)  # by hand: 3 of 101 x 101
    assert np.isfinite(first["p_cnn"])
    edge = pd.read_parquet(out / "KIDS_7.0_0.5.parquet").iloc[11]  # the edge cutout
    assert edge["nonfinite_fraction"] == np.float32(50 * 101 / 101**2)


def test_no_data_cutouts_never_become_candidates(blank_scores, client, tmp_path):
    out, _ = blank_scores
    config = CandidateConfig(thresholds={"LRG": 0.0, "BG": 0.0})  # every scored cutout
    report = select_candidates(
        out, tmp_path / "candidates.parquet", config=config, client=client, progress=False
    )
    candidates = pd.read_parquet(tmp_path / "candidates.parquet")
    scores = pd.read_parquet(out)
    scored = scores[scores["p_cnn"].notna()]
    assert set(candidates["ID"]) == set(scored["ID"][scored["p_cnn"] > 0])
    assert not set(candidates["ID"]) & set(scores["ID"][scores["p_cnn"].isna()])
    samples = report.summary["samples"]
    assert samples["LRG"]["no_data"] == 4 and samples["BG"]["no_data"] == 2
    assert samples["LRG"]["scored"] == int((scored["sample"] == "LRG").sum())
    assert samples["BG"]["scored"] == int((scored["sample"] == "BG").sum())
    saved = json.loads((tmp_path / "candidates_summary.json").read_text())
    assert saved["samples"]["LRG"]["no_data"] == 4


def test_commands_print_the_no_data_counts(blank_store, model_dir, client, tmp_path):
    address = client.scheduler.address
    out = tmp_path / "scores"
    args = ["score", str(blank_store), "--model", str(model_dir), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--cluster", address, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "6 of those cutouts (2 BG, 4 LRG) have no finite pixel" in result.output
    args = ["candidates", str(out), "--out", str(tmp_path / "c.parquet")]
    result = CliRunner().invoke(main, [*args, "--cluster", address, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 LRG cutouts without a finite pixel were not scored" in result.output
    assert "2 BG cutouts without a finite pixel were not scored" in result.output


def test_a_missing_p_cnn_with_finite_pixels_is_still_an_error(tmp_path):
    frame = pd.DataFrame(
        {
            "ID": ["a", "b"],
            "THELI_NAME": "T",
            "sample": "LRG",
            "p_cnn": np.array([np.nan, 0.5], np.float32),
            "model_id": "m",
            "nonfinite_fraction": np.array([0.2, 0.0], np.float32),
        }
    )
    frame.to_parquet(tmp_path / "T.parquet")
    with pytest.raises(ValueError, match=r"p_cnn is missing in row\(s\) \[0\]"):
        read_score_file(tmp_path / "T.parquet")
