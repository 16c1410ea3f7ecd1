"""The PSF of a tile image: from a header keyword, or measured on the tile's stars.

A pure kernel (no Dask, no files): :func:`measure_psf` takes an image in memory and
:func:`measure_tile_psf` reads only the rows around the stars through a ``read_rows``
callable (such as the cutout stage's row reader), so that a whole tile is never loaded.
Both cut a stamp around each star the way the cutouts are cut
(:mod:`lensdask.cutouts.extract`), keep the stars fit to measure the PSF on, fit each with
a pixel-integrated circular Moffat profile and combine the fits robustly
(:func:`psf_from_stamps`):

- selection: the stamp lies inside the image, has no non-finite or bad pixel (flag or
  weight maps), no other source lies within ``isolation`` pixels of the star, its
  signal-to-noise ratio is within ``snr_range`` and its peak below ``saturation``; the
  ``max_stars`` of highest signal-to-noise ratio are fitted;
- fit: ``flux (beta - 1) / (pi alpha^2) (1 + r^2 / alpha^2)^-beta`` plus a constant sky,
  averaged over a sub-pixel grid in each pixel (the image of a star is the PSF integrated
  over pixels, and at KiDS' 3.5-pixel FWHM fitting pixel centres instead would bias the
  FWHM by about 2%), by :func:`scipy.optimize.least_squares`; its FWHM is
  ``2 alpha sqrt(2^(1/beta) - 1)`` (:func:`moffat_fwhm`, astropy's ``Moffat2D.fwhm``);
- combination: fits that failed or ended on a bound are dropped, then those more than
  :data:`CLIP_SIGMA` robust standard deviations (1.4826 times the median absolute
  deviation, at least :data:`CLIP_FLOOR` of the median) from the median FWHM; the
  estimate is the median of the rest and its uncertainty the standard error of a median,
  ``1.2533 * 1.4826 * MAD / sqrt(n)``.

Too few stars is a result, not an error: a :class:`PsfEstimate` with ``n_stars`` 0 and NaN
FWHM, whose ``reason`` says which selection removed them.

Fitting with scipy rather than photutils (``PSFPhotometry``, ``EPSFBuilder``) keeps the
dependencies as they are: an effective PSF would still need a profile fitted to it for a
FWHM, and a dozen Moffat fits per tile is all the measurement needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensdask.cutouts.extract import Stamps, extract_stamps, extract_stamps_by_rows

STAMP_SIZE = 25
"""Side of the stamp fitted around each star, pixels (5 arcsec at 0.2 arcsec/pixel: about
7 FWHM at KiDS' r-band seeing)."""
CLIP_SIGMA = 3.0
"""Fits further than this many robust standard deviations from the median are dropped."""
CLIP_FLOOR = 0.01
"""Least robust standard deviation of the clipping, as a fraction of the median FWHM: the
MAD of a handful of very bright stars can be so small that good fits would be clipped."""
MAD_TO_SIGMA = 1.4826
"""Standard deviation of a normal distribution per median absolute deviation."""
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2.0)
"""Standard error of the median of n normal values, in units of sigma / sqrt(n)."""
BETA_RANGE = (1.1, 20.0)
"""Bounds of the fitted Moffat beta, dimensionless (beta > 1 for a finite flux)."""


class PsfError(ValueError):
    """A PSF cannot be read from a header (missing or bad keyword)."""


@dataclass(frozen=True)
class PsfEstimate:
    """The PSF of one image: its FWHM with an uncertainty, and how it was found."""

    fwhm_arcsec: float
    """FWHM of the PSF, arcsec; NaN where it could not be measured (see ``reason``)."""
    fwhm_err_arcsec: float
    """Uncertainty (one sigma) of ``fwhm_arcsec``, arcsec; NaN from a header."""
    n_stars: int
    """Stars whose fits were combined; 0 from a header or when none was usable."""
    beta: float
    """Median Moffat beta of the fits, dimensionless; NaN from a header."""
    method: str
    """``moffat`` (fitted on stars) or ``header:<KEYWORD>``."""
    reason: str = ""
    """Why ``fwhm_arcsec`` is NaN (empty when it is not)."""


