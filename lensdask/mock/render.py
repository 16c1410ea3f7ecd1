"""Pure rendering kernel of the mock imaging survey: Sersic galaxies, stars, sky noise.

The PSF image comes from :func:`lensdask.lensing.psf.moffat_psf`.

Everything here works in pixel coordinates on plain NumPy arrays; the caller converts sky
positions to pixels (``world_to_pixel``: 0-based, pixel centres at integers, ``x`` is the
column index, axis 1, and ``y`` the row index, axis 0) and magnitudes to counts.

:func:`render_sources` draws every source on a square stamp centred on its nearest pixel.
A galaxy is an elliptical Sersic profile, centred on that pixel and averaged over a
sub-pixel grid; a star is a delta function. Either is shifted to its sub-pixel position
by a Fourier phase ramp (so flux and centroid are exact) and convolved with the PSF image
in the same product of spectra. Stamp sizes are quantised to a few bins; sources of one
bin are rendered as vectorised stacks in chunks of bounded memory and added into the
image with :func:`numpy.add.at`. Stamps are normalised to the source's flux before
clipping at the image border.

The same stamp machinery serves two more kernels: :func:`add_profiles` adds pre-rendered
profiles of any shape (the structures of :mod:`lensdask.mock.structure`, lensed arcs) into
an image, and :func:`source_peaks` measures the peak of each source as
:func:`render_sources` draws it, alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from scipy import fft, special

from lensdask.lensing.psf import bin_mean, require_int, subpixel_grid

logger = logging.getLogger(__name__)

STAMP_SIZES: tuple[int, ...] = (15, 21, 27, 35, 45, 63, 81, 105, 135, 189, 243, 315, 405, 567)
"""Stamp sizes (pixels) that sources are binned into; odd, with FFT-friendly factors 3, 5, 7.
Sizes at or above ``max_stamp`` are replaced by ``max_stamp`` itself."""

R_EFF_EXTENT = 5.0
"""A galaxy's profile is evaluated out to at least this many ``r_eff`` from its centre."""

MIN_MARGIN = 2
"""Least stamp half-width (pixels) beyond the PSF radius: room for a sub-pixel shift."""

CHUNK_ELEMENTS = 1 << 22
"""Most stamp pixels (times ``supersample**2`` for galaxies) rendered in one chunk."""


def sersic_b(n: np.ndarray | float) -> np.ndarray:
    """Sersic ``b_n``, such that the effective radius encloses half of the light.

    The exact solution of ``gamma(2n, b_n) = Gamma(2n) / 2``, i.e.
    ``scipy.special.gammaincinv(2 n, 0.5)``. The mock survey's galaxies use it so that a
    catalog's half-light radius is one (the usual approximation ``1.9992 n - 0.3271`` is
    3% low at n = 1/2). The lensed sources use lenstronomy's approximation instead,
    :func:`lensdask.lensing.profiles.sersic_b`, to match lenstronomy's profiles exactly.

    Parameters
    ----------
    n : float or ndarray, dimensionless
        Sersic index (> 0).

    Returns
    -------
    ndarray, float64, dimensionless
        ``b_n`` with the shape of ``n`` (0-d for a scalar).

    Raises
    ------
    ValueError
        If any ``n`` is not finite and > 0.
    """
    n = np.asarray(n, dtype=np.float64)
    if not np.all(np.isfinite(n) & (n > 0)):
        raise ValueError("n must be finite and > 0")
    return np.asarray(special.gammaincinv(2.0 * n, 0.5))


