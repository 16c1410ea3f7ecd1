"""Pure kernel of the cutout stage: sky positions to pixels, and stamps sliced in bulk.

The pixel values are those of ``astropy.nddata.Cutout2D(data, SkyCoord(ra, dec), (size,
size), wcs=wcs, mode="partial", fill_value=nan)``: positions go through the same
``skycoord_to_pixel(..., mode="all")`` (vectorised over all targets of a tile), and the
stamp's first pixel is ``ceil(position - size / 2)`` on each axis, as in
``astropy.nddata.overlap_slices``. Stamps that cross the image border are padded with NaN.
:func:`extract_stamps_by_rows` gives the same stamps reading a large image block of rows by
block, so that memory stays bounded whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable
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
    nonfinite_fraction: np.ndarray
    """Fraction of non-finite pixels in each stamp: NaN (border padding, NaNs of the image)
    and +-inf (pixels of the image), float32."""


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
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int = CUTOUT_SIZE,
    row_offset: int = 0,
) -> Stamps:
    """Slice ``size`` x ``size`` stamps centred on ``(x, y)`` from a 2-D image, in bulk.

    Stamps fully inside the image are gathered in one vectorised step from a sliding-window
    view (in row order); stamps that cross the border are filled with NaN where they leave
    the image.

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        The image, or the rows ``row_offset`` to ``row_offset + ny`` of it.
    x, y : ndarray, pixels
        Stamp centres, 0-based in the whole image (finite).
    size : int, pixels
        Side of the stamps (odd).
    row_offset : int, pixels
        Image row of ``data[0]``. Rows outside ``data`` count as outside the image, so
        ``data`` must hold every image row the stamps overlap.

    Returns
    -------
    Stamps
        Float32 stamps in the order of the positions, with edge flags and non-finite
        fractions.
    """
    x, y = _check_positions(x, y, size=size)
    out = np.full((x.size, size, size), np.nan, dtype=np.float32)
    edge = _gather(
        data,
        stamp_origin(x, size=size),
        stamp_origin(y, size=size) - row_offset,
        out,
        np.arange(x.size),
    )
    return Stamps(data=out, edge=edge, nonfinite_fraction=_nonfinite_fraction(out))


def _gather(
    data: np.ndarray, x0: np.ndarray, y0: np.ndarray, out: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Copy the stamps with first pixels ``(x0, y0)`` of ``data`` into ``out[index]`` (NaN
    already); returns the edge flags (stamps crossing the border of ``data``)."""
    size = out.shape[1]
    ny, nx = data.shape
    edge = (x0 < 0) | (y0 < 0) | (x0 + size > nx) | (y0 + size > ny)
    inner = np.flatnonzero(~edge)
    if inner.size and nx >= size and ny >= size:
        inner = inner[np.argsort(y0[inner], kind="stable")]  # sequential reads of the rows
        windows = np.lib.stride_tricks.sliding_window_view(data, (size, size))
        out[index[inner]] = windows[y0[inner], x0[inner]]
    for i in np.flatnonzero(edge):
        ys = slice(max(y0[i], 0), min(y0[i] + size, ny))
        xs = slice(max(x0[i], 0), min(x0[i] + size, nx))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[
                index[i], ys.start - y0[i] : ys.stop - y0[i], xs.start - x0[i] : xs.stop - x0[i]
            ] = data[ys, xs]
    return edge


