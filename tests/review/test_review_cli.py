"""The review commands end to end: stamps on a running scheduler, graders, export, rank,
Zooniverse export and import, and their error messages and exit codes."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from click.testing import CliRunner
from review_inputs import N_CANDIDATES

from lensdask.cli import main
from lensdask.review.grades import GradeStore
from lensdask.review.rank import RANKING_COLUMNS


def invoke(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_help_of_every_review_command():
    for command in (
        ["stamps"],
        ["inspect"],
        ["inspect", "serve"],
        ["inspect", "add-grader"],
        ["inspect", "export"],
        ["rank"],
        ["zooniverse", "export"],
        ["zooniverse", "import"],
        ["simulate-graders"],
    ):
        result = invoke(*command, "--help")
        assert result.exit_code == 0, command
        assert len(result.output.splitlines()) > 6
    serve = invoke("inspect", "serve", "--help").output
    assert "--host" in serve and "127.0.0.1" in serve and "--port" in serve
    group = invoke("inspect", "--help").output
    assert "add-grader" in group and "export" in group and "serve" in group


def test_inspect_without_a_subcommand_is_serve(review_data, tmp_path):
    result = invoke("inspect", review_data.candidates_path, "--stamps", tmp_path / "missing")
    assert result.exit_code == 2
    assert "'--stamps'" in result.output and "does not exist" in result.output


@pytest.mark.slow
def test_stamps_command_on_a_running_scheduler(review_data, tmp_path, client):
    out = tmp_path / "stamps"
    result = invoke(
        "stamps",
        review_data.candidates_path,
        "--cutouts",
        review_data.cutouts,
        "--out",
        out,
        "--sheet-columns",
        "3",
        "--sheet-rows",
        "2",
        "--cluster",
        client.scheduler.address,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert f"{N_CANDIDATES} candidates with stamps (2 grey" in result.output
    assert "2 contact sheets" in result.output
    assert len(list(out.glob("*/colour/*.png"))) == N_CANDIDATES


def test_add_grader_export_and_rank(review_data, tmp_path):
    db = tmp_path / "grades.sqlite"
    result = invoke("inspect", "add-grader", "ann", "--db", db, "--url", "http://lens:9000")
    assert result.exit_code == 0
    link = result.output.strip()
    assert link.startswith("http://lens:9000/?token=")
    store = GradeStore(db)
    assert store.grader_of(link.split("token=")[1]) == "ann"
    again = invoke("inspect", "add-grader", "ann", "--db", db)
    assert again.exit_code == 1 and "exists already" in again.output
    store.add_grader("bob")
    ids = review_data.candidates["ID"].tolist()
    store.add_candidates(ids)
    for grader, letters in (("ann", "AAB"), ("bob", "ADC")):
        for cid, letter in zip(ids, letters, strict=False):
            store.set_grade(grader, cid, letter)
    listing = invoke("inspect", "graders", "--db", db)
    assert listing.output.splitlines() == [
        f"ann: 3 of {N_CANDIDATES} graded",
        f"bob: 3 of {N_CANDIDATES} graded",
    ]
    grades = tmp_path / "grades.csv"
    result = invoke("inspect", "export", "--db", db, "--out", grades)
    assert result.exit_code == 0 and "6 grades" in result.output
    assert len(pd.read_csv(grades)) == 6

    out = tmp_path / "table.ecsv"
    result = invoke(
        "rank", "--scores", review_data.candidates_path, "--grades", grades, "--out", out
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, comment="#", sep=" ")
    assert list(table.columns) == list(RANKING_COLUMNS) and len(table) == 3
    p_cnn = review_data.candidates.set_index("ID")["p_cnn"].astype(str).astype(float)
    # ann A, bob A: s_ave 10 -> P = p_cnn (0.999: golden); A, D: 5; B, C: 5
    assert table["p_value"].tolist() == pytest.approx(
        [p_cnn[ids[0]], p_cnn[ids[1]] * 0.5, p_cnn[ids[2]] * 0.5]
    )
    assert "1 golden" in result.output and "2 low" in result.output
    assert (tmp_path / "table.tex").exists() and (tmp_path / "table_pcnn_phum.png").exists()


def test_rank_with_a_bad_grade_exits_1_naming_the_line(review_data, tmp_path):
    grades = tmp_path / "grades.csv"
    cid = review_data.candidates["ID"].iloc[0]
    grades.write_text(f"candidate_id,grader,grade\n{cid},ann,Z\n")
    result = invoke(
        "rank",
        "--scores",
        review_data.candidates_path,
        "--grades",
        grades,
        "--out",
        tmp_path / "t.csv",
    )
    assert result.exit_code == 1
    assert (
        f"{grades} line 2: grade 'Z' of '{cid}' by 'ann' is not one of A, B, C, D" in result.output
    )


def test_zooniverse_export_and_import_commands(review_data, tmp_path):
    out = tmp_path / "zoo"
    result = invoke(
        "zooniverse",
        "export",
        review_data.candidates_path,
        "--stamps",
        review_data.stamps,
        "--out",
        out,
    )
    assert result.exit_code == 0 and f"{N_CANDIDATES} subjects" in result.output
    with (out / "manifest.csv").open(newline="") as handle:
        subject = next(csv.DictReader(handle))
    classifications = tmp_path / "classifications.csv"
    with classifications.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_name", "workflow_id", "annotations", "subject_data"])
        writer.writerow(
            [
                "ann",
                "1",
                json.dumps([{"task": "T0", "value": "B: probable"}]),
                json.dumps({"77": {"#candidate_id": subject["#candidate_id"]}}),
            ]
        )
    grades = tmp_path / "grades.csv"
    result = invoke(
        "zooniverse",
        "import",
        classifications,
        "--out",
        grades,
        "--scores",
        review_data.candidates_path,
    )
    assert result.exit_code == 0, result.output
    assert grades.read_text().splitlines() == [
        "candidate_id,grader,grade",
        f"{subject['#candidate_id']},zooniverse:ann,B",
    ]


def write_export(path, rows: list[tuple[str, str, str]]) -> None:
    """A classifications export (user, candidate ID, answer), one row each."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_name", "workflow_id", "annotations", "subject_data"])
        for k, (user, cid, answer) in enumerate(rows):
            writer.writerow(
                [
                    user,
                    "1",
                    json.dumps([{"task": "T0", "value": answer}]),
                    json.dumps({str(70 + k): {"#candidate_id": cid}}),
                ]
            )


