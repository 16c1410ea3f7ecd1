"""Exploration: targets below the thresholds added to the grading queue by a strategy
(counts, strategies, determinism, flagging), blind on the grading page, and ranked apart."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.config import CandidateConfig, ConfigError
from lensdask.review.rank import exploration_path, rank_files, read_ranking
from lensdask.score.candidates import select_candidates

THRESHOLDS = {"LRG": 0.75, "BG": 0.98}


def score_frames(seed: int = 0, *, members: int = 0) -> pd.DataFrame:
    """1200 scored targets (20% LRGs) over three tiles; with ``members``, a committee's
    member scores ``p_cnn_<k>`` whose spread grows with the row number."""
    rng = np.random.default_rng(seed)
    n = 1200
    frame = pd.DataFrame(
        {
            "ID": [f"KiDS J{k:06d}.000+000000.00" for k in range(n)],
            "THELI_NAME": [f"KIDS_{k % 3}.0_0.5" for k in range(n)],
            "sample": rng.choice(["LRG", "BG"], n, p=[0.2, 0.8]),
            "p_cnn": rng.beta(0.5, 0.5, n).astype(np.float32),
            "model_id": "m0",
        }
    )
    for k in range(members):
        spread = rng.uniform(0.0, 0.3, n)
        frame[f"p_cnn_{k}"] = np.clip(frame["p_cnn"] + spread * (-1) ** k, 0, 1)
    return frame


def write_scores(folder: Path, frame: pd.DataFrame, *, files: int = 3) -> Path:
    """The scores as files of ``files`` groups of tiles."""
    folder.mkdir(parents=True)
    tiles = sorted(frame["THELI_NAME"].unique())
    for k in range(files):
        part = frame[frame["THELI_NAME"].isin(tiles[k::files])]
        part.to_parquet(folder / f"part{k}.parquet", index=False)
    return folder


def below(frame: pd.DataFrame) -> pd.DataFrame:
    limit = frame["sample"].map(THRESHOLDS)
    return frame[frame["p_cnn"].astype(np.float64) <= limit]


def select(client, scores: Path, out: Path, **explore) -> tuple[pd.DataFrame, dict]:
    report = select_candidates(
        scores, out, config=CandidateConfig(**explore), client=client, progress=False
    )
    return pd.read_parquet(out), report.summary


@pytest.mark.slow
def test_random_exploration_counts_flags_and_a_uniform_draw(client, tmp_path):
    frame = score_frames()
    scores = write_scores(tmp_path / "scores", frame)
    plain, _ = select(client, scores, tmp_path / "plain.parquet")
    table, summary = select(client, scores, tmp_path / "c.parquet", explore=300)
    assert table["explore"].dtype == bool and not plain["explore"].any()
    found, explored = table[~table["explore"]], table[table["explore"]]
    # the search's candidates are exactly those without exploration, and counted alone
    assert sorted(found["ID"]) == sorted(plain["ID"])
    for sample in ("LRG", "BG"):
        assert summary["samples"][sample]["candidates"] == int((found["sample"] == sample).sum())
    assert len(explored) == 300 and explored["ID"].is_unique
    assert set(explored["ID"]) <= set(below(frame)["ID"])
    assert summary["exploration"] == {
        "strategy": "random",
        "seed": 0,
        "requested": 300,
        "drawn": 300,
        "by_sample": explored["sample"].value_counts().sort_index().to_dict(),
    }
    # uniform among the targets below: the LRG share and the p_cnn distribution match
    pool = below(frame)
    share = (pool["sample"] == "LRG").mean()
    sigma = np.sqrt(share * (1 - share) / 300)
    assert abs((explored["sample"] == "LRG").mean() - share) < 4 * sigma
    from scipy.stats import ks_2samp

    assert ks_2samp(explored["p_cnn"], pool["p_cnn"]).pvalue > 1e-3
    # seeded and deterministic, whatever the files the targets are in
    again, _ = select(client, scores, tmp_path / "again.parquet", explore=300)
    assert again.equals(table)
    one_file = write_scores(tmp_path / "one", frame, files=1)
    same, _ = select(client, one_file, tmp_path / "one.parquet", explore=300)
    assert sorted(same[same["explore"]]["ID"]) == sorted(explored["ID"])
    other, _ = select(client, scores, tmp_path / "o.parquet", explore=300, explore_seed=1)
    assert set(other[other["explore"]]["ID"]) != set(explored["ID"])


def test_uncertainty_takes_the_targets_just_below_their_threshold(client, tmp_path):
    frame = score_frames(1)
    scores = write_scores(tmp_path / "scores", frame)
    table, summary = select(
        client, scores, tmp_path / "c.parquet", explore=50, explore_strategy="uncertainty"
    )
    pool = below(frame).copy()
    pool["gap"] = pool["sample"].map(THRESHOLDS) - pool["p_cnn"].astype(np.float64)
    expected = pool.nsmallest(50, "gap", keep="all")
    explored = table[table["explore"]]
    assert len(explored) == 50 and set(explored["ID"]) <= set(expected["ID"])
    assert explored["ID"].map(pool.set_index("ID")["gap"]).max() <= expected["gap"].max()
    assert summary["exploration"]["strategy"] == "uncertainty"


def test_disagreement_ranks_by_the_spread_of_the_committee(client, tmp_path):
    frame = score_frames(2, members=3)
    scores = write_scores(tmp_path / "scores", frame)
    table, _ = select(
        client, scores, tmp_path / "c.parquet", explore=40, explore_strategy="disagreement"
    )
    pool = below(frame).copy()
    pool["spread"] = pool[["p_cnn_0", "p_cnn_1", "p_cnn_2"]].std(axis=1, ddof=0)
    explored = table[table["explore"]]
    assert sorted(explored["ID"]) == sorted(pool.nlargest(40, "spread")["ID"])
    # the member columns stay in the scores: the candidates table has the usual columns
    assert not any(name.startswith("p_cnn_") for name in table.columns)


def test_disagreement_without_a_committee_is_refused_clearly(client, tmp_path):
    scores = write_scores(tmp_path / "scores", score_frames(3))
    with pytest.raises(ValueError, match=r"disagreement .*\(score columns p_cnn_0, p_cnn_1"):
        select(client, scores, tmp_path / "c.parquet", explore=5, explore_strategy="disagreement")
    assert not (tmp_path / "c.parquet").exists()
    with pytest.raises(ConfigError, match=r"candidates\.explore_strategy: one of random"):
        CandidateConfig(explore=5, explore_strategy="loudest")
    with pytest.raises(ConfigError, match=r"candidates\.explore: a count >= 0"):
        CandidateConfig(explore=-1)


def test_more_asked_than_there_are_below_gives_all_of_them(client, tmp_path):
    frame = score_frames(4).iloc[:60]
    scores = write_scores(tmp_path / "scores", frame)
    table, summary = select(client, scores, tmp_path / "c.parquet", explore=1000)
    assert int(table["explore"].sum()) == len(below(frame)) == summary["exploration"]["drawn"]


@pytest.mark.slow
def test_explore_option_of_the_candidates_command(tmp_path):
    scores = write_scores(tmp_path / "scores", score_frames(5))
    out = tmp_path / "c.parquet"
    args = ["candidates", scores, "--out", out, "--explore", "7"]
    args += ["--explore-strategy", "uncertainty", "--cluster", "local", "--workers", "1"]
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert "exploration: 7 of 7 targets below the thresholds drawn by uncertainty" in (
        result.output
    )
    assert int(pd.read_parquet(out)["explore"].sum()) == 7
    summary = json.loads((tmp_path / "c_summary.json").read_text())
    assert summary["exploration"]["drawn"] == 7


def ranking_inputs(tmp_path: Path) -> tuple[Path, Path, list[str], list[str]]:
    """Candidates (4 found, 3 explored) and grades making one of each golden."""
    ids = [f"KiDS J{k:06d}.000+000000.00" for k in range(7)]
    candidates = pd.DataFrame(
        {
            "ID": ids,
            "p_cnn": [0.99, 0.95, 0.9, 0.8, 0.7, 0.5, 0.3],
            "explore": [False] * 4 + [True] * 3,
        }
    )
    candidates.to_parquet(tmp_path / "candidates.parquet")
    letters = {ids[0]: "AA", ids[1]: "BC", ids[2]: "DD", ids[4]: "AA", ids[5]: "CD"}
    rows = [
        (cid, f"g{k}", letter) for cid, grades in letters.items() for k, letter in enumerate(grades)
    ]
    pd.DataFrame(rows, columns=["candidate_id", "grader", "grade"]).to_csv(
        tmp_path / "grades.csv", index=False
    )
    return tmp_path / "candidates.parquet", tmp_path / "grades.csv", ids[:4], ids[4:]


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".parquet"])
def test_ranking_keeps_exploration_targets_apart(tmp_path, suffix):
    candidates, grades, found, explored = ranking_inputs(tmp_path)
    out = tmp_path / f"ranking{suffix}"
    table = rank_files(candidates, grades, out, latex=tmp_path / "t.tex")
    assert table["candidate_id"].tolist() == [found[0], found[1], found[2]]
    assert table["quality"].tolist() == ["golden", "low", "low"]
    assert read_ranking(out)["candidate_id"].tolist() == table["candidate_id"].tolist()
    apart = read_ranking(exploration_path(out))
    assert exploration_path(out).name == f"ranking_exploration{suffix}"
    assert apart["candidate_id"].tolist() == [explored[0], explored[1]]
    assert apart["quality"].tolist() == ["golden", "low"]  # P = 0.7 x 1.0: a missed lens
    assert explored[0] not in (tmp_path / "t.tex").read_text()
    # ranked again from candidates without exploration: the old table of it goes
    plain = pd.read_parquet(candidates).drop(columns="explore").iloc[:4]
    plain.to_parquet(tmp_path / "plain.parquet")
    pd.read_csv(grades)[lambda g: g["candidate_id"].isin(found)].to_csv(
        tmp_path / "found.csv", index=False
    )
    rank_files(tmp_path / "plain.parquet", tmp_path / "found.csv", out)
    assert not exploration_path(out).exists()


def test_rank_command_prints_the_exploration_apart(tmp_path):
    candidates, grades, _, _ = ranking_inputs(tmp_path)
    out = tmp_path / "ranking.csv"
    args = ["rank", "--scores", candidates, "--grades", grades, "--out", out]
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert "rank: 3 graded candidates: 1 golden" in result.output
    assert "exploration: 2 graded targets below the thresholds, kept apart: 1 golden, 0 more" in (
        result.output
    )


def test_grading_page_does_not_tell_exploration_targets_apart(review_data, tmp_path):
    """The page's candidates come from a table with ``explore``; nothing it serves says
    which they are."""
    from lensdask.formats.candidates import read_candidates
    from lensdask.review.server import make_server

    table = review_data.candidates.copy()
    table["explore"] = np.arange(len(table)) % 3 == 0
    table.to_parquet(tmp_path / "candidates.parquet")
    ids = read_candidates(tmp_path / "candidates.parquet", require=(), keep_nan=True)
    server = make_server(tmp_path / "g.sqlite", review_data.stamps, ids["candidate_id"], port=0)
    server.start()
    try:
        token = server.app.store.add_grader("ann")
        bodies = []
        for path in (f"?token={token}", f"api/state?token={token}", "app.js"):
            with urllib.request.urlopen(server.url + path, timeout=10) as response:
                bodies.append(response.read().decode())
    finally:
        server.stop()
    state = json.loads(bodies[1])
    assert sorted(item["id"] for item in state["items"]) == sorted(table["ID"])
    assert all(set(item) == {"key", "id", "grade"} for item in state["items"])
    for body in bodies:
        assert "explore" not in body.lower()
