"""Plots of the scores: the p_cnn distributions (the reference run's Figure 4). The
completeness plot, shared with the test split's, is :func:`lensdask.selection.plot_completeness`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lensdask.formats.files import save_figure

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
    save_figure(fig, path, dpi=120)
    return path
