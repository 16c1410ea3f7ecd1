"""Binning of values by edges, shared by the test-split metrics and the completeness."""

from __future__ import annotations

import numpy as np


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin of each value: ``k`` for ``edges[k] <= v < edges[k + 1]``, the last bin closed,
    -1 or ``len(edges) - 1`` outside (and for NaN).

    Parameters
    ----------
    values : ndarray, shape (N,)
        Values in the units of ``edges`` (Einstein radius in arcsec, arc brightness ratio).
    edges : tuple of float
        Increasing bin edges.

    Returns
    -------
    ndarray of int, shape (N,)
    """
    edges_array = np.asarray(edges, dtype=float)
    values = np.asarray(values, dtype=float)
    index = np.searchsorted(edges_array, values, side="right") - 1
    index[values == edges_array[-1]] = len(edges) - 2
    index[np.isnan(values)] = -1
    return index
