"""Evaluating the classifier on the test split: ROC curve, AUC, rates at thresholds, the
rates at low false-positive rates, the selection function, plots.

The ROC kernel is pure NumPy: one point per distinct score (ties broken together), from
(0, 0) to (1, 1), as in the reference run's Figure 2 and scikit-learn's ``roc_curve`` with
``drop_intermediate=False``. The low-FPR rates (:mod:`lensdask.nn.rates`) are reported
for every negative of the test split (``all``: the mixed set where the split holds rings,
spirals or mergers beside the LRGs, ``SimulateConfig.test_negative_mix``) and, where it is
mixed, for its LRGs alone (``LRG``). The completeness of the mock lenses is binned in the
quantities of :mod:`lensdask.selection` that the training set records. A committee
(:mod:`lensdask.nn.committee`) is evaluated on its combined p_CNN, and each member on its
own (:func:`committee_lines`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.bins import bin_index
from lensdask.config import ARC_RATIO_BINS, DEFAULT_THRESHOLDS, THETA_E_BINS
from lensdask.formats.files import save_figure
from lensdask.nn.rates import FALSE_POSITIVES_PER_100K, SURVEY_SIZES, low_fpr_rates
from lensdask.selection import QUANTITIES, bins_as_json, selection_function

THRESHOLDS = (0.25, 0.5, 0.75)
"""p_CNN thresholds at which TPR and FPR are reported (Li et al. 2020, Figure 2)."""
PREDICT_BATCH = 256
"""Images per prediction call; the last batch is padded, so the model sees one shape."""


def combine_scores(scores: np.ndarray, how: str) -> np.ndarray:
    """The committee's p_CNN from its members' scores.

    Parameters
    ----------
    scores : ndarray, shape (K, N)
        p_CNN of each of K members for N images.
    how : {"mean", "median"}
        The combination (:data:`lensdask.config.COMBINATIONS`).

    Returns
    -------
    ndarray of float32, shape (N,)
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores: need shape (members, images), got {scores.shape}")
    if how == "mean":
        return scores.mean(axis=0, dtype=np.float32)
    if how == "median":
        return np.median(scores, axis=0).astype(np.float32)
    raise ValueError(f"combination: 'mean' or 'median', got {how!r}")


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


LRG_SET = "LRG"
"""Name of the negative set of LRGs alone (reported where the test split is mixed)."""
ALL_SET = "all"
"""Name of the set of every negative of the test split."""


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
    low_fpr: dict[str, dict[str, Any]] = field(default_factory=dict)
    """:func:`lensdask.nn.rates.low_fpr_rates` by negative set (:data:`ALL_SET`, and
    :data:`LRG_SET` where the negatives are mixed)."""
    completeness: dict[str, Any] = field(default_factory=dict)
    """The mock lenses' completeness in bins of the selection quantities they have:
    ``threshold``, ``threshold_from``, ``confidence`` and ``bins`` (by quantity)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the model card."""
        return {
            "auc": self.auc,
            "tpr_at_fpr_1pct": self.tpr_at_fpr_1pct,
            "rates": list(self.rates),
            "positives": self.positives,
            "negatives": self.negatives,
            "auc_by_bin": self.by_bin,
            "low_fpr": self.low_fpr,
            "completeness_by_bin": self.completeness,
        }


def negative_sets(labels: np.ndarray, kinds: np.ndarray | None) -> dict[str, np.ndarray]:
    """Masks of the negative sets the low-FPR rates are given for: :data:`ALL_SET`, and
    :data:`LRG_SET` where ``kinds`` shows LRGs beside other negatives."""
    negative = ~np.asarray(labels).astype(bool)
    sets = {ALL_SET: negative}
    if kinds is not None:
        lrg = negative & (np.asarray(kinds).astype(str) == "LRG")
        if lrg.any() and (negative & ~lrg).any():
            sets[LRG_SET] = lrg
    return sets


