"""Plots of the scores: the p_cnn distributions (the reference run's Figure 4) and the
completeness of the candidates against injected lenses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SAMPLE_STYLE = {"LRG": ("tab:red", "-"), "BG": ("tab:blue", "--")}


def plot_p_cnn(
    edges: np.ndarray,
    hist: dict[str, np.ndarray],
    thresholds: dict[str, float],
    path: Path,
) -> Path:
    """PNG of the p_cnn histograms of each sample on a log scale, thresholds marked.

    Parameters
    ----------
    edges : ndarray
        Bin edges in [0, 1].
    hist : dict
        Counts per bin, by sample.
    thresholds : dict
        The candidates' threshold by sample.
    path : path
        The PNG to write.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for sample in sorted(hist):
        color, style = SAMPLE_STYLE.get(sample, ("k", ":"))
        counts = np.asarray(hist[sample], dtype=float)
        total = int(counts.sum())
        ax.stairs(counts, edges, color=color, ls=style, lw=1.5, label=f"{sample} ({total:,})")
        if sample in thresholds:
            ax.axvline(thresholds[sample], color=color, ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="p_CNN", ylabel="targets per bin", xlim=(0, 1))
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_completeness(bins: pd.DataFrame, path: Path) -> Path:
    """PNG of the completeness by Einstein radius and by arc brightness.

    Parameters
    ----------
    bins : DataFrame
        From :func:`lensdask.score.recovery.binned_completeness`, with a ``quantity``
        column (``theta_E``, ``arc_peak_ratio``).
    path : path
        The PNG to write.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    labels = {"theta_E": "Einstein radius [arcsec]", "arc_peak_ratio": "arc peak / lens peak"}
    quantities = list(dict.fromkeys(bins["quantity"]))
    fig = Figure(figsize=(4.5 * len(quantities), 3.8))
    axes = fig.subplots(1, len(quantities))
    for ax, quantity in zip(np.atleast_1d(axes), quantities, strict=True):
        part = bins[bins["quantity"] == quantity]
        centres = np.sqrt(part["low"] * part["high"])
        ax.errorbar(
            centres,
            part["completeness"],
            xerr=[centres - part["low"], part["high"] - centres],
            fmt="o",
            color="k",
        )
        for x, y, n in zip(centres, part["completeness"], part["scored"], strict=True):
            if np.isfinite(y):
                ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
        ax.set_xscale("log")
        edges = sorted(set(part["low"]) | set(part["high"]))
        ax.set_xticks(edges, [f"{edge:g}" for edge in edges])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=labels.get(quantity, quantity), ylabel="completeness", ylim=(0, 1.05))
        ax.set_title("numbers: scored lenses per bin", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