def render_sources(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    *,
    n_sersic: np.ndarray,
    r_eff: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    point: np.ndarray,
    psf: np.ndarray,
    supersample: int = 3,
    max_stamp: int = 255,
) -> np.ndarray:
    """Render stars and PSF-convolved Sersic galaxies onto a new image.

    Each source is drawn on a square stamp centred on its nearest pixel. The stamp reaches
    ``max(ceil(5 r_eff), 2)`` pixels (2 for a star) plus the PSF radius from that pixel, so
    the FFT convolution never wraps; its side is rounded up to one of :data:`STAMP_SIZES`
    and capped at ``max_stamp``. A galaxy is the Sersic profile
    ``exp(-b_n (r / r_eff)**(1/n))`` centred on the stamp's central pixel, averaged on a
    ``supersample`` x ``supersample`` sub-grid per pixel and truncated at the square it is
    evaluated on (the stamp less the PSF radius on each side). A star is a delta function.
    Each is shifted to its sub-pixel position by a Fourier phase ramp (band-limited
    interpolation, which keeps flux and centroid exact) and convolved with ``psf`` by FFT.
    Every stamp is scaled to sum to the source's flux and added to the image, clipped at
    its border.

    Parameters
    ----------
    shape : tuple of int, pixels
        ``(ny, nx)`` of the image.
    x, y : ndarray, shape (n,), pixels
        Source centres: 0-based column (``x``, axis 1) and row (``y``, axis 0) coordinates,
        with pixel centres at integers.
    flux : ndarray, shape (n,), counts
        Total flux of each source before clipping at the image border (>= 0).
    n_sersic : ndarray, shape (n,) or scalar, dimensionless
        Sersic index of galaxies (> 0).
    r_eff : ndarray, shape (n,) or scalar, pixels
        Half-light radius of galaxies along the major axis (> 0).
    q : ndarray, shape (n,) or scalar, dimensionless
        Axis ratio b/a of galaxies, in (0, 1].
    theta : ndarray, shape (n,) or scalar, radians
        Angle of the major axis from the +x axis towards +y.
    point : ndarray of bool, shape (n,) or scalar
        True for a point source (star). The Sersic parameters of stars are ignored and may
        be NaN.
    psf : ndarray, shape (p, p), dimensionless
        PSF image, square with odd ``p``, centred on its central pixel (normalised here).
        ``[[1.0]]`` renders galaxies without blur.
    supersample : int
        Sub-samples per pixel along each axis for galaxy profiles.
    max_stamp : int, pixels
        Largest stamp side; odd and at least ``p + 4``.

    Returns
    -------
    ndarray, shape (ny, nx), float32, counts
        The rendered image.

    Raises
    ------
    ValueError
        If an argument has the wrong shape or a value out of range (naming it).

    Notes
    -----
    Sources whose stamp lies entirely outside the image, or whose flux is 0, are skipped.
    The sub-pixel shift assumes the blurred source is well sampled: a galaxy much smaller
    than a pixel with a PSF of about a pixel or less (e.g. ``[[1.0]]``) shows ringing.
    Memory per chunk is bounded by :data:`CHUNK_ELEMENTS`, except that one source of the
    largest stamp always makes a chunk.
    """
    ny, nx = _check_shape(shape)
    sources = _check_sources(
        x, y, flux, n_sersic=n_sersic, r_eff=r_eff, q=q, theta=theta, point=point
    )
    psf, supersample, max_stamp = _check_stamping(psf, supersample, max_stamp)
    image = np.zeros((ny, nx), dtype=np.float32)
    n_chunks = n_rendered = 0
    for idx, stamps, x0, y0 in _source_stamps(
        sources, psf=psf, supersample=supersample, max_stamp=max_stamp, shape=(ny, nx)
    ):
        _scatter_add(image, stamps, x0, y0)
        n_chunks += 1
        n_rendered += idx.size
    logger.debug(
        "rendered %d of %d sources on a %dx%d image in %d chunks",
        n_rendered,
        sources.x.size,
        ny,
        nx,
        n_chunks,
    )
    return image


def source_peaks(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    *,
    n_sersic: np.ndarray,
    r_eff: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    point: np.ndarray,
    psf: np.ndarray,
    radius: int = 3,
    supersample: int = 3,
    max_stamp: int = 255,
) -> np.ndarray:
    """Peak of each source as :func:`render_sources` draws it, alone on a noise-free image.

    Each source is rendered on its own stamp exactly as :func:`render_sources` renders it
    (same sub-pixel shift, PSF and flux) and its peak is the largest pixel within
    ``radius`` pixels (along each axis) of the pixel nearest to its centre.

    Parameters
    ----------
    x, y, flux, n_sersic, r_eff, q, theta, point, psf, supersample, max_stamp
        As for :func:`render_sources` (pixels, counts, radians).
    radius : int, pixels
        Half-side of the square around the centre pixel searched for the peak (>= 0).

    Returns
    -------
    ndarray, shape (n,), float64, counts
        The peak pixel value of each source.

    Raises
    ------
    ValueError
        If an argument has the wrong shape or a value out of range (naming it).
    """
    sources = _check_sources(
        x, y, flux, n_sersic=n_sersic, r_eff=r_eff, q=q, theta=theta, point=point
    )
    psf, supersample, max_stamp = _check_stamping(psf, supersample, max_stamp)
    radius = require_int("radius", radius, minimum=0)
    peaks = np.zeros(sources.x.size)
    for idx, stamps, _, _ in _source_stamps(
        sources, psf=psf, supersample=supersample, max_stamp=max_stamp, shape=None
    ):
        c = stamps.shape[1] // 2
        lo, hi = max(c - radius, 0), c + radius + 1
        peaks[idx] = stamps[:, lo:hi, lo:hi].max(axis=(1, 2))
    return peaks


