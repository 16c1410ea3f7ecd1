"""The SQLite grades store: graders and tokens, per-grader order, one grade per grader and
candidate, persistence, CSV export and import checks."""

from __future__ import annotations

import sqlite3

import pytest

from lensdask.formats.grades import GradeError, read_grades
from lensdask.review.grades import GradeStore

IDS = [f"KiDS J{k:06d}.000+000000.00" for k in range(30)]


@pytest.fixture
def store(tmp_path) -> GradeStore:
    store = GradeStore(tmp_path / "grades.sqlite")
    store.add_candidates(IDS)
    return store


def test_tokens_identify_graders_and_are_stored_only_hashed(store):
    ann = store.add_grader("ann")
    bob = store.add_grader("bob")
    assert store.grader_of(ann) == "ann" and store.grader_of(bob) == "bob"
    assert store.grader_of("not-a-token") is None and store.grader_of("") is None
    assert store.graders() == ["ann", "bob"]
    raw = b"".join(path.read_bytes() for path in store.path.parent.glob("grades.sqlite*"))
    assert b"ann" in raw  # the names are there, the tokens are not
    assert ann.encode() not in raw and bob.encode() not in raw


def test_adding_a_grader_twice_needs_reset_which_kills_the_old_link(store):
    old = store.add_grader("ann")
    with pytest.raises(ValueError, match="grader 'ann' exists already"):
        store.add_grader("ann")
    new = store.add_grader("ann", reset=True)
    assert store.grader_of(old) is None and store.grader_of(new) == "ann"
    with pytest.raises(ValueError, match="grader name 'a b'"):
        store.add_grader("a b")


def test_each_grader_has_a_fixed_random_order_that_survives_a_restart(store):
    store.add_grader("ann")
    store.add_grader("bob")
    ann, bob = store.order("ann", IDS), store.order("bob", IDS)
    assert sorted(ann) == sorted(IDS) and sorted(bob) == sorted(IDS)
    assert ann != bob and ann != IDS  # 30! orders: equal only by a bug
    again = GradeStore(store.path)
    assert again.order("ann", list(reversed(IDS))) == ann
    # a candidate added later falls in between; the others keep their order
    assert [cid for cid in again.order("ann", [*IDS, "new"]) if cid != "new"] == ann


def test_one_grade_per_grader_and_candidate_the_last_one_counts(store):
    store.add_grader("ann")
    store.add_grader("bob")
    store.set_grade("ann", IDS[0], "A", time="2025-01-01T00:00:00.000+00:00")
    store.set_grade("ann", IDS[0], "C")
    store.set_grade("bob", IDS[0], "D")
    grades = store.grades()
    assert grades[["candidate_id", "grader", "grade"]].values.tolist() == [
        [IDS[0], "ann", "C"],
        [IDS[0], "bob", "D"],
    ]
    assert grades["time"].iloc[0] > "2025-01-01T00:00:00.000+00:00"
    assert store.progress() == {"ann": 1, "bob": 1}
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM grades").fetchone() == (2,)


def test_bad_grades_are_refused_by_the_store(store):
    store.add_grader("ann")
    with pytest.raises(GradeError, match="grade 'E' is not one of A, B, C, D"):
        store.set_grade("ann", IDS[0], "E")
    with pytest.raises(GradeError, match="unknown candidate or grader"):
        store.set_grade("ann", "no such candidate", "A")
    with pytest.raises(GradeError, match="unknown candidate or grader"):
        store.set_grade("nobody", IDS[0], "A")
    assert store.grades().empty


