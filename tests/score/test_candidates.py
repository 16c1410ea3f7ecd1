"""`lensdask candidates`: thresholds per sample (checked with DuckDB), the summary and plot,
completeness against injected lenses, known-lens recovery, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.config import CandidateConfig
from lensdask.score.candidates import HIST_BINS, select_candidates
from lensdask.score.recovery import match_positions
from lensdask.score.thresholds import candidate_mask
from lensdask.selection import binned_completeness


def write_scores(folder: Path, tiles: dict[str, pd.DataFrame]) -> Path:
    """A scores folder as `lensdask score` writes it: one Parquet file per tile."""
    folder.mkdir(parents=True, exist_ok=True)
    for tile, frame in tiles.items():
        frame = frame.assign(THELI_NAME=tile, model_id="m0")
        frame = frame[["ID", "THELI_NAME", "sample", "p_cnn", "model_id"]]
        frame.astype({"p_cnn": np.float32}).to_parquet(folder / f"{tile}.parquet", index=False)
    return folder


def random_scores(folder: Path, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tiles = {}
    for k in range(3):
        n = 400
        tiles[f"KIDS_{k}.0_0.5"] = pd.DataFrame(
            {
                "ID": [f"KiDS J{k:02d}{i:05d}" for i in range(n)],
                "sample": rng.choice(["LRG", "BG"], n, p=[0.2, 0.8]),
                "p_cnn": rng.beta(0.5, 0.5, n),
            }
        )
    # exact ties with the thresholds: `above` means strictly above
    tiles["KIDS_0.0_0.5"].loc[:3, ["sample", "p_cnn"]] = [
        ["LRG", 0.75],
        ["BG", 0.98],
        ["LRG", 0.7500001],
        ["BG", 0.9800001],
    ]
    return write_scores(folder, tiles)


def test_candidates_match_a_duckdb_query(client, tmp_path):
    scores = random_scores(tmp_path / "scores.parquet")
    out = tmp_path / "cands" / "candidates.parquet"
    report = select_candidates(scores, out, client=client, progress=False)
    got = pd.read_parquet(out)
    query = f"""
        SELECT ID, sample, p_cnn FROM read_parquet('{scores}/*.parquet')
        WHERE (sample = 'LRG' AND p_cnn > CAST(0.75 AS REAL))
           OR (sample = 'BG' AND p_cnn > CAST(0.98 AS REAL))
        ORDER BY p_cnn DESC, ID
    """
    expected = duckdb.sql(query).df()
    assert got["ID"].tolist() == expected["ID"].tolist()
    assert len(got) > 20 and set(got["sample"]) == {"LRG", "BG"}
    counts = duckdb.sql(
        f"SELECT sample, count(*) AS n FROM read_parquet('{scores}/*.parquet') GROUP BY sample"
    ).df()
    for sample, n in zip(counts["sample"], counts["n"], strict=True):
        entry = report.summary["samples"][sample]
        assert entry["scored"] == n
        assert entry["candidates"] == (expected["sample"] == sample).sum()
        assert entry["fraction"] == pytest.approx(entry["candidates"] / n)
    assert "KiDS J0000000" not in set(got["ID"])  # exactly at 0.75: not above
    assert "KiDS J0000002" in set(got["ID"])
    summary = json.loads((tmp_path / "cands" / "candidates_summary.json").read_text())
    assert summary["samples"] == report.summary["samples"]
    png = (tmp_path / "cands" / "candidates_p_cnn.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_thresholds_from_the_command_line_and_targets_columns(client, tmp_path):
    scores = random_scores(tmp_path / "scores.parquet", seed=2)
    every = pd.read_parquet(scores)
    targets = every[["ID"]].assign(
        RAJ2000=np.linspace(0, 3, len(every)),
        DECJ2000=-0.5,
        MAG_AUTO=19.5,
        Z_B=0.3,
        SG2DPHOT=0,
    )
    targets.to_parquet(tmp_path / "targets.parquet")
    out = tmp_path / "c.parquet"
    args = ["candidates", str(scores), "--out", str(out), "--lrg-threshold", "0.5"]
    args += ["--targets", str(tmp_path / "targets.parquet")]
    result = CliRunner().invoke(
        main, [*args, "--cluster", client.scheduler.address, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    got = pd.read_parquet(out)
    lrg = every[every["sample"] == "LRG"]
    n_lrg = int((lrg["p_cnn"] > np.float32(0.5)).sum())
    assert (got["sample"] == "LRG").sum() == n_lrg
    assert f"candidates: LRG: {n_lrg} of {len(lrg)} with p_cnn > 0.5" in result.output
    assert "with p_cnn > 0.98" in result.output
    merged = got.merge(targets, on="ID", suffixes=("", "_t"))
    np.testing.assert_array_equal(merged["RAJ2000"], merged["RAJ2000_t"])
    assert {"MAG_AUTO", "Z_B"} <= set(got.columns)
    assert got["p_cnn"].is_monotonic_decreasing


def test_histograms_count_every_target(client, tmp_path):
    from lensdask.score.candidates import scan_scores

    scores = random_scores(tmp_path / "scores.parquet", seed=4)
    result = scan_scores(scores / "KIDS_1.0_0.5.parquet", thresholds={"LRG": 0.75})
    frame = pd.read_parquet(scores / "KIDS_1.0_0.5.parquet")
    for sample, hist in result["hist"].items():
        expected = np.histogram(frame.loc[frame["sample"] == sample, "p_cnn"], bins=HIST_BINS)[0]
        np.testing.assert_array_equal(hist, expected)
        assert sum(hist) == result["counts"][sample]
    assert set(result["candidates"]["sample"]) <= {"LRG"}  # no threshold for BG here


def test_candidate_mask_per_sample():
    sample = np.array(["LRG", "LRG", "BG", "BG", "other"])
    p = np.array([0.8, 0.7, 0.99, 0.9, 1.0])
    mask = candidate_mask(sample, p, {"LRG": 0.75, "BG": 0.98})
    assert mask.tolist() == [True, False, True, False, False]


def truth_and_scores(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Ten injected lenses in two tiles; eight are targets (scored), five are candidates."""
    truth = pd.DataFrame(
        {
            "ID": [f"L{i}" for i in range(10)],
            "theta_E": [1.1, 1.2, 1.6, 1.8, 2.5, 2.9, 4.0, 4.9, 1.3, 3.3],
            "arc_peak_ratio": [0.03, 0.05, 0.1, 0.2, 0.25, 0.02, 0.06, 0.3, 0.12, 0.07],
        }
    )
    (tmp_path / "lenses").mkdir()
    truth[:6].to_parquet(tmp_path / "lenses" / "KIDS_0.0_0.5.parquet")
    truth[6:].to_parquet(tmp_path / "lenses" / "KIDS_1.0_0.5.parquet")
    # L8, L9 are not targets; of L0..L7: L1, L2, L4, L6 LRGs above 0.75, L7 a BG above 0.98
    lenses = pd.DataFrame(
        {
            "ID": [f"L{i}" for i in range(8)],
            "sample": ["LRG"] * 7 + ["BG"],
            "p_cnn": [0.5, 0.8, 0.9, 0.1, 0.99, 0.7, 0.76, 0.985],
        }
    )
    others = pd.DataFrame(
        {
            "ID": [f"G{i}" for i in range(1000)],
            "sample": ["LRG"] * 200 + ["BG"] * 800,
            "p_cnn": np.r_[np.full(3, 0.9), np.full(197, 0.1), np.full(2, 0.99), np.full(798, 0.5)],
        }
    )
    scores = write_scores(
        tmp_path / "scores.parquet",
        {
            "KIDS_0.0_0.5": pd.concat([lenses[:5], others[:500]]),
            "KIDS_1.0_0.5": pd.concat([lenses[5:], others[500:]]),
        },
    )
    return tmp_path / "lenses", scores, truth


