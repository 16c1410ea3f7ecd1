"""Evaluating the classifier on the test split: ROC curve, AUC, rates at thresholds, plots.

The ROC kernel is pure NumPy: one point per distinct score (ties broken together), from
(0, 0) to (1, 1), as in the reference run's Figure 2 and scikit-learn's ``roc_curve`` with
``drop_intermediate=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.bins import bin_index
from lensdask.config import ARC_RATIO_BINS, THETA_E_BINS

THRESHOLDS = (0.25, 0.5, 0.75)
"""p_CNN thresholds at which TPR and FPR are reported (Li et al. 2020, Figure 2)."""
PREDICT_BATCH = 256
"""Images per prediction call; the last batch is padded, so the model sees one shape."""


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold.

    Parameters
    ----------
    labels : ndarray of {0, 1}, shape (N,)
    scores : ndarray, shape (N,)
        Higher means more lens-like; an example is positive at threshold ``t`` when
        ``score >= t``.

    Returns
    -------
    fpr, tpr : ndarray, shape (K + 1,)
        Rates, starting at (0, 0) (threshold above every score).
    thresholds : ndarray, shape (K + 1,)
        Decreasing; the first is ``inf``.

    Raises
    ------
    ValueError
        If ``labels`` is not made of 0 and 1 with both present, or shapes differ.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and scores: need equal 1-d shapes, got {labels.shape}, {scores.shape}"
        )
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels: must be 0 or 1")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("labels: the ROC curve needs both positives and negatives")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = np.cumsum(sorted_labels)[last]
    fp = last + 1 - tp
    tpr = np.r_[0.0, tp / positives]
    fpr = np.r_[0.0, fp / negatives]
    return fpr, tpr, np.r_[np.inf, sorted_scores[last]]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve (trapezoids)."""
    return float(np.trapezoid(tpr, fpr))


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """TPR and FPR of the classification ``score > threshold``."""
    labels = np.asarray(labels).astype(bool)
    selected = np.asarray(scores) > threshold
    return {
        "threshold": float(threshold),
        "tpr": float(selected[labels].mean()),
        "fpr": float(selected[~labels].mean()),
    }


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR on the ROC curve with FPR at most ``target``."""
    return float(tpr[fpr <= target].max())


def auc_by_bin(
    labels: np.ndarray, scores: np.ndarray, values: np.ndarray, edges: tuple[float, ...]
) -> list[dict[str, Any]]:
    """AUC of the positives in each bin of ``values`` against all negatives.

    Parameters
    ----------
    labels, scores : ndarray, shape (N,)
        As for :func:`roc_curve`.
    values : ndarray, shape (N,)
        A parameter of the positives (Einstein radius, arc brightness); ignored for negatives.
    edges : tuple of float
        Increasing bin edges (:func:`bin_index`).

    Returns
    -------
    list of dict
        Per bin: ``low``, ``high``, ``positives`` and ``auc`` (None for an empty bin).
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores)
    index = bin_index(values, edges)
    negatives = scores[~labels]
    rows = []
    for k in range(len(edges) - 1):
        inside = scores[labels & (index == k)]
        value = None
        if inside.size and negatives.size:
            both = np.r_[inside, negatives]
            fpr, tpr, _ = roc_curve(np.r_[np.ones(inside.size), np.zeros(negatives.size)], both)
            value = auc(fpr, tpr)
        rows.append(
            {"low": edges[k], "high": edges[k + 1], "positives": int(inside.size), "auc": value}
        )
    return rows


BINNED_PARAMETERS = {"theta_E": THETA_E_BINS, "arc_peak_ratio": ARC_RATIO_BINS}
"""Mock-lens parameters the test AUC is also reported in bins of, and their bin edges."""


