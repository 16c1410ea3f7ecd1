"""Stamps resampled to a model's pixel scale: the kernel of ``score.resample``.

A model is made for stamps of one pixel scale (its card's ``pixel_scale``, arcsec/px); a
stamp of another scale shows every galaxy larger or smaller than any the network saw.
:func:`resample_stamps` resamples stamps onto the model's scale with
:func:`reproject.reproject_adaptive` (DeForest 2004: anti-aliased, Gaussian kernel) and
``conserve_flux=True``, so the sum of a source's pixels is kept (counts per pixel stay
counts per pixel). The stamps are small aligned rasters cut from one tile image, so each
is given a local tangent-plane WCS of its own scale, centred on its centre pixel, and the
output the same projection at the model's scale and input size: the output's centre pixel
is the stamp's (where the cutouts put the target, within half an input pixel) and the
stamp keeps its orientation. All the stamps of a chunk share that pair of WCSs, so
reproject computes the transformation once per chunk and resamples every stamp with it.

Missing data stays missing: an output pixel whose kernel touches a NaN (or +-inf) input
pixel is NaN, and one whose kernel lies mostly outside the stamp is NaN.

Pure NumPy and reproject: no I/O, no Dask. reproject comes with the ``resample`` extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCALE_TOLERANCE = 0.01
"""Relative difference between a stamp's pixel scale and a model's that is taken as the
same scale (1%: 1 px in 100 at the edge of a 101-pixel stamp)."""

METHOD = "reproject_adaptive(kernel=gaussian, conserve_flux=True)"
"""The resampling, as recorded in the lineage of the tiles scored with it."""


def scale_differs(stamp_scale: float, model_scale: float) -> bool:
    """Whether stamps of ``stamp_scale`` differ from a model's ``model_scale`` (both
    arcsec/px) by more than :data:`SCALE_TOLERANCE`."""
    return abs(float(stamp_scale) / float(model_scale) - 1.0) > SCALE_TOLERANCE


def stamp_wcs(pixel_scale: float, size: int) -> Any:
    """A local tangent-plane WCS of a ``size`` x ``size`` stamp of square pixels of
    ``pixel_scale`` (arcsec/px), its centre pixel at the tangent point.

    Returns
    -------
    astropy.wcs.WCS
    """
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    # The pixel-to-pixel mapping is the same for any tangent point, but reproject's result
    # is not to the last bit: output pixels that map exactly onto the edge of the kernel's
    # window take or leave those samples by rounding. (180, 0) is far from the wrap of RA.
    wcs.wcs.crval = [180.0, 0.0]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]  # FITS pixels count from 1
    wcs.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def resample_stamps(
    stamps: np.ndarray, *, from_scale: float, to_scale: float, size: int
) -> np.ndarray:
    """Resample stamps to another pixel scale, conserving flux, centred as they were.

    Parameters
    ----------
    stamps : ndarray, shape (N, H, W)
        Square stamps (H == W) in a linear unit per pixel (counts); NaN where no data.
    from_scale : float, arcsec/px
        Pixel scale of ``stamps``.
    to_scale : float, arcsec/px
        Pixel scale of the result (the model's).
    size : int, pixels
        Side of the result (the model's input).

    Returns
    -------
    ndarray, shape (N, size, size), float32
        Each stamp resampled; the sum over a source is the input's to the accuracy of the
        Gaussian kernel (within 0.5% for a source of sigma 0.4" from 0.17-0.3"/px to 0.2").

    Raises
    ------
    ImportError
        If reproject is missing: it comes with the ``resample`` extra.
    """
    try:
        from reproject import reproject_adaptive
    except ImportError as err:
        raise ImportError(
            "score.resample needs reproject: pip install 'lensdask[resample]'"
        ) from err

    stamps = np.asarray(stamps)
    if stamps.ndim != 3 or stamps.shape[1] != stamps.shape[2]:
        raise ValueError(f"stamps: expected shape (N, H, H), got {stamps.shape}")
    if not (from_scale > 0 and to_scale > 0):
        raise ValueError(f"pixel scales must be > 0, got {from_scale} and {to_scale}")
    n = stamps.shape[0]
    if n == 0:
        return np.empty((0, size, size), dtype=np.float32)
    # reproject takes NaN for missing data, but would spread +-inf into its neighbours
    data = np.where(np.isfinite(stamps), stamps, np.nan).astype(np.float64, copy=False)
    result = reproject_adaptive(
        (data, stamp_wcs(from_scale, stamps.shape[1])),
        stamp_wcs(to_scale, size),
        shape_out=(n, size, size),
        conserve_flux=True,
        kernel="gaussian",
        boundary_mode="ignore_threshold",
        bad_value_mode="strict",
        return_footprint=False,
    )
    return np.asarray(result, dtype=np.float32)
