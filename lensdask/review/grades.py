"""Grades: the SQLite store behind the grading page, graders and their access tokens
(grades CSV files: :mod:`lensdask.formats.grades`).

Graders give A/B/C/D = 10/7/3/0 (Li et al. 2020). The store keeps one grade per grader and
candidate (a new grade replaces the old one) with the time it was given and its source,
and is written at once on every grade, so a restart of the server loses nothing. Access
tokens are shown once when a grader is added; only their SHA-256 is stored.

All grades live here, whatever their source (:data:`SOURCES`): the web page's graders
(``web``), Zooniverse volunteers imported from a classifications export as
``zooniverse:<user>`` (``zooniverse``) and simulated graders ``sim:<k>`` (``simulated``).
Imported and simulated graders have no access token: nobody can grade in their name on
the page. ``lensdask inspect export`` writes them all with their source.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from lensdask.formats.files import problem_message
from lensdask.formats.grades import (
    EXPORT_COLUMNS,
    GRADE_VALUES,
    GradeError,
    grade_problems,
    write_grades_csv,
)

logger = logging.getLogger(__name__)

GRADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
SOURCES = {"web": "", "zooniverse": "zooniverse:", "simulated": "sim:"}
"""Where grades come from, each with the prefix of its graders' names (web graders have
none; the other prefixes are reserved for their source)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    candidate_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS graders (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grades (
    candidate_id TEXT NOT NULL REFERENCES candidates (candidate_id),
    grader TEXT NOT NULL REFERENCES graders (name),
    grade TEXT NOT NULL CHECK (grade IN ('A', 'B', 'C', 'D')),
    time TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'web',
    PRIMARY KEY (candidate_id, grader)
);
"""
UPSERT = (
    "INSERT INTO grades (candidate_id, grader, grade, time, source) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (candidate_id, grader) "
    "DO UPDATE SET grade = excluded.grade, time = excluded.time, source = excluded.source"
)
"""Store a grade, replacing the same grader's earlier grade of the candidate."""
SOURCE_COLUMN = "ALTER TABLE grades ADD COLUMN source TEXT NOT NULL DEFAULT 'web'"
"""Adds the source to a database made before grades had one (all its grades came from the
web page)."""


def candidate_key(candidate_id: str) -> str:
    """An opaque key of a candidate for URLs and file names (16 hex digits of its SHA-256):
    it says nothing about the candidate's rank."""
    return hashlib.sha256(candidate_id.encode()).hexdigest()[:16]


def token_digest(token: str) -> str:
    """SHA-256 of an access token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> str:
    """The current UTC time, ISO 8601 to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class GradeStore:
    """The grades database (SQLite, one file); safe to use from several threads, each
    call opens its own connection.

    Parameters
    ----------
    path : path
        The SQLite file, created with its tables if it does not exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(grades)")}
            if "source" not in columns:
                db.execute(SOURCE_COLUMN)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed when the block ends, rolled back on error."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            with db:
                yield db
        finally:
            db.close()

    def add_candidates(self, ids: Iterable[str]) -> int:
        """Make the candidates ``ids`` gradable; returns how many were new."""
        with self.connect() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO candidates (candidate_id) VALUES (?)",
                ((cid,) for cid in ids),
            )
            return db.total_changes - before

    def candidates(self) -> list[str]:
        """Every candidate known to the store, sorted."""
        with self.connect() as db:
            return [row[0] for row in db.execute("SELECT candidate_id FROM candidates ORDER BY 1")]

    def add_grader(self, name: str, *, reset: bool = False) -> str:
        """Add grader ``name`` and return their new access token (shown only now).

        Parameters
        ----------
        name : str
            Letters, digits and ``_.@:-``, at most 64 characters.
        reset : bool
            Give an existing grader a new token (the old link stops working; their grades
            and order stay).
        """
        if not GRADER_NAME.match(name):
            raise ValueError(
                f"grader name {name!r}: use letters, digits and _.@:- (at most 64 characters)"
            )
        reserved = [prefix for prefix in SOURCES.values() if prefix and name.startswith(prefix)]
        if reserved:
            raise ValueError(
                f"grader name {name!r}: names starting with {reserved[0]} are kept for "
                "imported or simulated grades"
            )
        token = secrets.token_urlsafe(24)
        with self.connect() as db:
            exists = db.execute("SELECT 1 FROM graders WHERE name = ?", (name,)).fetchone()
            if exists and not reset:
                raise ValueError(f"grader {name!r} exists already; --reset gives a new link")
            if exists:
                db.execute(
                    "UPDATE graders SET token_sha256 = ? WHERE name = ?",
                    (token_digest(token), name),
                )
            else:
                db.execute(
                    "INSERT INTO graders (name, token_sha256, seed, created) VALUES (?, ?, ?, ?)",
                    (name, token_digest(token), secrets.randbits(62), now()),
                )
        logger.info("grader %s %s", name, "has a new token" if exists else "added")
        return token

    def graders(self) -> list[str]:
        """The graders' names, sorted."""
        with self.connect() as db:
            return [row[0] for row in db.execute("SELECT name FROM graders ORDER BY 1")]

    def grader_of(self, token: str | None) -> str | None:
        """The grader whose access token is ``token``, or None."""
        if not token:
            return None
        with self.connect() as db:
            row = db.execute(
                "SELECT name FROM graders WHERE token_sha256 = ?", (token_digest(token),)
            ).fetchone()
        return row[0] if row else None

    def order(self, grader: str, ids: Iterable[str]) -> list[str]:
        """The candidates ``ids`` in the grader's own random order, the same every time
        (and stable when candidates are added: they fall in between)."""
        with self.connect() as db:
            row = db.execute("SELECT seed FROM graders WHERE name = ?", (grader,)).fetchone()
        if row is None:
            raise KeyError(f"no grader {grader!r}")
        seed = row[0]
        return sorted(ids, key=lambda cid: hashlib.sha256(f"{seed}\n{cid}".encode()).digest())

    def set_grade(
        self, grader: str, candidate_id: str, grade: str, *, time: str | None = None
    ) -> None:
        """Store (or replace) the grade of ``candidate_id`` by web grader ``grader``, at
        once."""
        if grade not in GRADE_VALUES:
            raise GradeError(f"grade {grade!r} is not one of {', '.join(GRADE_VALUES)}")
        try:
            with self.connect() as db:
                db.execute(UPSERT, (candidate_id, grader, grade, time or now(), "web"))
        except sqlite3.IntegrityError:
            raise GradeError(
                f"cannot store grade {grade} of {candidate_id!r} by {grader!r}: "
                "unknown candidate or grader"
            ) from None

    def import_grades(self, grades: pd.DataFrame, *, source: str) -> int:
        """Store grades that did not come from the web page, all or none.

        Parameters
        ----------
        grades : pandas.DataFrame
            ``candidate_id``, ``grader``, ``grade``, checked (:func:`grade_problems`, with
            the lines of their file), and optionally ``time``; each grader's name starts
            with the prefix of ``source`` (:data:`SOURCES`). A grade replaces the same
            grader's earlier grade of the candidate.
        source : str
            ``zooniverse`` or ``simulated``.

        Returns
        -------
        int
            The grades stored.

        Raises
        ------
        GradeError
            Grades of candidates the store does not know (register them first with
            :meth:`add_candidates`), bad letters, repeats or graders without the source's
            prefix: every one listed, nothing stored.
        """
        prefix = SOURCES.get(source)
        if not prefix:
            imported = [name for name, start in SOURCES.items() if start]
            raise ValueError(f"source {source!r}: imported grades come from one of {imported}")
        problems = grade_problems(grades, known=self.candidates())
        problems += [
            f"row {k + 1}: grader {name!r} of {source} grades must start with {prefix!r}"
            for k, name in enumerate(grades["grader"])
            if not (isinstance(name, str) and name.startswith(prefix) and GRADER_NAME.match(name))
        ]
        if problems:
            raise GradeError(problem_message(f"{source} grades", problems))
        times = grades["time"] if "time" in grades else [now()] * len(grades)
        rows = [
            (cid, grader, grade, time, source)
            for cid, grader, grade, time in zip(
                grades["candidate_id"], grades["grader"], grades["grade"], times, strict=True
            )
        ]
        with self.connect() as db:
            # imported graders get a token nobody knows: they cannot sign in to the page
            db.executemany(
                "INSERT OR IGNORE INTO graders (name, token_sha256, seed, created) "
                "VALUES (?, ?, ?, ?)",
                (
                    (name, token_digest(secrets.token_urlsafe(24)), secrets.randbits(62), now())
                    for name in dict.fromkeys(grades["grader"])
                ),
            )
            db.executemany(UPSERT, rows)
        logger.info("grades: %d %s grades stored in %s", len(rows), source, self.path)
        return len(rows)

    def grades(self, grader: str | None = None) -> pd.DataFrame:
        """All grades (or one grader's): ``candidate_id, grader, grade, source, time``,
        sorted by candidate and grader."""
        query = "SELECT candidate_id, grader, grade, source, time FROM grades"
        params: tuple[str, ...] = ()
        if grader is not None:
            query += " WHERE grader = ?"
            params = (grader,)
        with self.connect() as db:
            rows = db.execute(query + " ORDER BY candidate_id, grader", params).fetchall()
        return pd.DataFrame(rows, columns=list(EXPORT_COLUMNS), dtype=object)

    def progress(self) -> dict[str, int]:
        """Number of grades given by each grader (0 for those who gave none)."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT g.name, COUNT(r.grade) FROM graders g "
                "LEFT JOIN grades r ON r.grader = g.name GROUP BY g.name ORDER BY g.name"
            ).fetchall()
        return dict(rows)

    def export_csv(self, path: str | Path) -> int:
        """Write every grade as CSV ``candidate_id,grader,grade,source,time``; returns the
        rows written."""
        grades = self.grades()
        write_grades_csv(grades, path, columns=EXPORT_COLUMNS)
        return len(grades)