def test_zooniverse_grades_go_into_the_web_pages_database(review_data, tmp_path):
    db = tmp_path / "grades.sqlite"
    ids = review_data.candidates["ID"].tolist()
    store = GradeStore(db)
    store.add_candidates(ids)  # as the grading page does
    store.add_grader("ann")
    store.set_grade("ann", ids[0], "A")
    classifications = tmp_path / "classifications.csv"
    write_export(classifications, [("kim", ids[0], "C"), ("lee", ids[1], "A: sure")])
    result = invoke("zooniverse", "import", classifications, "--db", db)
    assert result.exit_code == 0, result.output
    assert f"2 grades by 2 volunteers -> {db}" in result.output
    out = tmp_path / "all.csv"
    assert invoke("inspect", "export", "--db", db, "--out", out).exit_code == 0
    exported = pd.read_csv(out, dtype=str)
    assert list(exported.columns) == ["candidate_id", "grader", "grade", "source", "time"]
    assert exported[["candidate_id", "grader", "grade", "source"]].values.tolist() == [
        [ids[0], "ann", "A", "web"],
        [ids[0], "zooniverse:kim", "C", "zooniverse"],
        [ids[1], "zooniverse:lee", "A", "zooniverse"],
    ]
    # the export ranks as it is: web and Zooniverse grades of a candidate averaged
    ranking = tmp_path / "ranking.csv"
    result = invoke(
        "rank", "--scores", review_data.candidates_path, "--grades", out, "--out", ranking
    )
    assert result.exit_code == 0, result.output
    s_ave = pd.read_csv(ranking).set_index("candidate_id")["s_ave"]
    assert s_ave[ids[0]] == pytest.approx((10 + 3) / 2) and s_ave[ids[1]] == 10


def test_zooniverse_grades_of_unknown_or_unstamped_candidates_are_listed_not_used(
    review_data, tmp_path
):
    ids = review_data.candidates["ID"].tolist()
    candidates = tmp_path / "candidates.csv"
    extra = "KiDS J999999.999+000000.00"  # in the candidates table, without a cutout
    pd.DataFrame({"ID": [*ids, extra], "p_cnn": 0.9}).to_csv(candidates, index=False)
    classifications = tmp_path / "classifications.csv"
    write_export(
        classifications,
        [("kim", ids[0], "A"), ("kim", "KiDS J000000.000+000000.00", "B"), ("lee", extra, "C")],
    )
    db = tmp_path / "grades.sqlite"
    result = invoke(
        "zooniverse",
        "import",
        classifications,
        "--db",
        db,
        "--scores",
        candidates,
        "--stamps",
        review_data.stamps,
    )
    assert result.exit_code == 1
    assert f"{classifications}: 2 problem(s)" in result.output
    assert (
        "line 3: candidate 'KiDS J000000.000+000000.00' is not among the scored candidates"
        in result.output
    )
    assert f"line 4: candidate '{extra}' has no cutout (no stamp to grade)" in result.output
    assert GradeStore(db).grades().empty  # not even the good line
    # without a candidates table, the database's candidates are the known ones
    empty = tmp_path / "empty.sqlite"
    result = invoke("zooniverse", "import", classifications, "--db", empty)
    assert result.exit_code == 1 and "has no candidates yet" in result.output
    result = invoke("zooniverse", "import", classifications)
    assert result.exit_code == 2 and "--db" in result.output