def completeness_by_bin(
    labels: np.ndarray,
    scores: np.ndarray,
    parameters: dict[str, np.ndarray],
    *,
    threshold: float,
    threshold_from: str,
) -> dict[str, Any]:
    """Fraction of the positives with ``score > threshold`` in bins of each selection
    quantity (:func:`lensdask.selection.selection_function`) the positives have, with
    Clopper-Pearson intervals (JSON types)."""
    from lensdask.selection import CONFIDENCE

    positive = np.asarray(labels).astype(bool)
    found = np.asarray(scores)[positive] > threshold
    values = {name: np.asarray(v, dtype=float)[positive] for name, v in parameters.items()}
    bins = selection_function(values, np.ones(found.size, bool), found)
    return {
        "threshold": float(threshold),
        "threshold_from": threshold_from,
        "confidence": CONFIDENCE,
        "bins": bins_as_json(bins),
    }


def classifier_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    parameters: dict[str, np.ndarray] | None = None,
    kinds: np.ndarray | None = None,
    false_positives_per_100k: float = FALSE_POSITIVES_PER_100K,
    survey_sizes: dict[str, int] | None = None,
) -> ClassifierMetrics:
    """AUC, TPR at 1% FPR, TPR/FPR at :data:`THRESHOLDS`, the low-FPR rates of each
    negative set, the AUC in bins of each of ``parameters`` named in
    :data:`BINNED_PARAMETERS` and the completeness in bins of each selection quantity.

    Parameters
    ----------
    labels, scores : ndarray, shape (N,)
        As for :func:`roc_curve`.
    parameters : dict of str to ndarray, shape (N,), optional
        Per-example parameters (NaN where unknown): the mock lenses' ``theta_E`` and
        ``arc_peak_ratio``, the hosts' ``host_mag``, ``host_size``, ``neighbours`` and
        the ``seeing``.
    kinds : ndarray of str, shape (N,), optional
        Kind of each example (``lens``, ``LRG``, ``ring``, ...): with negatives of other
        kinds than LRG, the rates are also given for the LRGs alone.
    false_positives_per_100k : float
        Budget of the working threshold (:func:`lensdask.nn.rates.low_fpr_rates`); the
        completeness is measured at that threshold of all negatives where it is defined,
        else at the reference run's LRG threshold.
    survey_sizes : dict of str to int, optional
        Targets per survey sample for the expected candidates (default
        :data:`lensdask.nn.rates.SURVEY_SIZES`).
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    parameters = parameters or {}
    by_bin = {
        name: auc_by_bin(labels, scores, values, BINNED_PARAMETERS[name])
        for name, values in parameters.items()
        if name in BINNED_PARAMETERS
    }
    positives = scores[labels == 1]
    low_fpr = {}
    for name, mask in negative_sets(labels, kinds).items():
        low_fpr[name] = low_fpr_rates(
            positives,
            scores[mask],
            false_positives_per_100k=false_positives_per_100k,
            survey_sizes=SURVEY_SIZES if survey_sizes is None else survey_sizes,
        )
    working = low_fpr[ALL_SET]["working_point"]
    if working["threshold"] is not None:
        threshold = working["threshold"]
        source = f"{false_positives_per_100k:g} false positives per 100k of {ALL_SET} negatives"
    else:
        threshold, source = DEFAULT_THRESHOLDS["LRG"], "the reference run's LRG threshold"
    return ClassifierMetrics(
        auc=auc(fpr, tpr),
        tpr_at_fpr_1pct=tpr_at_fpr(fpr, tpr, 0.01),
        rates=tuple(rates_at(labels, scores, t) for t in THRESHOLDS),
        positives=int(np.sum(labels)),
        negatives=int(np.size(labels) - np.sum(labels)),
        by_bin=by_bin,
        low_fpr=low_fpr,
        completeness=completeness_by_bin(
            labels, scores, parameters, threshold=threshold, threshold_from=source
        ),
    )


def split_parameters(trainset: str | Path, split: str) -> dict[str, np.ndarray]:
    """The selection quantities (:data:`lensdask.selection.QUANTITIES`) of every example
    of a split, in stored order (NaN where unknown); those the training set does not
    record are left out."""
    from lensdask.formats.trainset import read_hosts, read_table

    table = read_table(trainset, split).join(read_hosts(trainset, split))
    return {name: table[name].to_numpy(float) for name in QUANTITIES if name in table}


def split_kinds(trainset: str | Path, split: str) -> np.ndarray:
    """The ``kind`` of every example of a split, in stored order."""
    from lensdask.formats.trainset import read_table

    return read_table(trainset, split)["kind"].to_numpy(dtype=str)


def predict_images(model: Any, images: np.ndarray, *, batch_size: int = PREDICT_BATCH):
    """p_CNN of ``images`` (N, H, W), or (N, H, W, B) of several bands, in [0, 255], in
    fixed-size batches (last one padded)."""
    scores = np.empty(images.shape[0], dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        part = images[start : start + batch_size]
        n = part.shape[0]
        if n < batch_size:
            part = np.concatenate([part, np.zeros((batch_size - n, *part.shape[1:]), part.dtype)])
        channels = part[..., None] if part.ndim == 3 else part
        out = model.predict_on_batch(channels.astype(np.float32))
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


def plot_roc(
    labels: np.ndarray,
    scores: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    kinds: np.ndarray | None = None,
    low_fpr: dict[str, dict[str, Any]] | None = None,
):
    """PNG of the ROC curve: on linear axes with the :data:`THRESHOLDS` marked, and with a
    logarithmic FPR axis for each negative set (:func:`negative_sets`), the low-FPR rates
    of ``low_fpr`` (:attr:`ClassifierMetrics.low_fpr`) marked with their bootstrap
    intervals."""
    from matplotlib.figure import Figure

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    fpr, tpr, _ = roc_curve(labels, scores)
    fig = Figure(figsize=(9, 4.2))
    ax, log_ax = fig.subplots(1, 2)
    ax.plot(fpr, tpr, color="k", lw=1.5, label=f"AUC = {auc(fpr, tpr):.4f}")
    for rate, marker in zip((rates_at(labels, scores, t) for t in THRESHOLDS), "os^", strict=True):
        ax.plot(rate["fpr"], rate["tpr"], marker, label=f"p_CNN > {rate['threshold']:.2f}")
    ax.plot([0, 1], [0, 1], ":", color="0.6")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    positive = labels == 1
    smallest = 1.0
    sets = negative_sets(labels, kinds)
    for (name, mask), color in zip(sets.items(), ("k", "tab:red")[: len(sets)], strict=True):
        both = positive | mask
        set_fpr, set_tpr, _ = roc_curve(labels[both], scores[both])
        smallest = min(smallest, 0.5 / mask.sum())
        # a step at FPR 0 cannot be drawn on a log axis: start it at half a negative
        drawn = np.maximum(set_fpr, 0.5 / mask.sum())
        log_ax.step(drawn, set_tpr, where="post", color=color, lw=1.2, label=f"{name} negatives")
        for entry in (low_fpr or {}).get(name, {}).get("at_fpr", []):
            if entry["tpr"] is None:
                continue
            low, high = entry["interval"]
            log_ax.errorbar(
                entry["fpr"],
                entry["tpr"],
                yerr=[[entry["tpr"] - low], [high - entry["tpr"]]],
                fmt="o",
                color=color,
                ms=4,
                capsize=2,
            )
    log_ax.set_xscale("log")
    log_ax.set_xlim(smallest, 1)
    log_ax.set_ylim(0, 1.01)
    log_ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title="points: FPR 1e-2..1e-4, 95% bootstrap",
    )
    log_ax.title.set_fontsize(8)
    log_ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


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
    save_figure(fig, path, dpi=120)


ROC_PLOT = "roc.png"
HISTOGRAM_PLOT = "p_cnn_test.png"
COMPLETENESS_PLOT = "completeness_test.png"


def evaluate_scores(
    labels: np.ndarray,
    scores: np.ndarray,
    out: str | Path,
    *,
    title: str = "",
    parameters: dict[str, np.ndarray] | None = None,
    kinds: np.ndarray | None = None,
    false_positives_per_100k: float = FALSE_POSITIVES_PER_100K,
    survey_sizes: dict[str, int] | None = None,
) -> ClassifierMetrics:
    """Metrics of test-split scores (:func:`classifier_metrics`), with the ROC, histogram
    and (where the positives have selection quantities) completeness PNGs written into
    ``out``."""
    import pandas as pd

    from lensdask.selection import plot_completeness

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = classifier_metrics(
        labels,
        scores,
        parameters=parameters,
        kinds=kinds,
        false_positives_per_100k=false_positives_per_100k,
        survey_sizes=survey_sizes,
    )
    plot_roc(labels, scores, out / ROC_PLOT, title=title, kinds=kinds, low_fpr=metrics.low_fpr)
    plot_histograms(labels, scores, out / HISTOGRAM_PLOT, title=title)
    bins = metrics.completeness["bins"]
    if bins:
        table = pd.DataFrame(
            [{"quantity": name, **row} for name, rows in bins.items() for row in rows]
        )
        threshold = metrics.completeness["threshold"]
        plot_completeness(
            table.fillna(np.nan),
            out / COMPLETENESS_PLOT,
            title=f"{title}: mock lenses with p_CNN > {threshold:.4g}",
        )
    return metrics


def evaluate_test_split(
    model: Any,
    trainset: str | Path,
    out: str | Path,
    *,
    title: str = "",
    false_positives_per_100k: float = FALSE_POSITIVES_PER_100K,
    survey_sizes: dict[str, int] | None = None,
) -> ClassifierMetrics:
    """Predict the test split of ``trainset`` and return its metrics (with the AUC and
    completeness in bins of the examples' parameters, and the rates of each negative
    set), writing the PNGs into ``out``."""
    labels, scores = predict_split(model, trainset, "test")
    return evaluate_scores(
        labels,
        scores,
        out,
        title=title,
        parameters=split_parameters(trainset, "test"),
        kinds=split_kinds(trainset, "test"),
        false_positives_per_100k=false_positives_per_100k,
        survey_sizes=survey_sizes,
    )


def evaluate_model(
    model_dir: str | Path,
    trainset: str | Path,
    *,
    out: str | Path | None = None,
    title: str | None = None,
    false_positives_per_100k: float = FALSE_POSITIVES_PER_100K,
    survey_sizes: dict[str, int] | None = None,
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
    title : str, optional
        Title of the plots (default: the model id).
    false_positives_per_100k : float
        Budget of false positives per 100,000 targets of the working threshold.
    survey_sizes : dict of str to int, optional
        Targets per survey sample for the expected candidates (default
        :data:`lensdask.nn.rates.SURVEY_SIZES`).

    Returns
    -------
    ClassifierMetrics
        Of the model, or of a committee's combined p_CNN (``metrics.json`` also lists each
        member's metrics under ``members``).
    """
    from lensdask.formats.files import write_json_atomic
    from lensdask.formats.model_dir import is_committee, load_members
    from lensdask.formats.trainset import read_attrs

    attrs = read_attrs(trainset)
    size, bands = int(attrs["size"]), len(attrs.get("bands") or [attrs.get("band")])
    models, card = load_members(model_dir, input_shape=(size, size, bands))
    out = Path(out or model_dir)
    labels, scores = None, []
    for model in models:
        labels, member_scores = predict_split(model, trainset, "test")
        scores.append(member_scores)
    options = {
        "parameters": split_parameters(trainset, "test"),
        "kinds": split_kinds(trainset, "test"),
        "false_positives_per_100k": false_positives_per_100k,
        "survey_sizes": survey_sizes,
    }
    committee = is_committee(card)
    combined = (
        combine_scores(np.stack(scores), card["committee"]["combination"])
        if committee
        else scores[0]
    )
    title = title or f"model {card['model_id']}"
    metrics = evaluate_scores(labels, combined, out, title=title, **options)
    extra = {}
    if committee:
        extra["members"] = [
            {
                "model_id": member["model_id"],
                **classifier_metrics(labels, score, **options).as_dict(),
            }
            for member, score in zip(card["committee"]["members"], scores, strict=True)
        ]
    write_json_atomic(
        out / "metrics.json",
        {"model_id": card["model_id"], "trainset": str(trainset), **metrics.as_dict(), **extra},
    )
    return metrics


