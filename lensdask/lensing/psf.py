"""The PSF kernel and the sub-pixel sampling that pixel-integrated profiles are drawn on.

The lensed arcs of the training set and the mock survey's images are convolved with the
same Moffat PSF (:func:`moffat_psf`); the mock survey's galaxies are integrated over pixels
on the same sub-pixel grids (:func:`subpixel_grid`, :func:`bin_mean`).
"""

from __future__ import annotations

import math
import operator

import numpy as np

from lensdask.lensing.profiles import check_positive


def moffat_psf(
    fwhm: float,
    *,
    pixel_scale: float = 0.2,
    beta: float = 3.0,
    size: int | None = None,
    supersample: int = 5,
) -> np.ndarray:
    """Pixel-integrated, normalised image of a circular Moffat PSF.

    The profile is ``(1 + (r / alpha)**2) ** -beta`` with ``alpha`` set by the FWHM. Each
    pixel is the mean of the profile on a ``supersample`` x ``supersample`` sub-grid.

    Parameters
    ----------
    fwhm : float, arcsec
        Full width at half maximum of the Moffat profile.
    pixel_scale : float, arcsec / pixel
        Size of a pixel.
    beta : float, dimensionless
        Moffat power-law index; must be > 1 so the profile has finite flux.
    size : int or None, pixels
        Side of the (square, odd) image. Default: the smallest odd size that reaches
        ``4 * fwhm`` from the centre, and at least 15.
    supersample : int
        Sub-samples per pixel along each axis.

    Returns
    -------
    ndarray, shape (size, size), float64, dimensionless
        The PSF centred on the central pixel, summing to 1.

    Raises
    ------
    ValueError
        If a parameter is out of range (naming it), or ``size`` is not a positive odd integer.
    """
    check_positive(fwhm=fwhm, pixel_scale=pixel_scale)
    fwhm, pixel_scale = float(fwhm), float(pixel_scale)
    beta = float(beta)
    if not (math.isfinite(beta) and beta > 1.0):
        raise ValueError(f"beta must be finite and > 1, got {beta!r}")
    supersample = require_int("supersample", supersample, minimum=1)
    fwhm_pix = fwhm / pixel_scale
    if size is None:
        # The tolerance keeps a radius of exactly 4 FWHM (up to float error) at that radius.
        size = max(2 * math.ceil(4.0 * fwhm_pix - 1e-9) + 1, 15)
    else:
        size = require_int("size", size, minimum=1, odd=True)
    alpha = fwhm_pix / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    grid = subpixel_grid(size, supersample) / alpha
    profile = (1.0 + grid[:, None] ** 2 + grid[None, :] ** 2) ** -beta
    image = bin_mean(profile, supersample)
    return image / image.sum()


def subpixel_grid(size: int, supersample: int) -> np.ndarray:
    """Sub-sample coordinates along one axis of a ``size``-pixel stamp, pixels from its
    central pixel, pixel-major (the ``supersample`` sub-samples of pixel 0 first), length
    ``size * supersample``."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    return ((np.arange(size) - size // 2)[:, None] + offsets[None, :]).ravel()


def bin_mean(samples: np.ndarray, supersample: int) -> np.ndarray:
    """Average ``(..., my * ss, mx * ss)`` sub-samples (laid out as by
    :func:`subpixel_grid`) into ``(..., my, mx)`` pixels."""
    # Strided sums are several times faster than a reduction over a reshaped array.
    cols = samples[..., ::supersample].copy()
    for i in range(1, supersample):
        cols += samples[..., i::supersample]
    pixels = cols[..., ::supersample, :].copy()
    for i in range(1, supersample):
        pixels += cols[..., i::supersample, :]
    pixels /= supersample**2
    return pixels


def require_int(name: str, value: int, *, minimum: int, odd: bool = False) -> int:
    """``value`` as an int, checked to be at least ``minimum`` (and odd if asked).

    Raises
    ------
    ValueError
        Naming ``name``, if ``value`` is not an integer or out of range.
    """
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value}")
    return value