def add_profiles(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    profiles: np.ndarray,
    *,
    psf: np.ndarray,
) -> None:
    """Add PSF-convolved copies of pre-rendered profiles into ``image``, in place.

    Profile ``k`` is an unconvolved, pixel-integrated image whose central pixel is put on
    the pixel nearest to ``(x[k], y[k])``. It is shifted by the remaining sub-pixel offset
    (Fourier phase ramp), convolved with ``psf`` on a stamp large enough not to wrap
    (profile side plus the PSF's), scaled to sum to ``flux[k]`` and added, clipped at the
    image border; the same machinery as :func:`render_sources`. A profile that sums to 0
    adds nothing.

    Parameters
    ----------
    image : ndarray, shape (ny, nx), float32, counts
        The image to add into.
    x, y : ndarray, shape (k,), pixels
        Centres (0-based column and row; pixel centres at integers). Integer positions
        add the profiles without a shift.
    flux : ndarray, shape (k,), counts
        Flux of each profile before clipping at the image border (>= 0).
    profiles : ndarray, shape (k, m, m), any unit
        The profiles, odd ``m``, centred on their central pixel.
    psf : ndarray, shape (p, p), dimensionless
        PSF image, square with odd ``p`` (normalised here).

    Raises
    ------
    ValueError
        If an argument has the wrong shape or a value out of range (naming it).
    """
    if image.ndim != 2 or image.dtype != np.float32:
        raise ValueError(f"image must be a 2-D float32 array, got {image.dtype} {image.shape}")
    x, y, flux = _check_positions(x, y, flux)
    n = x.size
    profiles = np.asarray(profiles)
    if profiles.ndim != 3 or profiles.shape[0] != n or profiles.shape[1] != profiles.shape[2]:
        raise ValueError(f"profiles must have shape ({n}, m, m), got {profiles.shape}")
    if profiles.shape[1] % 2 == 0:
        raise ValueError(f"profiles must have an odd side, got {profiles.shape[1]}")
    psf = _check_psf(psf)
    size = profiles.shape[1] + 2 * (psf.shape[0] // 2)
    sizes = np.full(n, size)
    x0, y0, order = _placement(x, y, flux, sizes, image.shape)
    kernel = fft.rfft2(psf.astype(np.float32), s=(size, size))
    step = max(1, CHUNK_ELEMENTS // (size * size))
    for start in range(0, order.size, step):
        idx = order[start : start + step]
        spectra = fft.rfft2(profiles[idx].astype(np.float32), s=(size, size))
        spectra *= _shift_spectra(
            size, y[idx] - np.floor(y[idx] + 0.5), x[idx] - np.floor(x[idx] + 0.5)
        )
        _scatter_add(image, _finish_stamps(spectra, kernel, flux[idx], size), x0[idx], y0[idx])


def sky_sigma(
    depth: float,
    *,
    zeropoint: float = 30.0,
    pixel_scale: float = 0.2,
    aperture: float = 2.0,
    nsigma: float = 5.0,
) -> float:
    """Per-pixel Gaussian sky noise that puts the ``nsigma`` detection limit at ``depth``.

    A point source of magnitude ``depth`` has ``nsigma`` times the noise of the sum of the
    pixels in a circular aperture (uncorrelated noise, all the source's flux in the
    aperture): ``sigma = flux(depth) / nsigma / sqrt(pi (aperture / 2)**2 / pixel_scale**2)``.

    Parameters
    ----------
    depth : float, AB mag
        Limiting magnitude.
    zeropoint : float, AB mag
        Magnitude of a source of 1 count.
    pixel_scale : float, arcsec / pixel
        Size of a pixel.
    aperture : float, arcsec
        Diameter of the aperture.
    nsigma : float, dimensionless
        Detection significance at ``depth``.

    Returns
    -------
    float, counts
        Standard deviation of the sky noise in one pixel.

    Raises
    ------
    ValueError
        If a parameter is out of range (naming it).
    """
    depth = _require_finite("depth", depth)
    zeropoint = _require_finite("zeropoint", zeropoint)
    pixel_scale = _require_positive("pixel_scale", pixel_scale)
    aperture = _require_positive("aperture", aperture)
    nsigma = _require_positive("nsigma", nsigma)
    n_pixels = math.pi * (0.5 * aperture / pixel_scale) ** 2
    return float(mag_to_flux(depth, zeropoint=zeropoint)) / nsigma / math.sqrt(n_pixels)


def mag_to_flux(mag: np.ndarray, *, zeropoint: float = 30.0) -> np.ndarray:
    """Counts of sources of given AB magnitudes.

    Parameters
    ----------
    mag : float or ndarray, AB mag
        Magnitudes.
    zeropoint : float, AB mag
        Magnitude of a source of 1 count.

    Returns
    -------
    ndarray, float64, counts
        ``10**(-0.4 (mag - zeropoint))``, with the shape of ``mag``.
    """
    zeropoint = _require_finite("zeropoint", zeropoint)
    return np.asarray(10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zeropoint)))


