"""How the candidate list changes from one model to another (``lensdask compare-models``).

The pure kernel :func:`compare_scores` takes two models' scores of the same targets and
says which candidates (``p_cnn`` above their sample's threshold) each keeps, drops or adds,
the rate of candidates per 1000 targets of each sample before and after, and, where the
candidates were graded, how the graded ones moved: after a fine-tune on the grades, the
scores of candidates the graders accepted (a majority of A or B) should rise and those of
rejected ones (a majority of C or D) fall.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lensdask.formats.files import TableError

VERDICTS = ("accepted", "rejected", "split")
"""A graded candidate's verdict: a majority of A/B, a majority of C/D, or neither."""


@dataclass(frozen=True)
class ModelComparison:
    """Outcome of :func:`compare_scores`."""

    targets: pd.DataFrame
    """A row per target scored by both: ``ID``, ``sample``, ``p_old``, ``p_new``, ``old``
    and ``new`` (candidate with that model), ``change`` (``kept``, ``dropped``, ``new`` or
    empty) and, with grades, ``verdict``."""
    samples: pd.DataFrame
    """Per sample: ``targets``, ``old``, ``new`` (candidates), ``old_per_1000``,
    ``new_per_1000``, ``kept``, ``dropped``, ``added``."""
    graded: pd.DataFrame
    """Per verdict: ``candidates``, ``rose``, ``fell``, ``mean_change`` of p_cnn,
    ``old`` and ``new`` (candidates among them)."""

    def lines(self) -> list[str]:
        """The comparison as printed by ``lensdask compare-models``."""
        out = []
        for sample, row in self.samples.iterrows():
            row = {k: int(v) if not k.endswith("_1000") else v for k, v in row.items()}
            out.append(
                f"{sample}: {row['targets']} targets; candidates {row['old']} -> {row['new']} "
                f"({row['old_per_1000']:.2f} -> {row['new_per_1000']:.2f} per 1000 targets): "
                f"{row['kept']} kept, {row['dropped']} dropped, {row['added']} new"
            )
        for verdict, row in self.graded.iterrows():
            row = {k: v if k == "mean_change" else int(v) for k, v in row.items()}
            out.append(
                f"graded {verdict}: {row['candidates']} candidates, p_cnn rose for "
                f"{row['rose']} and fell for {row['fell']} (mean change "
                f"{row['mean_change']:+.3f}); candidates {row['old']} -> {row['new']}"
            )
        return out


def grade_verdicts(grades: pd.DataFrame) -> pd.Series:
    """The verdict of each graded candidate (:data:`VERDICTS`), indexed by candidate ID."""
    lens = grades["grade"].isin(["A", "B"]).groupby(grades["candidate_id"]).mean()
    return pd.Series(
        np.where(lens > 0.5, "accepted", np.where(lens < 0.5, "rejected", "split")),
        index=lens.index.astype(str),
        name="verdict",
    )


def compare_scores(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    thresholds: Mapping[str, float],
    grades: pd.DataFrame | None = None,
) -> ModelComparison:
    """Compare two models' candidates among the same targets: the pure kernel.

    Parameters
    ----------
    old, new : pandas.DataFrame
        Scores (``ID``, ``sample``, ``p_cnn``) of the two models.
    thresholds : mapping of str to float
        Per sample: a target is a candidate when its ``p_cnn`` is above this.
    grades : pandas.DataFrame, optional
        ``candidate_id``, ``grader``, ``grade`` of graded candidates.

    Returns
    -------
    ModelComparison

    Raises
    ------
    lensdask.formats.files.TableError
        The two models scored different targets (the first few named).
    """
    left = old[["ID", "sample", "p_cnn"]].rename(columns={"p_cnn": "p_old"})
    right = new[["ID", "p_cnn"]].rename(columns={"p_cnn": "p_new"})
    merged = left.merge(right, on="ID", how="outer", indicator=True)
    unmatched = merged.loc[merged["_merge"] != "both", "ID"].astype(str).tolist()
    if unmatched:
        raise TableError(
            f"the two models scored different targets: {len(unmatched)} scored by one only "
            f"({', '.join(unmatched[:3])}{', ...' if len(unmatched) > 3 else ''}); score the "
            "same cutouts with both"
        )
    table = merged.drop(columns="_merge")
    threshold = table["sample"].map(thresholds).astype(float)
    table["old"] = table["p_old"] > threshold  # NaN (no data) is never a candidate
    table["new"] = table["p_new"] > threshold
    table["change"] = np.select(
        [table["old"] & table["new"], table["old"], table["new"]], ["kept", "dropped", "new"], ""
    )
    per_sample = table.groupby("sample", sort=True)
    samples = pd.DataFrame(
        {
            "targets": per_sample.size(),
            "old": per_sample["old"].sum(),
            "new": per_sample["new"].sum(),
            "kept": per_sample["change"].apply(lambda c: int((c == "kept").sum())),
            "dropped": per_sample["change"].apply(lambda c: int((c == "dropped").sum())),
            "added": per_sample["change"].apply(lambda c: int((c == "new").sum())),
        }
    ).astype(np.int64)
    samples["old_per_1000"] = 1000 * samples["old"] / samples["targets"]
    samples["new_per_1000"] = 1000 * samples["new"] / samples["targets"]
    graded = pd.DataFrame(columns=["candidates", "rose", "fell", "mean_change", "old", "new"])
    if grades is not None and len(grades):
        verdicts = grade_verdicts(grades)
        table["verdict"] = table["ID"].astype(str).map(verdicts).fillna("")
        rows = {}
        for verdict in VERDICTS:
            part = table[table["verdict"] == verdict]
            if part.empty:
                continue
            delta = part["p_new"] - part["p_old"]
            rows[verdict] = {
                "candidates": len(part),
                "rose": int((delta > 0).sum()),
                "fell": int((delta < 0).sum()),
                "mean_change": float(delta.mean()),
                "old": int(part["old"].sum()),
                "new": int(part["new"].sum()),
            }
        graded = pd.DataFrame.from_dict(rows, orient="index")
    return ModelComparison(targets=table, samples=samples, graded=graded)


def read_model_scores(scores: str | Path, model_id: str) -> pd.DataFrame:
    """Every score of model ``model_id`` in the scores folder ``scores`` (``lensdask
    score`` keeps each model's in ``<scores>/<model_id>``)."""
    from lensdask.formats.scores import read_score_file, resolve_scores, score_files

    files = score_files(resolve_scores(scores, model_id=model_id))
    frames = [read_score_file(path) for path in files]
    frame = pd.concat(frames, ignore_index=True)
    other = sorted(set(frame["model_id"].astype(str)) - {model_id})
    if other:
        raise TableError(f"{scores}: scores of model(s) {', '.join(other)}, not {model_id}")
    return frame
