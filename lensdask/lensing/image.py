"""Images of lens systems: ray-shooting on a supersampled grid, pixel integration, PSF.

The image-plane grid is lenstronomy's for an ``ImageData`` of ``size`` x ``size`` pixels with
``transform_pix2angle = pixel_scale * identity`` and the central pixel at the origin: pixel
``(row, col)`` is centred on ``x = (col - c) * pixel_scale``, ``y = (row - c) * pixel_scale``
with ``c = (size - 1) / 2``, and each pixel holds ``supersample**2`` sub-pixel rays. A ray
at ``theta`` reaches the source plane at ``beta = theta - alpha(theta)``; the source's
surface brightness there, averaged over the pixel's rays and times the pixel area, is the
pixel's flux, which is then convolved with the PSF (``scipy.signal.fftconvolve(...,
mode="same")``, batched). This is lenstronomy's ``ImageModel`` with ``supersampling_factor``
and a ``PIXEL`` PSF, evaluated for a whole batch of systems at once.

How :func:`lensed_images` stays fast, with every pixel within ~1e-7 of the image's peak of
tracing every ray in float64 (the tests hold it to 1e-6 of lenstronomy's):

- Culling. The ray grid is tiled by blocks of :data:`BLOCK_PIXELS` x :data:`BLOCK_PIXELS`
  pixels. One reference ray per block is traced first; a bound on how far the block's other
  rays can land from it (the SIE's deflection gradient is at most ``theta_E / (sqrt(q) r)``
  at distance ``r`` from its centre, the shear's is ``|gamma|``, and a perturbation moves a
  ray by at most its range) decides, for each Sersic component, whether any ray of the block
  can land where the component is brighter than :data:`BRIGHTNESS_CUT` times its brightness
  scale. Only the blocks some component needs are traced, and each component is evaluated
  only on the blocks it needs: compact clumps cost almost nothing, and rays that land far
  from every component are never traced.
- Two precisions. Where a block's rays land on the faint, gently sloping part of every
  component they need, the SIE is traced in float32 (an arctan polynomial, ~20 cheap
  operations instead of ``np.arctan`` and ``np.log`` in float64): its source-plane error,
  ~1e-6 arcsec, times the profile's steepest gradient there stays below
  :data:`BRIGHTNESS_CUT` of the component's scale. Elsewhere, on the bright parts of the
  source, rays are traced in float64 (1e-8 arcsec already shows on a compact clump).
  Profiles are evaluated in float32 relative to each component's centre (float64 for
  Sersic indices above :data:`STEEP_N` where bright).
- The traced blocks go through cache-sized chunks (:data:`CHUNK_RAYS`) with blocks running
  innermost (so per-system constants broadcast along contiguous rows) and in-place
  arithmetic on preallocated buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft, special

from lensdask.lensing.profiles import (
    SERSIC_SMOOTHING,
    check_ellipticity,
    check_finite,
    check_positive,
    sersic_b,
    sersic_brightness,
    shear_deflection,
    sie_deflection,
    sie_parameters,
)

LENS_PARAMS = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")
"""Parameters of the SIE + external shear deflector, arcsec and dimensionless."""
SOURCE_PARAMS = ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
"""Parameters of each Sersic component of the source."""
BRIGHTNESS_CUT = 1e-9
"""A Sersic component is left out where it is fainter than this fraction of its brightness
scale: its central surface brightness, or its flux spread over one pixel where that is less
(a source smaller than a pixel). Each pixel then errs by at most this fraction of the scale
times the pixel area, per component."""
BLOCK_PIXELS = 2
"""Side of the square blocks of pixels whose rays are culled and traced together."""
CHUNK_RAYS = 1 << 16
"""Rays traced in one step: the working arrays stay in the CPU's cache."""