def stamp_sizes(extent: np.ndarray, *, psf_radius: int, max_stamp: int) -> np.ndarray:
    """Stamp side of each source: the bin of :data:`STAMP_SIZES` that holds it and the PSF.

    Parameters
    ----------
    extent : ndarray, pixels
        How far each source's profile reaches from its central pixel (at least
        :data:`MIN_MARGIN` is used).
    psf_radius : int, pixels
        Half-side of the PSF image.
    max_stamp : int, pixels
        Largest stamp side (odd).

    Returns
    -------
    ndarray of int, pixels
        ``2 (psf_radius + ceil(extent)) + 1`` rounded up to one of :data:`STAMP_SIZES`
        below ``max_stamp``, or else ``max_stamp``.
    """
    bins = np.array([s for s in STAMP_SIZES if s < max_stamp] + [max_stamp])
    needed = 2.0 * (psf_radius + np.maximum(np.ceil(extent), MIN_MARGIN)) + 1.0
    return bins[np.minimum(np.searchsorted(bins, needed), bins.size - 1)]


class _Sources(NamedTuple):
    """Validated per-source arrays of :func:`render_sources`, each shape (n,)."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    n_sersic: np.ndarray
    r_eff: np.ndarray
    q: np.ndarray
    theta: np.ndarray
    star: np.ndarray


def _check_sources(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    *,
    n_sersic: np.ndarray,
    r_eff: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    point: np.ndarray,
) -> _Sources:
    x, y, flux = _check_positions(x, y, flux)
    n = x.size
    n_sersic = _source_array("n_sersic", n_sersic, n)
    r_eff = _source_array("r_eff", r_eff, n)
    q = _source_array("q", q, n)
    theta = _source_array("theta", theta, n)
    point = np.asarray(point)
    if point.dtype != np.bool_:
        raise ValueError(f"point must be a boolean array, got dtype {point.dtype}")
    star = _source_array("point", point, n, dtype=np.bool_)
    _check_values("n_sersic", n_sersic, star | ((n_sersic > 0) & np.isfinite(n_sersic)), "> 0")
    _check_values("r_eff", r_eff, star | ((r_eff > 0) & np.isfinite(r_eff)), "> 0")
    _check_values("q", q, star | ((q > 0) & (q <= 1)), "in (0, 1]")
    _check_values("theta", theta, star | np.isfinite(theta), "finite")
    return _Sources(x, y, flux, n_sersic, r_eff, q, theta, star)


def _check_positions(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source centres and fluxes as float64 arrays of shape (n,), ``x`` setting n (``y`` and
    ``flux`` may be scalars), checked finite and ``flux >= 0``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D array, got shape {x.shape}")
    y = _source_array("y", y, x.size)
    flux = _source_array("flux", flux, x.size)
    _check_values("x", x, np.isfinite(x), "finite")
    _check_values("y", y, np.isfinite(y), "finite")
    _check_values("flux", flux, np.isfinite(flux) & (flux >= 0), "finite and >= 0")
    return x, y, flux


def _check_stamping(
    psf: np.ndarray, supersample: int, max_stamp: int
) -> tuple[np.ndarray, int, int]:
    """The PSF (float64), the sub-samples per pixel and the largest stamp side of a
    rendering, checked: a square PSF of odd side, ``supersample >= 1``, and an odd
    ``max_stamp`` that holds the PSF with a margin of :data:`MIN_MARGIN` on each side."""
    psf = _check_psf(psf)
    supersample = require_int("supersample", supersample, minimum=1)
    max_stamp = require_int("max_stamp", max_stamp, minimum=psf.shape[0] + 2 * MIN_MARGIN, odd=True)
    return psf, supersample, max_stamp


def _placement(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    sizes: np.ndarray,
    shape: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First pixel ``(x0, y0)`` of each source's stamp, centred on its nearest pixel, and
    the order to render them in.

    With an image ``shape``, sources of zero flux or whose stamp misses the image are left
    out, and stamps that cross the border (and need clipping) come last, then by row, so
    that most chunks need no clipping and each adds into a narrow band of the image.
    Without one, every source is rendered, in input order.
    """
    ix = np.floor(x + 0.5)
    iy = np.floor(y + 0.5)
    half = sizes // 2
    if shape is None:
        return ix.astype(np.int64) - half, iy.astype(np.int64) - half, np.arange(x.size)
    ny, nx = shape
    visible = (
        (flux > 0)
        & (ix + half >= 0)
        & (ix - half <= nx - 1)
        & (iy + half >= 0)
        & (iy - half <= ny - 1)
    )
    x0 = np.where(visible, ix, 0).astype(np.int64) - half
    y0 = np.where(visible, iy, 0).astype(np.int64) - half
    crossing = (x0 < 0) | (x0 + sizes > nx) | (y0 < 0) | (y0 + sizes > ny)
    order = np.lexsort((iy, crossing))
    return x0, y0, order[visible[order]]