def test_completeness_against_injected_lenses(client, tmp_path):
    truth, scores, _ = truth_and_scores(tmp_path)
    config = CandidateConfig(theta_e_bins=(1.0, 2.0, 5.0), arc_ratio_bins=(0.02, 0.1, 0.3))
    out = tmp_path / "candidates.parquet"
    report = select_candidates(
        scores, out, config=config, client=client, truth=truth, progress=False
    )
    c = report.summary["completeness"]
    assert (c["lenses"], c["scored"], c["recovered"]) == (10, 8, 5)
    assert c["completeness"] == pytest.approx(5 / 8)
    # non-lens candidates: 3 LRGs among 207 LRG targets, 2 BGs among 801 BG targets
    assert c["false_per_1000"]["LRG"] == pytest.approx(1000 * 3 / 207)
    assert c["false_per_1000"]["BG"] == pytest.approx(1000 * 2 / 801)
    table = pd.read_csv(tmp_path / "candidates_completeness.csv")
    theta = table[table["quantity"] == "theta_E"]
    # [1, 2): L0 L1 L2 L3 (+L8 unscored) -> L1 L2 recovered; [2, 5]: L4 L5 L6 L7 (+L9) -> L4 L6 L7
    assert theta["lenses"].tolist() == [5, 5]
    assert theta["scored"].tolist() == [4, 4]
    assert theta["recovered"].tolist() == [2, 3]
    ratio = table[table["quantity"] == "arc_peak_ratio"]
    # [0.02, 0.1): L0 L1 L5 L6 (+L9) -> L1 L6; [0.1, 0.3]: L2 L3 L4 L7 (+L8) -> L2 L4 L7
    assert ratio["recovered"].tolist() == [2, 3]
    assert ratio["completeness"].tolist() == pytest.approx([0.5, 0.75])
    lenses = pd.read_parquet(tmp_path / "candidates_lenses.parquet")
    assert sorted(lenses.loc[lenses["recovered"], "ID"]) == ["L1", "L2", "L4", "L6", "L7"]
    assert (tmp_path / "candidates_completeness.png").stat().st_size > 10_000


