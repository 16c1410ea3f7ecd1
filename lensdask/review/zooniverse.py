"""Citizen science: a Zooniverse subject manifest of the candidates, and the import of the
project's classifications export back into grades.

The manifest (``manifest.csv`` beside an ``images/`` folder) has one subject per candidate:
``subject_key`` (opaque), ``image_colour`` and ``image_mono`` (file names, which the
Panoptes CLI uploads) and ``#candidate_id`` (metadata starting with ``#`` is hidden from
volunteers). Rows come in a shuffled order and files are named by the opaque key, so
nothing tells a volunteer the candidate's rank or p_CNN.

The classifications export of a Zooniverse project is a CSV file with, among others,
``user_name``, ``workflow_id``, ``annotations`` (JSON list of ``{"task", "value"}``) and
``subject_data`` (JSON ``{subject_id: metadata}``). A classification becomes the grade of
grader ``zooniverse:<user_name>``; the answer to the grading task is a label starting with
the grade letter (``"A"``, ``"A: sure lens"``) or the answer's index (0-3 for A-D). The
grades go into the grades database beside the web page's
(:meth:`lensdask.review.grades.GradeStore.import_grades`, source ``zooniverse``) and/or
a grades CSV file.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.formats.files import TableError, problem_message
from lensdask.formats.grades import GRADE_VALUES, GRADES_COLUMNS, GradeError, grade_problems
from lensdask.review.grades import SOURCES

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("subject_key", "image_colour", "image_mono", "#candidate_id")
IMAGES_DIR = "images"
GRADER_PREFIX = SOURCES["zooniverse"]
ANSWER = re.compile(r"^\s*([ABCD])(?![A-Za-z0-9])")


def export_subjects(
    candidate_ids: Iterable[str], stamps: str | Path, out: str | Path, *, seed: int = 0
) -> Path:
    """Write a Zooniverse subject manifest and its images for the candidates.

    Parameters
    ----------
    candidate_ids : iterable of str
        The candidates; each needs stamps in ``stamps``.
    stamps : path
        The stamps folder of ``lensdask stamps``.
    out : path
        Folder for ``manifest.csv`` and ``images/`` (created).
    seed : int
        Seed of the order of the subjects.

    Returns
    -------
    Path
        The manifest.
    """
    from lensdask.review.grades import candidate_key
    from lensdask.review.stamps import read_stamp_index

    stamps = Path(stamps)
    out = Path(out)
    ids = list(dict.fromkeys(candidate_ids))
    index = read_stamp_index(stamps).set_index("candidate_id")
    missing = [cid for cid in ids if cid not in index.index]
    if missing:
        raise TableError(
            f"{stamps}: {len(missing)} candidate(s) have no stamps (e.g. {missing[:3]}); "
            "run `lensdask stamps` first"
        )
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    rows = []
    for cid in ids:
        key = candidate_key(cid)
        names = {}
        for kind in ("colour", "mono"):
            name = f"{key}_{kind}.png"
            shutil.copyfile(stamps / index.at[cid, f"{kind}_png"], out / IMAGES_DIR / name)
            names[kind] = name
        rows.append((key, names["colour"], names["mono"], cid))
    order = np.random.default_rng(seed).permutation(len(rows))
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows[k] for k in order)
    logger.info("zooniverse: %d subjects -> %s", len(rows), manifest)
    return manifest


def answer_grade(value: Any) -> str | None:
    """The grade letter of an answer: a label starting with A/B/C/D, or an index 0-3."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < len(GRADE_VALUES):
        return list(GRADE_VALUES)[value]
    if isinstance(value, str):
        match = ANSWER.match(value)
        return match.group(1) if match else None
    return None


def import_classifications(
    path: str | Path,
    *,
    task: str = "T0",
    workflow_id: str | None = None,
    known: Iterable[str] | None = None,
    no_cutout: Iterable[str] = (),
    keep_last: bool = False,
) -> pd.DataFrame:
    """Grades from a Zooniverse classifications export.

    Parameters
    ----------
    path : path
        The classifications CSV export.
    task : str
        The task whose answer is the grade.
    workflow_id : str, optional
        Take only this workflow's classifications.
    known : iterable of str, optional
        The candidate IDs grades may refer to.
    no_cutout : iterable of str
        Candidates without a cutout (no stamp): nobody can have graded them.
    keep_last : bool
        When a volunteer classified a subject more than once, keep their last
        classification (counted in the log) instead of reporting an error.

    Returns
    -------
    pandas.DataFrame
        ``candidate_id``, ``grader`` (``zooniverse:<user_name>``), ``grade``.

    Raises
    ------
    GradeError
        Rows without a candidate ID, without an answer to ``task``, with an answer that is
        not a grade, for unknown candidates or candidates without a cutout, or repeated:
        each named by its line; none is used.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"classifications file {path} does not exist")
    records, lines, problems = [], [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        needed = ("user_name", "annotations", "subject_data")
        missing = [name for name in needed if name not in (reader.fieldnames or [])]
        if missing:
            raise GradeError(f"{path}: not a classifications export, missing {missing}")
        for line, row in enumerate(reader, start=2):
            if workflow_id is not None and str(row.get("workflow_id")) != str(workflow_id):
                continue
            try:
                subjects = json.loads(row["subject_data"] or "{}")
                annotations = json.loads(row["annotations"] or "[]")
            except json.JSONDecodeError as err:
                problems.append(f"line {line}: bad JSON: {err}")
                continue
            ids = [
                meta.get("#candidate_id")
                for meta in subjects.values()
                if isinstance(meta, dict) and meta.get("#candidate_id")
            ]
            if len(ids) != 1:
                problems.append(
                    f"line {line}: subject_data names {len(ids)} candidates (#candidate_id); "
                    "expected one"
                )
                continue
            answers = [a.get("value") for a in annotations if a.get("task") == task]
            if not answers:
                problems.append(f"line {line}: no answer to task {task} for {ids[0]!r}")
                continue
            grade = answer_grade(answers[0])
            if grade is None:
                problems.append(
                    f"line {line}: answer {answers[0]!r} to task {task} for {ids[0]!r} is not "
                    "a grade A/B/C/D"
                )
                continue
            records.append((ids[0], GRADER_PREFIX + (row["user_name"] or "anonymous"), grade))
            lines.append(line)
    grades = pd.DataFrame(records, columns=list(GRADES_COLUMNS), dtype=object)
    if keep_last:
        last = ~grades.duplicated(["candidate_id", "grader"], keep="last").to_numpy()
        if not last.all():
            logger.warning(
                "%s: %d repeated classifications replaced by the same volunteer's later one",
                path,
                int((~last).sum()),
            )
        grades = grades[last].reset_index(drop=True)
        lines = [line for line, keep in zip(lines, last, strict=True) if keep]
    problems += grade_problems(
        grades, known=known, no_cutout=no_cutout, where=lambda k: f"line {lines[k]}"
    )
    if problems:
        raise GradeError(problem_message(path, problems))
    logger.info(
        "zooniverse: %d grades by %d volunteers from %s",
        len(grades),
        grades["grader"].nunique(),
        path,
    )
    return grades
