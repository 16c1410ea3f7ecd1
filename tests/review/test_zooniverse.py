"""Zooniverse: the subject manifest and images, and classifications back into grades (the
round trip through a classifications export in Zooniverse's format)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from lensdask.formats.grades import GradeError
from lensdask.review.grades import candidate_key
from lensdask.review.rank import rank_files
from lensdask.review.stamps import read_stamp_index
from lensdask.review.zooniverse import MANIFEST_COLUMNS, export_subjects, import_classifications

FIELDS = [
    "classification_id",
    "user_name",
    "user_id",
    "workflow_id",
    "workflow_name",
    "created_at",
    "annotations",
    "subject_data",
    "subject_ids",
]


def read_manifest(path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_classifications(path, rows: list[tuple[str, str, dict[str, str], object]]) -> None:
    """Rows ``(user, workflow_id, subject metadata, answer)`` as a Zooniverse export."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for k, (user, workflow, meta, answer) in enumerate(rows):
            subject_id = str(9000 + k)
            writer.writerow(
                {
                    "classification_id": str(100 + k),
                    "user_name": user,
                    "user_id": "",
                    "workflow_id": workflow,
                    "workflow_name": "Lens or not",
                    "created_at": f"2025-05-01 10:{k:02d}:00 UTC",
                    "annotations": json.dumps(
                        [{"task": "T0", "task_label": "Is this a lens?", "value": answer}]
                    ),
                    "subject_data": json.dumps({subject_id: {"retired": None, **meta}}),
                    "subject_ids": subject_id,
                }
            )


@pytest.fixture
def manifest(review_data, tmp_path):
    return export_subjects(
        review_data.candidates["ID"], review_data.stamps, tmp_path / "zooniverse", seed=1
    )


def test_manifest_has_every_candidate_shuffled_blind_with_its_images(manifest, review_data):
    rows = read_manifest(manifest)
    ids = review_data.candidates["ID"].tolist()
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert sorted(row["#candidate_id"] for row in rows) == sorted(ids)
    assert [row["#candidate_id"] for row in rows] != ids  # not in p_CNN order
    index = read_stamp_index(review_data.stamps).set_index("candidate_id")
    for row in rows:
        cid = row["#candidate_id"]
        assert row["subject_key"] == candidate_key(cid)
        for kind in ("colour", "mono"):
            image = manifest.parent / "images" / row[f"image_{kind}"]
            assert (
                image.read_bytes()
                == (review_data.stamps / index.at[cid, f"{kind}_png"]).read_bytes()
            )
            assert cid.split()[0] not in image.name
    assert "p_cnn" not in manifest.read_text()


def test_classifications_round_trip_into_grades_and_the_ranking(manifest, review_data, tmp_path):
    subjects = read_manifest(manifest)
    answers = ["A: sure lens", "B: probable", "C", 3]  # labels or the answer's index (3: D)
    rows, expected = [], []
    for k, subject in enumerate(subjects):
        meta = {key: value for key, value in subject.items() if key != "subject_key"}
        for user, shift in (("ann", 0), ("bob", 1)):
            answer = answers[(k + shift) % 4]
            rows.append((user, "42", meta, answer))
            letter = answer[0] if isinstance(answer, str) else "ABCD"[answer]
            expected.append((subject["#candidate_id"], f"zooniverse:{user}", letter))
    rows.append(("carl", "7", dict(subjects[0]), "A"))  # another workflow: left out
    path = tmp_path / "classifications.csv"
    write_classifications(path, rows)
    grades = import_classifications(path, workflow_id="42", known=review_data.candidates["ID"])
    assert grades.values.tolist() == [list(row) for row in expected]
    grades.to_csv(tmp_path / "grades.csv", index=False)
    table = rank_files(review_data.candidates_path, tmp_path / "grades.csv", tmp_path / "r.csv")
    assert len(table) == len(subjects)
    first = subjects[0]["#candidate_id"]
    values = {"A": 10, "B": 7, "C": 3, "D": 0}
    s_ave = (values[expected[0][2]] + values[expected[1][2]]) / 2
    assert table.set_index("candidate_id").at[first, "s_ave"] == s_ave


def test_bad_classifications_are_reported_by_line(manifest, review_data, tmp_path):
    subjects = read_manifest(manifest)
    meta = {"#candidate_id": subjects[0]["#candidate_id"]}
    path = tmp_path / "classifications.csv"
    write_classifications(
        path,
        [
            ("ann", "42", meta, "A"),  # line 2
            ("ann", "42", meta, "B"),  # line 3: ann again
            ("bob", "42", meta, "Maybe"),  # line 4: not a grade
            ("carl", "42", {"#candidate_id": "KiDS J9"}, "A"),  # line 5: unknown candidate
            ("dora", "42", {"other": "x"}, "A"),  # line 6: no candidate ID
        ],
    )
    with pytest.raises(GradeError) as err:
        import_classifications(path, known=review_data.candidates["ID"])
    message = str(err.value)
    assert "4 problem(s)" in message
    assert "line 3: grader 'zooniverse:ann' graded" in message and "(first at line 2)" in message
    assert "line 4: answer 'Maybe' to task T0" in message
    assert "line 5: candidate 'KiDS J9' is not among the scored candidates" in message
    assert "line 6: subject_data names 0 candidates" in message


def test_keep_last_takes_a_volunteers_later_classification(manifest, tmp_path):
    meta = {"#candidate_id": read_manifest(manifest)[0]["#candidate_id"]}
    path = tmp_path / "classifications.csv"
    write_classifications(path, [("ann", "1", meta, "A"), ("ann", "1", meta, "C")])
    grades = import_classifications(path, keep_last=True)
    assert grades.values.tolist() == [[meta["#candidate_id"], "zooniverse:ann", "C"]]
    assert isinstance(grades, pd.DataFrame)
