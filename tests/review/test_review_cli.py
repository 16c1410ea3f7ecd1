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