@dataclass(frozen=True)
class Grid:
    """The supersampled image-plane grid of a ``size`` x ``size`` stamp.

    Attributes
    ----------
    size : int, pixels
    pixel_scale : float, arcsec / pixel
    supersample : int
        Rays per pixel along each axis.
    """

    size: int
    pixel_scale: float
    supersample: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.supersample < 1:
            raise ValueError("size and supersample must be >= 1")
        check_positive(pixel_scale=self.pixel_scale)

    @property
    def spacing(self) -> float:
        """Distance between neighbouring rays, arcsec."""
        return self.pixel_scale / self.supersample

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the ray grid, ``(size * supersample,) * 2``."""
        n = self.size * self.supersample
        return n, n

    def axis(self) -> np.ndarray:
        """Ray coordinates along one axis, arcsec, shape ``(size * supersample,)``."""
        ss = self.supersample
        centres = (np.arange(self.size) - (self.size - 1) / 2) * self.pixel_scale
        offsets = ((np.arange(ss) + 0.5) / ss - 0.5) * self.pixel_scale
        return (centres[:, None] + offsets[None, :]).ravel()

    def pixel_axis(self) -> np.ndarray:
        """Pixel-centre coordinates along one axis, arcsec, shape ``(size,)``."""
        return (np.arange(self.size) - (self.size - 1) / 2) * self.pixel_scale


# ---------------------------------------------------------------------------------------------
# Perturbations given at the rays or at the pixel centres
# ---------------------------------------------------------------------------------------------


def _interpolation_weights(grid: Grid, rays: np.ndarray, first: int, width: int) -> np.ndarray:
    """Linear-interpolation weights of rays from pixel centres (clamped at the edges).

    Ray ``rays[k]`` (an index into :meth:`Grid.axis`) gets weights on the ``width`` entries
    ``first, first + 1, ...`` of the pixel axis padded by one edge copy on each side (entry
    ``p + 1`` is pixel ``p``). Returns shape ``(len(rays), width)``.
    """
    ss = grid.supersample
    position = (rays + 0.5) / ss - 0.5 + 1.0  # in padded pixel units
    below = np.floor(position).astype(int)
    frac = position - below
    weights = np.zeros((len(rays), width))
    rows = np.arange(len(rays))
    weights[rows, below - first] = 1.0 - frac
    upper = below + 1 - first
    inside = upper < width
    weights[rows[inside], upper[inside]] += frac[inside]
    return weights


def _pixel_perturbation_at_rays(field: np.ndarray, grid: Grid) -> np.ndarray:
    """A ``(B, size, size)`` field at pixel centres, linearly interpolated to every ray."""
    padded = np.pad(field, ((0, 0), (1, 1), (1, 1)), mode="edge")
    weights = _interpolation_weights(grid, np.arange(grid.shape[0]), 0, grid.size + 2)
    return weights @ padded @ weights.T


def _perturbation_kind(
    perturbation: tuple[np.ndarray, np.ndarray] | None, grid: Grid, n_systems: int
) -> str | None:
    """``"rays"`` or ``"pixels"`` after checking the shapes (``None`` for no perturbation)."""
    if perturbation is None:
        return None
    shapes = {np.shape(perturbation[0]), np.shape(perturbation[1])}
    if shapes == {(n_systems, *grid.shape)}:
        return "rays"
    if shapes == {(n_systems, grid.size, grid.size)}:
        return "pixels"
    raise ValueError(
        f"perturbation: expected two arrays of shape {(n_systems, *grid.shape)} (at the rays) "
        f"or {(n_systems, grid.size, grid.size)} (at the pixel centres), got {sorted(shapes)}"
    )


# ---------------------------------------------------------------------------------------------
# Public kernels on the whole ray grid (reference implementations, tests)
# ---------------------------------------------------------------------------------------------


def deflection(
    grid: Grid,
    lens: Mapping[str, np.ndarray],
    *,
    perturbation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection of a batch of SIE + shear lenses (+ perturbations) at every ray.

    Parameters
    ----------
    grid : Grid
        The ray grid.
    lens : mapping of str to ndarray, shape (B,)
        The :data:`LENS_PARAMS` of each system (arcsec, dimensionless).
    perturbation : (alpha_x, alpha_y), arcsec, optional
        Extra deflection, e.g. of a Gaussian random field, added to the smooth model: either
        at every ray, shape ``(B, *grid.shape)``, or at the pixel centres, shape
        ``(B, size, size)``, interpolated linearly to the rays (constant beyond the outermost
        pixel centres), as lenstronomy's ``INTERPOL`` profile does with its default spline.

    Returns
    -------
    alpha_x, alpha_y : ndarray, shape (B, *grid.shape), arcsec
    """
    p = _lens_arrays(lens)
    axis = grid.axis()
    x, y = axis[None, None, :], axis[None, :, None]
    ax, ay = sie_deflection(
        x,
        y,
        theta_E=p["theta_E"][:, None, None],
        e1=p["e1"][:, None, None],
        e2=p["e2"][:, None, None],
        center_x=p["center_x"][:, None, None],
        center_y=p["center_y"][:, None, None],
    )
    sx, sy = shear_deflection(
        x, y, gamma1=p["gamma1"][:, None, None], gamma2=p["gamma2"][:, None, None]
    )
    ax += sx
    ay += sy
    kind = _perturbation_kind(perturbation, grid, p["theta_E"].size)
    if kind == "rays":
        ax += perturbation[0]
        ay += perturbation[1]
    elif kind == "pixels":
        ax += _pixel_perturbation_at_rays(np.asarray(perturbation[0], dtype=np.float64), grid)
        ay += _pixel_perturbation_at_rays(np.asarray(perturbation[1], dtype=np.float64), grid)
    return ax, ay


def source_brightness(x: np.ndarray, y: np.ndarray, source: Mapping[str, np.ndarray]) -> np.ndarray:
    """Surface brightness of a batch of multi-component Sersic sources (float64, no culling).

    Parameters
    ----------
    x, y : ndarray, shape (B, H, W), arcsec
        Source-plane positions.
    source : mapping of str to ndarray, shape (B, C)
        The :data:`SOURCE_PARAMS` of ``C`` Sersic components per system (the main body and
        its clumps); a component of zero ``amp`` is skipped where it is zero for all.

    Returns
    -------
    ndarray, shape (B, H, W), flux / arcsec^2
    """
    p = _source_arrays(source)
    total = np.zeros(np.broadcast_shapes(x.shape, y.shape))
    for c in range(p["amp"].shape[1]):
        if not np.any(p["amp"][:, c]):
            continue
        total += sersic_brightness(x, y, **{k: v[:, c, None, None] for k, v in p.items()})
    return total


def integrate_pixels(brightness: np.ndarray, grid: Grid) -> np.ndarray:
    """Flux per pixel: the mean surface brightness over each pixel's rays times its area.

    Parameters
    ----------
    brightness : ndarray, shape (B, *grid.shape), flux / arcsec^2
    grid : Grid

    Returns
    -------
    ndarray, shape (B, size, size), flux
    """
    ss, n = grid.supersample, grid.size
    blocks = brightness.reshape(brightness.shape[0], n, ss, n, ss)
    return blocks.mean(axis=(2, 4)) * grid.pixel_scale**2


