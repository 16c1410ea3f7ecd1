"""Gaussian-random-field perturbations of the lens potential (subhaloes, substructure).

A realisation is a real field ``delta_psi`` on a regular grid whose power spectrum is a
power law ``P(k) ∝ k**-slope`` (no power at ``k = 0``), scaled so that its root mean square
over the grid is exactly ``sigma``. Its deflection ``alpha = grad(delta_psi)`` is computed
spectrally from the same Fourier modes, so potential and deflection are consistent to
float32 precision at the grid points. The field is drawn on a periodic box of an FFT-friendly
size at least as large as the grid and cropped to the grid. Realisation ``k`` of a batch
depends only on the generator's state and ``k`` (the noise is drawn system after system),
not on the batch size.

Drawn at the image's pixel resolution (``shape = (size, size)``, ``spacing = pixel_scale``),
the field has power up to the pixel scale and :func:`lensdask.lensing.image.lensed_images`
interpolates its deflection linearly to the sub-pixel rays, as lenstronomy's ``INTERPOL``
profile does; that is ten times cheaper than drawing it at the rays.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from lensdask.lensing.profiles import check_finite, check_positive


def grf_perturbation(
    shape: tuple[int, int],
    *,
    spacing: float,
    sigma: np.ndarray,
    slope: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a batch of potential perturbations and their deflections.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the grid.
    spacing : float, arcsec
        Grid spacing.
    sigma : ndarray, shape (B,), arcsec^2
        Root mean square of each realisation's potential over the grid (>= 0; 0 gives a
        zero field).
    slope : ndarray, shape (B,), dimensionless
        Power-law index of the potential's power spectrum, ``P(k) ∝ k**-slope`` (> 0).
    rng : numpy.random.Generator
        Source of the white noise (``B`` fields drawn in one call, in order; float32).

    Returns
    -------
    psi, alpha_x, alpha_y : ndarray, shape (B, H, W), float64
        Potential (arcsec^2) and deflection (arcsec); ``x`` runs along axis 2, ``y`` along
        axis 1. Computed in float32 and scaled in float64: the root mean square of ``psi``
        over the grid is ``sigma`` to float64 precision, ``alpha`` is its spectral gradient
        to ~1e-7 relative.

    Raises
    ------
    ValueError
        If ``sigma`` is negative, ``slope`` is not > 0 or either is NaN (naming it).
    """
    sigma = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    slope = np.atleast_1d(np.asarray(slope, dtype=np.float64))
    check_finite(sigma=sigma)
    check_positive(slope=slope)
    if np.any(sigma < 0):
        raise ValueError(f"sigma: must be >= 0, got {sigma.min()!r}")
    height, width = shape
    box = fft.next_fast_len(max(height, width), real=True)
    # float32 throughout: the fields are rescaled in float64 at the end, and 1e-7 of a
    # perturbation is far below anything it is used for.
    noise = rng.standard_normal((sigma.size, box, box), dtype=np.float32)
    ky = fft.fftfreq(box, d=spacing)[:, None]
    kx = fft.rfftfreq(box, d=spacing)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = k[0, 1] if k.shape[1] > 1 else 1.0
    # amplitude (k / k_min)^(-slope / 2), at most 1 (no float32 overflow whatever the
    # slope; the scale goes into sigma anyway), as exp(-slope / 2 log(k / k_min)): no pow
    # per mode; no power at k = 0
    log_k = np.log(k / k.min()).astype(np.float32)
    amplitude = log_k[None] * (-0.5 * slope).astype(np.float32)[:, None, None]
    np.exp(amplitude, out=amplitude)
    amplitude[:, 0, 0] = 0.0
    modes = fft.rfft2(noise, overwrite_x=True)
    modes *= amplitude
    psi = fft.irfft2(modes, s=(box, box))[:, :height, :width]
    rms = np.sqrt(np.mean(np.square(psi, dtype=np.float64), axis=(1, 2)))
    scale = (sigma / np.where(rms > 0, rms, 1.0))[:, None, None]
    # The derivative of a Nyquist mode is not real-representable: drop it.
    dkx = np.where(np.abs(kx) * spacing == 0.5, 0.0, 2j * np.pi * kx).astype(np.complex64)
    dky = np.where(np.abs(ky) * spacing == 0.5, 0.0, 2j * np.pi * ky).astype(np.complex64)
    alpha_x = fft.irfft2(modes * dkx, s=(box, box), overwrite_x=True)[:, :height, :width]
    alpha_y = fft.irfft2(modes * dky, s=(box, box), overwrite_x=True)[:, :height, :width]
    return psi * scale, alpha_x * scale, alpha_y * scale
