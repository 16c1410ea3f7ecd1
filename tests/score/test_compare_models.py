"""compare-models' kernel: candidates kept, dropped and new, rates per 1000 targets, and how
the graded candidates moved, checked against the same counts in DuckDB SQL."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from lensdask.formats.files import TableError
from lensdask.score.compare import compare_scores, grade_verdicts

THRESHOLDS = {"LRG": 0.75, "BG": 0.98}


@pytest.fixture
def scores():
    rng = np.random.default_rng(7)
    n = 400
    old = pd.DataFrame(
        {
            "ID": [f"t{k:03d}" for k in range(n)],
            "sample": np.where(np.arange(n) < 150, "LRG", "BG"),
            "p_cnn": rng.uniform(0, 1, n) ** 0.3,
        }
    )
    new = old.sample(frac=1, random_state=1).reset_index(drop=True)
    new["p_cnn"] = np.clip(new["p_cnn"] + rng.normal(0, 0.1, n), 0, 1)
    new.loc[0, "p_cnn"] = np.nan  # a stamp without data: never a candidate
    return old, new


def test_changes_and_rates_match_sql(scores):
    old, new = scores
    result = compare_scores(old, new, thresholds=THRESHOLDS)
    expected = duckdb.sql(
        """
        WITH t AS (
            SELECT o.sample, o.p_cnn > th AS was, coalesce(n.p_cnn > th, false) AS now
            FROM old o JOIN new n USING (ID)
            JOIN (VALUES ('LRG', 0.75), ('BG', 0.98)) AS th_(s, th) ON th_.s = o.sample
        )
        SELECT sample, count(*), sum(was::int), sum(now::int), sum((was AND now)::int),
               sum((was AND NOT now)::int), sum((now AND NOT was)::int)
        FROM t GROUP BY sample ORDER BY sample
        """
    ).fetchall()
    got = result.samples[["targets", "old", "new", "kept", "dropped", "added"]]
    assert [(s, *map(int, row)) for s, row in got.iterrows()] == [
        tuple(int(v) if k else v for k, v in enumerate(row)) for row in expected
    ]
    lrg = result.samples.loc["LRG"]
    assert lrg["new_per_1000"] == pytest.approx(1000 * lrg["new"] / 150)
    assert any(line.startswith("LRG: 150 targets") for line in result.lines())


def test_graded_candidates_moves_by_verdict(scores):
    old, new = scores
    grades = pd.DataFrame(
        [
            ("t000", "a", "A"), ("t000", "b", "B"), ("t001", "a", "A"), ("t001", "b", "A"),
            ("t002", "a", "D"), ("t002", "b", "C"), ("t003", "a", "A"), ("t003", "b", "D"),
        ],
        columns=["candidate_id", "grader", "grade"],
    )  # fmt: skip
    verdicts = grade_verdicts(grades)
    assert verdicts.to_dict() == {
        "t000": "accepted", "t001": "accepted", "t002": "rejected", "t003": "split",
    }  # fmt: skip
    # make the accepted ones rise and the rejected one fall
    new = new.set_index("ID")
    oldp = old.set_index("ID")["p_cnn"]
    new.loc["t000", "p_cnn"] = np.nan
    new.loc["t001", "p_cnn"] = min(1.0, oldp["t001"] + 0.05)
    new.loc["t002", "p_cnn"] = oldp["t002"] - 0.2
    result = compare_scores(old, new.reset_index(), thresholds=THRESHOLDS, grades=grades)
    accepted, rejected = result.graded.loc["accepted"], result.graded.loc["rejected"]
    # t000 has no new score (NaN): neither rose nor fell
    assert (accepted["candidates"], accepted["rose"], accepted["fell"]) == (2, 1, 0)
    assert (rejected["candidates"], rejected["rose"], rejected["fell"]) == (1, 0, 1)
    assert rejected["mean_change"] == pytest.approx(-0.2)
    assert result.graded.loc["split", "candidates"] == 1


def test_different_targets_are_refused(scores):
    old, new = scores
    with pytest.raises(TableError, match="1 scored by one only"):
        compare_scores(old, new.iloc[1:], thresholds=THRESHOLDS)
