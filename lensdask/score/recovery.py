"""What the candidates recover: injected lenses (the selection function) and known lenses.

- :func:`measure_completeness` compares the candidates with a truth table of injected
  lenses (a mock survey's ``lenses/<tile>.parquet``: ``ID``, ``theta_E``,
  ``arc_peak_ratio``, ...): the fraction of the scored lenses recovered, overall and by
  Einstein radius and arc brightness, and the candidates that are not lenses per 1000
  targets of each sample.
- :func:`recover_known` looks up a list of known lenses or earlier candidates, by ``ID`` or
  by position, and reports each one's ``p_cnn`` and whether it is a candidate (the
  reference run recovered 54 of 60 earlier candidates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.bins import bin_index
from lensdask.config import CandidateConfig
from lensdask.formats.files import read_table
from lensdask.formats.parquet import read_rows, write_frame
from lensdask.formats.targets import read_positions
from lensdask.score.thresholds import candidate_mask

logger = logging.getLogger(__name__)

POSITION_COLUMNS = (("RAJ2000", "DECJ2000"), ("RA", "DEC"), ("ra", "dec"), ("RA", "Dec"))
"""Column pairs (deg) that give a known lens's position, in order of preference."""


@dataclass
class Measured:
    """A measurement: its summary (JSON-able) and the files written."""

    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    table: pd.DataFrame | None = None