@dataclass(frozen=True)
class ClassifierMetrics:
    """Metrics of a classifier on a labelled set."""

    auc: float
    tpr_at_fpr_1pct: float
    rates: tuple[dict[str, float], ...]
    positives: int
    negatives: int
    by_bin: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """AUC in bins of the mock lenses' parameters (:data:`BINNED_PARAMETERS`), where known."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the model card."""
        return {
            "auc": self.auc,
            "tpr_at_fpr_1pct": self.tpr_at_fpr_1pct,
            "rates": list(self.rates),
            "positives": self.positives,
            "negatives": self.negatives,
            "auc_by_bin": self.by_bin,
        }


def classifier_metrics(
    labels: np.ndarray, scores: np.ndarray, *, parameters: dict[str, np.ndarray] | None = None
) -> ClassifierMetrics:
    """AUC, TPR at 1% FPR, TPR/FPR at :data:`THRESHOLDS`, and the AUC in bins of each of
    ``parameters`` named in :data:`BINNED_PARAMETERS` (arrays of shape (N,), NaN for
    negatives)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    by_bin = {
        name: auc_by_bin(labels, scores, values, BINNED_PARAMETERS[name])
        for name, values in (parameters or {}).items()
        if name in BINNED_PARAMETERS
    }
    return ClassifierMetrics(
        auc=auc(fpr, tpr),
        tpr_at_fpr_1pct=tpr_at_fpr(fpr, tpr, 0.01),
        rates=tuple(rates_at(labels, scores, t) for t in THRESHOLDS),
        positives=int(np.sum(labels)),
        negatives=int(np.size(labels) - np.sum(labels)),
        by_bin=by_bin,
    )


def split_parameters(trainset: str | Path, split: str) -> dict[str, np.ndarray]:
    """The :data:`BINNED_PARAMETERS` of every example of a split, in stored order (NaN for
    negatives); empty where the training set does not record them."""
    from lensdask.formats.trainset import read_table

    table = read_table(trainset, split)
    return {name: table[name].to_numpy(float) for name in BINNED_PARAMETERS if name in table}


def predict_images(model: Any, images: np.ndarray, *, batch_size: int = PREDICT_BATCH):
    """p_CNN of ``images`` (N, H, W) in [0, 255], in fixed-size batches (last one padded)."""
    scores = np.empty(images.shape[0], dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        part = images[start : start + batch_size]
        n = part.shape[0]
        if n < batch_size:
            part = np.concatenate([part, np.zeros((batch_size - n, *part.shape[1:]), part.dtype)])
        out = model.predict_on_batch(part[..., None].astype(np.float32))
        scores[start : start + n] = np.asarray(out, dtype=np.float32)[:n, 0]
    return scores


def predict_split(
    model: Any, trainset: str | Path, split: str, *, batch_size: int = PREDICT_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and p_CNN of every example of a split, read chunk by chunk."""
    from lensdask.formats.trainset import ChunkReader

    reader = ChunkReader(trainset, split)
    labels, scores = [], []
    for start in range(0, len(reader), reader.chunk):
        index = np.arange(start, min(start + reader.chunk, len(reader)))
        images, part = reader.read(index)
        labels.append(part.astype(np.int8))
        scores.append(predict_images(model, images, batch_size=batch_size))
    if not labels:
        raise ValueError(f"{trainset}: the {split} split is empty")
    return np.concatenate(labels), np.concatenate(scores)


