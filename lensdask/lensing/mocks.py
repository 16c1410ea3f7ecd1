"""Mock lenses: drawing their parameters and painting their arcs on real galaxy cutouts.

Pure kernels: a batch of ``B`` systems is drawn from a :class:`~lensdask.config.MockLensConfig`
with one generator, rendered with :func:`lensdask.lensing.image.lensed_images` (SIE + shear +
Gaussian-random-field deflector, Sersic source with clumps, supersampled and PSF-convolved),
scaled so that the arc's peak is a drawn fraction of the lens galaxy's peak, and added to the
galaxy's cutout. Every parameter comes back as a flat table (one row per system) so that each
mock keeps its full provenance.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from lensdask.config import MockLensConfig
from lensdask.lensing.grf import grf_perturbation
from lensdask.lensing.image import Grid, convolve, lensed_images
from lensdask.lensing.profiles import phi_q2ellipticity, sersic_b

PEAK_RADIUS = 3
"""The lens galaxy's peak is the maximum within this many pixels of the cutout centre."""


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], n)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    if bounds[0] == 0:
        return np.zeros(n)
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), n))


def draw_lenses(
    n: int, rng: np.random.Generator, *, config: MockLensConfig
) -> dict[str, np.ndarray]:
    """Draw the parameters of ``n`` mock lens systems.

    The mass is centred on the lens galaxy (plus a small offset), the source sits at a drawn
    fraction of ``theta_E`` from the optical axis so that arcs or multiple images form, and
    its clumps scatter around its centre within about one half-light radius.

    Parameters
    ----------
    n : int
        Number of systems.
    rng : numpy.random.Generator
        Source of randomness.
    config : MockLensConfig
        Priors.

    Returns
    -------
    dict of str to ndarray, each shape (n,)
        Lens ``theta_E, e1, e2, center_x, center_y, gamma1, gamma2`` (arcsec, dimensionless);
        source ``src_R, src_n, src_e1, src_e2, src_x, src_y`` (main component; amplitude 1);
        ``clump<k>_amp, _R, _x, _y`` for ``k < config.clumps[1]`` (amp 0 where absent);
        ``grf_sigma`` (arcsec^2), ``grf_slope``; ``arc_peak_ratio``.
    """
    c = config
    p: dict[str, np.ndarray] = {}
    p["theta_E"] = _log_uniform(rng, c.theta_E, n)
    p["e1"], p["e2"] = phi_q2ellipticity(rng.uniform(0, np.pi, n), _uniform(rng, c.lens_q, n))
    p["center_x"] = rng.normal(0, c.lens_offset, n) if c.lens_offset else np.zeros(n)
    p["center_y"] = rng.normal(0, c.lens_offset, n) if c.lens_offset else np.zeros(n)
    gamma = _uniform(rng, c.shear, n)
    gamma_angle = rng.uniform(0, np.pi, n)
    p["gamma1"], p["gamma2"] = gamma * np.cos(2 * gamma_angle), gamma * np.sin(2 * gamma_angle)
    offset = _uniform(rng, c.source_offset, n) * p["theta_E"]
    angle = rng.uniform(0, 2 * np.pi, n)
    p["src_x"] = p["center_x"] + offset * np.cos(angle)
    p["src_y"] = p["center_y"] + offset * np.sin(angle)
    p["src_R"] = _log_uniform(rng, c.source_R, n)
    p["src_n"] = _uniform(rng, c.source_n, n)
    p["src_e1"], p["src_e2"] = phi_q2ellipticity(
        rng.uniform(0, np.pi, n), _uniform(rng, c.source_q, n)
    )
    count = rng.integers(c.clumps[0], c.clumps[1] + 1, n)
    for k in range(c.clumps[1]):
        p[f"clump{k}_amp"] = np.where(k < count, _uniform(rng, c.clump_contrast, n), 0.0)
        p[f"clump{k}_R"] = _log_uniform(rng, c.clump_R, n)
        p[f"clump{k}_x"] = p["src_x"] + rng.normal(0, 1, n) * p["src_R"]
        p[f"clump{k}_y"] = p["src_y"] + rng.normal(0, 1, n) * p["src_R"]
    p["grf_sigma"] = _log_uniform(rng, c.grf_sigma, n)
    p["grf_slope"] = _uniform(rng, c.grf_slope, n)
    p["arc_peak_ratio"] = _log_uniform(rng, c.arc_peak_ratio, n)
    return p


