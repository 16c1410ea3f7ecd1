"""The selection function: completeness of lenses in bins of their and their host's
properties, with binomial intervals, shared by the test-split metrics
(:mod:`lensdask.nn.evaluate`) and the completeness of candidates against injected lenses
(:mod:`lensdask.score.recovery`).

The quantities binned are the Einstein radius and arc brightness of the lens, the seeing
of its image, and its host galaxy's magnitude, size and number of neighbours
(:data:`QUANTITIES`). Each bin's interval is the Clopper-Pearson ("exact") binomial
interval of recovered out of scored lenses (:func:`binomial_interval`): it never shrinks to
nothing at a completeness of 0 or 1, where the Wald interval does, and it covers at least
its nominal probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.bins import bin_index
from lensdask.config import ARC_RATIO_BINS, THETA_E_BINS
from lensdask.formats.files import save_figure

CONFIDENCE = 0.95
"""Probability content of the binomial intervals of the completeness."""
COLUMNS = ("low", "high", "lenses", "scored", "recovered", "completeness", "ci_low", "ci_high")
"""Columns of a completeness table (:func:`binned_completeness`)."""
COUNTS = ("lenses", "scored", "recovered")
"""Its integer columns."""
NEIGHBOUR_RADIUS = 5.0
"""arcsec: other targets within this of a lens host are its neighbours."""


@dataclass(frozen=True)
class Quantity:
    """A quantity the completeness is binned in."""

    edges: tuple[float, ...]
    """Increasing bin edges (:func:`lensdask.bins.bin_index`: the last bin closed)."""
    label: str
    """Axis label, with the unit."""
    log: bool
    """Bins and plot on a logarithmic axis."""


QUANTITIES: dict[str, Quantity] = {
    "theta_E": Quantity(THETA_E_BINS, "Einstein radius [arcsec]", True),
    "arc_peak_ratio": Quantity(ARC_RATIO_BINS, "arc peak / lens peak", True),
    "seeing": Quantity((0.4, 0.6, 0.7, 0.8, 1.0, 1.5), "seeing FWHM [arcsec]", False),
    "host_mag": Quantity((14.0, 17.0, 18.0, 19.0, 20.0, 21.0), "host MAG_AUTO [mag]", False),
    "host_size": Quantity((0.1, 0.5, 1.0, 2.0, 5.0, 20.0), "host R_EFF [arcsec]", True),
    "neighbours": Quantity(
        (0.0, 1.0, 2.0, 3.0, 5.0, 10.0), f'targets within {NEIGHBOUR_RADIUS:g}"', False
    ),
}
"""The selection function's quantities by name (the names of the training set's
parameters and of the completeness tables), with their default bins. KiDS r-band seeing
lies between 0.5" and 1.0"; BG hosts have ``MAG_AUTO <= 21``; ``neighbours`` counts
targets (bright galaxies), not every catalog source."""


HOST_COLUMNS = ("RAJ2000", "DECJ2000", "MAG_AUTO", "R_EFF")
"""Target columns the host quantities come from: position (deg), ``MAG_AUTO`` (mag) and
``R_EFF`` (half-light radius, arcsec: a mock survey's column; map a real survey's onto it
with ``select.column_map`` and keep it with ``select.extra_columns``)."""


def neighbour_counts(
    ra: np.ndarray,
    dec: np.ndarray,
    cat_ra: np.ndarray,
    cat_dec: np.ndarray,
    *,
    radius: float = NEIGHBOUR_RADIUS,
) -> np.ndarray:
    """Catalog entries within ``radius`` of each position, the entry at the position itself
    (closer than a microarcsecond) left out.

    Parameters
    ----------
    ra, dec : ndarray, deg
        Positions.
    cat_ra, cat_dec : ndarray, deg
        The catalog.
    radius : float, arcsec
        Neighbourhood radius.

    Returns
    -------
    ndarray of int
        Neighbours of each position.
    """
    from scipy.spatial import cKDTree

    def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)

    points = unit(ra, dec)
    if points.shape[0] == 0 or len(cat_ra) == 0:
        return np.zeros(points.shape[0], dtype=np.int64)
    tree = cKDTree(unit(cat_ra, cat_dec))

    def within(arcsec: float) -> np.ndarray:
        chord = 2 * np.sin(np.radians(arcsec / 3600) / 2)
        return np.asarray(tree.query_ball_point(points, chord, return_length=True))

    return (within(radius) - within(1e-6)).astype(np.int64)


def host_properties(hosts: pd.DataFrame, targets: pd.DataFrame | None) -> pd.DataFrame:
    """The host quantities of :data:`QUANTITIES` for some targets (pure).

    Parameters
    ----------
    hosts : DataFrame
        The host galaxies, with those of :data:`HOST_COLUMNS` the targets have: what is
        missing is NaN in the result.
    targets : DataFrame or None
        ``RAJ2000``, ``DECJ2000`` of every target (the neighbours).

    Returns
    -------
    DataFrame
        ``host_mag`` (mag), ``host_size`` (arcsec) and ``neighbours`` (other targets
        within :data:`NEIGHBOUR_RADIUS`; NaN without positions), on the index of ``hosts``.
    """
    nan = np.full(len(hosts), np.nan)
    neighbours = nan
    if targets is not None and {"RAJ2000", "DECJ2000"} <= set(hosts):
        neighbours = neighbour_counts(
            hosts["RAJ2000"].to_numpy(float),
            hosts["DECJ2000"].to_numpy(float),
            targets["RAJ2000"].to_numpy(float),
            targets["DECJ2000"].to_numpy(float),
        ).astype(float)
    return pd.DataFrame(
        {
            "host_mag": hosts["MAG_AUTO"].to_numpy(float) if "MAG_AUTO" in hosts else nan,
            "host_size": hosts["R_EFF"].to_numpy(float) if "R_EFF" in hosts else nan,
            "neighbours": neighbours,
        },
        index=hosts.index,
    )


def binomial_interval(
    k: np.ndarray | int, n: np.ndarray | int, *, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of a binomial proportion ``k / n``.

    The bounds are quantiles of the beta distribution (:data:`scipy.stats.beta`): the
    lower one ``Beta(alpha/2; k, n - k + 1)`` (0 for ``k = 0``), the upper one
    ``Beta(1 - alpha/2; k + 1, n - k)`` (1 for ``k = n``), ``alpha = 1 - confidence``;
    the same as ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``.

    Parameters
    ----------
    k : int or ndarray of int
        Successes (recovered lenses, false positives).
    n : int or ndarray of int
        Trials (scored lenses, negatives); NaN bounds where ``n == 0``.
    confidence : float
        Probability content, in (0, 1).

    Returns
    -------
    low, high : ndarray of float
        Bounds of the proportion, in [0, 1].

    Raises
    ------
    ValueError
        If ``k`` is not in ``[0, n]`` or ``confidence`` not in (0, 1).
    """
    from scipy.stats import beta

    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if np.any((k < 0) | (k > n)):
        raise ValueError(f"binomial_interval: successes must lie in [0, n], got k={k}, n={n}")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def binned_completeness(
    values: np.ndarray,
    scored: np.ndarray,
    recovered: np.ndarray,
    edges: tuple[float, ...],
    *,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Completeness in bins of ``values``: lenses, scored, recovered, recovered/scored and
    its binomial interval.

    Parameters
    ----------
    values : ndarray, shape (N,)
        The quantity of each lens, in the units of ``edges``; NaN ones are left out.
    scored, recovered : ndarray of bool, shape (N,)
        Whether each lens was scored at all, and found.
    edges : tuple of float
        Increasing bin edges: bins are ``[edges[k], edges[k + 1])``, the last one closed;
        values outside are left out.
    confidence : float
        Of the interval (:func:`binomial_interval`).

    Returns
    -------
    DataFrame
        One row per bin: ``low``, ``high``, ``lenses``, ``scored``, ``recovered``,
        ``completeness`` (NaN for a bin without scored lenses), ``ci_low`` and ``ci_high``.
    """
    index = bin_index(values, edges)
    bins = np.arange(len(edges) - 1)
    inside = index[None, :] == bins[:, None]
    n_scored = (inside & np.asarray(scored, bool)).sum(axis=1)
    n_recovered = (inside & np.asarray(recovered, bool)).sum(axis=1)
    low, high = binomial_interval(n_recovered, n_scored, confidence=confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        completeness = np.where(n_scored > 0, n_recovered / np.maximum(n_scored, 1), np.nan)
    return pd.DataFrame(
        {
            "low": np.asarray(edges[:-1], dtype=float),
            "high": np.asarray(edges[1:], dtype=float),
            "lenses": inside.sum(axis=1),
            "scored": n_scored,
            "recovered": n_recovered,
            "completeness": completeness,
            "ci_low": low,
            "ci_high": high,
        }
    )


def selection_function(
    quantities: dict[str, np.ndarray],
    scored: np.ndarray,
    recovered: np.ndarray,
    *,
    edges: dict[str, tuple[float, ...]] | None = None,
) -> pd.DataFrame:
    """:func:`binned_completeness` in every quantity of :data:`QUANTITIES` that
    ``quantities`` has with at least one finite value; the others are skipped.

    Parameters
    ----------
    quantities : dict of str to ndarray, shape (N,)
        Values per lens (NaN where unknown); names outside :data:`QUANTITIES` are ignored.
    scored, recovered : ndarray of bool, shape (N,)
    edges : dict, optional
        Bin edges replacing the defaults of :data:`QUANTITIES`, by name.

    Returns
    -------
    DataFrame
        The bins of each quantity in the order of :data:`QUANTITIES`, with a leading
        ``quantity`` column.
    """
    edges = {name: q.edges for name, q in QUANTITIES.items()} | dict(edges or {})
    parts = []
    for name in QUANTITIES:
        values = quantities.get(name)
        if values is None or not np.isfinite(np.asarray(values, dtype=float)).any():
            continue
        part = binned_completeness(np.asarray(values, float), scored, recovered, edges[name])
        part.insert(0, "quantity", name)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["quantity", *COLUMNS])
    return pd.concat(parts, ignore_index=True)


def bins_as_json(bins: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """A :func:`selection_function` table as JSON types, by quantity (NaN as None)."""
    result: dict[str, list[dict[str, Any]]] = {}
    for row in bins.to_dict("records"):
        entry = {
            key: int(row[key]) if key in COUNTS else None if pd.isna(row[key]) else float(row[key])
            for key in COLUMNS
        }
        result.setdefault(str(row["quantity"]), []).append(entry)
    return result


def plot_completeness(bins: pd.DataFrame, path: Path, *, title: str = "") -> Path:
    """PNG of the completeness in each quantity of a :func:`selection_function` table, a
    panel each, with the binomial intervals as error bars where the table has
    ``ci_low``/``ci_high``, and the scored lenses per bin written above each point.

    Parameters
    ----------
    bins : DataFrame
        ``quantity``, ``low``, ``high``, ``scored``, ``completeness`` and optionally
        ``ci_low``, ``ci_high``.
    path : path
        The PNG to write.
    title : str
        Figure title.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    quantities = list(dict.fromkeys(bins["quantity"]))
    columns = min(3, max(1, len(quantities)))
    rows = -(-len(quantities) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.8 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[len(quantities) :]:
        ax.set_visible(False)
    for ax, quantity in zip(axes, quantities, strict=False):
        part = bins[bins["quantity"] == quantity]
        spec = QUANTITIES.get(quantity, Quantity((), quantity, False))
        low, high = part["low"].to_numpy(float), part["high"].to_numpy(float)
        centres = np.sqrt(low * high) if spec.log else (low + high) / 2
        y = part["completeness"].to_numpy(float)
        yerr = None
        if {"ci_low", "ci_high"} <= set(part):
            yerr = [y - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - y]
        ax.errorbar(centres, y, xerr=[centres - low, high - centres], yerr=yerr, fmt="o", color="k")
        for x, value, n in zip(centres, y, part["scored"], strict=True):
            if np.isfinite(value):
                ax.annotate(f"{n}", (x, value), textcoords="offset points", xytext=(4, 4))
        if spec.log:
            ax.set_xscale("log")
            edges = sorted(set(low) | set(high))
            ax.set_xticks(edges, [f"{edge:g}" for edge in edges])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=spec.label, ylabel="completeness", ylim=(0, 1.05))
        ax.set_title(f"numbers: scored lenses per bin; {CONFIDENCE:.0%} intervals", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path
