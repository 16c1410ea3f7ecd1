"""The ranking against hand-computed cases (boundaries, ties), its bad-input reports, every
output format, the LaTeX table and the p_CNN-p_hum plot."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from PIL import Image

from lensdask.formats.files import TableError as ReviewInputError
from lensdask.formats.grades import GradeError
from lensdask.review.rank import (
    RANKING_COLUMNS,
    latex_table,
    rank_candidates,
    rank_files,
    read_ranking,
    split_verdicts,
    write_ranking,
)

P_CNN = {  # float32, as lensdask candidates writes it
    "golden-exact": 0.7,  # A A: P = 0.7 exactly -> golden (float32 0.7 is 0.69999999)
    "golden-product": 0.875,  # A B B: s_ave 8, P = 0.875 * 0.8 = 0.7 -> golden
    "below-golden": 0.699,  # A A: P = 0.699 -> high
    "high-exact": 1.0,  # A D: s_ave 5, rms 5, P = 0.5 -> high
    "below-high": 0.99,  # A D: P = 0.495 -> low
    "tie-big-p": 0.9,  # A D: P = 0.45
    "tie-small-p": 0.75,  # A B D B: s_ave 6, P = 0.75 * 0.6 = 0.45 (0.44999.. in binary)
    "tie-same-b": 0.8,  # C C: P = 0.24
    "tie-same-a": 0.8,  # C C: P = 0.24; same P and p_cnn: by ID
    "ungraded": 0.97,  # no grades: not in the table
    "no-p-ungraded": float("nan"),  # no p_cnn, but no grades either: fine
}
GRADES = {
    "golden-exact": "AA",
    "golden-product": "ABB",
    "below-golden": "AA",
    "high-exact": "AD",
    "below-high": "AD",
    "tie-big-p": "AD",
    "tie-small-p": "ABDB",
    "tie-same-b": "CC",
    "tie-same-a": "CC",
}
EXPECTED = [  # by hand: candidate_id, p_cnn, s_ave, s_rms, p_hum, P, n_zero, quality
    ("golden-product", 0.875, 8.0, math.sqrt(2.0), 0.8, 0.7, 0, "golden"),  # tie: larger p_cnn
    ("golden-exact", 0.7, 10.0, 0.0, 1.0, 0.7, 0, "golden"),
    ("below-golden", 0.699, 10.0, 0.0, 1.0, 0.699, 0, "high"),
    ("high-exact", 1.0, 5.0, 5.0, 0.5, 0.5, 1, "high"),
    ("below-high", 0.99, 5.0, 5.0, 0.5, 0.495, 1, "low"),
    ("tie-big-p", 0.9, 5.0, 5.0, 0.5, 0.45, 1, "low"),
    ("tie-small-p", 0.75, 6.0, math.sqrt((16 + 1 + 36 + 1) / 4), 0.6, 0.45, 1, "low"),
    ("tie-same-a", 0.8, 3.0, 0.0, 0.3, 0.24, 0, "low"),
    ("tie-same-b", 0.8, 3.0, 0.0, 0.3, 0.24, 0, "low"),
]


def scores_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": list(P_CNN),
            "THELI_NAME": "KIDS_1.0_0.5",
            "sample": "LRG",
            "p_cnn": np.array(list(P_CNN.values()), dtype=np.float32),
            "model_id": "m",
            "RAJ2000": np.linspace(180.0, 181.0, len(P_CNN)),
            "DECJ2000": np.linspace(-1.0, 1.0, len(P_CNN)),
            "MAG_AUTO": np.float32(19.25),
            "Z_B": np.where(np.arange(len(P_CNN)) == 1, np.nan, 0.35),
        }
    )


def grades_frame() -> pd.DataFrame:
    rows = [
        (cid, f"grader{k}", letter)
        for cid, letters in GRADES.items()
        for k, letter in enumerate(letters)
    ]
    return pd.DataFrame(rows, columns=["candidate_id", "grader", "grade"])


@pytest.fixture
def inputs(tmp_path):
    scores = tmp_path / "candidates.parquet"
    scores_frame().to_parquet(scores, index=False)
    grades = tmp_path / "grades.csv"
    grades_frame().to_csv(grades, index=False)
    return scores, grades


def assert_expected(table: pd.DataFrame) -> None:
    assert list(table.columns) == list(RANKING_COLUMNS)
    assert list(table["candidate_id"]) == [row[0] for row in EXPECTED]
    for name, k in (("p_cnn", 1), ("s_ave", 2), ("s_rms", 3), ("p_hum", 4), ("p_value", 5)):
        assert table[name].tolist() == pytest.approx([row[k] for row in EXPECTED], abs=1e-12)
    assert table["n_zero"].tolist() == [row[6] for row in EXPECTED]
    assert table["quality"].tolist() == [row[7] for row in EXPECTED]


def test_ranking_matches_hand_computed_values_boundaries_and_ties(inputs, tmp_path):
    scores, grades = inputs
    table = rank_files(scores, grades, tmp_path / "ranking.csv")
    assert_expected(table)


def test_kernel_on_frames_gives_the_same(tmp_path):
    scores = scores_frame().rename(columns={"ID": "candidate_id"})
    scores["p_cnn"] = scores["p_cnn"].astype(str).astype(float)  # decimal values, as read
    assert_expected(rank_candidates(scores, grades_frame()))


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".parquet"])
def test_every_format_reads_back_the_same_table(inputs, tmp_path, suffix):
    scores, grades = inputs
    out = tmp_path / f"ranking{suffix}"
    table = rank_files(scores, grades, out)
    back = read_ranking(out)
    assert list(back.columns) == list(RANKING_COLUMNS)
    pd.testing.assert_frame_equal(
        back.astype({"candidate_id": object, "quality": object}),
        table.astype({"candidate_id": object, "quality": object}),
        check_exact=False,
        rtol=1e-12,
    )


def test_ecsv_has_units_and_descriptions_and_parquet_descriptions(inputs, tmp_path):
    scores, grades = inputs
    rank_files(scores, grades, tmp_path / "ranking.ecsv")
    ecsv = Table.read(tmp_path / "ranking.ecsv", format="ascii.ecsv")
    assert ecsv.colnames == list(RANKING_COLUMNS)
    for name in RANKING_COLUMNS:
        assert ecsv[name].description, name
    for name in ("p_cnn", "s_ave", "s_rms", "p_hum", "p_value"):
        assert ecsv[name].unit is not None and ecsv[name].unit.physical_type == "dimensionless"
    assert "P = p_CNN * p_hum" in ecsv["p_value"].description
    rank_files(scores, grades, tmp_path / "ranking.parquet")
    schema = pq.read_schema(tmp_path / "ranking.parquet")
    assert schema.names == list(RANKING_COLUMNS)
    assert b"Population standard deviation" in schema.field("s_rms").metadata[b"description"]


def test_unknown_output_extension_is_refused_before_any_work(inputs, tmp_path):
    scores, grades = inputs
    with pytest.raises(ValueError, match=r"ranking\.xlsx: unknown table format \.xlsx"):
        rank_files(scores, grades, tmp_path / "ranking.xlsx")


def test_scores_as_csv_with_candidate_id_or_parquet_dataset_folder(tmp_path):
    frame = scores_frame().rename(columns={"ID": "candidate_id"})
    frame.to_csv(tmp_path / "scores.csv", index=False)
    folder = tmp_path / "scores.parquet"
    folder.mkdir()
    scores_frame().iloc[:5].to_parquet(folder / "part-0.parquet", index=False)
    scores_frame().iloc[5:].to_parquet(folder / "part-1.parquet", index=False)
    grades_frame().to_csv(tmp_path / "grades.csv", index=False)
    assert_expected(
        rank_files(tmp_path / "scores.csv", tmp_path / "grades.csv", tmp_path / "a.csv")
    )
    assert_expected(rank_files(folder, tmp_path / "grades.csv", tmp_path / "b.csv"))


def write_grades(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def test_bad_grades_are_each_reported_with_file_and_line(inputs, tmp_path):
    scores, _ = inputs
    bad = write_grades(
        tmp_path,
        "candidate_id,grader,grade\n"
        "high-exact,ann,A\n"
        "high-exact,ann,A\n"  # line 3: the same grade again: not counted twice
        "below-high,bob,E\n"  # line 4: unknown letter
        "nobody,bob,B\n"  # line 5: unknown candidate
        "below-high,,B\n"  # line 6: no grader
        "tie-big-p,carl,a\n",  # line 7: lower case is not a grade
    )
    with pytest.raises(GradeError) as err:
        rank_files(scores, bad, tmp_path / "r.csv")
    message = str(err.value)
    assert f"{bad}: 5 problem(s)" in message
    assert (
        f"{bad} line 3: grader 'ann' graded 'high-exact' again (first at {bad} line 2)" in message
    )
    assert f"{bad} line 4: grade 'E' of 'below-high' by 'bob' is not one of A, B, C, D" in message
    assert f"{bad} line 5: candidate 'nobody' is not among the scored candidates" in message
    assert f"{bad} line 6: no grader for candidate 'below-high'" in message
    assert f"{bad} line 7: grade 'a'" in message
    assert not (tmp_path / "r.csv").exists()


def test_a_repeat_across_two_grades_files_is_reported(inputs, tmp_path):
    scores, grades = inputs
    again = write_grades(tmp_path, "candidate_id,grader,grade\ntie-big-p,grader1,D\n")
    with pytest.raises(GradeError, match=rf"{again} line 2: grader 'grader1' graded 'tie-big-p'"):
        rank_files(scores, [grades, again], tmp_path / "r.csv")


def test_graded_candidate_without_p_cnn_is_reported(tmp_path):
    frame = scores_frame()
    frame.loc[3, "p_cnn"] = np.nan  # high-exact, graded
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    grades_frame().to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(
        ReviewInputError, match=r"row 4: graded candidate 'high-exact' has no p_cnn"
    ):
        rank_files(tmp_path / "s.parquet", tmp_path / "g.csv", tmp_path / "r.csv")


def test_scores_with_a_repeated_id_or_no_id_column_are_reported(tmp_path):
    frame = scores_frame()
    frame.loc[2, "ID"] = frame.loc[0, "ID"]
    frame.to_csv(tmp_path / "s.csv", index=False)
    grades_frame().to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(ReviewInputError, match=r"rows 1, 3: candidate 'golden-exact' listed 2"):
        rank_files(tmp_path / "s.csv", tmp_path / "g.csv", tmp_path / "r.csv")
    frame.rename(columns={"ID": "name"}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ReviewInputError, match=r"t\.csv: no candidate ID column"):
        rank_files(tmp_path / "t.csv", tmp_path / "g.csv", tmp_path / "r.csv")


def test_latex_table_lists_the_high_quality_candidates_by_decreasing_p(inputs, tmp_path):
    scores, grades = inputs
    rank_files(scores, grades, tmp_path / "ranking.csv", latex=tmp_path / "table1.tex")
    text = (tmp_path / "table1.tex").read_text()
    rows = [line for line in text.splitlines() if line.endswith(r"\\") and "&" in line][2:]
    assert [row.split(" & ")[0] for row in rows] == [
        "golden-product",
        "golden-exact",
        "below-golden",
        "high-exact",
    ]
    ra = np.linspace(180.0, 181.0, len(P_CNN))
    assert rows[1] == (
        rf"golden-exact & {ra[0]:.5f} & -1.00000 & 19.25 & 0.35 & 10.0 & 0.00 & 0.700 & 0.700 "
        r"& 0 \\"
    )
    assert rows[0].split(" & ")[4] == "--"  # golden-product's Z_B is NaN
    assert rows[3].endswith(r"& 5.0 & 5.00 & 1.000 & 0.500 & 1 \\")
    assert r"\begin{tabular}{lrrrrrrrrr}" in text and r"$z_{\rm phot}$" in text


def test_latex_escapes_ids_and_shows_missing_columns(tmp_path):
    table = pd.DataFrame(
        [("J1_a&b", 0.9, 10.0, 0.0, 1.0, 0.9, 0, "golden")], columns=list(RANKING_COLUMNS)
    )
    text = latex_table(table)
    assert r"J1\_a\&b & -- & -- & -- & -- & 10.0 & 0.00 & 0.900 & 0.900 & 0 \\" in text


def test_split_verdicts_and_the_plot(inputs, tmp_path):
    scores, grades = inputs
    assert split_verdicts(grades_frame()) == {
        "high-exact",
        "below-high",
        "tie-big-p",
        "tie-small-p",
    }
    rank_files(scores, grades, tmp_path / "ranking.csv", plot=tmp_path / "fig5.png")
    with Image.open(tmp_path / "fig5.png") as image:
        assert image.size[0] > 500 and image.size[1] > 500


def test_write_ranking_keeps_exactly_the_design_columns(tmp_path):
    table = pd.DataFrame(
        [("x", 0.9, 10.0, 0.0, 1.0, 0.9, 0, "golden", "extra")],
        columns=[*RANKING_COLUMNS, "note"],
    )
    write_ranking(table, tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == ",".join(RANKING_COLUMNS)
