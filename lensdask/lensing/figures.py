"""Figures of the training set: example mock lenses and negatives (Li et al. 2020, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lensdask.formats.files import save_figure
from lensdask.formats.zarrs import zarr_store
from lensdask.storage import as_path

EXAMPLES_PER_ROW = 8


def plot_examples(trainset: str | Path, path: str | Path, *, split: str = "train") -> Path:
    """Write a PNG of example mock lenses (top rows) and negatives of each kind (bottom).

    Mock lenses are labelled with their Einstein radius (arcsec) and arc peak ratio;
    negatives with their kind. Images are shown as stored (normalised to [0, 255]) with an
    asinh stretch.

    Parameters
    ----------
    trainset : path
        A training set made by :func:`lensdask.lensing.simulate.simulate_lenses`.
    path : path
        The PNG to write.
    split : str
        Split to take the examples from (falls back to ``test`` when empty).

    Returns
    -------
    Path
        ``path``.
    """
    import zarr
    from matplotlib.figure import Figure

    from lensdask.formats.trainset import read_table

    trainset, path = as_path(trainset), as_path(path)
    table = read_table(trainset, split)
    if table.empty:
        split, table = "test", read_table(trainset, "test")
    images = zarr.open_array(zarr_store(trainset / split / "images", read_only=True), mode="r")
    n = EXAMPLES_PER_ROW
    lenses = np.flatnonzero(table["label"].to_numpy() == 1)[:n]
    negatives = _by_kind(table, n)
    rows = [("lens", lenses), ("negative", negatives)]
    fig = Figure(figsize=(1.6 * n, 4.0))
    axes = fig.subplots(2, n, squeeze=False)
    for axes_row, (what, index) in zip(axes, rows, strict=True):
        for ax, k in zip(axes_row, list(index) + [None] * (n - len(index)), strict=True):
            ax.set_axis_off()
            if k is None:
                continue
            image = images[int(k)]
            if image.ndim == 3:  # several bands: their mean, in grey
                image = image.mean(axis=-1)
            ax.imshow(np.arcsinh(image / 25.0), origin="lower", cmap="gray")
            if what == "lens":
                label = f'θE={table["theta_E"][k]:.1f}" r={table["arc_peak_ratio"][k]:.2f}'
            else:
                label = table["kind"][k]
            ax.set_title(label, fontsize=7)
    fig.suptitle(f"{trainset.name} ({split}): mock lenses (top), negatives (bottom)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _by_kind(table, n: int) -> list[int]:
    """Up to ``n`` negatives, taking the kinds in turn so each kind is shown."""
    negatives = table[table["label"] == 0]
    groups = [list(part.index) for _, part in negatives.groupby("kind", sort=True)]
    chosen: list[int] = []
    while len(chosen) < n and any(groups):
        for group in groups:
            if group and len(chosen) < n:
                chosen.append(group.pop(0))
    return chosen
