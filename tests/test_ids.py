"""Joins by ID refuse an ID that several rows share, naming it, instead of silently picking
one of them: the targets and scores read by ID (read_rows), the candidates, injected and
known lenses, the targets' truth, the LaTeX table's candidates and the stamp index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lensdask.config import CandidateConfig
from lensdask.formats.ids import (
    DuplicateIDError,
    describe_repeats,
    repeated_ids,
    require_unique_ids,
)
from lensdask.formats.parquet import read_rows
from lensdask.formats.targets import read_truth
from lensdask.review.rank import latex_table
from lensdask.score.candidates import select_candidates
from lensdask.score.recovery import measure_completeness, recover_known


def scores_frame(ids: list[str], sample: str = "LRG", p: float = 0.9) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": ids,
            "THELI_NAME": "T",
            "sample": sample,
            "p_cnn": np.full(len(ids), p, np.float32),
            "model_id": "m",
        }
    )


def two_files(folder: Path, first: pd.DataFrame, second: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    first.to_parquet(folder / "T1.parquet", index=False)
    second.to_parquet(folder / "T2.parquet", index=False)
    return folder


def targets_frame(ids: list[str]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "ID": ids,
            "RAJ2000": np.arange(n, dtype=float),
            "DECJ2000": np.zeros(n),
            "MAG_AUTO": np.full(n, 19.0),
            "Z_B": np.full(n, 0.3),
            "TRUE_TYPE": "elliptical",
            "TRUE_LENS": False,
        }
    )


# --- the helpers ----------------------------------------------------------------------------


def test_repeated_ids_and_their_description() -> None:
    repeats = repeated_ids(["a", "b", "a", None, None, "c", "b", "a"])
    assert repeats == {"a": [0, 2, 7], "b": [1, 6]}
    assert describe_repeats(repeats) == "'a' (rows 0, 2, 7), 'b' (rows 1, 6)"
    many = {f"id{k:02d}": [k, k + 100] for k in range(25)}
    text = describe_repeats(many)
    assert text.count("(rows") == 20 and text.endswith("and 5 more")


def test_require_unique_ids_names_them() -> None:
    frame = pd.DataFrame({"candidate_id": ["x", "y", "x"]})
    require_unique_ids(frame.iloc[:2], column="candidate_id", what="t")
    with pytest.raises(
        DuplicateIDError, match=r"t: 1 candidate_id\(s\) occur more .*'x' \(rows 0, 2\)"
    ):
        require_unique_ids(frame, column="candidate_id", what="t")


# --- the joins ------------------------------------------------------------------------------


def test_read_rows_refuses_an_id_in_two_files(tmp_path: Path) -> None:
    folder = two_files(tmp_path / "t", targets_frame(["a", "b"]), targets_frame(["c", "a"]))
    assert read_rows(folder, ["b", "c"], ["MAG_AUTO"])["ID"].tolist() == ["b", "c"]
    with pytest.raises(DuplicateIDError, match=r"'a' \(in T1.parquet, T2.parquet\)"):
        read_rows(folder, ["a", "b"], ["MAG_AUTO"])


def test_candidates_refuse_targets_sharing_an_id(client, tmp_path: Path) -> None:
    scores = two_files(tmp_path / "scores", scores_frame(["a", "b"]), scores_frame(["c"]))
    targets = two_files(tmp_path / "targets", targets_frame(["a", "b"]), targets_frame(["a"]))
    with pytest.raises(DuplicateIDError, match="'a'"):
        select_candidates(
            scores, tmp_path / "c.parquet", client=client, targets=targets, progress=False
        )
    fine = two_files(tmp_path / "fine", targets_frame(["a", "b"]), targets_frame(["c"]))
    report = select_candidates(
        scores, tmp_path / "c.parquet", client=client, targets=fine, progress=False
    )
    candidates = pd.read_parquet(report.out)
    assert candidates.set_index("ID")["RAJ2000"].to_dict() == {"a": 0.0, "b": 1.0, "c": 0.0}


def test_candidates_refuse_scores_sharing_an_id(client, tmp_path: Path) -> None:
    scores = two_files(tmp_path / "scores", scores_frame(["a", "b"]), scores_frame(["b"]))
    with pytest.raises(DuplicateIDError, match=r"candidates .*'b' \(rows 1, 2\)"):
        select_candidates(scores, tmp_path / "c.parquet", client=client, progress=False)


def test_completeness_refuses_repeated_lenses_and_scores(tmp_path: Path) -> None:
    config = CandidateConfig()
    truth = tmp_path / "truth.parquet"
    lenses = pd.DataFrame({"ID": ["a", "b", "a"], "theta_E": 1.5, "arc_peak_ratio": 0.1})
    lenses.to_parquet(truth)
    scores = two_files(tmp_path / "scores", scores_frame(["a", "b"]), scores_frame(["c"]))
    candidates = scores_frame(["a"])
    counts = {"LRG": 3}
    with pytest.raises(DuplicateIDError, match=r"truth table .*'a' \(rows 0, 2\)"):
        measure_completeness(
            truth, scores, candidates, counts=counts, config=config, stem=tmp_path / "x"
        )
    lenses.iloc[:2].to_parquet(truth)
    repeated = two_files(tmp_path / "repeated", scores_frame(["a", "b"]), scores_frame(["a"]))
    with pytest.raises(DuplicateIDError, match="'a'"):
        measure_completeness(
            truth, repeated, candidates, counts=counts, config=config, stem=tmp_path / "x"
        )


def test_known_lenses_refuse_repeated_scores(tmp_path: Path) -> None:
    known = tmp_path / "known.csv"
    pd.DataFrame({"ID": ["a", "c"]}).to_csv(known, index=False)
    repeated = two_files(tmp_path / "scores", scores_frame(["a", "b"]), scores_frame(["a"]))
    with pytest.raises(DuplicateIDError, match="'a'"):
        recover_known(known, repeated, config=CandidateConfig(), targets=None, stem=tmp_path / "k")


def test_read_truth_refuses_repeated_targets(tmp_path: Path) -> None:
    folder = two_files(tmp_path / "targets", targets_frame(["a", "b"]), targets_frame(["b"]))
    with pytest.raises(DuplicateIDError, match="'b'"):
        read_truth(folder)


def test_latex_table_refuses_repeated_candidates() -> None:
    table = pd.DataFrame(
        {
            "candidate_id": ["a"],
            "p_cnn": [0.9],
            "s_ave": [10.0],
            "s_rms": [0.0],
            "p_hum": [1.0],
            "p_value": [0.9],
            "n_zero": [0],
            "quality": ["golden"],
        }
    )
    candidates = pd.DataFrame({"candidate_id": ["a", "a"], "RAJ2000": [1.0, 2.0]})
    with pytest.raises(DuplicateIDError, match="candidates: 1 candidate_id"):
        latex_table(table, candidates)
    assert "a" in latex_table(table, candidates.iloc[:1])
