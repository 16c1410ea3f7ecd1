"""Lenses in the mock survey: which galaxies lens, and their arcs (pure kernels, no I/O).

A fraction of the LRGs (and, optionally, of the other BGs), chosen by the same cuts as
the target selection, get a lensed source painted into every band of the tile images, so
that the whole chain (selection, cutouts, scoring, ranking) can be checked against a known
truth. The lens parameters come from :func:`lensdask.lensing.mocks.draw_lenses` (the priors
of the training set's mocks, :class:`~lensdask.config.MockLensConfig`); the lensed source is
ray-traced by :func:`lensdask.lensing.mocks.render_arcs` on a stamp centred on the galaxy's
nearest pixel, with the galaxy's sub-pixel offset moved into the lens and source positions.
Its r-band brightness is set, like the training set's, so that the PSF-convolved arc peaks
at ``arc_peak_ratio`` times the lens galaxy's r-band peak; other bands follow the source's
colours (the same morphology in every band, convolved with each band's PSF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lensdask.catalog.cuts import CutMasks, target_masks
from lensdask.config import MockLensConfig, SelectConfig
from lensdask.lensing.image import Grid, convolve
from lensdask.lensing.mocks import arc_scale, draw_lenses, render_arcs
from lensdask.mock.population import colour_offset

SUPERSAMPLE = 3
"""Rays per pixel along each axis when ray-tracing the lensed sources."""
MIN_STAMP = 101
"""Least side of a lens stamp, pixels (20 arcsec at 0.2 arcsec/pixel)."""
STAMP_REACH = 2.0
"""A lens stamp reaches at least this many times the largest Einstein radius from its
centre (arcs lie within about 1.5 theta_E plus the source's size)."""
BATCH = 16
"""Lenses ray-traced together (bounds the memory of the supersampled grids)."""


def lens_stamp_size(lenses: MockLensConfig, *, pixel_scale: float) -> int:
    """Side of the stamps the lensed sources are drawn on, pixels (odd).

    Parameters
    ----------
    lenses : MockLensConfig
        The priors (their largest ``theta_E``).
    pixel_scale : float, arcsec / pixel

    Returns
    -------
    int
        ``max(MIN_STAMP, 2 ceil(STAMP_REACH theta_E_max / pixel_scale) + 1)``.
    """
    reach = math.ceil(STAMP_REACH * lenses.theta_E[1] / pixel_scale)
    return max(MIN_STAMP, 2 * reach + 1)


def lens_samples(
    sg2dphot: np.ndarray, mag: np.ndarray, g_r: np.ndarray, r_i: np.ndarray
) -> CutMasks:
    """BG and LRG masks of catalog rows by the default cuts of the target selection
    (:func:`lensdask.catalog.cuts.target_masks` with :class:`~lensdask.config.SelectConfig`
    defaults, Li et al. 2020): columns ``SG2DPHOT``, ``MAG_AUTO`` and the GAaP colours."""
    return target_masks(sg2dphot, mag, g_r, r_i, config=SelectConfig())


def choose_lenses(
    masks: CutMasks, draws: np.ndarray, *, lens_fraction: float, lens_bg_fraction: float
) -> np.ndarray:
    """Which catalog rows are lenses: an LRG with probability ``lens_fraction``, another BG
    with probability ``lens_bg_fraction``.

    Parameters
    ----------
    masks : CutMasks
        BG and LRG masks of the rows (:func:`lens_samples`).
    draws : ndarray, shape (n,)
        One uniform [0, 1) number per row; a row is a lens when its draw is below its
        sample's fraction, so the choice does not depend on the fractions' randomness.
    lens_fraction, lens_bg_fraction : float
        Fractions of LRGs and of the other BGs.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    return np.where(masks.lrg, draws < lens_fraction, masks.bg & (draws < lens_bg_fraction))


@dataclass(frozen=True)
class LensPlan:
    """Lensed sources to paint into a tile's images, and their truth.

    Attributes
    ----------
    x, y : ndarray of int, shape (k,), pixels
        Image column and row of each stamp's central pixel (the lens galaxy's nearest pixel).
    arcs : ndarray, shape (k, s, s), float32
        Unconvolved, pixel-integrated lensed sources (any unit; the fluxes set the scale).
    flux_r : ndarray, shape (k,), counts
        r-band flux of each lensed source, before clipping at the image border.
    source_g_r, source_r_i : ndarray, shape (k,), mag
        Colours of the sources.
    magnification : ndarray, shape (k,)
        Lensed flux inside the stamp over the source's flux (before the PSF).
    lens_peak_r : ndarray, shape (k,), counts
        r-band peak of the lens galaxy that the arc brightness is scaled to.
    params : dict of str to ndarray, shape (k,)
        The drawn parameters (:func:`lensdask.lensing.mocks.draw_lenses`); positions in
        arcsec relative to the lens galaxy's catalog position, ``x`` along the image's
        columns and ``y`` along its rows.
    """

    x: np.ndarray
    y: np.ndarray
    arcs: np.ndarray
    flux_r: np.ndarray
    source_g_r: np.ndarray
    source_r_i: np.ndarray
    magnification: np.ndarray
    lens_peak_r: np.ndarray
    params: dict[str, np.ndarray]

    def flux(self, band: str) -> np.ndarray:
        """Flux of each lensed source in ``band``, counts (from the source's colours)."""
        return self.flux_r * 10 ** (-0.4 * colour_offset(band, self.source_g_r, self.source_r_i))

    def columns(self, *, zeropoint: float) -> dict[str, np.ndarray]:
        """Truth columns: ``theta_E`` (arcsec), ``magnification``, ``arc_peak_ratio``,
        ``arc_flux_r`` (counts), ``arc_mag_r`` (AB mag at ``zeropoint``), ``lens_peak_r``
        (counts), ``source_g_r``, ``source_r_i`` (mag), then every other drawn parameter."""
        with np.errstate(divide="ignore"):
            arc_mag = zeropoint - 2.5 * np.log10(self.flux_r)
        leading = {
            "theta_E": self.params["theta_E"],
            "magnification": self.magnification,
            "arc_peak_ratio": self.params["arc_peak_ratio"],
            "arc_flux_r": self.flux_r,
            "arc_mag_r": arc_mag,
            "lens_peak_r": self.lens_peak_r,
            "source_g_r": self.source_g_r,
            "source_r_i": self.source_r_i,
        }
        return leading | {k: v for k, v in self.params.items() if k not in leading}


def plan_lenses(
    x: np.ndarray,
    y: np.ndarray,
    lens_peak_r: np.ndarray,
    rng: np.random.Generator,
    *,
    lenses: MockLensConfig,
    psf_r: np.ndarray,
    pixel_scale: float,
    source_g_r: tuple[float, float],
    source_r_i: tuple[float, float],
) -> LensPlan:
    """Draw and ray-trace the lensed sources of ``k`` lens galaxies.

    Parameters
    ----------
    x, y : ndarray, shape (k,), pixels
        Image positions of the lens galaxies (0-based column and row).
    lens_peak_r : ndarray, shape (k,), counts
        r-band peak of each lens galaxy.
    rng : numpy.random.Generator
        The tile's lens generator: lens parameters, source colours, then the
        Gaussian-random-field realisations, in that order.
    lenses : MockLensConfig
        Priors of the lens systems.
    psf_r : ndarray
        r-band PSF image at the image's pixel scale (the arc's peak is measured after it).
    pixel_scale : float, arcsec / pixel
    source_g_r, source_r_i : (float, float), mag
        Uniform ranges of the sources' colours.

    Returns
    -------
    LensPlan
    """
    k = np.asarray(x).size
    params = draw_lenses(k, rng, config=lenses)
    g_r = rng.uniform(*source_g_r, k)
    r_i = rng.uniform(*source_r_i, k)
    ix, iy = np.floor(np.asarray(x) + 0.5), np.floor(np.asarray(y) + 0.5)
    # The stamp is centred on the nearest pixel; the lens galaxy sits off it by (dx, dy).
    dx, dy = (np.asarray(x) - ix) * pixel_scale, (np.asarray(y) - iy) * pixel_scale
    shifted = {
        name: value + dx if name.endswith("_x") else value + dy if name.endswith("_y") else value
        for name, value in params.items()
    }
    grid = Grid(
        size=lens_stamp_size(lenses, pixel_scale=pixel_scale),
        pixel_scale=pixel_scale,
        supersample=SUPERSAMPLE,
    )
    arcs = np.zeros((k, grid.size, grid.size), dtype=np.float32)
    magnification = np.zeros(k)
    arc_peak = np.zeros(k)
    for start in range(0, k, BATCH):  # float64 images of one batch at a time
        part = slice(start, start + BATCH)
        images, magnification[part] = render_arcs(
            {name: value[part] for name, value in shifted.items()}, rng, grid=grid, psf=None
        )
        arcs[part] = images
        arc_peak[part] = convolve(images, psf_r).max(axis=(1, 2))
    scale = arc_scale(arc_peak, lens_peak_r, params["arc_peak_ratio"])
    return LensPlan(
        x=ix.astype(np.int64),
        y=iy.astype(np.int64),
        arcs=arcs,
        flux_r=scale * arcs.sum(axis=(1, 2), dtype=np.float64),
        source_g_r=g_r,
        source_r_i=r_i,
        magnification=magnification,
        lens_peak_r=np.asarray(lens_peak_r, dtype=np.float64),
        params=params,
    )