def test_binned_completeness_closes_the_last_bin():
    values = np.array([1.0, 1.5, 2.0, 5.0, 6.0])
    scored = np.array([True, True, True, True, True])
    recovered = np.array([True, False, True, True, True])
    table = binned_completeness(values, scored, recovered, (1.0, 2.0, 5.0))
    assert table["lenses"].tolist() == [2, 2]  # 6.0 is outside; 5.0 is in the last bin
    assert table["completeness"].tolist() == [0.5, 1.0]


def test_known_lenses_by_id_and_by_position(client, tmp_path):
    _, scores, _ = truth_and_scores(tmp_path)
    every = pd.read_parquet(scores)
    targets = every[["ID"]].assign(
        RAJ2000=10 + np.arange(len(every)) * 1e-3, DECJ2000=-1.0 + np.arange(len(every)) * 1e-3
    )
    targets.to_parquet(tmp_path / "targets.parquet")
    position = targets.set_index("ID")
    known = pd.DataFrame(
        {
            "ID": ["L1", "L3", "nope", None, None],
            "RAJ2000": [np.nan, np.nan, np.nan, position.loc["L4", "RAJ2000"] + 0.5 / 3600, 50.0],
            "DECJ2000": [np.nan, np.nan, np.nan, position.loc["L4", "DECJ2000"], 0.0],
        }
    )
    known.to_csv(tmp_path / "known.csv", index=False)
    out = tmp_path / "c.parquet"
    report = select_candidates(
        scores,
        out,
        client=client,
        targets=tmp_path / "targets.parquet",
        known=tmp_path / "known.csv",
        progress=False,
    )
    assert report.summary["known"] == {"known": 5, "scored": 3, "recovered": 2, "fraction": 0.4}
    table = pd.read_csv(tmp_path / "c_known.csv")
    assert table["matched_ID"].tolist()[:4] == ["L1", "L3", "nope", "L4"]
    assert table["recovered"].tolist() == [True, False, False, True, False]
    assert table["separation_arcsec"][3] == pytest.approx(
        0.5 * np.cos(np.radians(-1.0 + 4e-3)), rel=1e-3
    )
    assert table["note"][2] == "not among the scored targets"
    assert table["note"][4].startswith("no target within 1.0 arcsec")


def test_match_positions_within_radius():
    cat_ra, cat_dec = np.array([10.0, 10.01, 20.0]), np.array([0.0, 0.0, 5.0])
    index, sep = match_positions(
        np.array([10.0 + 0.3 / 3600, 20.0, 30.0]),
        np.array([0.0, 5.0 + 2 / 3600, 0.0]),
        cat_ra,
        cat_dec,
        radius=1.0,
    )
    assert index.tolist() == [0, -1, -1]
    assert sep[0] == pytest.approx(0.3, rel=1e-6) and sep[1] == pytest.approx(2.0, rel=1e-6)


def test_bad_inputs_are_named(client, tmp_path):
    scores = random_scores(tmp_path / "scores.parquet")
    broken = pd.read_parquet(scores / "KIDS_1.0_0.5.parquet")
    broken.loc[7, "p_cnn"] = np.nan
    broken.to_parquet(scores / "KIDS_1.0_0.5.parquet", index=False)
    report = select_candidates(scores, tmp_path / "c.parquet", client=client, progress=False)
    assert [f.unit for f in report.units.failures] == ["KIDS_1.0_0.5"]
    assert "p_cnn is missing in row(s) [7]" in report.units.failures[0].error
    assert report.summary["failed_files"] == ["KIDS_1.0_0.5"]
    pd.DataFrame({"name": ["x"]}).to_csv(tmp_path / "known.csv", index=False)
    with pytest.raises(KeyError, match=r"known\.csv: needs an ID column or positions"):
        select_candidates(
            scores,
            tmp_path / "c.parquet",
            client=client,
            known=tmp_path / "known.csv",
            progress=False,
        )
    pd.DataFrame({"RAJ2000": [1.0], "DECJ2000": [0.0]}).to_csv(tmp_path / "pos.csv", index=False)
    with pytest.raises(ValueError, match="need the targets"):
        select_candidates(
            scores,
            tmp_path / "c.parquet",
            client=client,
            known=tmp_path / "pos.csv",
            progress=False,
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no score files"):
        select_candidates(tmp_path / "empty", tmp_path / "c.parquet", client=client)
