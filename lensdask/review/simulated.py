"""Simulated graders: grades drawn from the truth of a mock survey with a known error rate,
so that the review loop (candidates, exploration, grading, ranking) runs without people.

Simulated grader ``k`` (named ``sim:<k>``, k = 1..n) grades a true lens A or B with
probability ``p`` (else C or D), and a non-lens C or D with probability ``q`` (else A or
B); within a verdict both letters are equally likely. So ``1 - p`` is the rate of missed
lenses and ``1 - q`` the rate of false alarms of every simulated grader, whatever the kind
of the non-lens (spiral, ring, merger, ...).

The truth is the ``TRUE_LENS`` column of the catalog (or of the targets, which carry the
catalog's columns) on the row with the candidate's ``ID``, joined by ID as the
completeness of the candidates is (:func:`lensdask.formats.parquet.read_rows`).

Every draw comes from the SHA-256 of the seed, the grader and the candidate ID, so the
grades are the same on every run and a candidate's grades do not change when other
candidates are added or left out (exploration targets, say).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lensdask.formats.files import TableError, problem_message
from lensdask.formats.grades import GRADES_COLUMNS
from lensdask.formats.parquet import read_rows
from lensdask.review.grades import SOURCES

logger = logging.getLogger(__name__)

SOURCE = "simulated"
"""Source of the simulated grades in the grades database."""
PREFIX = SOURCES[SOURCE]
"""Start of a simulated grader's name (``sim:``)."""
TRUTH_COLUMN = "TRUE_LENS"
"""The catalog column that says whether a galaxy is a lens."""


def grader_name(k: int) -> str:
    """The name of simulated grader ``k`` (1, 2, ...)."""
    return f"{PREFIX}{k}"


def draws(seed: int, grader: str, ids: Sequence[str]) -> np.ndarray:
    """Two uniform numbers in [0, 1) per candidate, from the SHA-256 of ``seed``, ``grader``
    and its ID.

    Returns
    -------
    ndarray, shape (len(ids), 2), float64
    """
    out = np.empty((len(ids), 2))
    for row, cid in enumerate(ids):
        digest = hashlib.sha256(f"{seed}\n{grader}\n{cid}".encode()).digest()
        for col in range(2):
            # 53 random bits: every float64 in [0, 1) on that grid equally likely
            word = int.from_bytes(digest[8 * col : 8 * col + 8], "big") >> 11
            out[row, col] = word * 2.0**-53
    return out


