"""Candidates: the scored targets above their sample's p_cnn threshold.

``lensdask candidates SCORES --out candidates.parquet`` scans the score files, one task per
file, each returning its counts per sample, its histogram of ``p_cnn`` per sample and its
candidates (``p_cnn`` above the sample's threshold: 0.75 for LRGs and 0.98 for BGs by
default, as Li et al. 2020). It writes

- ``candidates.parquet``: the candidates by decreasing ``p_cnn`` with the score columns
  (``ID``, ``THELI_NAME``, ``sample``, ``p_cnn``, ``model_id``) and, given the targets,
  ``RAJ2000``, ``DECJ2000``, ``MAG_AUTO`` and ``Z_B``;
- ``candidates_summary.json``: per sample the targets scored, candidates and fraction;
- ``candidates_p_cnn.png``: the ``p_cnn`` distributions of both samples on a log scale
  (the reference run's Figure 4);
- with a truth table of injected lenses (a mock survey's ``lenses/``), the completeness by
  Einstein radius and arc brightness and the false candidates per 1000 targets
  (:mod:`lensdask.score.recovery`), and with a list of known lenses, which were recovered.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.config import CandidateConfig
from lensdask.nn.card import write_json
from lensdask.runner import UnitReport, run_units

logger = logging.getLogger(__name__)

STAGE = "candidates"
HIST_BINS = np.linspace(0.0, 1.0, 51)
"""Edges of the p_cnn histograms (bins of 0.02)."""
TARGET_COLUMNS = ("RAJ2000", "DECJ2000", "MAG_AUTO", "Z_B")
"""Columns the candidates take from the targets, where the targets have them."""


def candidate_mask(
    sample: np.ndarray, p_cnn: np.ndarray, thresholds: dict[str, float]
) -> np.ndarray:
    """True where ``p_cnn`` is above the threshold of the row's sample (never for a sample
    without a threshold).

    The thresholds are compared at the precision of ``p_cnn`` (float32 in score files), so
    a score stored as 0.98 is not above 0.98.
    """
    sample, p_cnn = np.asarray(sample), np.asarray(p_cnn)
    limit = np.full(sample.shape, np.inf, dtype=p_cnn.dtype)
    for name, threshold in thresholds.items():
        limit[sample == name] = threshold
    return p_cnn > limit


def scan_scores(path: str | Path, *, thresholds: dict[str, float]) -> dict[str, Any]:
    """Counts, ``p_cnn`` histograms (on :data:`HIST_BINS`) and candidates of one score file.

    Returns
    -------
    dict
        ``counts`` and ``hist`` by sample, ``candidates`` (DataFrame of the score columns).
    """
    import pyarrow.parquet as pq

    from lensdask.score.scoring import SCORE_COLUMNS

    table = pq.read_table(path)
    missing = [name for name in SCORE_COLUMNS if name not in table.column_names]
    if missing:
        raise KeyError(f"{path}: missing score column(s) {', '.join(missing)}")
    frame = table.select(list(SCORE_COLUMNS)).to_pandas()
    if frame["p_cnn"].isna().any():
        rows = np.flatnonzero(frame["p_cnn"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"{path}: p_cnn is missing in row(s) {rows}")
    counts, hist = {}, {}
    for sample, part in frame.groupby("sample", sort=True):
        counts[str(sample)] = len(part)
        hist[str(sample)] = np.histogram(part["p_cnn"], bins=HIST_BINS)[0].tolist()
    chosen = candidate_mask(frame["sample"].to_numpy(), frame["p_cnn"].to_numpy(), thresholds)
    return {"counts": counts, "hist": hist, "candidates": frame[chosen].reset_index(drop=True)}


def score_files(scores: str | Path) -> list[Path]:
    """The score files of a scores folder (or the one file given), sorted."""
    from lensdask.catalog.select import CatalogError, catalog_files

    try:
        return catalog_files(scores)
    except CatalogError:
        raise FileNotFoundError(f"{scores}: no score files (*.parquet)") from None


def read_rows(dataset: str | Path, ids: list[str], columns: list[str]) -> pd.DataFrame:
    """The rows of a Parquet file or dataset whose ``ID`` is in ``ids``, with ``columns``."""
    import pyarrow.dataset as ds

    data = ds.dataset(str(dataset), format="parquet", exclude_invalid_files=True)
    present = [name for name in columns if name in data.schema.names]
    if "ID" not in data.schema.names:
        raise KeyError(f"{dataset}: no ID column")
    table = data.to_table(columns=["ID", *present], filter=ds.field("ID").isin(ids))
    return table.to_pandas()


@dataclass
class CandidateReport:
    """Outcome of :func:`select_candidates`."""

    out: Path
    summary: dict[str, Any]
    """Per sample ``scored``, ``candidates``, ``fraction`` and ``threshold``; ``model_id``;
    ``completeness`` and ``known`` when measured."""
    files: dict[str, Path] = field(default_factory=dict)
    """What was written: candidates, summary, plots, tables."""
    units: UnitReport | None = None


def select_candidates(
    scores: str | Path,
    out: str | Path,
    *,
    config: CandidateConfig | None = None,
    client: Any,
    targets: str | Path | None = None,
    truth: str | Path | None = None,
    known: str | Path | None = None,
    progress: bool = True,
) -> CandidateReport:
    """Pick the candidates from the scores and measure what is known about them.

    Parameters
    ----------
    scores : path
        The scores folder (``lensdask score``) or one score file.
    out : path
        The candidates Parquet file; the summary, plots and tables go next to it, named
        after its stem.
    config : CandidateConfig, optional
        Thresholds per sample, match radius, completeness bins.
    client : distributed.Client
        The injected Dask client: one task per score file.
    targets : path, optional
        The targets (``lensdask select``): adds positions, magnitudes and photo-z to the
        candidates and lets known lenses be matched by position.
    truth : path, optional
        A folder (or file) of truth tables of injected lenses (a mock survey's
        ``lenses/``): measure the completeness.
    known : path, optional
        CSV or Parquet of known lenses (``ID``, or ``RAJ2000``/``DECJ2000`` in deg):
        report which were recovered.
    progress : bool
        Show a progress bar over score files.

    Returns
    -------
    CandidateReport
        Raises no error for a failed score file: it is in ``units.failures`` and the
        counts leave it out.
    """
    from lensdask.score.figures import plot_p_cnn

    config = config or CandidateConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = score_files(scores)
    units = run_units(
        client,
        scan_scores,
        [path.stem for path in files],
        stage=STAGE,
        progress=progress,
        unit_args=files,
        thresholds=dict(config.thresholds),
    )
    results = [units.results[path.stem] for path in files if path.stem in units.results]
    counts: dict[str, int] = {}
    hist: dict[str, np.ndarray] = {}
    for result in results:
        for sample, n in result["counts"].items():
            counts[sample] = counts.get(sample, 0) + n
            hist[sample] = hist.get(sample, 0) + np.asarray(result["hist"][sample])
    frames = [result["candidates"] for result in results]
    chosen = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if chosen.empty:
        chosen = pd.DataFrame({name: pd.Series(dtype=object) for name in ("ID", "sample")})
        chosen["p_cnn"] = pd.Series(dtype=np.float32)
    if targets is not None and len(chosen):
        extra = read_rows(targets, chosen["ID"].tolist(), list(TARGET_COLUMNS))
        chosen = chosen.merge(extra.drop_duplicates("ID"), on="ID", how="left")
    chosen = chosen.sort_values(["p_cnn", "ID"], ascending=[False, True], ignore_index=True)
    write_parquet(chosen, out)
    summary: dict[str, Any] = {
        "samples": {
            sample: {
                "scored": counts[sample],
                "candidates": int((chosen["sample"] == sample).sum()),
                "fraction": float((chosen["sample"] == sample).sum() / counts[sample]),
                "threshold": config.thresholds.get(sample),
            }
            for sample in sorted(counts)
        },
        "model_id": sorted(set(chosen["model_id"])) if "model_id" in chosen else [],
        "score_files": len(files),
        "failed_files": [failure.unit for failure in units.failures],
    }
    for sample, entry in summary["samples"].items():
        logger.info(
            "candidates: %s: %d of %d above p_cnn > %s (%.3f%%)",
            sample,
            entry["candidates"],
            entry["scored"],
            entry["threshold"],
            100 * entry["fraction"],
        )
    stem = out.with_suffix("")
    report = CandidateReport(out=out, summary=summary, units=units)
    report.files["candidates"] = out
    report.files["p_cnn plot"] = plot_p_cnn(
        HIST_BINS, hist, dict(config.thresholds), Path(f"{stem}_p_cnn.png")
    )
    if truth is not None:
        from lensdask.score.recovery import measure_completeness

        completeness = measure_completeness(
            truth, scores, chosen, counts=counts, config=config, stem=stem
        )
        summary["completeness"] = completeness.summary
        report.files.update(completeness.files)
    if known is not None:
        from lensdask.score.recovery import recover_known

        recovery = recover_known(known, scores, config=config, targets=targets, stem=stem)
        summary["known"] = recovery.summary
        report.files.update(recovery.files)
    summary_path = Path(f"{stem}_summary.json")
    write_json(summary_path, summary)
    report.files["summary"] = summary_path
    return report


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame to one Parquet file atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
