"""Candidates: the scored targets above their sample's p_cnn threshold.

``lensdask candidates SCORES --out candidates.parquet`` scans the score files, one task per
file, each returning its counts per sample, its histogram of ``p_cnn`` per sample and its
candidates (``p_cnn`` above the sample's threshold: 0.75 for LRGs and 0.98 for BGs by
default, as Li et al. 2020). It writes

- ``candidates.parquet``: the candidates by decreasing ``p_cnn`` with the score columns
  (``ID``, ``THELI_NAME``, ``sample``, ``p_cnn``, ``model_id`` and, where the scores have
  them, ``nonfinite_fraction`` and ``bad_fraction``) and, given the targets,
  ``RAJ2000``, ``DECJ2000``, ``MAG_AUTO`` and ``Z_B``;
- ``candidates_summary.json``: per sample the targets scored, candidates and fraction, and
  the targets not scored for want of a finite pixel in their cutout (``no_data``: their
  ``p_cnn`` is NaN and they are never candidates);
- ``candidates_p_cnn.png``: the ``p_cnn`` distributions of both samples on a log scale
  (the reference run's Figure 4);
- with a truth table of injected lenses (a mock survey's ``lenses/``), the completeness by
  Einstein radius and arc brightness and the false candidates per 1000 targets
  (:mod:`lensdask.score.recovery`), and with a list of known lenses, which were recovered.

Exploration (``explore`` > 0): that many scored targets below the thresholds join the
candidates, so that the graders also see where the classifier says no. They are drawn by
``explore_strategy``: ``random`` (uniformly among all targets below their threshold: the
lenses among them estimate how many the search misses), ``uncertainty`` (the targets just
below their sample's threshold, by ``threshold - p_cnn``) or ``disagreement`` (the largest
population standard deviation of a committee's member scores, the score columns matching
:data:`MEMBER_COLUMN`; refused when the scores have none). Each score file proposes its
best ``explore`` targets and the best of all proposals are taken, so the draw does not
depend on how the targets fall into files; ranks are decided by a SHA-256 of the seed and
the ID (``random``, and ties), so the same scores give the same draw. Every row of the
candidates table has ``explore`` (True for these); the counts, fractions and completeness
leave them out, and the ranking puts them in a table of their own. Nothing the graders see
tells them apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.config import CandidateConfig
from lensdask.formats.candidates import write_candidates
from lensdask.formats.cutout_store import tile_markers
from lensdask.formats.files import write_json_atomic
from lensdask.formats.ids import require_unique_ids
from lensdask.formats.parquet import open_file, read_file, read_rows
from lensdask.formats.scores import no_data, read_score_file, resolve_scores, score_files
from lensdask.formats.targets import DESCRIPTION_COLUMNS
from lensdask.runner import UnitReport, run_units
from lensdask.score.thresholds import candidate_mask
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import StaleOutputError, has_units, marker_digest, planned_units

logger = logging.getLogger(__name__)

STAGE = "candidates"
HIST_BINS = np.linspace(0.0, 1.0, 51)
"""Edges of the p_cnn histograms (bins of 0.02)."""
MEMBER_COLUMN = re.compile(r"^p_cnn_(\d+)$")
"""Score columns of a committee's members (``p_cnn_0``, ``p_cnn_1``, ...), whose spread
the ``disagreement`` exploration ranks by."""
EXPLORE_KEYS = ("_explore_rank", "_explore_tie")
"""Columns of the exploration proposals: drawn by increasing rank, then tie."""


def member_columns(names: list[str]) -> list[str]:
    """The committee members' score columns among ``names``, by member number."""
    found = [name for name in names if MEMBER_COLUMN.match(name)]
    return sorted(found, key=lambda name: int(name.rpartition("_")[2]))


def id_uniforms(ids: Any, seed: int) -> np.ndarray:
    """A number in [0, 1) per ID from the SHA-256 of the seed and the ID: the same for an
    ID wherever it is and whatever else is drawn."""
    words = [
        int.from_bytes(hashlib.sha256(f"{seed}\n{cid}".encode()).digest()[:8], "big") >> 11
        for cid in ids
    ]
    return np.asarray(words, dtype=np.float64) * 2.0**-53