def _rate(entry: dict[str, Any]) -> str:
    """A low-FPR rate as printed: TPR, interval, false positives, or why it is undefined."""
    if entry["tpr"] is None:
        return "undefined (" + entry["reason"].removeprefix("undefined: ") + ")"
    text = f"{entry['tpr']:.3f}"
    if entry.get("interval"):
        text += " [{:.3f}, {:.3f}]".format(*entry["interval"])
    return text + f" ({entry['false_positives']} FP)"


def _low_fpr_lines(name: str, rates: dict[str, Any]) -> list[str]:
    """The lines of one negative set's low-FPR rates."""
    parts = [
        f"{entry['fpr']:.0e}".replace("e-0", "e-") + " " + _rate(entry) for entry in rates["at_fpr"]
    ]
    zero = rates["at_zero_fp"]
    parts.append(f"0 FP {zero['tpr']:.3f} (p_CNN > {zero['threshold']:.6g})")
    lines = [f"  {name} negatives ({rates['negatives']}): TPR at FPR " + ", ".join(parts)]
    point = rates["working_point"]
    if point["tpr"] is None:
        lines.append(f"    {point['per_100k']:g} FP per 100k targets: {_rate(point)}")
        return lines
    expected = ", ".join(
        f"{survey} {e['expected']:,.0f} [{e['interval'][0]:,.0f}, {e['interval'][1]:,.0f}]"
        for survey, e in point.get("expected_candidates", {}).items()
    )
    lines.append(
        f"    {point['per_100k']:g} FP per 100k targets: p_CNN > {point['threshold']:.6g}, "
        f"TPR {_rate(point)}; non-lens candidates expected: {expected}"
    )
    return lines


