"""Seeing of the mock survey's tiles: the PSF FWHM of each tile in each band (pure, no I/O).

KiDS observes each tile in each band in one visit, so the seeing changes from tile to tile
and from band to band. KiDS DR4 (Kuijken et al. 2019, A&A 625, A2) gives the medians that
:data:`lensdask.config.KIDS_BANDS` holds (r 0.70", g 0.86", i 0.80", u 1.0"); r is observed
in the best conditions, nearly all its tiles between 0.5" and 0.9", while i, observed in
bright time, spreads wider. With ``vary_seeing`` each tile's FWHM in a band is drawn from a
log-normal distribution whose median is the band's ``seeing`` and whose width is
:data:`SEEING_SCATTER`, clipped to :data:`SEEING_CLIP` widths on either side. The widths
are chosen to give those ranges (r: 0.55"-0.89" at two widths, the clip at 0.51"-0.95"); they
are not fits to the published distributions. Without it, every tile has the band's
``seeing``, as before per-tile seeing existed.

Draws come from the tile's own seed stream (:func:`lensdask.mock.tiles.tile_seeds`), one
number per band in the order of ``config.bands``, so a survey is the same for a given seed
and the sources and pixels of the other streams do not move.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import numpy as np

from lensdask.config import BandSpec, MockSurveyConfig
from lensdask.mock.tiles import Tile, tile_seeds

SEEING_SCATTER: Mapping[str, float] = types.MappingProxyType(
    {"u": 0.13, "g": 0.13, "r": 0.12, "i": 0.20}
)
"""Standard deviation of ln(FWHM) from tile to tile, per KiDS band, dimensionless."""
DEFAULT_SCATTER = 0.15
"""Standard deviation of ln(FWHM) of a band not in :data:`SEEING_SCATTER`."""
SEEING_CLIP = 2.5
"""Drawn values are clipped to the median times ``exp(+-SEEING_CLIP * scatter)``."""


def draw_seeing(
    bands: tuple[BandSpec, ...], rng: np.random.Generator, *, vary: bool
) -> dict[str, float]:
    """The seeing of one tile in each band.

    Parameters
    ----------
    bands : tuple of BandSpec
        The bands; each one's ``seeing`` is the median FWHM, arcsec.
    rng : numpy.random.Generator
        The tile's seeing generator; one normal deviate is drawn per band, in order, even
        when ``vary`` is false.
    vary : bool
        Draw from the distribution of the module docstring; false: each band's ``seeing``.

    Returns
    -------
    dict of str to float
        FWHM of the Moffat PSF by band name, arcsec.
    """
    deviates = rng.standard_normal(len(bands))
    seeing = {}
    for band, deviate in zip(bands, deviates, strict=True):
        scatter = SEEING_SCATTER.get(band.name, DEFAULT_SCATTER) if vary else 0.0
        offset = float(np.clip(deviate, -SEEING_CLIP, SEEING_CLIP)) * scatter
        seeing[band.name] = band.seeing * float(np.exp(offset))
    return seeing


def tile_seeing(tile: Tile, *, config: MockSurveyConfig) -> dict[str, float]:
    """The seeing of ``tile`` in each band of ``config`` (FWHM by band name, arcsec),
    drawn from the tile's seeing stream (:func:`draw_seeing`, ``config.vary_seeing``)."""
    rng = np.random.default_rng(tile_seeds(config, tile)[4])
    return draw_seeing(config.bands, rng, vary=config.vary_seeing)
