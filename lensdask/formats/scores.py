"""The scores (``scores.parquet``): one Parquet file per tile of the cutout store, with one
row per cutout in the store's order, and completion markers under ``_units/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lensdask.formats.parquet import CatalogError, commit_parquet, dataset_files

SCORE_COLUMNS = ("ID", "THELI_NAME", "sample", "p_cnn", "model_id")
"""Columns of a score file: the cutout's ID, tile and sample, its p_CNN and the model's id."""


def commit_tile_scores(
    out: Path, tile: str, *, ids: np.ndarray, sample: np.ndarray, p_cnn: np.ndarray, model_id: str
) -> tuple[str, int]:
    """Commit the score file of one tile, ``<out>/<tile>.parquet``, through the staging
    folder.

    Parameters
    ----------
    out : path
        The scores folder.
    tile : str
        The tile, which names the file and fills ``THELI_NAME``.
    ids, sample : ndarray of str, shape (N,)
        The cutouts' IDs and samples, in the store's order.
    p_cnn : ndarray of float32, shape (N,)
        Their scores.
    model_id : str
        The model that scored them.

    Returns
    -------
    rel : str
        The file's path relative to ``out``.
    size : int, bytes
        The committed file's size.
    """
    import pyarrow as pa

    n = len(ids)
    table = pa.table(
        {
            "ID": pa.array(ids, pa.string()),
            "THELI_NAME": pa.array([tile] * n, pa.string()),
            "sample": pa.array(sample, pa.string()),
            "p_cnn": pa.array(p_cnn, pa.float32()),
            "model_id": pa.array([model_id] * n, pa.string()),
        }
    )
    rel = f"{tile}.parquet"
    return rel, commit_parquet(table, out, rel)


def score_files(scores: str | Path) -> list[Path]:
    """The score files of a scores folder (or the one file given), sorted."""
    try:
        return dataset_files(scores, what="scores")
    except CatalogError:
        raise FileNotFoundError(f"{scores}: no score files (*.parquet)") from None


def read_score_file(path: str | Path):
    """The :data:`SCORE_COLUMNS` of one score file, as a DataFrame.

    Raises
    ------
    KeyError
        If a score column is missing.
    ValueError
        If a row has no ``p_cnn`` (the first rows are named).
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [name for name in SCORE_COLUMNS if name not in table.column_names]
    if missing:
        raise KeyError(f"{path}: missing score column(s) {', '.join(missing)}")
    frame = table.select(list(SCORE_COLUMNS)).to_pandas()
    if frame["p_cnn"].isna().any():
        rows = np.flatnonzero(frame["p_cnn"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"{path}: p_cnn is missing in row(s) {rows}")
    return frame