def test_export_and_read_back_the_grades_csv(store, tmp_path):
    store.add_grader("ann")
    store.add_grader("bob")
    store.set_grade("ann", IDS[1], "B")
    store.set_grade("bob", IDS[1], "A")
    store.set_grade("ann", IDS[0], "D")
    assert store.export_csv(tmp_path / "grades.csv") == 3
    lines = (tmp_path / "grades.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == [
        "candidate_id,grader,grade,source",
        f"{IDS[0]},ann,D,web",
        f"{IDS[1]},ann,B,web",
        f"{IDS[1]},bob,A,web",
    ]
    assert lines[0].endswith(",time") and all(line.endswith("+00:00") for line in lines[1:])
    back = read_grades(tmp_path / "grades.csv", known=IDS)
    assert back.values.tolist() == [
        [IDS[0], "ann", "D"],
        [IDS[1], "ann", "B"],
        [IDS[1], "bob", "A"],
    ]


def test_grades_csv_without_the_columns_is_refused(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("id,who,grade\nx,ann,A\n")
    with pytest.raises(GradeError, match=r"g\.csv: missing column\(s\) candidate_id, grader"):
        read_grades(path)


def test_a_database_made_before_grades_had_a_source_reads_them_as_web(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema of the store before sources
        db.executescript(
            """
            CREATE TABLE candidates (candidate_id TEXT PRIMARY KEY);
            CREATE TABLE graders (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE,
                                  seed INTEGER NOT NULL, created TEXT NOT NULL);
            CREATE TABLE grades (candidate_id TEXT NOT NULL, grader TEXT NOT NULL,
                                 grade TEXT NOT NULL, time TEXT NOT NULL,
                                 PRIMARY KEY (candidate_id, grader));
            """
        )
        db.execute("INSERT INTO candidates VALUES (?)", (IDS[0],))
        db.execute("INSERT INTO graders VALUES ('ann', 'x', 1, 't')")
        db.execute("INSERT INTO grades VALUES (?, 'ann', 'B', 't')", (IDS[0],))
    db.close()
    store = GradeStore(path)
    assert store.grades().values.tolist() == [[IDS[0], "ann", "B", "web", "t"]]


def test_imported_grades_keep_their_source_and_their_graders_cannot_sign_in(store):
    import pandas as pd

    store.add_grader("ann")
    store.set_grade("ann", IDS[0], "A")
    grades = pd.DataFrame(
        {
            "candidate_id": [IDS[0], IDS[1]],
            "grader": ["zooniverse:kim", "zooniverse:kim"],
            "grade": ["C", "D"],
        }
    )
    assert store.import_grades(grades, source="zooniverse") == 2
    table = store.grades()
    assert table[["candidate_id", "grader", "grade", "source"]].values.tolist() == [
        [IDS[0], "ann", "A", "web"],
        [IDS[0], "zooniverse:kim", "C", "zooniverse"],
        [IDS[1], "zooniverse:kim", "D", "zooniverse"],
    ]
    assert store.progress() == {"ann": 1, "zooniverse:kim": 2}
    # nobody holds a link of an imported grader, and the name cannot be taken on the page
    with pytest.raises(ValueError, match="kept for imported or simulated grades"):
        store.add_grader("zooniverse:kim", reset=True)
    with pytest.raises(ValueError, match="kept for imported or simulated grades"):
        store.add_grader("sim:1")
    # an import again replaces the volunteer's grade (one per grader and candidate)
    store.import_grades(grades.assign(grade=["B", "D"]), source="zooniverse")
    assert store.grades("zooniverse:kim")["grade"].tolist() == ["B", "D"]


def test_bad_imports_are_listed_and_nothing_is_stored(store):
    import pandas as pd

    bad = pd.DataFrame(
        {
            "candidate_id": [IDS[0], "KiDS J9", IDS[2]],
            "grader": ["sim:1", "sim:1", "ann"],
            "grade": ["A", "B", "E"],
        }
    )
    with pytest.raises(GradeError) as err:
        store.import_grades(bad, source="simulated")
    message = str(err.value)
    assert "row 2: candidate 'KiDS J9' is not among the scored candidates" in message
    assert "row 3: grade 'E'" in message
    assert "row 3: grader 'ann' of simulated grades must start with 'sim:'" in message
    assert store.grades().empty and store.graders() == []
    with pytest.raises(ValueError, match="source 'web'"):
        store.import_grades(bad.iloc[:1], source="web")
