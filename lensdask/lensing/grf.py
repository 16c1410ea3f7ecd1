"""Gaussian-random-field perturbations of the lens potential (subhaloes, substructure).

A realisation is a real field ``delta_psi`` on a regular grid whose power spectrum is a
power law ``P(k) ∝ k**-slope`` (no power at ``k = 0``), scaled so that its root mean square
over the grid is exactly ``sigma``. Its deflection ``alpha = grad(delta_psi)`` is computed
spectrally from the same Fourier modes, so potential and deflection are consistent to
machine precision at the grid points. The field is drawn on a periodic box of an FFT-friendly
size at least as large as the grid and cropped to the grid.
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
        Source of the white noise (``B`` fields drawn in one call).

    Returns
    -------
    psi, alpha_x, alpha_y : ndarray, shape (B, H, W), float64
        Potential (arcsec^2) and deflection (arcsec); ``x`` runs along axis 2, ``y`` along
        axis 1.

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
    noise = rng.standard_normal((sigma.size, box, box))
    ky = fft.fftfreq(box, d=spacing)[:, None]
    kx = fft.rfftfreq(box, d=spacing)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = np.inf  # no power in the mean
    modes = fft.rfft2(noise) * k[None] ** (-slope[:, None, None] / 2)
    psi = fft.irfft2(modes, s=(box, box))[:, :height, :width]
    rms = np.sqrt(np.mean(psi**2, axis=(1, 2)))
    scale = (sigma / np.where(rms > 0, rms, 1.0))[:, None, None]
    modes *= scale
    # The derivative of a Nyquist mode is not real-representable: drop it.
    dkx = np.where(np.abs(kx) * spacing == 0.5, 0.0, 2j * np.pi * kx)
    dky = np.where(np.abs(ky) * spacing == 0.5, 0.0, 2j * np.pi * ky)
    alpha_x = fft.irfft2(modes * dkx, s=(box, box))[:, :height, :width]
    alpha_y = fft.irfft2(modes * dky, s=(box, box))[:, :height, :width]
    return psi * scale, alpha_x, alpha_y
