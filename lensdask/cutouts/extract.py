"""Pure kernel of the cutout stage: sky positions to pixels, and stamps sliced in bulk.

The pixel values are those of ``astropy.nddata.Cutout2D(data, SkyCoord(ra, dec), (size,
size), wcs=wcs, mode="partial", fill_value=nan)``: positions go through the same
``skycoord_to_pixel(..., mode="all")`` (vectorised over all targets of a tile), and the
stamp's first pixel is ``ceil(position - size / 2)`` on each axis, as in
``astropy.nddata.overlap_slices``. Stamps that cross the image border are padded with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUTOUT_SIZE = 101
"""Side of a cutout, pixels (20 arcsec at KiDS' 0.2 arcsec/pixel)."""


def sky_to_pixel(ra: np.ndarray, dec: np.ndarray, wcs) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions of sky positions, exactly as :class:`~astropy.nddata.Cutout2D`.

    Parameters
    ----------
    ra, dec : ndarray, deg
        ICRS positions.
    wcs : astropy.wcs.WCS
        Celestial WCS of the image.

    Returns
    -------
    x, y : ndarray, pixels
        Column and row positions (pixel centres at integers).
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import skycoord_to_pixel

    coords = SkyCoord(
        np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64), unit="deg"
    )
    x, y = skycoord_to_pixel(coords, wcs, mode="all")
    return np.atleast_1d(x), np.atleast_1d(y)


@dataclass(frozen=True)
class Stamps:
    """Cutouts of one image and what is known about each."""

    data: np.ndarray
    """Stamps, shape (N, size, size), float32; NaN outside the image."""
    edge: np.ndarray
    """True where the stamp crosses the image border (partly NaN)."""
    nan_fraction: np.ndarray
    """Fraction of NaN pixels in each stamp (border padding and NaNs of the image)."""


def stamp_origin(position: np.ndarray, *, size: int = CUTOUT_SIZE) -> np.ndarray:
    """Index of a stamp's first pixel along one axis: ``ceil(position - size / 2)``."""
    return np.ceil(np.asarray(position, dtype=np.float64) - size / 2.0).astype(np.int64)


def centre_inside(
    x: np.ndarray, y: np.ndarray, shape: tuple[int, int], *, size: int = CUTOUT_SIZE
) -> np.ndarray:
    """True where the central pixel of the stamp lies inside an image of ``shape`` (ny, nx)."""
    half = size // 2
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(finite, x, 0.0), np.where(finite, y, 0.0)  # no NaN-to-int cast warning
    cx = stamp_origin(x, size=size) + half
    cy = stamp_origin(y, size=size) + half
    return finite & (cx >= 0) & (cx < shape[1]) & (cy >= 0) & (cy < shape[0])


def extract_stamps(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, *, size: int = CUTOUT_SIZE
) -> Stamps:
    """Slice ``size`` x ``size`` stamps centred on ``(x, y)`` from a 2-D image, in bulk.

    Stamps fully inside the image are gathered in one vectorised step from a sliding-window
    view (which reads only the needed rows of a memory-mapped image, in row order); stamps
    that cross the border are filled with NaN where they leave the image.

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        The image (a NumPy array or a memory map).
    x, y : ndarray, pixels
        Stamp centres, 0-based (finite).
    size : int, pixels
        Side of the stamps (odd).

    Returns
    -------
    Stamps
        Float32 stamps in the order of the positions, with edge flags and NaN fractions.
    """
    if size % 2 != 1 or size < 1:
        raise ValueError(f"size: must be a positive odd number of pixels, got {size}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x, y: positions must be finite")
    ny, nx = data.shape
    x0, y0 = stamp_origin(x, size=size), stamp_origin(y, size=size)
    edge = (x0 < 0) | (y0 < 0) | (x0 + size > nx) | (y0 + size > ny)
    out = np.full((x.size, size, size), np.nan, dtype=np.float32)
    inner = np.flatnonzero(~edge)
    if inner.size and nx >= size and ny >= size:
        inner = inner[np.argsort(y0[inner], kind="stable")]  # sequential reads of the rows
        windows = np.lib.stride_tricks.sliding_window_view(data, (size, size))
        out[inner] = windows[y0[inner], x0[inner]]
    for i in np.flatnonzero(edge):
        ys = slice(max(y0[i], 0), min(y0[i] + size, ny))
        xs = slice(max(x0[i], 0), min(x0[i] + size, nx))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[i, ys.start - y0[i] : ys.stop - y0[i], xs.start - x0[i] : xs.stop - x0[i]] = data[
                ys, xs
            ]
    nan_fraction = np.isnan(out).mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    return Stamps(data=out, edge=edge, nan_fraction=nan_fraction)
