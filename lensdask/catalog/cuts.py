"""The BG and LRG cuts of Li et al. (2020), as a pure kernel on pandas/NumPy.

BG: ``SG2DPHOT == 0`` and ``MAG_AUTO <= 21``. LRG (a subset of BG), from the GAaP colours
``g-r`` and ``r-i``::

    c_par  = 0.7 (g-r) + 1.2 [(r-i) - 0.18]
    c_perp = (r-i) - (g-r)/4.0 - 0.18
    MAG_AUTO < 14 + c_par / 0.3,   |c_perp| < 0.2,   MAG_AUTO <= 20

A source with a NaN colour is never an LRG (every comparison with NaN is false) but can be
a BG. With ``SelectConfig.mask_bits`` nonzero, a source whose catalog ``MASK`` has any of
those bits is neither (Li et al. 2020 did not cut on the mask: off by default).
Comparisons are made in float64 on the catalog's values, so a boundary value stored in the
catalog (``MAG_AUTO == 21.0``) is treated exactly as the inequality says.

Other surveys' samples (and overrides of these) are expressions
(:mod:`lensdask.catalog.presets`); :func:`expression_masks` applies them with the same
contract: an LRG is also a BG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lensdask.catalog.expressions import Expression, evaluate
from lensdask.catalog.presets import column_map, parse_samples, uses_kernel
from lensdask.config import SelectConfig


@dataclass(frozen=True)
class CutMasks:
    """Boolean masks of one frame: which rows are BGs, LRGs, and BGs with NaN colours."""

    bg: np.ndarray
    lrg: np.ndarray
    nan_colour: np.ndarray
    """BGs missing a value the LRG cuts read (a NaN colour, for the kids-dr4 kernel)."""


def colour_cuts(
    mag: np.ndarray,
    g_r: np.ndarray,
    r_i: np.ndarray,
    *,
    lrg_mag_max: float = 20.0,
    c_perp_max: float = 0.2,
) -> np.ndarray:
    """The LRG colour-magnitude cuts (without the star/galaxy and BG cuts).

    Parameters
    ----------
    mag : ndarray, mag
        r-band Kron magnitude ``MAG_AUTO``.
    g_r, r_i : ndarray, mag
        GAaP colours ``COLOUR_GAAP_g_r`` and ``COLOUR_GAAP_r_i``.
    lrg_mag_max : float, mag
        Faint limit ``MAG_AUTO <= lrg_mag_max``.
    c_perp_max : float, mag
        ``|c_perp| < c_perp_max``.

    Returns
    -------
    ndarray of bool
        True where the source passes the LRG cuts; False for NaN colours.
    """
    mag = np.asarray(mag, dtype=np.float64)
    g_r = np.asarray(g_r, dtype=np.float64)
    r_i = np.asarray(r_i, dtype=np.float64)
    c_par = 0.7 * g_r + 1.2 * (r_i - 0.18)
    c_perp = r_i - g_r / 4.0 - 0.18
    return (mag < 14.0 + c_par / 0.3) & (np.abs(c_perp) < c_perp_max) & (mag <= lrg_mag_max)


def target_masks(
    sg2dphot: np.ndarray,
    mag: np.ndarray,
    g_r: np.ndarray,
    r_i: np.ndarray,
    *,
    config: SelectConfig,
    mask: np.ndarray | None = None,
) -> CutMasks:
    """BG, LRG and NaN-colour masks from the four columns the cuts read.

    Parameters
    ----------
    sg2dphot : ndarray of int
        Star/galaxy flag; 0 is a galaxy.
    mag : ndarray, mag
        ``MAG_AUTO``.
    g_r, r_i : ndarray, mag
        GAaP colours; NaN where unmeasured.
    config : SelectConfig
        The cut values.
    mask : ndarray of int, optional
        The catalog's ``MASK`` (null as 0); needed when ``config.mask_bits`` is nonzero,
        which drops the sources with ``MASK & mask_bits``.
    """
    mag = np.asarray(mag, dtype=np.float64)
    bg = (np.asarray(sg2dphot) == 0) & (mag <= config.bg_mag_max)
    if config.mask_bits:
        if mask is None:
            raise ValueError("select.mask_bits is set: the MASK column is needed")
        bg &= unmasked(mask, config.mask_bits)
    # the colour cuts only for the BGs (~3% of a catalog)
    rows = np.flatnonzero(bg)
    g_r = np.asarray(g_r)[rows].astype(np.float64)
    r_i = np.asarray(r_i)[rows].astype(np.float64)
    lrg = np.zeros_like(bg)
    lrg[rows] = colour_cuts(
        mag[rows], g_r, r_i, lrg_mag_max=config.lrg_mag_max, c_perp_max=config.c_perp_max
    )
    nan_colour = np.zeros_like(bg)
    nan_colour[rows] = np.isnan(g_r) | np.isnan(r_i)
    return CutMasks(bg=bg, lrg=lrg, nan_colour=nan_colour)


def unmasked(mask: np.ndarray, mask_bits: int) -> np.ndarray:
    """Where a catalog ``MASK`` (null as 0) has none of ``mask_bits``."""
    return (np.asarray(mask).astype(np.int64) & mask_bits) == 0


def expression_masks(
    bg: Expression,
    lrg: Expression,
    columns: Mapping[str, np.ndarray],
    *,
    rows: int,
    keep: np.ndarray | None = None,
) -> CutMasks:
    """BG, LRG and missing-value masks from the samples' expressions.

    Parameters
    ----------
    bg, lrg : Expression
        The samples' conditions (:func:`lensdask.catalog.presets.parse_samples`).
    columns : mapping
        Name in the expressions -> float64 values, missing as NaN.
    rows : int
        Rows of the frame.
    keep : ndarray of bool, optional
        Rows allowed to be BGs at all (the ``mask_bits`` cut).

    Returns
    -------
    CutMasks
        BGs where ``bg`` is true; LRGs where ``lrg`` is true too (an LRG is a BG);
        ``nan_colour``: BGs with a missing value in a column ``lrg`` reads.
    """
    bg_rows = evaluate(bg, columns, rows=rows)
    if keep is not None:
        bg_rows &= keep
    # the LRG expression only for the BGs (~3% of a catalog)
    at = np.flatnonzero(bg_rows)
    of_bgs = {name: np.asarray(columns[name], dtype=np.float64)[at] for name in lrg.columns}
    lrg_rows = np.zeros(rows, dtype=bool)
    lrg_rows[at] = evaluate(lrg, of_bgs, rows=len(at))
    nan_colour = np.zeros(rows, dtype=bool)
    for values in of_bgs.values():
        nan_colour[at] |= np.isnan(values)
    return CutMasks(bg=bg_rows, lrg=lrg_rows, nan_colour=nan_colour)


def classify_targets(frame: pd.DataFrame, *, config: SelectConfig | None = None) -> pd.DataFrame:
    """Keep the BGs of ``frame`` and label each ``sample`` = ``LRG`` or ``BG``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Catalog rows with at least ``SG2DPHOT``, ``MAG_AUTO`` and the two GAaP colours (and
        ``MASK`` where ``config.mask_bits`` is nonzero); with another preset or
        ``select.samples``, the columns their expressions read.
    config : SelectConfig, optional
        The samples and cut values (default: those of Li et al. 2020).

    Returns
    -------
    pandas.DataFrame
        The BG rows, in their original order, with a ``sample`` column (LRGs listed once,
        as ``LRG``).
    """
    config = config or SelectConfig()
    if not uses_kernel(config):
        masks = frame_expression_masks(frame, config=config)
    else:
        masks = target_masks(
            frame["SG2DPHOT"].to_numpy(dtype=np.int64, na_value=-1),
            frame["MAG_AUTO"].to_numpy(dtype=np.float64, na_value=np.nan),
            frame["COLOUR_GAAP_g_r"].to_numpy(dtype=np.float64, na_value=np.nan),
            frame["COLOUR_GAAP_r_i"].to_numpy(dtype=np.float64, na_value=np.nan),
            config=config,
            mask=frame["MASK"].to_numpy(dtype=np.int64, na_value=0) if config.mask_bits else None,
        )
    targets = frame.loc[masks.bg].copy()
    targets["sample"] = np.where(masks.lrg[masks.bg], "LRG", "BG")
    targets["sample"] = targets["sample"].astype("string")
    return targets


def frame_expression_masks(frame: pd.DataFrame, *, config: SelectConfig) -> CutMasks:
    """:func:`expression_masks` of the samples of ``config`` on a catalog frame (its column
    names those of the catalog, read through the preset's and ``select.column_map``)."""
    selection = parse_samples(config, columns=list(frame.columns))
    columns = {
        name: frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        for name, column in selection.names.items()
    }
    keep = None
    if config.mask_bits:
        mask = frame[column_map(config).get("MASK", "MASK")]
        keep = unmasked(mask.to_numpy(dtype=np.int64, na_value=0), config.mask_bits)
    return expression_masks(selection.bg, selection.lrg, columns, rows=len(frame), keep=keep)
