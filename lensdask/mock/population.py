"""The source population of the mock survey: a pure kernel on NumPy, no I/O.

Stars and galaxies with KiDS-like r-band number counts, red-sequence and blue-cloud
galaxies with redshifts, GAaP colours and photometric redshifts, and Sersic shapes for
rendering. The model is tuned so that, like KiDS DR4 (120M sources, 3.8M BGs, 127k LRGs),
about 3.2% of all sources are bright galaxies and about 3.3% of those pass the LRG cuts.

Columns are the KiDS DR4 names of DESIGN.md plus ``MASK`` and the truth columns
(``TRUE_*``, ``N_SERSIC``, ``R_EFF``, ``AXIS_RATIO``, ``POS_ANGLE``) that the mock adds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lensdask.config import MockSurveyConfig

GALAXY_MAG_RANGE = (14.0, 25.5)
"""r-band range of galaxies, mag; dN/dm ∝ 10^(GALAXY_COUNT_SLOPE m) inside it."""
GALAXY_COUNT_SLOPE = 0.32
STAR_MAG_RANGE = (15.0, 25.0)
STAR_COUNT_SLOPE = 0.12
RED_ABS_MAG = (-21.3, 0.75)
"""Mean and spread of the r-band absolute magnitude of red-sequence galaxies, mag."""
BLUE_ABS_MAG = (-20.6, 1.0)
TYPES = ("star", "red", "blue")
"""Values of ``TRUE_TYPE``."""


@dataclass(frozen=True)
class _Cosmology:
    """Flat LCDM (H0 = 70, Om = 0.3) distances on a redshift grid."""

    z: np.ndarray
    distance_modulus: np.ndarray
    angular_diameter_kpc: np.ndarray


@functools.cache
def _cosmology() -> _Cosmology:
    z = np.linspace(0.005, 3.0, 3000)
    hubble = 299_792.458 / 70.0  # Mpc
    inv_e = 1.0 / np.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    steps = np.diff(z) * 0.5 * (inv_e[1:] + inv_e[:-1])
    comoving = hubble * np.concatenate([[z[0] * inv_e[0]], z[0] * inv_e[0] + np.cumsum(steps)])
    luminosity = comoving * (1 + z)
    return _Cosmology(
        z=z,
        distance_modulus=5 * np.log10(luminosity * 1e5),
        angular_diameter_kpc=comoving / (1 + z) * 1e3,
    )


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Magnitudes with dN/dm ∝ 10^(slope m) on [lo, hi], by inverting the CDF."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def _redshift(mag: np.ndarray, abs_mag: np.ndarray, *, k_slope: float) -> np.ndarray:
    """Redshift at which absolute magnitude ``abs_mag`` appears as ``mag`` (K = k_slope z)."""
    cosmo = _cosmology()
    apparent = cosmo.distance_modulus + k_slope * cosmo.z  # increasing in z
    return np.interp(mag - abs_mag, apparent, cosmo.z)


def _mag_error(mag: np.ndarray, depth: float) -> np.ndarray:
    """1-sigma magnitude error of a source of magnitude ``mag`` in a survey of 5-sigma ``depth``."""
    return np.hypot(0.01, 1.0857 / 5.0 * 10 ** (0.4 * (mag - depth)))


def draw_population(
    n: int, rng: np.random.Generator, *, config: MockSurveyConfig
) -> dict[str, np.ndarray]:
    """Draw ``n`` sources (without positions) of the mock survey.

    Parameters
    ----------
    n : int
        Number of sources.
    rng : numpy.random.Generator
        Source of randomness (the tile's own generator).
    config : MockSurveyConfig
        Star fraction, NaN-colour and masked fractions.

    Returns
    -------
    dict of str to ndarray
        Columns ``SG2DPHOT``, ``MAG_AUTO``, ``COLOUR_GAAP_g_r``, ``COLOUR_GAAP_r_i``, ``Z_B``,
        ``MASK`` and the truth columns ``TRUE_TYPE`` (index into :data:`TYPES`),
        ``TRUE_Z``, ``TRUE_MAG_r``, ``TRUE_g_r``, ``TRUE_r_i`` (mag), ``N_SERSIC``,
        ``R_EFF`` (arcsec, major axis), ``AXIS_RATIO`` and ``POS_ANGLE`` (deg, east of north).
    """
    star = rng.random(n) < config.star_fraction
    n_star = int(star.sum())
    n_gal = n - n_star
    mag = np.empty(n)
    mag[star] = _power_law_mags(rng, n_star, *STAR_MAG_RANGE, STAR_COUNT_SLOPE)
    gmag = _power_law_mags(rng, n_gal, *GALAXY_MAG_RANGE, GALAXY_COUNT_SLOPE)
    mag[~star] = gmag

    red_fraction = np.clip(0.4 - 0.05 * (gmag - 17.0), 0.1, 0.4)
    red = rng.random(n_gal) < red_fraction
    abs_mag = np.where(
        red,
        rng.normal(*RED_ABS_MAG, n_gal),
        rng.normal(*BLUE_ABS_MAG, n_gal),
    )
    z_gal = np.where(
        red, _redshift(gmag, abs_mag, k_slope=1.2), _redshift(gmag, abs_mag, k_slope=0.3)
    )

    g_r = np.empty(n)
    r_i = np.empty(n)
    g_r[~star] = np.where(
        red,
        0.75 + 2.3 * np.minimum(z_gal, 0.45) + rng.normal(0, 0.05, n_gal),
        0.30 + 0.9 * np.minimum(z_gal, 0.6) + rng.normal(0, 0.12, n_gal),
    )
    r_i[~star] = np.where(
        red,
        0.38 + 0.55 * z_gal + rng.normal(0, 0.04, n_gal),
        0.15 + 0.5 * np.minimum(z_gal, 1.0) + rng.normal(0, 0.10, n_gal),
    )
    g_r[star] = rng.uniform(0.2, 1.5, n_star)
    r_i[star] = 0.1 + 0.45 * g_r[star] + rng.normal(0, 0.05, n_star)

    true_type = np.zeros(n, dtype=np.int8)
    true_type[~star] = np.where(red, 1, 2)
    z = np.zeros(n)
    z[~star] = z_gal

    n_sersic = np.zeros(n)
    r_eff = np.zeros(n)
    q = np.ones(n)
    n_sersic[~star] = np.where(
        red, np.clip(rng.normal(4.0, 0.7, n_gal), 2.0, 6.0), rng.uniform(0.7, 1.5, n_gal)
    )
    size_kpc = np.where(
        red,
        4.0 * 10 ** (-0.25 * (abs_mag - RED_ABS_MAG[0])) * rng.lognormal(0, 0.25, n_gal),
        3.0 * 10 ** (-0.15 * (abs_mag - BLUE_ABS_MAG[0])) * rng.lognormal(0, 0.35, n_gal),
    )
    cosmo = _cosmology()
    r_eff[~star] = np.clip(
        size_kpc / np.interp(z_gal, cosmo.z, cosmo.angular_diameter_kpc) * 206_264.8, 0.08, 20.0
    )
    q[~star] = np.where(red, rng.uniform(0.5, 1.0, n_gal), rng.uniform(0.2, 1.0, n_gal))
    pos_angle = rng.uniform(0.0, 180.0, n)

    depths = {band.name: band.depth for band in config.bands}
    err_r = _mag_error(mag, depths.get("r", 25.0))
    err_g = _mag_error(mag + g_r, depths.get("g", 25.1))
    err_i = _mag_error(mag - r_i, depths.get("i", 23.7))
    colour_g_r = g_r + rng.normal(0, 1, n) * np.hypot(err_g, err_r)
    colour_r_i = r_i + rng.normal(0, 1, n) * np.hypot(err_r, err_i)
    nan = rng.random(n) < config.nan_colour_fraction
    colour_g_r[nan] = np.nan
    colour_r_i[nan] = np.nan

    z_b = np.where(star, rng.uniform(0.0, 0.2, n), z + rng.normal(0, 1, n) * 0.05 * (1 + z))
    outlier = rng.random(n) < 0.03
    z_b[outlier] = rng.uniform(0.0, 1.5, int(outlier.sum()))
    z_b = np.round(np.clip(z_b, 0.0, 6.0), 2)

    sg2dphot = np.where(star, rng.choice(np.array([1, 2, 3]), n, p=[0.7, 0.2, 0.1]), 0)
    mask = np.where(rng.random(n) < config.masked_fraction, 2 ** rng.integers(0, 14, n), 0).astype(
        np.int16
    )

    return {
        "SG2DPHOT": sg2dphot.astype(np.int32),
        "MAG_AUTO": (mag + rng.normal(0, 1, n) * err_r).astype(np.float32),
        "COLOUR_GAAP_g_r": colour_g_r.astype(np.float32),
        "COLOUR_GAAP_r_i": colour_r_i.astype(np.float32),
        "Z_B": z_b.astype(np.float32),
        "MASK": mask,
        "TRUE_TYPE": true_type,
        "TRUE_Z": z.astype(np.float32),
        "TRUE_MAG_r": mag.astype(np.float32),
        "TRUE_g_r": g_r.astype(np.float32),
        "TRUE_r_i": r_i.astype(np.float32),
        "N_SERSIC": n_sersic.astype(np.float32),
        "R_EFF": r_eff.astype(np.float32),
        "AXIS_RATIO": q.astype(np.float32),
        "POS_ANGLE": pos_angle.astype(np.float32),
    }