def binned_completeness(
    values: np.ndarray, scored: np.ndarray, recovered: np.ndarray, edges: tuple[float, ...]
) -> pd.DataFrame:
    """Completeness in bins of ``values``: lenses, scored, recovered and recovered/scored.

    Bins are ``[edges[k], edges[k + 1])``, the last one closed; values outside are left out.
    """
    index = bin_index(values, edges)
    rows = []
    for k in range(len(edges) - 1):
        inside = index == k
        n_scored = int((inside & scored).sum())
        n_recovered = int((inside & recovered).sum())
        rows.append(
            {
                "low": edges[k],
                "high": edges[k + 1],
                "lenses": int(inside.sum()),
                "scored": n_scored,
                "recovered": n_recovered,
                "completeness": n_recovered / n_scored if n_scored else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def measure_completeness(
    truth: str | Path,
    scores: str | Path,
    candidates: pd.DataFrame,
    *,
    counts: dict[str, int],
    config: CandidateConfig,
    stem: Path,
) -> Measured:
    """Completeness of the candidates against a truth table of injected lenses.

    Parameters
    ----------
    truth : path
        Truth table(s): a folder of Parquet files or one file, with ``ID``, ``theta_E``
        (arcsec) and ``arc_peak_ratio``.
    scores : path
        The scores (to know which lenses were scored at all: a lens galaxy that is not a
        target, or whose cutout is missing, cannot be found).
    candidates : DataFrame
        The candidates (``ID``, ``sample``).
    counts : dict
        Targets scored per sample.
    config : CandidateConfig
        Thresholds and bins.
    stem : path
        Output prefix: ``<stem>_completeness.csv`` and ``.png``.

    Returns
    -------
    Measured
        Summary: ``lenses``, ``scored``, ``recovered``, ``completeness``
        (recovered / scored), ``false_per_1000`` by sample.
    """
    from lensdask.score.figures import plot_completeness

    table = read_table(truth)
    missing = [name for name in ("ID", "theta_E", "arc_peak_ratio") if name not in table]
    if missing:
        raise KeyError(f"{truth}: truth table lacks column(s) {', '.join(missing)}")
    # the scores say what each lens was scored as
    table = table.drop_duplicates("ID").drop(columns=["sample", "p_cnn"], errors="ignore")
    found = read_rows(scores, table["ID"].tolist(), ["sample", "p_cnn"]).drop_duplicates("ID")
    table = table.merge(found, on="ID", how="left")
    scored = table["p_cnn"].notna().to_numpy()
    recovered = scored & candidate_mask(
        table["sample"].fillna("").to_numpy(),
        table["p_cnn"].fillna(-1.0).to_numpy(),
        dict(config.thresholds),
    )
    parts = []
    binning = {"theta_E": config.theta_e_bins, "arc_peak_ratio": config.arc_ratio_bins}
    for name, edges in binning.items():
        part = binned_completeness(table[name].to_numpy(float), scored, recovered, edges)
        part.insert(0, "quantity", name)
        parts.append(part)
    bins = pd.concat(parts, ignore_index=True)
    lens_ids = set(table["ID"])
    false_per_1000 = {}
    for sample, n in counts.items():
        in_sample = candidates[candidates["sample"] == sample]
        false = int((~in_sample["ID"].isin(lens_ids)).sum())
        false_per_1000[sample] = 1000.0 * false / n if n else float("nan")
    n_scored, n_recovered = int(scored.sum()), int(recovered.sum())
    summary = {
        "lenses": len(table),
        "scored": n_scored,
        "recovered": n_recovered,
        "completeness": n_recovered / n_scored if n_scored else float("nan"),
        "false_per_1000": false_per_1000,
    }
    logger.info(
        "candidates: %d of %d scored injected lenses recovered (%.1f%%; %d lenses not scored); "
        "non-lens candidates per 1000 targets: %s",
        n_recovered,
        n_scored,
        100 * summary["completeness"],
        len(table) - n_scored,
        ", ".join(f"{s} {v:.2f}" for s, v in false_per_1000.items()),
    )
    csv = Path(f"{stem}_completeness.csv")
    bins.to_csv(csv, index=False)
    lenses = Path(f"{stem}_lenses.parquet")
    write_frame(table.assign(recovered=recovered), lenses)
    plot = plot_completeness(bins, Path(f"{stem}_completeness.png"))
    return Measured(
        summary=summary,
        files={"completeness table": csv, "injected lenses": lenses, "completeness plot": plot},
        table=bins,
    )


def match_positions(
    ra: np.ndarray,
    dec: np.ndarray,
    cat_ra: np.ndarray,
    cat_dec: np.ndarray,
    *,
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest catalog entry of each position, within ``radius``.

    Parameters
    ----------
    ra, dec : ndarray, deg
        Positions to match.
    cat_ra, cat_dec : ndarray, deg
        The catalog.
    radius : float, arcsec
        Largest separation of a match.

    Returns
    -------
    index : ndarray of int
        Catalog index of each position's match, -1 where none is within ``radius``.
    separation : ndarray, arcsec
        Separation to the nearest catalog entry (NaN for an empty catalog).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    ra = np.asarray(ra, dtype=float)
    if len(cat_ra) == 0 or len(ra) == 0:
        return np.full(len(ra), -1), np.full(len(ra), np.nan)
    points = SkyCoord(ra * u.deg, np.asarray(dec, dtype=float) * u.deg)
    catalog = SkyCoord(np.asarray(cat_ra, float) * u.deg, np.asarray(cat_dec, float) * u.deg)
    index, separation, _ = points.match_to_catalog_sky(catalog)
    arcsec = separation.to_value(u.arcsec)
    return np.where(arcsec <= radius, index, -1), arcsec


def position_columns(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The RA/Dec column pair of a table, or None."""
    for ra, dec in POSITION_COLUMNS:
        if ra in frame and dec in frame:
            return ra, dec
    return None


def recover_known(
    known: str | Path,
    scores: str | Path,
    *,
    config: CandidateConfig,
    targets: str | Path | None,
    stem: Path,
) -> Measured:
    """Which known lenses (or earlier candidates) the scores recover.

    Parameters
    ----------
    known : path
        CSV or Parquet with ``ID`` (matched to the targets' IDs), or positions
        (``RAJ2000``/``DECJ2000``, ``RA``/``DEC`` or ``ra``/``dec``, deg) matched to the
        nearest target within ``config.match_radius``; an ``ID`` that is empty falls back
        to the position.
    scores : path
        The scores.
    config : CandidateConfig
        Thresholds and match radius.
    targets : path, optional
        The targets, needed to match by position.
    stem : path
        Output prefix: ``<stem>_known.csv``.

    Returns
    -------
    Measured
        Summary: ``known``, ``scored``, ``recovered``, ``fraction`` (recovered / known).
    """
    table = read_table(known).reset_index(drop=True)
    columns = position_columns(table)
    if "ID" not in table and columns is None:
        raise KeyError(
            f"{known}: needs an ID column or positions "
            f"({', '.join('/'.join(pair) for pair in POSITION_COLUMNS)})"
        )
    ids = table["ID"].astype("string") if "ID" in table else pd.Series(pd.NA, index=table.index)
    matched = ids.copy()
    separation = pd.Series(np.nan, index=table.index)
    by_position = ids.isna() | (ids.str.strip() == "")
    if by_position.any():
        if columns is None:
            rows = np.flatnonzero(by_position.to_numpy())[:5].tolist()
            raise KeyError(f"{known}: row(s) {rows} have neither an ID nor a position")
        if targets is None:
            raise ValueError(
                f"{known}: known lenses given by position need the targets (--targets) to "
                "match them"
            )
        cat = read_positions(targets)
        sub = table[by_position.to_numpy()]
        index, sep = match_positions(
            sub[columns[0]].to_numpy(),
            sub[columns[1]].to_numpy(),
            cat["RAJ2000"].to_numpy(),
            cat["DECJ2000"].to_numpy(),
            radius=config.match_radius,
        )
        found = np.where(index >= 0, cat["ID"].to_numpy()[np.maximum(index, 0)], None)
        matched[by_position] = pd.array(found, dtype="string")
        separation[by_position] = sep
    wanted = matched.dropna().unique().tolist()
    rows = read_rows(scores, wanted, ["sample", "p_cnn"]).drop_duplicates("ID")
    result = table.assign(matched_ID=matched, separation_arcsec=separation)
    result = result.merge(rows, left_on="matched_ID", right_on="ID", how="left", suffixes=("", "_"))
    result = result.drop(columns=[c for c in ("ID_",) if c in result])
    scored = result["p_cnn"].notna().to_numpy()
    result["recovered"] = scored & candidate_mask(
        result["sample"].fillna("").to_numpy(),
        result["p_cnn"].fillna(-1.0).to_numpy(),
        dict(config.thresholds),
    )
    result["note"] = np.where(
        result["matched_ID"].isna(),
        f"no target within {config.match_radius} arcsec",
        np.where(scored, "", "not among the scored targets"),
    )
    csv = Path(f"{stem}_known.csv")
    result.to_csv(csv, index=False)
    n = len(result)
    summary = {
        "known": n,
        "scored": int(scored.sum()),
        "recovered": int(result["recovered"].sum()),
        "fraction": float(result["recovered"].sum() / n) if n else float("nan"),
    }
    logger.info(
        "candidates: %d of %d known lenses recovered (%d scored)",
        summary["recovered"],
        n,
        summary["scored"],
    )
    return Measured(summary=summary, files={"known lenses": csv}, table=result)