def _member_line(k: int, member: dict[str, Any]) -> str:
    """One committee member's test metrics in a line: AUC, TPR at the low FPRs and at zero
    false positives (of all negatives)."""
    metrics = member["test_metrics"]
    rates = metrics.get("low_fpr", {}).get(ALL_SET, {})
    parts = [
        f"{entry['fpr']:.0e}".replace("e-0", "e-")
        + " "
        + ("-" if entry["tpr"] is None else f"{entry['tpr']:.3f}")
        for entry in rates.get("at_fpr", [])
    ]
    if "at_zero_fp" in rates:
        parts.append(f"0 FP {rates['at_zero_fp']['tpr']:.3f}")
    return (
        f"  member {k} (model {member['model_id']}, seed {member['seed']}, width "
        f"{member['width']:g}): test AUC {metrics['auc']:.4f}, TPR at FPR " + ", ".join(parts)
    )


def committee_lines(card: dict[str, Any]) -> list[str]:
    """A committee card's members as the lines `train` prints before the committee's own
    metrics (:func:`metrics_lines`); none for a single network's card."""
    committee = card.get("committee")
    if committee is None:
        return []
    members = committee["members"]
    return [
        f"committee of {len(members)} networks, p_CNN = {committee['combination']} of theirs:",
        *(_member_line(k, member) for k, member in enumerate(members)),
    ]


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
    for name, rates in metrics.get("low_fpr", {}).items():
        lines.extend(_low_fpr_lines(name, rates))
    completeness = metrics.get("completeness_by_bin", {})
    if completeness.get("bins"):
        lines.append(
            f"  completeness at p_CNN > {completeness['threshold']:.6g} "
            f"({completeness['threshold_from']}), {completeness['confidence']:.0%} intervals:"
        )
    for name, rows in completeness.get("bins", {}).items():
        parts = [
            f"{r['low']:g}-{r['high']:g}: "
            + (
                "-"
                if r["completeness"] is None
                else f"{r['completeness']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            )
            + f" ({r['scored']})"
            for r in rows
        ]
        lines.append(f"    by {name}: " + ", ".join(parts))
    lines.append(f"model, card and plots -> {out}")
    return lines