def extract_stamps_by_rows(
    read_rows: Callable[[int, int], np.ndarray],
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int = CUTOUT_SIZE,
    block_rows: int = 1024,
) -> Stamps:
    """The stamps of :func:`extract_stamps` on a whole image, read block of rows by block.

    Stamps are grouped by the block of ``block_rows`` rows their first row falls in; each
    group reads the rows it overlaps through ``read_rows`` (e.g. ``hdu.section[a:b]``), so
    at most ``block_rows + size - 1`` image rows are in memory at once, whatever the image
    size, and blocks without stamps are never read.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(start, stop)`` returns image rows ``start:stop`` (all columns).
    shape : (int, int)
        Shape (ny, nx) of the whole image.
    x, y : ndarray, pixels
        Stamp centres, 0-based (finite).
    size : int, pixels
        Side of the stamps (odd).
    block_rows : int, pixels
        Rows per block.

    Returns
    -------
    Stamps
        Identical to ``extract_stamps(image, x, y, size=size)``.
    """
    x, y = _check_positions(x, y, size=size)
    if block_rows < 1:
        raise ValueError(f"block_rows: must be >= 1, got {block_rows}")
    ny = shape[0]
    out = np.full((x.size, size, size), np.nan, dtype=np.float32)
    edge = np.ones(x.size, dtype=bool)  # a stamp that misses every row stays NaN: an edge
    y0 = stamp_origin(y, size=size)
    order = np.argsort(y0, kind="stable")
    block = np.clip(y0[order], 0, None) // block_rows
    for group in np.split(order, np.flatnonzero(np.diff(block)) + 1):
        if not group.size:
            continue
        start = max(int(y0[group].min()), 0)
        stop = min(int(y0[group].max()) + size, ny)
        if start >= stop:
            continue
        x0 = stamp_origin(x[group], size=size)
        edge[group] = _gather(read_rows(start, stop), x0, y0[group] - start, out, group)
    return Stamps(data=out, edge=edge, nonfinite_fraction=_nonfinite_fraction(out))


@dataclass(frozen=True)
class PixelQuality:
    """How much of each stamp of one band is unusable."""

    zero_weight_fraction: np.ndarray
    """Fraction of pixels with weight <= 0 (no data), float32; NaN without a weight map."""
    flagged_fraction: np.ndarray
    """Fraction of pixels with any of the counted flag bits set, float32; NaN without a
    flag map."""
    bad_fraction: np.ndarray
    """Fraction of pixels that are non-finite, have no positive weight, or are flagged (each
    pixel counted once), float32; equals the non-finite fraction without maps."""


def pixel_quality(
    image: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    flag: np.ndarray | None = None,
    flag_bits: int,
) -> PixelQuality:
    """Bad-pixel fractions of stamps from their weight and flag stamps (pure).

    Parameters
    ----------
    image : ndarray, shape (N, size, size)
        The image stamps (NaN outside the image).
    weight : ndarray, shape (N, size, size), optional
        The weight-map stamps at the same pixels (inverse variance; NaN outside the image).
    flag : ndarray, shape (N, size, size), optional
        The flag-map stamps at the same pixels (integer bit values, as float32 with NaN
        outside the image, or any integer type).
    flag_bits : int
        The flag bits that make a pixel bad (0: none).

    Returns
    -------
    PixelQuality
    """
    image = np.asarray(image)
    bad = ~np.isfinite(image)
    n = image.shape[0]
    zero_weight = np.full(n, np.nan, dtype=np.float32)
    flagged = np.full(n, np.nan, dtype=np.float32)
    if weight is not None:
        weight = np.asarray(weight)
        with np.errstate(invalid="ignore"):
            no_weight = weight <= 0
        zero_weight = _fraction(no_weight)
        bad |= no_weight | ~np.isfinite(weight)
    if flag is not None:
        flag = np.asarray(flag)
        if flag.dtype.kind == "f":
            flag = np.where(np.isfinite(flag), flag, 0).astype(np.int64)
        hit = (flag.astype(np.int64) & int(flag_bits)) != 0
        flagged = _fraction(hit)
        bad |= hit
    return PixelQuality(
        zero_weight_fraction=zero_weight, flagged_fraction=flagged, bad_fraction=_fraction(bad)
    )


def _fraction(mask: np.ndarray) -> np.ndarray:
    """Fraction of True pixels of each stamp (counted exactly, then float32)."""
    return mask.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


def _check_positions(x: np.ndarray, y: np.ndarray, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    if size % 2 != 1 or size < 1:
        raise ValueError(f"size: must be a positive odd number of pixels, got {size}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x, y: positions must be finite")
    return x, y


def _nonfinite_fraction(stamps: np.ndarray) -> np.ndarray:
    """Fraction of NaN and +-inf pixels of each stamp (counted exactly, then float32)."""
    from lensdask.normalise import nonfinite_fraction

    return nonfinite_fraction(stamps)