@lru_cache(maxsize=8)
def _kernel_spectrum(kernel: bytes, shape: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """rfft2 of a PSF image (from its bytes) zero-padded to ``padded``; cached."""
    image = np.frombuffer(kernel, dtype=np.float64).reshape(shape)
    spectrum = fft.rfft2(image, s=padded)
    spectrum.setflags(write=False)
    return spectrum


def convolve(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each image with ``kernel``, like ``scipy.signal.fftconvolve(mode="same")``.

    The kernel's spectrum is cached, so a PSF shared by many batches is transformed once.

    Parameters
    ----------
    images : ndarray, shape (B, H, W)
    kernel : ndarray, shape (k, l), odd sides

    Returns
    -------
    ndarray, shape (B, H, W), float64
    """
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"psf: must be a 2-d image with odd sides, got shape {kernel.shape}")
    height, width = images.shape[1:]
    # A circular convolution of period >= size + half the kernel wraps only onto rows and
    # columns that "same" mode discards.
    needed = (height + kernel.shape[0] // 2, width + kernel.shape[1] // 2)
    padded = tuple(fft.next_fast_len(n, real=True) for n in needed)
    spectrum = fft.rfft2(images, s=padded)
    spectrum *= _kernel_spectrum(kernel.tobytes(), kernel.shape, padded)
    result = fft.irfft2(spectrum, s=padded, overwrite_x=True)
    top, left = kernel.shape[0] // 2, kernel.shape[1] // 2
    return result[:, top : top + height, left : left + width]


# ---------------------------------------------------------------------------------------------
# The fast renderer
# ---------------------------------------------------------------------------------------------


def lensed_images(
    lens: Mapping[str, np.ndarray],
    source: Mapping[str, np.ndarray],
    *,
    grid: Grid,
    psf: np.ndarray | None,
    perturbation: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Images of the lensed sources (no lens light, no noise) of a batch of systems.

    Equal, to ~1e-7 of each image's peak, to tracing every ray of ``grid`` in float64
    (:func:`deflection`, :func:`source_brightness`, :func:`integrate_pixels`,
    :func:`convolve`): a component is left out where it is fainter than
    :data:`BRIGHTNESS_CUT` of its brightness scale, rays landing on faint parts are traced in
    float32, and profiles are evaluated in float32 (see the module's notes). No Python loop
    runs per system or per pixel; the batch is processed in cache-sized chunks of rays.

    Parameters
    ----------
    lens : mapping of str to ndarray, shape (B,)
        SIE + shear parameters (:data:`LENS_PARAMS`).
    source : mapping of str to ndarray, shape (B, C)
        Sersic components of each source (:data:`SOURCE_PARAMS`).
    grid : Grid
        Stamp size, pixel scale and supersampling.
    psf : ndarray or None
        Pixel-scale PSF image (odd sides, normalised to 1), or None for no convolution.
    perturbation : (alpha_x, alpha_y), arcsec, optional
        Extra deflection added to the smooth lens (see :mod:`lensdask.lensing.grf`), at the
        rays, shape ``(B, *grid.shape)``, or at the pixel centres, shape ``(B, size, size)``
        (interpolated linearly to the rays, see :func:`deflection`).

    Returns
    -------
    ndarray, shape (B, size, size), float64, flux per pixel (``amp`` x arcsec^2)

    Raises
    ------
    ValueError
        If a parameter is missing, out of range or NaN (naming it), or a shape is wrong.
    """
    lens_p = _lens_arrays(lens)
    source_p = _source_arrays(source)
    n_systems = lens_p["theta_E"].size
    if source_p["amp"].shape[0] != n_systems:
        raise ValueError(f"source: {source_p['amp'].shape[0]} systems, but lens has {n_systems}")
    kind = _perturbation_kind(perturbation, grid, n_systems)
    if kind is not None:
        check_finite(perturbation=perturbation[0])
        check_finite(perturbation=perturbation[1])
    layout = _layout(grid)
    images = np.zeros((n_systems, grid.size, grid.size))
    if n_systems:
        _render(images, lens_p, source_p, grid, layout, kind, perturbation)
    return images if psf is None else convolve(images, psf)


def _lens_arrays(lens: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in LENS_PARAMS if name not in lens]
    if missing:
        raise ValueError(f"lens: missing parameters {missing}")
    p = {name: np.atleast_1d(np.asarray(lens[name], dtype=np.float64)) for name in LENS_PARAMS}
    shapes = {v.shape for v in p.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"lens: parameters must share one shape (B,), got {sorted(shapes)}")
    check_positive(theta_E=p["theta_E"])
    check_ellipticity(p["e1"], p["e2"])
    check_finite(**{k: p[k] for k in ("center_x", "center_y", "gamma1", "gamma2")})
    return p


def _source_arrays(source: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in SOURCE_PARAMS if name not in source]
    if missing:
        raise ValueError(f"source: missing parameters {missing}")
    p = {name: np.asarray(source[name], dtype=np.float64) for name in SOURCE_PARAMS}
    shapes = {v.shape for v in p.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError("source: parameters must have shape (B, C), C components per system")
    check_positive(R_sersic=p["R_sersic"], n_sersic=p["n_sersic"])
    check_ellipticity(p["e1"], p["e2"])
    check_finite(amp=p["amp"], center_x=p["center_x"], center_y=p["center_y"])
    return p


@dataclass(frozen=True)
class _Layout:
    """How the ray grid of a :class:`Grid` is tiled by blocks of pixels."""

    pixels: int
    """Block side, pixels."""
    rays: int
    """Block side, rays."""
    coords: np.ndarray
    """(nb, rays): ray coordinates of each block along an axis, arcsec."""
    ray_index: np.ndarray
    """(nb, rays): the same as indices into :meth:`Grid.axis`."""
    pixel_index: np.ndarray
    """(nb, pixels): the pixels of each block (the last block may overlap its neighbour)."""
    patch_index: np.ndarray
    """(nb, pixels + 2): the entries of the edge-padded pixel axis around each block."""
    ref: int
    """Index within a block of its reference ray."""
    reach: float
    """Largest distance from a block's reference ray to its other rays, arcsec."""
    weights: np.ndarray
    """(rays, pixels + 2): linear interpolation of a block's rays from its pixel patch, along
    one axis."""


@lru_cache(maxsize=16)
def _layout(grid: Grid) -> _Layout:
    ss, n = grid.supersample, grid.size
    bs = min(BLOCK_PIXELS, n)
    m = bs * ss
    starts = np.minimum(np.arange(0, n, bs), n - bs)
    ray_index = starts[:, None] * ss + np.arange(m)[None, :]
    ref = m // 2
    return _Layout(
        pixels=bs,
        rays=m,
        coords=grid.axis()[ray_index],
        ray_index=ray_index,
        pixel_index=starts[:, None] + np.arange(bs)[None, :],
        patch_index=starts[:, None] + np.arange(bs + 2)[None, :],
        ref=ref,
        reach=math.sqrt(2.0) * max(ref, m - 1 - ref) * grid.spacing,
        weights=_interpolation_weights(grid, np.arange(m), 0, bs + 2),
    )


class _Perturbation:
    """A perturbing deflection field, evaluated at reference rays and at blocks of rays."""

    def __init__(self, fields: tuple[np.ndarray, np.ndarray], kind: str, layout: _Layout):
        self.kind = kind
        self.layout = layout
        # alpha_x + i alpha_y: one gather fetches both components
        both = np.asarray(fields[0], dtype=np.float64) + 1j * np.asarray(
            fields[1], dtype=np.float64
        )
        if kind == "pixels":
            both = np.pad(both, ((0, 0), (1, 1), (1, 1)), mode="edge")
        # Any two values of the (interpolated) field differ by at most its range.
        span_x = both.real.max(axis=(1, 2)) - both.real.min(axis=(1, 2))
        span_y = both.imag.max(axis=(1, 2)) - both.imag.min(axis=(1, 2))
        self.spread = np.hypot(span_x, span_y)
        self.side = both.shape[-1]
        self.flat = both.ravel()

    def _take(self, system: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Both fields at broadcast indices (system, row, column): shape (2, *broadcast)."""
        values = np.take(self.flat, (system * self.side + rows) * self.side + cols)
        return np.stack([values.real, values.imag])

    def at_refs(self) -> tuple[np.ndarray, np.ndarray]:
        """The field at every block's reference ray, each shape (B, nb, nb)."""
        lay = self.layout
        system = np.arange(self.spread.size)[:, None, None]
        if self.kind == "rays":
            rows = lay.ray_index[:, lay.ref]
            values = self._take(system, rows[None, :, None], rows[None, None, :])
            return values[0], values[1]
        w = lay.weights[lay.ref]
        (taps,) = np.nonzero(w)
        values = 0.0
        for a in taps:
            for c in taps:
                rows, cols = lay.patch_index[:, a], lay.patch_index[:, c]
                values = values + w[a] * w[c] * self._take(system, rows[:, None], cols[None, :])
        return values[0], values[1]

    def at_blocks(
        self, system: np.ndarray, row: np.ndarray, col: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The field at every ray of the given ``K`` blocks, each shape (m, m, K)."""
        lay = self.layout
        if self.kind == "rays":
            rows, cols = lay.ray_index[row].T[:, None, :], lay.ray_index[col].T[None, :, :]
            values = self._take(system, rows, cols)
            return values[0], values[1]
        rows, cols = lay.patch_index[row].T[:, None, :], lay.patch_index[col].T[None, :, :]
        index = (system * self.side + rows) * self.side + cols
        patches = np.take(self.flat, index).view(np.float64)  # (p, p, 2K): x, y interleaved
        w = lay.weights  # (m, p)
        m, p, k = w.shape[0], w.shape[1], system.size
        along_x = np.matmul(w, patches)  # (p, m, 2K)
        values = (w @ along_x.reshape(p, -1)).reshape(m, m, k, 2)
        return values[..., 0], values[..., 1]


SERSIC_ROWS = ("k", "a", "d", "floor", "inv2n", "minus_b", "peak")
"""Rows of the tables of Sersic constants (per component and system) that
:func:`_add_sersic` reads."""
STEEP_N = 2.0
"""Components of a larger Sersic index are evaluated in float64 where the source is bright
(float32 errs by up to ~1e-7 b_n of the brightness at their cusp)."""


def _sersic_constants(source: dict[str, np.ndarray], pixel_area: float) -> dict[str, np.ndarray]:
    """Per-component constants of the float32 Sersic evaluation and of the culling, (B, C).

    The squared elliptical radius over ``R_sersic**2`` is ``Q = a (dx + k dy)**2 + d dy**2``
    and the brightness ``peak exp(-b_n Q**(1/2n))``. ``cut`` is the elliptical radius
    (arcsec) beyond which the component is fainter than :data:`BRIGHTNESS_CUT` of its
    brightness scale, ``stretch`` the most its elliptical radius grows per arcsec.
    """
    e1, e2 = source["e1"], source["e2"]
    r_sersic = np.maximum(source["R_sersic"], SERSIC_SMOOTHING)
    n = source["n_sersic"]
    b = sersic_b(n)
    norm2 = np.maximum(np.abs(1 - e1**2 - e2**2), 1e-6)
    axx = ((1 - e1) ** 2 + e2**2) / norm2
    axy = -4 * e2 / norm2
    ayy = ((1 + e1) ** 2 + e2**2) / norm2
    amp = np.abs(source["amp"])
    on = amp > 0
    # Brightness scale over amp: the central surface brightness e^b, or the flux per pixel,
    # 2 pi n R^2 e^b b^(-2n) Gamma(2n) / pixel_area, whichever is less.
    log_flux = np.log(2 * np.pi * n) + 2 * np.log(r_sersic) + b - 2 * n * np.log(b)
    log_scale = np.minimum(b, log_flux + special.gammaln(2 * n) - math.log(pixel_area))
    depth = np.maximum(-math.log(BRIGHTNESS_CUT) - log_scale, 0.0)
    f32 = {
        "a": axx / r_sersic**2,
        "k": axy / (2 * axx),
        "d": (ayy - axy**2 / (4 * axx)) / r_sersic**2,
        "floor": (SERSIC_SMOOTHING / r_sersic) ** 2,
        "inv2n": 0.5 / n,
        "minus_b": -b,
        # amp e^b: the exponent -b Q^(1/2n) stays small where the profile is bright, so
        # float32 keeps ~1e-7 of the brightness there (e^(b - b x) would lose b * 6e-8).
        "peak": source["amp"] * np.exp(b),
    }
    n_on = np.where(on, n, 1.0)
    return {
        # (C, 7, B) rows in the order _add_sersic reads them
        "table64": np.stack([f32[name].T for name in SERSIC_ROWS], axis=1),
        "table32": np.stack([f32[name].T for name in SERSIC_ROWS], axis=1).astype(np.float32),
        # (C,): float32 loses ~b_n 1e-8 of the brightness at the cusp: 5e-7 for n = 5
        "steep": np.any(on & (n > STEEP_N), axis=0),
        "centres": np.stack([source["center_x"].T, source["center_y"].T], axis=1),  # (C, 2, B)
        "exponential": np.all(n_on == 1.0, axis=0),  # (C,): Q^(1/2n) = sqrt(Q)
        "gaussian": np.all(n_on == 0.5, axis=0),  # (C,): Q^(1/2n) = Q
        "cx": source["center_x"],
        "cy": source["center_y"],
        "k": axy / (2 * axx),
        "a_raw": axx,
        "d_raw": ayy - axy**2 / (4 * axx),
        "stretch": (1 + np.hypot(e1, e2)) / np.sqrt(norm2),
        "cut": r_sersic * (1 + depth / b) ** n,
        "on": on,
        "b": b,
        "n": n,
        "R": r_sersic,
        "log_scale": log_scale,
    }


def _coarse_error(lens: dict[str, np.ndarray], sie: dict[str, np.ndarray]) -> np.ndarray:
    """Bound on ``|beta_float32 - beta_float64|`` of :func:`_trace32`, arcsec, shape (B,).

    Five times the largest error measured over theta_E in [0.3, 8], q in [0.15, 1], near
    round included, and rays off the centre: ``2e-7 theta_E (1 + 1 / (1 - root))`` with
    ``root = sqrt(1 - q**2)`` (the float32 form loses precision as ``q`` tends to 0).
    """
    root = np.sqrt(1.0 - sie["q"] ** 2)
    return 1e-6 * lens["theta_E"] * (1 + 1 / (1 - root))


def _fine_radius(src: dict[str, np.ndarray], error: np.ndarray) -> np.ndarray:
    """Elliptical radius (arcsec, (B, C)) beyond which a source-plane error of ``error``
    (arcsec, (B,)) changes the component's brightness by less than :data:`BRIGHTNESS_CUT`
    of its scale (the profile's gradient, largest where it is steepest, decreases outward).
    """
    b, n, r_sersic = src["b"], src["n"], src["R"]
    with np.errstate(divide="ignore", invalid="ignore"):
        # log of gradient * error / (cut * scale), at x = r / R_sersic
        const = (
            b
            - np.log(r_sersic)
            + np.log(b / n)
            + np.log(src["stretch"])
            + np.log(error)[:, None]
            - math.log(BRIGHTNESS_CUT)
            - src["log_scale"]
        )

        def excess(log_x: np.ndarray) -> np.ndarray:
            return const + (1 / n - 1) * log_x - b * np.exp(log_x / n)

        lo = np.log(np.maximum(np.maximum(1 - n, 0) / b, 0) ** n)
        lo = np.maximum(lo, np.log(SERSIC_SMOOTHING / r_sersic))
        hi = np.log(src["cut"] / r_sersic)
        steep = excess(hi) > 0  # still too steep at the cut: fine everywhere
        flat = ~(excess(lo) > 0)  # gentle enough everywhere
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            up = excess(mid) > 0
            lo = np.where(up, mid, lo)
            hi = np.where(up, hi, mid)
        radius = r_sersic * np.exp(hi)
    radius = np.where(steep, src["cut"], radius)
    return np.where(flat, 0.0, radius)


def _cull(
    lens: dict[str, np.ndarray],
    sie: dict[str, np.ndarray],
    src: dict[str, np.ndarray],
    grid: Grid,
    layout: _Layout,
    pert: _Perturbation | None,
) -> tuple[np.ndarray, ...]:
    """The blocks some component needs and how precisely.

    Traces every block's reference ray; the block's other rays land within ``reach`` of it
    (bounded by the SIE's largest deflection gradient over the block, the shear and the
    perturbation's range). A component is needed where the reference ray's elliptical
    radius less ``reach`` times the component's ``stretch`` is within its ``cut``; a block
    is traced in float64 where it is also within a needed component's fine radius.

    Returns ``system, row, column`` (A,) of the needed blocks, ``needs`` (A, C) and
    ``fine`` (A,).
    """
    lay = layout
    n_systems = lens["theta_E"].size
    refs = lay.coords[:, lay.ref]
    # Reference rays, traced in float32 (its error goes into the reach) as one (nb, nb) block
    # per system; then (B, nb, nb).
    work = _Workspace(n_systems, refs.size)
    everyone = np.arange(n_systems)
    bx, by = _trace32(work, n_systems, refs[None, :, None], refs[:, None, None], everyone, sie)
    bx = np.ascontiguousarray(bx.transpose(2, 0, 1))
    by = np.ascontiguousarray(by.transpose(2, 0, 1))
    error = _coarse_error(lens, sie)
    spread = error[:, None, None]
    if pert is not None:
        px, py = pert.at_refs()
        bx = bx - px
        by = by - py
        spread = spread + pert.spread[:, None, None]
    p = {name: lens[name][:, None, None] for name in ("center_x", "center_y", "gamma1", "gamma2")}
    # |grad alpha_SIE| <= b / psi <= theta_E / (sqrt(q) r) at distance r from the centre.
    x, y = refs[None, None, :], refs[None, :, None]
    distance = np.sqrt((x - p["center_x"]) ** 2 + (y - p["center_y"]) ** 2) - lay.reach
    safe = np.where(distance > 0, distance, 1.0)
    lipschitz = (lens["theta_E"] / np.sqrt(sie["q"]))[:, None, None] / safe
    slope = np.where(distance > 0, lipschitz, np.inf)
    gamma = np.hypot(p["gamma1"], p["gamma2"])
    reach = (lay.reach * (1.0 + gamma + slope) + spread) * 1.01 + 1e-9  # (B, nb, nb)
    margin = error[:, None]  # (B, 1)
    # Elliptical radius of the reference ray's landing point, less how far the others land
    # (float32 is ample for a decision with these margins).
    comps = np.flatnonzero(src["on"].any(axis=0))
    c4 = {
        name: src[name][:, comps, None, None]
        for name in ("cx", "cy", "k", "a_raw", "d_raw", "stretch", "cut", "on")
    }
    shape = (n_systems, comps.size, *bx.shape[1:])
    dx = np.empty(shape, dtype=np.float32)
    dy = np.empty(shape, dtype=np.float32)
    np.subtract(bx[:, None], c4["cx"], out=dx, casting="same_kind")
    np.subtract(by[:, None], c4["cy"], out=dy, casting="same_kind")
    radius = dy * c4["k"].astype(np.float32)
    radius += dx
    radius *= radius
    radius *= c4["a_raw"].astype(np.float32)
    dy *= dy
    dy *= c4["d_raw"].astype(np.float32)
    radius += dy
    np.sqrt(radius, out=radius)
    np.multiply(reach[:, None], c4["stretch"], out=dx, casting="same_kind")
    radius -= dx  # least elliptical radius any ray of the block lands at
    needs = radius <= c4["cut"].astype(np.float32)
    needs &= c4["on"]  # (B, C', nb, nb)
    # float32 tracing is good enough beyond the fine radius (less its own error).
    fine_radius = _fine_radius(src, error)[:, comps] + margin * src["stretch"][:, comps]
    close = radius < fine_radius[:, :, None, None].astype(np.float32)
    close &= needs
    needed = needs.any(axis=1)  # (B, nb, nb)
    system, row, column = np.nonzero(needed)
    fine = close.any(axis=1)[needed]
    all_needs = np.zeros((system.size, src["on"].shape[1]), dtype=bool)
    all_needs[:, comps] = needs[system, :, row, column]  # (A, C)
    needs = all_needs
    return system, row, column, needs, fine


def _sie_constants(lens: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-system constants of :func:`_trace` and (names ending in 32) :func:`_trace32`."""
    scale, s, q, cos, sin = sie_parameters(lens["theta_E"], lens["e1"], lens["e2"])
    root = np.sqrt(1.0 - q**2)
    g1, g2 = lens["gamma1"], lens["gamma2"]
    cx, cy = lens["center_x"], lens["center_y"]
    sie = {
        "q": q,
        "rc": root * cos,
        "rs": root * sin,
        "qc": q * cos,
        "qs": q * sin,
        "cos": cos,
        "sin": sin,
        "core": s,
        "q2s": q**2 * s,
        "q2s2": (q * s) ** 2,
        "ac": scale * cos,
        "as": scale * sin,
        "hc": 0.5 * scale * cos,
        "hs": 0.5 * scale * sin,
        "g1m": 1.0 - g1,
        "g1p": 1.0 + g1,
        "g2": g2,
    }
    sie32 = {f"{k}32": v.astype(np.float32) for k, v in sie.items()}
    # sqrt(1 - q^2) >= 0.1: scale = b / root < 10 b, so alpha_v may take log(u) for log1p(x)
    return sie | sie32 | {"cx": cx, "cy": cy, "roomy": root >= 0.1}


def _render(
    images: np.ndarray,
    lens: dict[str, np.ndarray],
    source: dict[str, np.ndarray],
    grid: Grid,
    layout: _Layout,
    kind: str | None,
    perturbation: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Fill ``images`` (B, size, size) with the pixel-integrated, unconvolved lensed sources."""
    lay = layout
    pert = None if kind is None else _Perturbation(perturbation, kind, lay)
    sie = _sie_constants(lens)
    src = _sersic_constants(source, grid.pixel_scale**2)
    system, row, column, needs, fine = _cull(lens, sie, src, grid, lay, pert)
    m = lay.rays
    per_chunk = max(1, CHUNK_RAYS // (m * m))
    work = _Workspace(min(per_chunk, system.size), m)
    # Blocks that need the same components, of near-round lenses or not, go together, so
    # that chunks rarely mix them.
    pattern = needs @ (1 << np.arange(needs.shape[1])) + (~sie["roomy"][system] << needs.shape[1])
    for trace, chosen in ((_trace, fine), (_trace32, ~fine)):
        (blocks,) = np.nonzero(chosen)
        blocks = blocks[np.argsort(pattern[blocks], kind="stable")]
        for start in range(0, blocks.size, per_chunk):
            part = blocks[start : start + per_chunk]
            b, i, j = system[part], row[part], column[part]
            # ray coordinates (1, m, K) and (m, 1, K), C-ordered so that K runs innermost
            x = np.ascontiguousarray(lay.coords[j].T)[None]
            y = np.ascontiguousarray(lay.coords[i].T)[:, None]
            bx, by = trace(work, b.size, x, y, b, sie)
            if pert is not None:
                px, py = pert.at_blocks(b, i, j)
                bx -= px
                by -= py
            total = _add_sources(work, bx, by, b, needs[part], src, fine=trace is _trace)
            _deposit(images, total, b, i, j, lay, grid)


def _add_sources(
    work: _Workspace,
    bx: np.ndarray,
    by: np.ndarray,
    system: np.ndarray,
    needs: np.ndarray,
    src: dict[str, np.ndarray],
    *,
    fine: bool,
) -> np.ndarray:
    """Total brightness (m, m, K), float32, of the components each block needs (steep ones
    in float64 where ``fine``)."""
    k = system.size
    total = work.total[..., :k]
    total[...] = 0.0
    for c in range(needs.shape[1]):
        mask = needs[:, c]
        count = np.count_nonzero(mask)
        if not count:
            continue
        path = (src["exponential"][c], src["gaussian"][c])
        table = src["table64"] if fine and src["steep"][c] else src["table32"]
        if 2 * count >= k:  # evaluating everywhere is cheaper than gathering
            params = table[c][:, system]
            centre = src["centres"][c][:, system]
            _add_sersic(work, total, bx, by, params, centre, path)
        else:
            take = np.flatnonzero(mask)
            params = table[c][:, system[take]]
            centre = src["centres"][c][:, system[take]]
            sub = np.zeros((*total.shape[:2], take.size), dtype=np.float32)
            _add_sersic(work, sub, bx[..., take], by[..., take], params, centre, path)
            total[..., take] += sub
    return total


def _deposit(
    images: np.ndarray,
    total: np.ndarray,
    system: np.ndarray,
    row: np.ndarray,
    column: np.ndarray,
    layout: _Layout,
    grid: Grid,
) -> None:
    """Integrate blocks' brightness (m, m, K) over their pixels into ``images``."""
    bs, ss, k = layout.pixels, grid.supersample, system.size
    flux = total.reshape(bs, ss, bs, ss, k).sum(axis=(1, 3), dtype=np.float64)
    flux *= grid.pixel_scale**2 / ss**2
    rows = layout.pixel_index[row].T[:, None, :]
    cols = layout.pixel_index[column].T[None, :, :]
    images[system, rows, cols] = flux


class _Workspace:
    """Preallocated chunk buffers, shape (m, m, K): no page faults from fresh temporaries."""

    def __init__(self, blocks: int, rays: int):
        shape = (rays, rays, max(blocks, 1))
        self.f64 = [np.empty(shape) for _ in range(6)]
        self.g32 = [np.empty(shape, dtype=np.float32) for _ in range(6)]
        self.f32 = [np.empty(shape, dtype=np.float32) for _ in range(3)]
        self.total = np.empty(shape, dtype=np.float32)


def _add_sersic(
    work: _Workspace,
    out: np.ndarray,
    bx: np.ndarray,
    by: np.ndarray,
    params: np.ndarray,
    centre: np.ndarray,
    path: tuple[bool, bool],
) -> None:
    """Add one Sersic component per block into ``out`` (m, m, K), in ``params``'s precision.

    ``params`` (7, K) holds the block's system's :data:`SERSIC_ROWS`, ``centre`` (2, K) the
    component's centre in the frame of ``bx, by``; ``path`` says whether every ``n`` is 1
    and whether every ``n`` is 1/2.
    """
    k = out.shape[-1]
    slope, a, d, floor, inv2n, minus_b, peak = params
    buffers = work.f32 if params.dtype == np.float32 else work.f64[:3]  # f64: tracer scratch
    dx, dy, w = (buffer[..., :k] for buffer in buffers)
    np.subtract(bx, centre[0], out=dx, casting="same_kind")
    np.subtract(by, centre[1], out=dy, casting="same_kind")
    # Q = a (dx + k dy)^2 + d dy^2 = (elliptical radius / R_sersic)^2
    np.multiply(dy, slope, out=w)
    w += dx
    w *= w
    w *= a
    np.multiply(dy, dy, out=dx)
    dx *= d
    w += dx
    np.maximum(w, floor, out=w)
    # amp e^b exp(-b Q^(1/2n)); Q^(1/2n) is sqrt(Q) for n = 1 and Q for n = 1/2.
    exponential, gaussian = path
    if exponential:
        np.sqrt(w, out=w)
    elif not gaussian:
        np.log(w, out=w)
        w *= inv2n
        np.exp(w, out=w)
    w *= minus_b
    np.exp(w, out=w)
    w *= peak
    out += w


def _log1p(x: np.ndarray, u: np.ndarray, w: np.ndarray) -> None:
    """``x <- log(1 + x)`` in place, to a few ulp, with one ``np.log`` (``np.log1p`` is several
    times slower): ``log(u) + (x - (u - 1)) / u`` with ``u = 1 + x`` rounded, the second term
    restoring what the rounding lost (``x`` itself where ``u`` rounds to 1). ``u`` and ``w``
    are scratch arrays like ``x``."""
    one = x.dtype.type(1.0)
    np.add(x, one, out=u)
    np.subtract(u, one, out=w)
    x -= w
    x /= u
    np.log(u, out=u)
    x += u


def _trace(
    work: _Workspace,
    k: int,
    x: np.ndarray,
    y: np.ndarray,
    system: np.ndarray,
    sie: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Source-plane positions of rays ``x`` (1, m, K), ``y`` (m, 1, K) of SIE + shear lenses.

    The SIE of :func:`lensdask.lensing.profiles.sie_deflection`, rearranged for speed:
    ``psi**2 = q**2 s**2 + r**2 - (1 - q**2) u**2``. Returns workspace views of shape
    (m, m, K), float64.
    """
    names = ("cx", "cy", "rc", "rs", "core", "q2s", "q2s2", "ac", "as", "hc", "hs", "roomy")
    names += ("g1m", "g1p", "g2")
    g = {name: sie[name][system] for name in names}
    dx, dy = x - g["cx"], y - g["cy"]
    ru, rv, psi, t, bx, by = (a[..., :k] for a in work.f64)
    # root * u and root * v, u along the major axis.
    np.add(dx * g["rc"], dy * g["rs"], out=ru)
    np.subtract(dy * g["rc"], dx * g["rs"], out=rv)
    np.add(dx * dx + g["q2s2"], dy * dy, out=psi)  # the core matters within ~1e-10"
    np.multiply(ru, ru, out=t)
    psi -= t
    np.sqrt(psi, out=psi)
    # alpha_u / scale = arctan(root u / (psi + s))
    np.add(psi, g["core"], out=t)
    np.divide(ru, t, out=t)
    np.arctan(t, out=t)
    # 2 alpha_v / scale = log1p(x), x = 2 root v / (psi + q^2 s - root v), as
    # log(u) x / (u - 1) with u = 1 + x: exact even where x is tiny (a near-round SIE).
    psi += g["q2s"]
    if np.all(g["roomy"]):  # log1p(x) = log(u) loses ~1e-16 of u: nothing with scale < 10 b
        np.add(psi, rv, out=ru)
        psi -= rv
        ru /= psi
        np.log(ru, out=ru)
    else:
        psi -= rv
        np.add(rv, rv, out=ru)
        ru /= psi  # x
        _log1p(ru, psi, rv)
    # beta = theta - shear - rotated alpha
    np.subtract(x * g["g1m"], y * g["g2"], out=bx)
    np.multiply(t, g["ac"], out=rv)
    bx -= rv
    np.multiply(ru, g["hs"], out=rv)
    bx += rv
    np.subtract(y * g["g1p"], x * g["g2"], out=by)
    np.multiply(t, g["as"], out=rv)
    by -= rv
    np.multiply(ru, g["hc"], out=rv)
    by -= rv
    return bx, by


ATAN_COEFFS = np.array(
    [
        1.0,
        -0.33332388,
        0.19974405,
        -0.14042684,
        0.09972231,
        -0.06025462,
        0.02476802,
        -0.00483094,
    ],
    dtype=np.float32,
)
"""``arctan(z) ~ z * sum(c[i] z**(2i))`` on [0, 1] (minimax in relative error, ``c[0] = 1``):
relative error below 3e-7 evaluated in float32."""


def _flags(work: _Workspace, k: int) -> np.ndarray:
    """The workspace's float32 scratch array for :func:`_trace32`'s branch flags."""
    return work.f32[2][..., :k]


def _trace32(
    work: _Workspace,
    k: int,
    x: np.ndarray,
    y: np.ndarray,
    system: np.ndarray,
    sie: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_trace` with the SIE in float32, for rays away from the lens centre.

    The deflection is computed in float32 (``arctan`` as the polynomial
    :data:`ATAN_COEFFS`), ``beta = theta - shear - alpha`` in float64. Its error is bounded
    by :func:`_coarse_error` (~1e-6 arcsec), so it is used only where the source is faint
    and smooth. Returns workspace views of shape (m, m, K), float64.
    """
    names = ("rc32", "rs32", "qc32", "qs32", "cos32", "sin32", "core32")
    g = {name: sie[name][system] for name in (*names, "ac32", "as32", "hc32", "hs32")}
    dx = (x - sie["cx"][system]).astype(np.float32)  # (1, m, K)
    dy = (y - sie["cy"][system]).astype(np.float32)  # (m, 1, K)
    ru, rv, psi, t, bx, by = (a[..., :k] for a in work.g32)  # bx, by: scratch
    np.add(dx * g["rc32"], dy * g["rs32"], out=ru)
    np.subtract(dy * g["rc32"], dx * g["rs32"], out=rv)
    # psi = sqrt(q^2 u^2 + v^2) from q u and v (no cancellation in float32)
    np.add(dx * g["qc32"], dy * g["qs32"], out=psi)
    psi *= psi
    np.subtract(dy * g["cos32"], dx * g["sin32"], out=t)
    t *= t
    psi += t
    np.sqrt(psi, out=psi)
    psi += g["core32"]  # the core: psi + s > 0 off the centre
    # arctan(ru / (psi + s)): reduce to z = min / max of |ru| and psi + s in [0, 1].
    np.abs(ru, out=bx)
    np.minimum(bx, psi, out=t)
    np.maximum(bx, psi, out=by)
    t /= by
    flip = np.greater(bx, psi, out=_flags(work, k), casting="unsafe")  # 1.0 where |ru| > psi
    np.multiply(t, t, out=bx)
    np.multiply(bx, ATAN_COEFFS[-1], out=by)
    for coeff in ATAN_COEFFS[-2:0:-1]:
        by += coeff
        by *= bx
    by += ATAN_COEFFS[0]
    t *= by
    # arctan(1 / z) = pi / 2 - arctan(z): add flip (pi / 2 - 2 p), exactly 0 where not flipped
    np.multiply(t, np.float32(-2.0), out=by)
    by += np.float32(np.pi / 2)
    by *= flip
    t += by
    np.copysign(t, ru, out=t)
    # log1p(x), x = 2 root v / (psi + q^2 s - root v), as log(u) x / (u - 1) with u = 1 + x:
    # accurate where x is tiny too (a near-round SIE, whose huge scale would amplify the
    # rounding of log(u) alone). q^2 s < s is below float32's reach here.
    psi -= rv
    np.add(rv, rv, out=ru)
    ru /= psi  # x
    _log1p(ru, psi, bx)
    # alpha in float32; beta = theta - shear - alpha in float64 (no rounding of |theta|).
    ax, ay = psi, rv
    np.multiply(t, g["ac32"], out=ax)
    np.multiply(ru, g["hs32"], out=ay)
    ax -= ay
    np.multiply(t, g["as32"], out=ay)
    np.multiply(ru, g["hc32"], out=t)
    ay += t
    bx, by = (a[..., :k] for a in work.f64[4:])
    np.subtract(x * sie["g1m"][system], y * sie["g2"][system], out=bx)
    bx -= ax
    np.subtract(y * sie["g1p"][system], x * sie["g2"][system], out=by)
    by -= ay
    return bx, by
