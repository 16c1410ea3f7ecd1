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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import fft

from lensdask.lensing.profiles import (
    check_positive,
    sersic_brightness,
    shear_deflection,
    sie_deflection,
)

LENS_PARAMS = ("theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")
"""Parameters of the SIE + external shear deflector, arcsec and dimensionless."""
SOURCE_PARAMS = ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")
"""Parameters of each Sersic component of the source."""


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
    perturbation : (alpha_x, alpha_y) of shape (B, *grid.shape), arcsec, optional
        Extra deflection, e.g. of a Gaussian random field, added to the smooth model.

    Returns
    -------
    alpha_x, alpha_y : ndarray, shape (B, *grid.shape), arcsec
    """
    missing = [name for name in LENS_PARAMS if name not in lens]
    if missing:
        raise ValueError(f"lens: missing parameters {missing}")
    p = {name: np.asarray(lens[name], dtype=np.float64)[:, None, None] for name in LENS_PARAMS}
    axis = grid.axis()
    x, y = axis[None, None, :], axis[None, :, None]
    ax, ay = sie_deflection(
        x,
        y,
        theta_E=p["theta_E"],
        e1=p["e1"],
        e2=p["e2"],
        center_x=p["center_x"],
        center_y=p["center_y"],
    )
    sx, sy = shear_deflection(x, y, gamma1=p["gamma1"], gamma2=p["gamma2"])
    ax += sx
    ay += sy
    if perturbation is not None:
        ax += perturbation[0]
        ay += perturbation[1]
    return ax, ay


def source_brightness(
    x: np.ndarray, y: np.ndarray, source: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Surface brightness of a batch of multi-component Sersic sources.

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
    missing = [name for name in SOURCE_PARAMS if name not in source]
    if missing:
        raise ValueError(f"source: missing parameters {missing}")
    p = {name: np.asarray(source[name], dtype=np.float64) for name in SOURCE_PARAMS}
    if p["amp"].ndim != 2:
        raise ValueError("source: parameters must have shape (B, C), C components per system")
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


def convolve(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each image with ``kernel``, like ``scipy.signal.fftconvolve(mode="same")``.

    Parameters
    ----------
    images : ndarray, shape (B, H, W)
    kernel : ndarray, shape (k, l), odd sides

    Returns
    -------
    ndarray, shape (B, H, W)
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"psf: must be a 2-d image with odd sides, got shape {kernel.shape}")
    height, width = images.shape[1:]
    full = (height + kernel.shape[0] - 1, width + kernel.shape[1] - 1)
    padded = tuple(fft.next_fast_len(n, real=True) for n in full)
    spectrum = fft.rfft2(images, s=padded) * fft.rfft2(kernel, s=padded)[None]
    result = fft.irfft2(spectrum, s=padded)
    top, left = kernel.shape[0] // 2, kernel.shape[1] // 2
    return result[:, top : top + height, left : left + width]


def lensed_images(
    lens: Mapping[str, np.ndarray],
    source: Mapping[str, np.ndarray],
    *,
    grid: Grid,
    psf: np.ndarray | None,
    perturbation: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Images of the lensed sources (no lens light, no noise) of a batch of systems.

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
    perturbation : (alpha_x, alpha_y), shape (B, *grid.shape), arcsec, optional
        Extra deflection added to the smooth lens (see :mod:`lensdask.lensing.grf`).

    Returns
    -------
    ndarray, shape (B, size, size), float64, flux per pixel (``amp`` x arcsec^2)
    """
    ax, ay = deflection(grid, lens, perturbation=perturbation)
    axis = grid.axis()
    ax = np.subtract(axis[None, None, :], ax, out=ax)
    ay = np.subtract(axis[None, :, None], ay, out=ay)
    images = integrate_pixels(source_brightness(ax, ay, source), grid)
    return images if psf is None else convolve(images, psf)