def plot_roc(labels: np.ndarray, scores: np.ndarray, path: str | Path, *, title: str = ""):
    """PNG of the ROC curve with the :data:`THRESHOLDS` marked."""
    from matplotlib.figure import Figure

    fpr, tpr, _ = roc_curve(labels, scores)
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.subplots()
    ax.plot(fpr, tpr, color="k", lw=1.5, label=f"AUC = {auc(fpr, tpr):.4f}")
    for rate, marker in zip((rates_at(labels, scores, t) for t in THRESHOLDS), "os^", strict=True):
        ax.plot(rate["fpr"], rate["tpr"], marker, label=f"p_CNN > {rate['threshold']:.2f}")
    ax.plot([0, 1], [0, 1], ":", color="0.6")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_histograms(labels: np.ndarray, scores: np.ndarray, path: str | Path, *, title: str = ""):
    """PNG of the p_CNN histograms of positives and negatives (log counts)."""
    from matplotlib.figure import Figure

    labels = np.asarray(labels).astype(bool)
    bins = np.linspace(0, 1, 41)
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ax.hist(scores[labels], bins=bins, histtype="step", lw=1.5, label="mock lenses")
    ax.hist(scores[~labels], bins=bins, histtype="step", lw=1.5, label="real negatives")
    ax.set(xlabel="p_CNN", ylabel="number", yscale="log", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


ROC_PLOT = "roc.png"
HISTOGRAM_PLOT = "p_cnn_test.png"


def evaluate_scores(
    labels: np.ndarray,
    scores: np.ndarray,
    out: str | Path,
    *,
    title: str = "",
    parameters: dict[str, np.ndarray] | None = None,
) -> ClassifierMetrics:
    """Metrics of test-split scores (:func:`classifier_metrics`), with the ROC and histogram
    PNGs written into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = classifier_metrics(labels, scores, parameters=parameters)
    plot_roc(labels, scores, out / ROC_PLOT, title=title)
    plot_histograms(labels, scores, out / HISTOGRAM_PLOT, title=title)
    return metrics


def evaluate_test_split(
    model: Any, trainset: str | Path, out: str | Path, *, title: str = ""
) -> ClassifierMetrics:
    """Predict the test split of ``trainset`` and return its metrics (with the AUC in bins
    of the mock lenses' parameters), writing the ROC and histogram PNGs into ``out``."""
    labels, scores = predict_split(model, trainset, "test")
    parameters = split_parameters(trainset, "test")
    return evaluate_scores(labels, scores, out, title=title, parameters=parameters)


def evaluate_model(
    model_dir: str | Path, trainset: str | Path, *, out: str | Path | None = None
) -> ClassifierMetrics:
    """Recompute the test metrics and plots of a model directory on a training set.

    Parameters
    ----------
    model_dir : path
        A model directory (``lensdask train``).
    trainset : path
        A training set with a test split.
    out : path, optional
        Where the PNGs and ``metrics.json`` go (default: ``model_dir``).

    Returns
    -------
    ClassifierMetrics
    """
    from lensdask.formats.files import write_json_atomic
    from lensdask.formats.model_dir import load_model
    from lensdask.formats.trainset import read_attrs

    size = int(read_attrs(trainset)["size"])
    model, card = load_model(model_dir, input_shape=(size, size, 1))
    out = Path(out or model_dir)
    metrics = evaluate_test_split(model, trainset, out, title=f"model {card['model_id']}")
    write_json_atomic(
        out / "metrics.json",
        {"model_id": card["model_id"], "trainset": str(trainset), **metrics.as_dict()},
    )
    return metrics


def metrics_lines(metrics: dict[str, Any], model_id: str, out: Path) -> list[str]:
    """The test metrics of a model card as the lines `train` and `evaluate` print."""
    lines = [
        f"model {model_id}: test AUC {metrics['auc']:.4f}, TPR at FPR 1% "
        f"{metrics['tpr_at_fpr_1pct']:.3f} ({metrics['positives']} lenses, "
        f"{metrics['negatives']} negatives)"
    ]
    for rate in metrics["rates"]:
        lines.append(
            f"  p_CNN > {rate['threshold']:.2f}: TPR {rate['tpr']:.3f}, FPR {rate['fpr']:.4f}"
        )
    for name, rows in metrics.get("auc_by_bin", {}).items():
        parts = [
            f"{r['low']:g}-{r['high']:g}: "
            + ("-" if r["auc"] is None else f"{r['auc']:.3f}")
            + f" ({r['positives']})"
            for r in rows
        ]
        lines.append(f"  AUC by {name}: " + ", ".join(parts))
    lines.append(f"model, card and plots -> {out}")
    return lines
