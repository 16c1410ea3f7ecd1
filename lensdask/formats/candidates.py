"""The candidates table: the scored targets above their sample's threshold.

``lensdask candidates`` writes one Parquet file (``candidates.parquet``), the candidates by
decreasing ``p_cnn`` with the score columns and, given the targets, their description
(:data:`lensdask.formats.targets.DESCRIPTION_COLUMNS`). The review stages read it, or the
scores, or a CSV file of candidates: the candidate ID column is ``ID`` (the catalog name)
or ``candidate_id`` (the ranking table's name); either becomes ``candidate_id`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lensdask.formats.files import TableError, problem_message, read_table
from lensdask.formats.parquet import write_frame

ID_COLUMNS = ("ID", "candidate_id")
"""Accepted names of the candidate ID column, in order of preference."""


def write_candidates(candidates: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write the candidates to one Parquet file atomically, by decreasing ``p_cnn`` (then
    ``ID``); returns them in that order."""
    ordered = candidates.sort_values(["p_cnn", "ID"], ascending=[False, True], ignore_index=True)
    write_frame(ordered, path)
    return ordered


def decimal_float(values: pd.Series) -> np.ndarray:
    """Float values as float64; a float32 column becomes the shortest decimal that it
    represents (float32 0.7 -> 0.7, not 0.699999988), so that exact thresholds hold."""
    array = values.to_numpy()
    if array.dtype == np.float32:
        return array.astype(str).astype(np.float64)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def read_candidates(
    path: str | Path, *, require: Sequence[str] = ("p_cnn",), keep_nan: bool = False
) -> pd.DataFrame:
    """The candidates or scores table at ``path`` with a ``candidate_id`` column, checked.

    Parameters
    ----------
    path : path
        Parquet file or dataset folder, or CSV, with ``ID`` or ``candidate_id``.
    require : sequence of str
        Columns that must be present besides the ID.
    keep_nan : bool
        Keep rows whose ``p_cnn`` is missing (NaN); otherwise they are an error.

    Returns
    -------
    pandas.DataFrame
        The rows in file order, ``candidate_id`` (str) first; ``p_cnn`` (if present) as
        float64 of its decimal value (:func:`decimal_float`).

    Raises
    ------
    TableError
        Missing columns, missing or repeated IDs, or rows without a ``p_cnn`` (each named
        by its row number, 1 for the first data row).
    """
    frame = read_table(path)
    id_column = next((name for name in ID_COLUMNS if name in frame.columns), None)
    if id_column is None:
        raise TableError(
            f"{path}: no candidate ID column (ID or candidate_id); columns: {list(frame.columns)}"
        )
    missing = [name for name in require if name not in frame.columns]
    if missing:
        raise TableError(
            f"{path}: missing column(s) {', '.join(missing)}; columns: {list(frame.columns)}"
        )
    if id_column == "ID" and "candidate_id" in frame.columns:
        frame = frame.drop(columns="candidate_id")
    frame = frame.rename(columns={"ID": "candidate_id"})
    ids = frame["candidate_id"]
    problems = [f"row {k + 1}: no candidate ID" for k in np.flatnonzero(ids.isna().to_numpy())]
    frame["candidate_id"] = ids.astype(object).where(ids.notna(), None)
    repeated = frame["candidate_id"].duplicated(keep=False) & frame["candidate_id"].notna()
    for cid, rows in frame.index[repeated].groupby(frame["candidate_id"][repeated]).items():
        problems.append(
            f"rows {', '.join(str(row + 1) for row in rows)}: candidate {cid!r} listed "
            f"{len(rows)} times"
        )
    if "p_cnn" in frame.columns:
        frame["p_cnn"] = decimal_float(frame["p_cnn"])
        if not keep_nan:
            problems.extend(
                f"row {k + 1}: candidate {frame['candidate_id'].iloc[k]!r} has no p_cnn"
                for k in np.flatnonzero(np.isnan(frame["p_cnn"].to_numpy()))
            )
    if problems:
        raise TableError(problem_message(path, problems))
    columns = ["candidate_id", *(name for name in frame.columns if name != "candidate_id")]
    return frame[columns].reset_index(drop=True)