def simulate_grades(
    ids: Sequence[str],
    is_lens: np.ndarray,
    *,
    graders: int,
    p: float,
    q: float,
    seed: int = 0,
) -> pd.DataFrame:
    """Grades of the candidates by ``graders`` simulated graders: the pure kernel.

    Parameters
    ----------
    ids : sequence of str
        The candidate IDs (unique).
    is_lens : ndarray of bool
        Whether each candidate is a lens.
    graders : int
        Number of simulated graders (at least 1).
    p : float
        Probability that a grader grades a lens A or B, in [0, 1].
    q : float
        Probability that a grader grades a non-lens C or D, in [0, 1].
    seed : int
        Seed of the draws.

    Returns
    -------
    pandas.DataFrame
        ``candidate_id``, ``grader`` (``sim:<k>``), ``grade``: a row per grader and
        candidate, grader by grader in the order of ``ids``.
    """
    if graders < 1:
        raise ValueError(f"graders: at least 1 simulated grader, got {graders}")
    for name, value in (("p", p), ("q", q)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: a probability in [0, 1], got {value}")
    ids = list(ids)
    is_lens = np.asarray(is_lens, dtype=bool)
    if is_lens.shape != (len(ids),):
        raise ValueError(f"is_lens: one value per candidate ({len(ids)}), got {is_lens.shape}")
    frames = []
    for k in range(1, graders + 1):
        name = grader_name(k)
        u = draws(seed, name, ids)
        says_lens = np.where(is_lens, u[:, 0] < p, u[:, 0] >= q)
        first = u[:, 1] < 0.5
        grade = np.where(says_lens, np.where(first, "A", "B"), np.where(first, "C", "D"))
        frames.append(pd.DataFrame({"candidate_id": ids, "grader": name, "grade": grade}))
    if not frames or not ids:
        return pd.DataFrame(columns=list(GRADES_COLUMNS), dtype=object)
    return pd.concat(frames, ignore_index=True).astype(object)


def read_lens_truth(truth: str | Path, ids: Sequence[str]) -> np.ndarray:
    """Whether each candidate is a lens, from the ``TRUE_LENS`` column of ``truth``.

    Parameters
    ----------
    truth : path
        The mock survey's catalog or targets (Parquet file or dataset) with ``ID`` and
        ``TRUE_LENS``.
    ids : sequence of str
        The candidate IDs.

    Returns
    -------
    ndarray of bool
        In the order of ``ids``.

    Raises
    ------
    TableError
        ``truth`` has no ``TRUE_LENS`` column (not a mock survey), or candidates have no
        row or no value there: every one named.
    """
    ids = list(ids)
    found = read_rows(truth, ids, [TRUTH_COLUMN])  # refuses IDs on several rows
    if TRUTH_COLUMN not in found.columns:
        raise TableError(
            f"{truth}: no {TRUTH_COLUMN} column; simulated graders need the truth of a mock "
            "survey (its catalog or targets)"
        )
    values = found.set_index("ID")[TRUTH_COLUMN].reindex(ids)
    problems = [
        f"row {k + 1}: candidate {cid!r} has no {TRUTH_COLUMN} in the truth"
        for k, (cid, value) in enumerate(zip(ids, values, strict=True))
        if pd.isna(value)
    ]
    if problems:
        raise TableError(problem_message(f"candidates against {truth}", problems))
    return values.to_numpy(dtype=bool)


@dataclass(frozen=True)
class SimulatedGrading:
    """Outcome of :func:`simulate_graders`: the grades and each grader's verdicts."""

    grades: pd.DataFrame
    """``candidate_id``, ``grader``, ``grade`` as stored."""
    rates: pd.DataFrame
    """Per grader: ``lenses``, ``lenses_ab`` (graded A or B), ``non_lenses``,
    ``non_lenses_cd`` (graded C or D)."""


def verdict_rates(grades: pd.DataFrame, is_lens: pd.Series) -> pd.DataFrame:
    """Per grader, how many lenses were graded A/B and how many non-lenses C/D.

    Parameters
    ----------
    grades : pandas.DataFrame
        ``candidate_id``, ``grader``, ``grade``.
    is_lens : pandas.Series of bool
        Indexed by candidate ID.
    """
    lens = grades["candidate_id"].map(is_lens).astype(bool)
    says_lens = grades["grade"].isin(["A", "B"])
    frame = pd.DataFrame(
        {
            "grader": grades["grader"],
            "lenses": lens,
            "lenses_ab": lens & says_lens,
            "non_lenses": ~lens,
            "non_lenses_cd": ~lens & ~says_lens,
        }
    )
    return frame.groupby("grader", sort=True).sum().astype(np.int64)


def simulate_graders(
    candidate_ids: Sequence[str],
    truth: str | Path,
    *,
    graders: int,
    p: float,
    q: float,
    seed: int = 0,
    no_cutout: Sequence[str] = (),
) -> SimulatedGrading:
    """Simulated grades of the candidates from the truth of a mock survey.

    Parameters
    ----------
    candidate_ids : sequence of str
        The candidates to grade.
    truth : path
        The mock survey's catalog or targets, with ``ID`` and ``TRUE_LENS``.
    graders, p, q, seed
        As :func:`simulate_grades`.
    no_cutout : sequence of str
        Candidates without a cutout (no stamp): a real grader could not grade them, so
        they are an error, each named.

    Returns
    -------
    SimulatedGrading
    """
    ids = list(dict.fromkeys(candidate_ids))
    missing = set(no_cutout)
    if missing:
        problems = [
            f"row {k + 1}: candidate {cid!r} has no cutout (no stamp to grade)"
            for k, cid in enumerate(ids)
            if cid in missing
        ]
        raise TableError(problem_message("candidates", problems))
    is_lens = read_lens_truth(truth, ids)
    grades = simulate_grades(ids, is_lens, graders=graders, p=p, q=q, seed=seed)
    rates = verdict_rates(grades, pd.Series(is_lens, index=ids))
    logger.info(
        "simulated graders: %d graders x %d candidates (%d lenses), p = %s, q = %s",
        graders,
        len(ids),
        int(is_lens.sum()),
        p,
        q,
    )
    return SimulatedGrading(grades=grades, rates=rates)