def source_components(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Sersic components (main body, then clumps) of drawn sources, shape (B, C)."""
    clumps = sorted({key.split("_")[0] for key in params if key.startswith("clump")})
    n = params["src_R"].shape[0]
    zeros, ones = np.zeros(n), np.ones(n)
    columns = {
        "amp": [ones] + [params[f"{k}_amp"] for k in clumps],
        "R_sersic": [params["src_R"]] + [params[f"{k}_R"] for k in clumps],
        "n_sersic": [params["src_n"]] + [ones] * len(clumps),
        "e1": [params["src_e1"]] + [zeros] * len(clumps),
        "e2": [params["src_e2"]] + [zeros] * len(clumps),
        "center_x": [params["src_x"]] + [params[f"{k}_x"] for k in clumps],
        "center_y": [params["src_y"]] + [params[f"{k}_y"] for k in clumps],
    }
    return {key: np.stack(values, axis=1) for key, values in columns.items()}


def sersic_flux(source: dict[str, np.ndarray]) -> np.ndarray:
    """Total flux of Sersic sources, summed over components (amp x arcsec^2), shape (B,).

    ``F = amp 2 pi n R^2 e^b b^(-2n) Gamma(2n)`` for lenstronomy's profile (product-averaged
    radius, so independent of the ellipticity).
    """
    n, radius, amp = source["n_sersic"], source["R_sersic"], source["amp"]
    b = sersic_b(n)
    flux = amp * 2 * np.pi * n * radius**2 * np.exp(b) * b ** (-2 * n) * special.gamma(2 * n)
    return flux.sum(axis=1)


def render_arcs(
    params: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    grid: Grid,
    psf: np.ndarray | None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images of the lensed sources of drawn systems and their magnifications.

    Parameters
    ----------
    params : dict of str to ndarray
        From :func:`draw_lenses`.
    rng : numpy.random.Generator
        Source of the Gaussian-random-field realisations.
    grid : Grid
        The stamp's pixel grid and supersampling.
    psf : ndarray or None
        PSF image at the stamp's pixel scale.
    chunk : int or None
        Systems ray-traced at once (bounds the memory of the supersampled grids; the
        random fields are drawn chunk by chunk, so the images depend on it). None: all.

    Returns
    -------
    arcs : ndarray, shape (B, size, size), float64
        Lensed source images for a source of main-component ``amp`` 1 (flux per pixel).
    magnification : ndarray, shape (B,)
        Total magnification: lensed flux (before the PSF, inside the stamp) over the
        source's flux.
    """
    n = params["theta_E"].shape[0]
    step = chunk or max(n, 1)
    parts = [
        _render_chunk({k: v[start : start + step] for k, v in params.items()}, rng, grid, psf)
        for start in range(0, n, step)
    ]
    if not parts:
        return np.zeros((0, grid.size, grid.size)), np.zeros(0)
    return np.concatenate([a for a, _ in parts]), np.concatenate([m for _, m in parts])


def _render_chunk(
    params: dict[str, np.ndarray], rng: np.random.Generator, grid: Grid, psf: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_arcs` of one chunk of systems."""
    lens = {k: params[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")}
    lens |= {"gamma1": params["gamma1"], "gamma2": params["gamma2"]}
    perturbation = None
    if np.any(params["grf_sigma"] > 0):
        # Drawn at the pixel centres and interpolated to the rays (as lenstronomy's
        # INTERPOL does): 2-4x cheaper than at the rays, and the field's statistics do not
        # depend on the supersampling.
        _, ax, ay = grf_perturbation(
            (grid.size, grid.size),
            spacing=grid.pixel_scale,
            sigma=params["grf_sigma"],
            slope=params["grf_slope"],
            rng=rng,
        )
        perturbation = (ax, ay)
    source = source_components(params)
    unconvolved = lensed_images(lens, source, grid=grid, psf=None, perturbation=perturbation)
    magnification = unconvolved.sum(axis=(1, 2)) / sersic_flux(source)
    if psf is None:
        return unconvolved, magnification
    return convolve(unconvolved, psf), magnification


def galaxy_peak(cutouts: np.ndarray) -> np.ndarray:
    """Peak of the galaxy at the centre of each cutout: the maximum within
    :data:`PEAK_RADIUS` pixels of the centre (NaN ignored), shape (N,)."""
    size = cutouts.shape[-1]
    c = size // 2
    core = cutouts[:, c - PEAK_RADIUS : c + PEAK_RADIUS + 1, c - PEAK_RADIUS : c + PEAK_RADIUS + 1]
    return np.nanmax(np.where(np.isfinite(core), core, -np.inf), axis=(1, 2))


def paint_arcs(
    cutouts: np.ndarray, arcs: np.ndarray, peak_ratio: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add arcs to galaxy cutouts, each scaled to ``peak_ratio`` times the galaxy's peak.

    Parameters
    ----------
    cutouts : ndarray, shape (B, H, W), counts
        Real cutouts of the lens galaxies.
    arcs : ndarray, shape (B, H, W)
        Arc images in any unit (from :func:`render_arcs`).
    peak_ratio : ndarray, shape (B,)
        Arc peak over galaxy peak.

    Returns
    -------
    images : ndarray, shape (B, H, W), float32, counts
        The painted cutouts.
    arc_scale : ndarray, shape (B,)
        Factor the arcs were multiplied by (counts per arc unit).
    """
    lens_peak = galaxy_peak(cutouts)
    arc_peak = arcs.max(axis=(1, 2))
    if np.any(~np.isfinite(lens_peak) | (lens_peak <= 0)):
        bad = int(np.argmax(~np.isfinite(lens_peak) | (lens_peak <= 0)))
        raise ValueError(f"cutouts: cutout {bad} has no positive galaxy peak at its centre")
    scale = arc_scale(arc_peak, lens_peak, peak_ratio)
    painted = cutouts + arcs * scale[:, None, None]
    return painted.astype(np.float32), scale


def arc_scale(arc_peak: np.ndarray, lens_peak: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Factor that makes arcs of peak ``arc_peak`` peak at ``ratio`` times ``lens_peak``
    (0 for an empty arc), shape (B,)."""
    arc_peak = np.asarray(arc_peak, dtype=np.float64)
    return np.divide(ratio * lens_peak, arc_peak, out=np.zeros(arc_peak.shape), where=arc_peak > 0)