def _source_stamps(
    sources: _Sources,
    *,
    psf: np.ndarray,
    supersample: int,
    max_stamp: int,
    shape: tuple[int, int] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Rendered stamps of the sources, chunk by chunk: ``(idx, stamps, x0, y0)``.

    ``stamps`` (k, s, s) float32 holds the sources ``idx``, scaled to their fluxes, whose
    first pixels in the image are ``(y0, x0)``; see :func:`render_sources`.
    """
    src = sources
    psf_radius = psf.shape[0] // 2
    sizes = stamp_sizes(
        np.where(src.star, 0.0, R_EFF_EXTENT * src.r_eff),
        psf_radius=psf_radius,
        max_stamp=max_stamp,
    )
    x0, y0, order = _placement(src.x, src.y, src.flux, sizes, shape)
    # Sub-pixel offsets from the stamp centres, applied as Fourier phase ramps.
    dx = src.x - np.floor(src.x + 0.5)
    dy = src.y - np.floor(src.y + 0.5)
    psf32 = psf.astype(np.float32)
    for size in np.unique(sizes[order]).tolist():
        # The PSF starts its zero-padded copy and each source is centred at `offset`, so the
        # product of the spectra is the linear convolution, centred at size // 2.
        kernel = fft.rfft2(psf32, s=(size, size))
        offset = size // 2 - psf_radius
        for is_star in (True, False):
            members = order[(sizes[order] == size) & (src.star[order] == is_star)]
            step = max(1, CHUNK_ELEMENTS // (size * size * (1 if is_star else supersample**2)))
            for start in range(0, members.size, step):
                idx = members[start : start + step]
                if is_star:
                    spectra = _shift_spectra(size, offset + dy[idx], offset + dx[idx])
                else:
                    profiles = _sersic_stamps(
                        2 * offset + 1,
                        supersample,
                        n_sersic=src.n_sersic[idx],
                        r_eff=src.r_eff[idx],
                        q=src.q[idx],
                        theta=src.theta[idx],
                    )
                    spectra = fft.rfft2(profiles, s=(size, size))
                    spectra *= _shift_spectra(size, dy[idx], dx[idx])
                yield idx, _finish_stamps(spectra, kernel, src.flux[idx], size), x0[idx], y0[idx]


def _finish_stamps(
    spectra: np.ndarray, kernel: np.ndarray, flux: np.ndarray, size: int
) -> np.ndarray:
    """Convolve k stamp spectra with the PSF's, transform back and scale each to its flux.

    Returns float32, shape (k, size, size). A stamp whose sum is 0 stays 0.
    """
    spectra *= kernel
    stamps = fft.irfft2(spectra, s=(size, size))
    # The zero-frequency term is the sum of the stamp.
    total = spectra[:, 0, 0].real.astype(np.float64)
    scale = np.divide(flux, total, out=np.zeros_like(total), where=total != 0)
    stamps *= scale.astype(np.float32)[:, None, None]
    return stamps


def _sersic_stamps(
    size: int,
    supersample: int,
    *,
    n_sersic: np.ndarray,
    r_eff: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """Sub-pixel averaged Sersic profiles of k galaxies, shape (k, size, size), float32.

    Each profile is centred on the central pixel and scaled to a peak sub-sample of 1 (so
    that a tiny ``r_eff`` cannot underflow to zero). A centred ellipse is symmetric under
    a half-turn, so only the rows up to the centre are evaluated and the rest mirrored.
    """
    rows = size // 2 + 1
    grid = subpixel_grid(size, supersample).astype(np.float32)
    gx = grid[None, :]
    gy = grid[: rows * supersample, None]
    # (r / r_eff)**2 = a X**2 + c Y**2 + b X Y for the rotated ellipse (major axis at theta).
    cos, sin = np.cos(theta), np.sin(theta)
    inv_q2 = 1.0 / q**2
    inv_r2 = 1.0 / r_eff**2
    a = ((cos**2 + sin**2 * inv_q2) * inv_r2).astype(np.float32)[:, None, None]
    b = (2.0 * cos * sin * (1.0 - inv_q2) * inv_r2).astype(np.float32)[:, None, None]
    c = ((sin**2 + cos**2 * inv_q2) * inv_r2).astype(np.float32)[:, None, None]
    r2 = b * (gy * gx)
    r2 += a * gx**2
    r2 += c * gy**2
    # Rounding of the cross term can leave tiny negatives next to the centre.
    np.maximum(r2, 0.0, out=r2)
    with np.errstate(divide="ignore"):
        np.log(r2, out=r2)
    r2 *= (0.5 / n_sersic).astype(np.float32)[:, None, None]
    scaled = np.exp(r2, out=r2)  # (r / r_eff) ** (1 / n)
    scaled -= scaled.min(axis=(1, 2), keepdims=True)
    scaled *= (-sersic_b(n_sersic)).astype(np.float32)[:, None, None]
    top = bin_mean(np.exp(scaled, out=scaled), supersample)
    return np.concatenate([top, top[:, -2::-1, ::-1]], axis=1)


def _shift_spectra(size: int, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``rfft2`` of k unit delta functions at sub-pixel ``(row, col)`` on a size x size grid.

    Multiplying a spectrum by these phase ramps shifts the image by ``(row, col)`` pixels.
    Returns complex64, shape (k, size, size // 2 + 1). ``size`` is odd, so there is no
    Nyquist term and the inverse transform is the real, band-limited (sinc) interpolant.
    """
    ramp_y = np.exp(-2j * np.pi * np.outer(row, fft.fftfreq(size))).astype(np.complex64)
    ramp_x = np.exp(-2j * np.pi * np.outer(col, fft.rfftfreq(size))).astype(np.complex64)
    return ramp_y[:, :, None] * ramp_x[:, None, :]


def _scatter_add(image: np.ndarray, stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray) -> None:
    """Add k stamps (k, s, s) with first pixels ``(y0, x0)`` into ``image``, clipped."""
    ny, nx = image.shape
    span = np.arange(stamps.shape[1])
    rows = y0[:, None] + span
    cols = x0[:, None] + span
    flat = (rows * nx)[:, :, None] + cols[:, None, :]
    if rows.min() < 0 or rows.max() >= ny or cols.min() < 0 or cols.max() >= nx:
        inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
        flat, stamps = flat[inside], stamps[inside]
    np.add.at(image.reshape(-1), flat.reshape(-1), stamps.reshape(-1))


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"shape must be (ny, nx), got {shape!r}")
    return (
        require_int("shape[0]", shape[0], minimum=1),
        require_int("shape[1]", shape[1], minimum=1),
    )


def _check_psf(psf: np.ndarray) -> np.ndarray:
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise ValueError(f"psf must be a square 2-D array of odd size, got shape {psf.shape}")
    if not (np.all(np.isfinite(psf)) and psf.sum() > 0):
        raise ValueError("psf must be finite with a positive sum")
    return psf


def _source_array(name: str, value: np.ndarray, n: int, *, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != n):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got shape {arr.shape}")
    return np.broadcast_to(arr, (n,))


def _check_values(name: str, values: np.ndarray, ok: np.ndarray, requirement: str) -> None:
    if not np.all(ok):
        first = int(np.flatnonzero(~ok)[0])
        bad = values[first].item()
        raise ValueError(f"{name} must be {requirement}; source {first} has {name}={bad!r}")


def _require_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _require_positive(name: str, value: float) -> float:
    value = _require_finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value