def exploration_ranks(
    frame: pd.DataFrame,
    *,
    strategy: str,
    thresholds: dict[str, float],
    seed: int,
    members: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The order in which targets below the thresholds are drawn for exploration: the pure
    kernel.

    Parameters
    ----------
    frame : pandas.DataFrame
        Targets below their threshold: ``ID``, ``sample``, ``p_cnn`` and, for
        ``disagreement``, the ``members`` columns.
    strategy : str
        ``random``, ``uncertainty`` or ``disagreement`` (see the module docstring).
    thresholds : dict
        p_cnn threshold per sample.
    seed : int
        Seed of the ranks (``random``) and ties.
    members : sequence of str
        The committee members' score columns.

    Returns
    -------
    rank, tie : ndarray of float64
        The targets are drawn by increasing ``rank``, then ``tie``; a target with a
        non-finite rank (no member scores) is never drawn.
    """
    tie = id_uniforms(frame["ID"], seed)
    if strategy == "random":
        return tie, np.zeros(len(frame))
    if strategy == "uncertainty":
        limit = frame["sample"].map(thresholds).to_numpy(dtype=np.float64, na_value=np.nan)
        return limit - frame["p_cnn"].to_numpy(dtype=np.float64), tie
    if strategy == "disagreement":
        scores = frame[list(members)].to_numpy(dtype=np.float64)
        finite = np.isfinite(scores).sum(axis=1)
        with np.errstate(invalid="ignore"):
            spread = np.nanstd(np.where(finite[:, None] > 0, scores, 0.0), axis=1)
        return np.where(finite >= 2, -spread, np.inf), tie
    raise ValueError(f"unknown exploration strategy {strategy!r}")


def propose_exploration(
    below: pd.DataFrame, path: str | Path, *, explore: dict[str, Any], thresholds: dict[str, float]
) -> pd.DataFrame:
    """The best ``explore["count"]`` targets of one score file for exploration, with their
    :data:`EXPLORE_KEYS`."""
    members: list[str] = []
    if explore["strategy"] == "disagreement":
        members = member_columns(open_file(path).schema_arrow.names)
        # the member scores, row for row with the score columns (the same file)
        table = read_file(path, columns=members).to_pandas()
        below = below.join(table, how="left")
    rank, tie = exploration_ranks(
        below,
        strategy=explore["strategy"],
        thresholds=thresholds,
        seed=explore["seed"],
        members=members,
    )
    keep = np.isfinite(rank)
    below, rank, tie = below[keep], rank[keep], tie[keep]
    order = np.lexsort((tie, rank))[: explore["count"]]
    proposal = below.iloc[order].drop(columns=members)
    return proposal.assign(**dict(zip(EXPLORE_KEYS, (rank[order], tie[order]), strict=True)))


def draw_exploration(proposals: list[pd.DataFrame], count: int) -> pd.DataFrame:
    """The ``count`` best of every file's exploration proposals, flagged ``explore``."""
    frames = [frame for frame in proposals if len(frame)]
    if not frames:
        return pd.DataFrame()
    pool = pd.concat(frames, ignore_index=True)
    order = np.lexsort((pool[EXPLORE_KEYS[1]].to_numpy(), pool[EXPLORE_KEYS[0]].to_numpy()))
    drawn = pool.iloc[order[:count]].drop(columns=list(EXPLORE_KEYS))
    return drawn.assign(explore=True).reset_index(drop=True)


def check_members(files: list[Path]) -> None:
    """Refuse the ``disagreement`` exploration unless every score file has two or more
    committee members' scores (:data:`MEMBER_COLUMN`)."""
    lacking = [
        path for path in files if len(member_columns(open_file(path).schema_arrow.names)) < 2
    ]
    if lacking:
        shown = ", ".join(str(path) for path in lacking[:3])
        raise ValueError(
            f"candidates.explore_strategy: disagreement ranks by the spread of a committee's "
            f"member scores (score columns p_cnn_0, p_cnn_1, ...), but {len(lacking)} of "
            f"{len(files)} score files have fewer than two ({shown}); score with a committee "
            "or use explore_strategy random or uncertainty"
        )


def scan_scores(
    path: str | Path, *, thresholds: dict[str, float], explore: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Counts, ``p_cnn`` histograms (on :data:`HIST_BINS`) and candidates of one score file.

    Parameters
    ----------
    path : path
        The score file.
    thresholds : dict
        p_cnn threshold per sample.
    explore : dict, optional
        ``count``, ``strategy`` and ``seed`` of the exploration (None: none).

    Returns
    -------
    dict
        ``counts`` (rows with a ``p_cnn``), ``no_data`` (rows without: cutouts without a
        finite pixel) and ``hist`` by sample, ``candidates`` (DataFrame of the score
        columns) and ``explore`` (the file's exploration proposals, with
        :data:`EXPLORE_KEYS`).
    """
    frame = read_score_file(path)
    empty = no_data(frame)
    counts, hist = {}, {}
    missing = {str(sample): int(n) for sample, n in frame["sample"][empty].value_counts().items()}
    scored = frame[~empty]
    for sample, part in scored.groupby("sample", sort=True):
        counts[str(sample)] = len(part)
        hist[str(sample)] = np.histogram(part["p_cnn"], bins=HIST_BINS)[0].tolist()
    chosen = candidate_mask(scored["sample"].to_numpy(), scored["p_cnn"].to_numpy(), thresholds)
    proposals = pd.DataFrame()
    if explore and explore["count"]:
        proposals = propose_exploration(
            scored[~chosen], path, explore=explore, thresholds=thresholds
        ).reset_index(drop=True)
    return {
        "counts": counts,
        "no_data": missing,
        "hist": hist,
        "candidates": scored[chosen].reset_index(drop=True),
        "explore": proposals,
    }


@dataclass
class CandidateReport:
    """Outcome of :func:`select_candidates`."""

    out: Path
    summary: dict[str, Any]
    """Per sample ``scored``, ``candidates``, ``fraction`` and ``threshold`` (exploration
    targets not counted); ``model_id``; ``exploration`` when asked for; ``completeness``
    and ``known`` when measured."""
    files: dict[str, Path] = field(default_factory=dict)
    """What was written: candidates, summary, plots, tables."""
    units: UnitReport | None = None
    problems: list[str] = field(default_factory=list)
    """Tiles of the cutouts that have no scores (a partial result)."""


def check_lineage(scores: Path, cutouts: str | Path) -> list[str]:
    """Check that one model's ``scores`` were made from the cutouts ``cutouts`` holds now.

    Returns
    -------
    list of str
        A line per tile of the cutouts that has no scores.

    Raises
    ------
    StaleOutputError
        Scores of some tiles were made from other cutouts (or of tiles no longer cut).
    """
    if not has_units(scores):
        return []  # scores made by hand carry no lineage
    cut = {tile: marker_digest(marker) for tile, marker in tile_markers(cutouts).items()}
    scored = planned_units(scores)
    stale = sorted(
        tile for tile, marker in scored.items() if marker.inputs.get("cutouts") != cut.get(tile)
    )
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise StaleOutputError(
            f"{scores}: the scores of {len(stale)} tile(s) ({shown}) were made from other "
            f"cutouts than {cutouts} holds now; run lensdask score again"
        )
    return [f"{tile}: not scored" for tile in sorted(set(cut) - set(scored))]


def select_candidates(
    scores: str | Path,
    out: str | Path,
    *,
    config: CandidateConfig | None = None,
    client: Any,
    targets: str | Path | None = None,
    truth: str | Path | None = None,
    known: str | Path | None = None,
    model_id: str | None = None,
    cutouts: str | Path | None = None,
    catalog: str | Path | None = None,
    progress: bool = True,
) -> CandidateReport:
    """Pick the candidates from the scores and measure what is known about them.

    Parameters
    ----------
    scores : path
        The scores (``lensdask score``): one model's folder or file, or a folder of several
        models' (see ``model_id``).
    out : path
        The candidates Parquet file; the summary, plots and tables go next to it, named
        after its stem.
    config : CandidateConfig, optional
        Thresholds per sample, match radius, completeness bins, exploration.
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
    model_id : str, optional
        The model whose scores to take, where ``scores`` holds several models' scores.
    cutouts : path, optional
        The cutout store the scores must have been made from: scores of other cutouts are
        refused, and tiles without scores are reported in ``problems``.
    catalog : path, optional
        The catalog the targets were selected from: a known lens on a catalog source that
        is not a target is reported as not selected.
    progress : bool
        Show a progress bar over score files.

    Returns
    -------
    CandidateReport
        Raises no error for a failed score file: it is in ``units.failures`` and the
        counts leave it out.

    Raises
    ------
    lensdask.units.StaleOutputError
        The scores were made from other cutouts than ``cutouts`` holds now, or their stage
        did not finish.
    """
    from lensdask.score.figures import plot_p_cnn

    config = config or CandidateConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scores = resolve_scores(scores, model_id=model_id)
    problems = check_lineage(scores, cutouts) if cutouts is not None else []
    files = list(score_files(scores))
    if config.explore and config.explore_strategy == "disagreement":
        check_members(files)
    units = run_units(
        client,
        scan_scores,
        [path.stem for path in files],
        stage=STAGE,
        progress=progress,
        unit_args=files,
        thresholds=dict(config.thresholds),
        explore={
            "count": config.explore,
            "strategy": config.explore_strategy,
            "seed": config.explore_seed,
        },
    )
    results = [units.results[path.stem] for path in files if path.stem in units.results]
    counts: dict[str, int] = {}
    empty: dict[str, int] = {}
    hist: dict[str, np.ndarray] = {}
    for result in results:
        for sample, n in result["counts"].items():
            counts[sample] = counts.get(sample, 0) + n
            hist[sample] = hist.get(sample, 0) + np.asarray(result["hist"][sample])
        for sample, n in result["no_data"].items():
            empty[sample] = empty.get(sample, 0) + n
    frames = [result["candidates"].assign(explore=False) for result in results]
    explored = draw_exploration([result["explore"] for result in results], config.explore)
    if len(explored) < config.explore:
        logger.warning(
            "candidates: %d exploration targets asked for, %d below the thresholds to draw",
            config.explore,
            len(explored),
        )
    frames = [frame for frame in (*frames, explored) if len(frame)]
    chosen = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(chosen):  # a candidate is named by its ID from here on
        require_unique_ids(chosen, what=f"{scores}: candidates (score files of several tiles)")
    if chosen.empty:
        chosen = pd.DataFrame({name: pd.Series(dtype=object) for name in ("ID", "sample")})
        chosen["p_cnn"] = pd.Series(dtype=np.float32)
        chosen["explore"] = pd.Series(dtype=bool)
    if targets is not None and len(chosen):
        # one row per candidate: read_rows refuses IDs that several targets share
        extra = read_rows(targets, chosen["ID"].tolist(), list(DESCRIPTION_COLUMNS))
        chosen = chosen.merge(extra, on="ID", how="left", validate="many_to_one")
    chosen = write_candidates(chosen, out)
    found = chosen[~chosen["explore"].to_numpy(dtype=bool)]  # the search's own candidates
    summary: dict[str, Any] = {
        "samples": {
            sample: {
                "scored": counts.get(sample, 0),
                "candidates": int((found["sample"] == sample).sum()),
                "fraction": float((found["sample"] == sample).sum() / counts[sample])
                if counts.get(sample)
                else 0.0,
                "threshold": config.thresholds.get(sample),
                "no_data": empty.get(sample, 0),
            }
            for sample in sorted(set(counts) | set(empty))
        },
        "model_id": sorted(set(chosen["model_id"])) if "model_id" in chosen else [],
        "score_files": len(files),
        "failed_files": [failure.unit for failure in units.failures],
    }
    if config.explore:
        summary["exploration"] = {
            "strategy": config.explore_strategy,
            "seed": config.explore_seed,
            "requested": config.explore,
            "drawn": len(explored),
            "by_sample": {
                str(sample): int(n)
                for sample, n in explored["sample"].value_counts().sort_index().items()
            }
            if len(explored)
            else {},
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
    summary["missing_tiles"] = problems
    report = CandidateReport(out=out, summary=summary, units=units, problems=problems)
    report.files["candidates"] = out
    report.files["p_cnn plot"] = plot_p_cnn(
        HIST_BINS, hist, dict(config.thresholds), Path(f"{stem}_p_cnn.png")
    )
    if truth is not None:
        from lensdask.score.recovery import measure_completeness

        completeness = measure_completeness(
            truth, scores, found, counts=counts, config=config, stem=stem, targets=targets
        )
        summary["completeness"] = completeness.summary
        report.files.update(completeness.files)
    if known is not None:
        from lensdask.score.recovery import recover_known

        recovery = recover_known(
            known, scores, config=config, targets=targets, stem=stem, catalog=catalog
        )
        summary["known"] = recovery.summary
        report.files.update(recovery.files)
    summary_path = Path(f"{stem}_summary.json")
    write_json_atomic(summary_path, summary)
    report.files["summary"] = summary_path
    return report


def run(
    config: CandidateConfig, io: StageIO, *, client: Any, progress: bool = True
) -> StageOutcome:
    """The ``candidates`` stage: :func:`select_candidates` from the ``scores`` of the
    ``model`` (checked against the ``cutouts``), with the ``targets`` and the ``truth`` of
    injected lenses, each where it exists."""
    from lensdask.formats.model_dir import read_card

    model = io.optional("model")
    report = select_candidates(
        io.need("scores"),
        io.out("candidates"),
        config=config,
        client=client,
        targets=io.optional("targets"),
        truth=io.optional("truth"),
        known=config.known,
        model_id=read_card(model)["model_id"] if model is not None else None,
        cutouts=io.optional("cutouts"),
        catalog=io.optional("catalog"),
        progress=progress,
    )
    summary = report.summary
    outcome = StageOutcome(
        reports=[report.units], outputs=dict(report.files), problems=report.problems
    )
    for sample, entry in summary["samples"].items():
        outcome.counts[f"{sample} candidates"] = (
            f"{entry['candidates']} of {entry['scored']} ({100 * entry['fraction']:.2f}%)"
        )
        no_image = (
            f"; {entry['no_data']} {sample} cutouts without a finite pixel were not scored"
            if entry.get("no_data")
            else ""
        )
        outcome.lines.append(
            f"candidates: {sample}: {entry['candidates']} of {entry['scored']} with p_cnn > "
            f"{entry['threshold']} ({100 * entry['fraction']:.3f}%){no_image}"
        )
    if "exploration" in summary:
        e = summary["exploration"]
        outcome.counts["exploration targets"] = e["drawn"]
        outcome.lines.append(
            f"exploration: {e['drawn']} of {e['requested']} targets below the thresholds "
            f"drawn by {e['strategy']} (flagged explore in the candidates table)"
        )
    if "completeness" in summary:
        c = summary["completeness"]
        outcome.counts["injected lenses recovered"] = (
            f"{c['recovered']} of {c['scored']} scored ({100 * c['completeness']:.0f}%)"
        )
        false = ", ".join(f"{s} {v:.2f}" for s, v in c["false_per_1000"].items())
        outcome.lines.append(
            f"injected lenses: {c['recovered']} of {c['scored']} scored recovered "
            f"({100 * c['completeness']:.1f}%; {c['lenses'] - c['scored']} not scored); "
            f"non-lens candidates per 1000 targets: {false}"
        )
    if "known" in summary:
        k = summary["known"]
        outcome.counts["known lenses recovered"] = f"{k['recovered']} of {k['known']}"
        outcome.lines.append(
            f"known lenses: {k['recovered']} of {k['known']} recovered "
            f"({100 * k['fraction']:.0f}%; {k['scored']} scored)"
        )
    outcome.lines += [f"{name} -> {path}" for name, path in report.files.items()]
    return outcome
