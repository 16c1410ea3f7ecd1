"""Grades CSV files (``candidate_id,grader,grade``): graders give A/B/C/D = 10/7/3/0 (Li et
al. 2020), at most one grade per grader and candidate; files are checked row by row.

The export of the grades database (``lensdask inspect export``) adds ``source`` (where the
grade came from: ``web``, ``zooniverse`` or ``simulated``) and ``time``; readers take the
three grade columns and ignore the others."""

from __future__ import annotations

import csv
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from lensdask.formats.files import TableError, atomic_path, problem_message

GRADE_VALUES: Mapping[str, int] = types.MappingProxyType({"A": 10, "B": 7, "C": 3, "D": 0})
"""Numeric value of each grade letter (Li et al. 2020)."""
GRADES_COLUMNS = ("candidate_id", "grader", "grade")
"""Columns of a grades CSV file."""
EXPORT_COLUMNS = (*GRADES_COLUMNS, "source", "time")
"""Columns of the grades database's export: the grade, where it came from and when (UTC,
ISO 8601)."""


class GradeError(TableError):
    """Grades that cannot be taken: unknown letters or candidates, repeated grades."""


def write_grades_csv(
    grades: pd.DataFrame, path: str | Path, *, columns: Sequence[str] = GRADES_COLUMNS
) -> Path:
    """Write grades (``candidate_id``, ``grader``, ``grade``, and any more of ``columns``,
    e.g. :data:`EXPORT_COLUMNS`) as a CSV file."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(grades[list(columns)].itertuples(index=False, name=None))
    return path


def grade_problems(
    grades: pd.DataFrame,
    *,
    known: Iterable[str] | None = None,
    no_cutout: Iterable[str] = (),
    where: Callable[[int], str] = lambda k: f"row {k + 1}",
) -> list[str]:
    """Everything wrong with a grades frame, one line per problem, naming the row.

    Parameters
    ----------
    grades : pandas.DataFrame
        ``candidate_id``, ``grader``, ``grade``.
    known : iterable of str, optional
        The candidate IDs grades may refer to (None: any).
    no_cutout : iterable of str
        Candidate IDs that no grader can have seen (no cutout, so no stamp): a grade of
        one is a problem too.
    where : callable
        Row position -> how to name it in a message (``line 5``, ``grades.csv line 5``).

    Returns
    -------
    list of str
        Empty when every row is good: a grade letter of A/B/C/D, a known candidate with a
        cutout, a grader, and at most one grade per grader and candidate.
    """
    problems = []
    known_ids = None if known is None else set(known)
    unseen = set(no_cutout)
    seen: dict[tuple[str, str], int] = {}
    rows = zip(grades["candidate_id"], grades["grader"], grades["grade"], strict=True)
    for k, (cid, grader, grade) in enumerate(rows):
        if not isinstance(cid, str) or not cid:
            problems.append(f"{where(k)}: no candidate_id")
            continue
        if not isinstance(grader, str) or not grader:
            problems.append(f"{where(k)}: no grader for candidate {cid!r}")
            continue
        if grade not in GRADE_VALUES:
            shown = "nothing" if not isinstance(grade, str) or not grade else repr(grade)
            problems.append(
                f"{where(k)}: grade {shown} of {cid!r} by {grader!r} is not one of A, B, C, D"
            )
        if known_ids is not None and cid not in known_ids:
            problems.append(f"{where(k)}: candidate {cid!r} is not among the scored candidates")
        elif cid in unseen:
            problems.append(f"{where(k)}: candidate {cid!r} has no cutout (no stamp to grade)")
        first = seen.setdefault((cid, grader), k)
        if first != k:
            problems.append(
                f"{where(k)}: grader {grader!r} graded {cid!r} again (first at {where(first)})"
            )
    return problems


def read_grades(
    paths: str | Path | Sequence[str | Path], *, known: Iterable[str] | None = None
) -> pd.DataFrame:
    """Read and check grades CSV files (``candidate_id,grader,grade``, more columns allowed).

    Every problem (unknown grade letter or candidate, a grader's second grade of a
    candidate, also across files, missing values) is reported with its file and line;
    nothing is dropped or counted twice.

    Returns
    -------
    pandas.DataFrame
        ``candidate_id``, ``grader``, ``grade`` of all files, in file order.

    Raises
    ------
    GradeError
        Listing the bad rows.
    """
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    frames, places = [], []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"grades file {path} does not exist")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        missing = [name for name in GRADES_COLUMNS if name not in frame.columns]
        if missing:
            raise GradeError(
                f"{path}: missing column(s) {', '.join(missing)}; a grades file has "
                f"{','.join(GRADES_COLUMNS)}"
            )
        frame = frame[list(GRADES_COLUMNS)].apply(lambda column: column.str.strip())
        frames.append(frame)
        places.extend(f"{path} line {line}" for line in range(2, len(frame) + 2))
    grades = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=GRADES_COLUMNS)
    )
    problems = grade_problems(grades, known=known, where=lambda k: places[k])
    if problems:
        name = paths[0] if len(paths) == 1 else "grades"
        raise GradeError(problem_message(name, problems))
    return grades.astype(object)
