"""The scores (``scores.parquet``): one Parquet file per tile of the cutout store, with one
row per cutout in the store's order, and completion markers under ``_units/``.

A cutout without any finite pixel in the model's band (off the image, or NaN and +-inf
only) is not scored: its ``p_cnn`` is NaN and its ``nonfinite_fraction`` is 1. Readers count
such rows apart (:func:`no_data`) and never take them for candidates.

The scores of a committee also hold each member's p_CNN, ``p_cnn_0`` .. ``p_cnn_<K-1>``
(:func:`member_column`, float32, NaN where ``p_cnn`` is) after the columns above; its
``p_cnn`` is their combination (the card's ``combination``) and ``model_id`` the
committee's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lensdask.formats.parquet import CatalogError, commit_parquet, dataset_parts, read_file
from lensdask.units import has_units

SCORE_COLUMNS = (
    "ID",
    "THELI_NAME",
    "sample",
    "p_cnn",
    "model_id",
    "nonfinite_fraction",
    "bad_fraction",
)
"""Columns of a score file: the cutout's ID, tile and sample, its p_CNN (NaN: not scored,
no finite pixel), the model's id, the fraction of the cutout's pixels in the model's band
that are NaN or +-inf (float32; 1: no data), and the fraction that are non-finite, have
zero weight or are flagged (float32; the cutout store's ``bad_fraction``)."""
REQUIRED_COLUMNS = SCORE_COLUMNS[:5]
"""The columns every score file has; ``nonfinite_fraction`` and ``bad_fraction`` may be
missing from scores made elsewhere (then NaN when read: nothing known, every row has a
``p_cnn``)."""


def member_column(k: int) -> str:
    """The score column of committee member ``k``'s p_CNN."""
    return f"p_cnn_{k}"


def no_data(frame) -> np.ndarray:
    """True for the rows of a score frame whose cutout had no finite pixel (not scored)."""
    if "nonfinite_fraction" not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame["nonfinite_fraction"].to_numpy(dtype=np.float64) >= 1.0


def commit_tile_scores(
    out: Path,
    tile: str,
    *,
    ids: np.ndarray,
    sample: np.ndarray,
    p_cnn: np.ndarray,
    model_id: str,
    nonfinite_fraction: np.ndarray,
    bad_fraction: np.ndarray | None = None,
    members: np.ndarray | None = None,
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
        Their scores; NaN for cutouts without any finite pixel.
    model_id : str
        The model that scored them.
    nonfinite_fraction : ndarray of float32, shape (N,)
        Fraction of NaN and +-inf pixels of each cutout in the model's band.
    bad_fraction : ndarray of float32, shape (N,), optional
        Fraction of non-finite, zero-weight or flagged pixels of each cutout in the model's
        band (default: ``nonfinite_fraction``).
    members : ndarray of float32, shape (K, N), optional
        A committee's member scores, written as :func:`member_column` ``(k)``.

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
            "nonfinite_fraction": pa.array(nonfinite_fraction, pa.float32()),
            "bad_fraction": pa.array(
                nonfinite_fraction if bad_fraction is None else bad_fraction, pa.float32()
            ),
            **{
                member_column(k): pa.array(scores, pa.float32())
                for k, scores in enumerate([] if members is None else members)
            },
        }
    )
    rel = f"{tile}.parquet"
    return rel, commit_parquet(table, out, rel)


def model_folders(scores: str | Path) -> dict[str, Path]:
    """The folders of a scores folder that hold one model's scores, by model id."""
    scores = Path(scores)
    if not scores.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(scores.iterdir())
        if path.is_dir() and not path.name.startswith(("_", ".")) and has_units(path)
    }


def resolve_scores(scores: str | Path, *, model_id: str | None = None) -> Path:
    """The scores of one model: ``scores`` itself where it is one model's scores (a file, a
    folder written by a stage, a folder of Parquet files), else its folder of ``model_id``
    (``lensdask score`` writes ``<scores>/<model_id>``), or of its only model.

    Raises
    ------
    FileNotFoundError
        There are no scores of ``model_id``.
    ValueError
        There are several models' scores and no ``model_id`` says which.
    """
    scores = Path(scores)
    if scores.is_file() or has_units(scores):
        return scores
    folders = model_folders(scores)
    if model_id is not None and folders:
        if model_id not in folders:
            raise FileNotFoundError(
                f"{scores}: no scores of model {model_id} (it has {', '.join(folders)}); "
                "run lensdask score with that model"
            )
        return folders[model_id]
    if len(folders) > 1:
        raise ValueError(
            f"{scores} holds the scores of several models ({', '.join(folders)}): name one "
            f"with --model, or give the folder {scores}/<model_id>"
        )
    return next(iter(folders.values())) if folders else scores


def score_files(scores: str | Path) -> dict[Path, str]:
    """The score files of one model's scores (:func:`resolve_scores`), each with the identity
    of its content (:func:`lensdask.formats.parquet.dataset_parts`), sorted."""
    try:
        return dataset_parts(scores, what="scores")
    except CatalogError:
        raise FileNotFoundError(f"{scores}: no score files (*.parquet)") from None


def read_score_file(path: str | Path):
    """The :data:`SCORE_COLUMNS` of one score file, as a DataFrame (``nonfinite_fraction``
    and ``bad_fraction`` NaN where the file has none).

    Raises
    ------
    KeyError
        If a score column is missing.
    ValueError
        If a row has no ``p_cnn`` and its cutout had finite pixels (the first rows are
        named).
    """
    table = read_file(path)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise KeyError(f"{path}: missing score column(s) {', '.join(missing)}")
    present = [name for name in SCORE_COLUMNS if name in table.column_names]
    frame = table.select(present).to_pandas()
    for name in ("nonfinite_fraction", "bad_fraction"):
        if name not in frame:
            frame[name] = np.float32(np.nan)
    unscored = frame["p_cnn"].isna().to_numpy() & ~no_data(frame)
    if unscored.any():
        rows = np.flatnonzero(unscored)[:5].tolist()
        raise ValueError(f"{path}: p_cnn is missing in row(s) {rows}")
    return frame