def moffat_fwhm(alpha: float | np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """FWHM of a Moffat profile ``(1 + r^2 / alpha^2)^-beta``: ``2 alpha sqrt(2^(1/beta) - 1)``.

    Parameters
    ----------
    alpha : float or ndarray, any length unit
        Core width (astropy's ``Moffat2D.gamma``).
    beta : float or ndarray, dimensionless
        Power index (astropy's ``Moffat2D.alpha``).

    Returns
    -------
    ndarray, float64, the unit of ``alpha``
    """
    beta = np.asarray(beta, dtype=np.float64)
    return 2.0 * np.asarray(alpha, dtype=np.float64) * np.sqrt(2.0 ** (1.0 / beta) - 1.0)


def moffat_stamps(
    params: np.ndarray, *, size: int, supersample: int = 5, beta: float | None = None
) -> np.ndarray:
    """Pixel-integrated circular Moffat profiles plus a constant sky, on square stamps.

    Parameters
    ----------
    params : ndarray, shape (k, 6), or (k, 5) with ``beta`` given
        Per profile: ``dx, dy`` (centre, pixels from the stamp's central pixel, +x along
        axis 1), ``flux`` (counts), ``alpha`` (pixels), ``beta`` unless given, ``sky``
        (counts per pixel).
    size : int, pixels
        Side of the stamps (odd).
    supersample : int
        Sub-samples per pixel along each axis.
    beta : float, optional
        One beta for every profile, taken out of ``params``.

    Returns
    -------
    ndarray, shape (k, size, size), float64, counts
    """
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if beta is not None:
        params = np.insert(params, 4, beta, axis=1)
    dx, dy, flux, alpha, power, sky = (params[:, i, None, None] for i in range(6))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = ((np.arange(size) - size // 2)[:, None] + offsets[None, :]).ravel()
    r2 = (grid[None, None, :] - dx) ** 2 + (grid[None, :, None] - dy) ** 2
    profile = (power - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** -power
    pixels = profile.reshape(-1, size, supersample, size, supersample).mean(axis=(2, 4))
    return flux * pixels + sky


@dataclass(frozen=True)
class _Fit:
    fwhm: float
    beta: float
    ok: bool


def fit_star(
    stamp: np.ndarray, *, sky: float, supersample: int = 5, beta: float | None = None
) -> _Fit:
    """Fit one star's stamp with :func:`moffat_stamps` (least squares, equal weights).

    Returns the FWHM (pixels) and beta of the fit, and whether it converged inside the
    bounds (centre within 2 pixels of the stamp's centre, alpha in (0.2, size) pixels,
    beta inside :data:`BETA_RANGE`).
    """
    from scipy.optimize import least_squares

    size = stamp.shape[0]
    data = stamp.astype(np.float64)
    flux = float(np.sum(data - sky))
    peak = float(data[size // 2, size // 2] - sky)
    if not (flux > 0 and peak > 0):
        return _Fit(math.nan, math.nan, False)
    # Gaussian of the same flux and peak: a start close enough for the Moffat fit.
    fwhm0 = min(2.3548 * math.sqrt(flux / (2.0 * math.pi * peak)), size / 2.0)
    beta0 = 3.0 if beta is None else beta
    alpha0 = fwhm0 / float(moffat_fwhm(1.0, beta0))
    start = [0.0, 0.0, flux, alpha0, beta0, sky]
    lower = [-2.0, -2.0, 0.0, 0.2, BETA_RANGE[0], -np.inf]
    upper = [2.0, 2.0, np.inf, float(size), BETA_RANGE[1], np.inf]
    if beta is not None:
        del start[4], lower[4], upper[4]
    start[3] = float(np.clip(alpha0, 0.3, size - 0.1))

    def residuals(p: np.ndarray) -> np.ndarray:
        model = moffat_stamps(p[None, :], size=size, supersample=supersample, beta=beta)[0]
        return (model - data).ravel()

    result = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
    p = result.x
    power = float(p[4]) if beta is None else beta
    on_bound = np.any(result.active_mask != 0)
    ok = bool(result.success) and not on_bound and np.all(np.isfinite(p))
    return _Fit(float(moffat_fwhm(p[3], power)), power, ok)


def psf_from_stamps(
    stamps: Stamps,
    *,
    pixel_scale: float,
    bad: np.ndarray | None = None,
    isolated: np.ndarray | None = None,
    snr_range: tuple[float, float] = (50.0, math.inf),
    saturation: float | None = None,
    max_stars: int = 100,
    min_stars: int = 5,
    beta: float | None = None,
    supersample: int = 5,
) -> PsfEstimate:
    """Select, fit and combine the stars of one image (see the module docstring).

    Parameters
    ----------
    stamps : Stamps
        The stars' stamps (odd side), centred as the cutouts are
        (:func:`lensdask.cutouts.extract.extract_stamps`).
    pixel_scale : float, arcsec / pixel
    bad : ndarray of bool, shape of ``stamps.data``, optional
        Unusable pixels (flagged, zero weight); a stamp with any is not used.
    isolated : ndarray of bool, shape (n,), optional
        Stars without a neighbour close enough to disturb their fit (default: all).
    snr_range : (float, float)
        Signal-to-noise ratios of the stars fitted: the sky-subtracted flux within
        ``size // 4`` pixels of the centre over the noise of that sum (the sky and its
        noise from the stamp's outermost pixels, median and MAD).
    saturation : float, counts, optional
        Stars whose brightest pixel reaches it are not used.
    max_stars : int
        At most this many stars, those of highest signal-to-noise ratio, are fitted.
    min_stars : int
        Fewer good fits than this give no estimate (NaN, with the reason).
    beta : float, optional
        Fix the Moffat beta instead of fitting it.
    supersample : int
        Sub-samples per pixel of the fitted profile, along each axis.

    Returns
    -------
    PsfEstimate
    """
    data = stamps.data
    n = data.shape[0]
    if pixel_scale <= 0 or not math.isfinite(pixel_scale):
        raise ValueError(f"pixel_scale must be finite and > 0, got {pixel_scale!r}")
    if max_stars < 1 or min_stars < 1:
        raise ValueError(f"max_stars and min_stars must be >= 1, got {max_stars}, {min_stars}")
    if n == 0:
        return _no_estimate("no stars given")
    clean = ~stamps.edge & np.all(np.isfinite(data), axis=(1, 2))
    if bad is not None:
        clean &= ~np.any(np.asarray(bad, dtype=bool), axis=(1, 2))
    keep = clean & (np.ones(n, dtype=bool) if isolated is None else np.asarray(isolated))
    sky, snr, peak = _sky_and_snr(data)
    bright = (snr >= snr_range[0]) & (snr <= snr_range[1])
    if saturation is not None:
        bright &= peak + sky < saturation
    for count, why in (
        (clean.sum(), "inside the image with clean pixels"),
        (keep.sum(), "isolated"),
        ((keep & bright).sum(), f"with a signal-to-noise ratio in {snr_range}, unsaturated"),
    ):
        if count == 0:
            return _no_estimate(f"none of {n} stars is {why}")
    chosen = np.flatnonzero(keep & bright)
    chosen = chosen[np.argsort(-snr[chosen], kind="stable")[:max_stars]]
    fits = [fit_star(data[i], sky=sky[i], supersample=supersample, beta=beta) for i in chosen]
    fwhm = np.array([f.fwhm for f in fits if f.ok])
    betas = np.array([f.beta for f in fits if f.ok])
    good = np.isfinite(fwhm)
    if good.sum():
        centre = np.median(fwhm[good])
        spread = MAD_TO_SIGMA * np.median(np.abs(fwhm[good] - centre))
        good &= np.abs(fwhm - centre) <= CLIP_SIGMA * max(spread, CLIP_FLOOR * centre)
    if good.sum() < min_stars:
        return _no_estimate(
            f"{int(good.sum())} good fits of {chosen.size} stars fitted, fewer than {min_stars}"
        )
    fwhm, betas = fwhm[good], betas[good]
    centre = float(np.median(fwhm))
    mad = float(np.median(np.abs(fwhm - centre)))
    err = MEDIAN_EFFICIENCY * MAD_TO_SIGMA * mad / math.sqrt(fwhm.size)
    return PsfEstimate(
        fwhm_arcsec=centre * pixel_scale,
        fwhm_err_arcsec=err * pixel_scale,
        n_stars=int(fwhm.size),
        beta=float(np.median(betas)),
        method="moffat",
    )


def measure_psf(
    image: np.ndarray,
    *,
    stars_xy: np.ndarray,
    pixel_scale: float,
    bad: np.ndarray | None = None,
    neighbours_xy: np.ndarray | None = None,
    isolation: float = 12.0,
    stamp_size: int = STAMP_SIZE,
    **options: Any,
) -> PsfEstimate:
    """The PSF of an image in memory, measured on its stars.

    Parameters
    ----------
    image : ndarray, shape (ny, nx), counts
        Sky-subtracted image.
    stars_xy : ndarray, shape (n, 2), pixels
        0-based ``(x, y)`` of the stars (e.g. the catalog's ``SG2DPHOT`` stars through the
        image's WCS), pixel centres at integers.
    pixel_scale : float, arcsec / pixel
    bad : ndarray of bool, shape (ny, nx), optional
        Unusable pixels (flag map bits, zero weight).
    neighbours_xy : ndarray, shape (m, 2), pixels, optional
        Every source that may disturb a star (the whole catalog); default: the stars.
    isolation : float, pixels
        A star with another source closer than this is not used.
    stamp_size : int, pixels
        Side of the fitted stamps (odd).
    **options
        Passed to :func:`psf_from_stamps` (``snr_range``, ``saturation``, ``max_stars``,
        ``min_stars``, ``beta``, ``supersample``).

    Returns
    -------
    PsfEstimate
    """
    x, y = _star_positions(stars_xy)
    image = np.asarray(image)
    stamps = extract_stamps(image, x, y, size=stamp_size)
    bad_stamps = None if bad is None else _bad_stamps(extract_stamps(bad, x, y, size=stamp_size))
    isolated = _isolated(x, y, neighbours_xy, isolation=isolation)
    return psf_from_stamps(
        stamps, pixel_scale=pixel_scale, bad=bad_stamps, isolated=isolated, **options
    )


def measure_tile_psf(
    read_rows: Callable[[int, int], np.ndarray],
    shape: tuple[int, int],
    *,
    stars_xy: np.ndarray,
    pixel_scale: float,
    read_bad_rows: Callable[[int, int], np.ndarray] | None = None,
    neighbours_xy: np.ndarray | None = None,
    isolation: float = 12.0,
    stamp_size: int = STAMP_SIZE,
    block_rows: int = 64,
    **options: Any,
) -> PsfEstimate:
    """The PSF of a tile image read on demand: only the rows around the stars are read.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(start, stop)`` returns image rows ``start:stop`` (all columns), e.g. the
        cutout stage's row reader of a FITS HDU.
    shape : (int, int)
        Shape (ny, nx) of the whole image.
    read_bad_rows : callable, optional
        The same for a boolean map of unusable pixels (True: bad).
    block_rows : int
        Stars whose stamps start in the same block of this many rows share one read
        (:func:`lensdask.cutouts.extract.extract_stamps_by_rows`); small, so that the rows
        between sparse stars are not read (a few hundred stars in a tile of 18000 rows).
    stars_xy, pixel_scale, neighbours_xy, isolation, stamp_size, **options
        As for :func:`measure_psf`.

    Returns
    -------
    PsfEstimate
    """
    x, y = _star_positions(stars_xy)
    stamps = extract_stamps_by_rows(read_rows, shape, x, y, size=stamp_size, block_rows=block_rows)
    bad = None
    if read_bad_rows is not None:
        bad = _bad_stamps(
            extract_stamps_by_rows(
                read_bad_rows, shape, x, y, size=stamp_size, block_rows=block_rows
            )
        )
    isolated = _isolated(x, y, neighbours_xy, isolation=isolation)
    return psf_from_stamps(stamps, pixel_scale=pixel_scale, bad=bad, isolated=isolated, **options)


def psf_from_header(header: Mapping[str, Any], keyword: str, *, where: str = "") -> PsfEstimate:
    """The PSF FWHM an image's header records under ``keyword`` (arcsec, e.g. ``PSF_FWHM``
    of ESO's Phase 3 images, ``SEEING``).

    Parameters
    ----------
    header : astropy.io.fits.Header or mapping
    keyword : str
    where : str
        The file (and HDU) the header is from, for messages.

    Returns
    -------
    PsfEstimate
        ``method`` ``header:<KEYWORD>``; no uncertainty, stars or beta.

    Raises
    ------
    PsfError
        The header has no ``keyword``, or its value is not a number > 0 (the message names
        the file, the keyword and the value).
    """
    place = f"{where}: " if where else ""
    if keyword not in header:
        present = [key for key in header if "PSF" in str(key) or "SEEING" in str(key)]
        hint = f" (it has {', '.join(present)})" if present else ""
        raise PsfError(f"{place}the header has no {keyword} keyword for the PSF FWHM{hint}")
    value = header[keyword]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PsfError(f"{place}{keyword} = {value!r} is not a number of arcsec")
    if not (math.isfinite(value) and value > 0):
        raise PsfError(f"{place}{keyword} = {value!r}: a PSF FWHM must be finite and > 0 arcsec")
    return PsfEstimate(
        fwhm_arcsec=float(value),
        fwhm_err_arcsec=math.nan,
        n_stars=0,
        beta=math.nan,
        method=f"header:{keyword}",
    )


def _no_estimate(reason: str) -> PsfEstimate:
    return PsfEstimate(math.nan, math.nan, 0, math.nan, "moffat", reason)


def _star_positions(stars_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(stars_xy, dtype=np.float64)
    if xy.size == 0:
        return np.empty(0), np.empty(0)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"stars_xy must have shape (n, 2), got {xy.shape}")
    if not np.all(np.isfinite(xy)):
        row = int(np.flatnonzero(~np.all(np.isfinite(xy), axis=1))[0])
        raise ValueError(f"stars_xy must be finite; star {row} is at {xy[row].tolist()}")
    return xy[:, 0], xy[:, 1]


def _bad_stamps(stamps: Stamps) -> np.ndarray:
    """Bad pixels of the stamps of a boolean map: set, or outside the map."""
    return ~(stamps.data == 0)


def _isolated(
    x: np.ndarray, y: np.ndarray, neighbours_xy: np.ndarray | None, *, isolation: float
) -> np.ndarray:
    """Stars with no other source within ``isolation`` pixels (a source within 0.5 pixel of
    a star is the star itself)."""
    from scipy.spatial import cKDTree

    if x.size == 0:
        return np.zeros(0, dtype=bool)
    stars = np.column_stack([x, y])
    others = stars if neighbours_xy is None else np.asarray(neighbours_xy, dtype=np.float64)
    if others.ndim != 2 or others.shape[1] != 2:
        raise ValueError(f"neighbours_xy must have shape (m, 2), got {others.shape}")
    if others.shape[0] < 2:
        return np.ones(x.size, dtype=bool)
    distance, _ = cKDTree(others).query(stars, k=2)
    nearest = np.where(distance[:, 0] < 0.5, distance[:, 1], distance[:, 0])
    return nearest >= isolation


def _sky_and_snr(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stamp: the sky (median of the outermost pixels), the signal-to-noise ratio of
    the flux within ``size // 4`` pixels of the centre, and the peak above the sky."""
    size = data.shape[-1]
    border = np.concatenate(
        [data[:, 0, :], data[:, -1, :], data[:, 1:-1, 0], data[:, 1:-1, -1]], axis=1
    )
    with np.errstate(invalid="ignore"):
        sky = np.median(border, axis=1)
        noise = MAD_TO_SIGMA * np.median(np.abs(border - sky[:, None]), axis=1)
        offsets = np.arange(size) - size // 2
        aperture = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= (size // 4) ** 2
        flux = np.sum((data - sky[:, None, None])[:, aperture], axis=1)
        snr = flux / (noise * math.sqrt(aperture.sum()))
        peak = np.max(data, axis=(1, 2)) - sky
    return sky, np.nan_to_num(snr, nan=-np.inf), peak
