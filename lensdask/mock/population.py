"""The source population of the mock survey: a pure kernel on NumPy, no I/O.

Stars and galaxies with KiDS-like r-band number counts, red-sequence and blue-cloud
galaxies with redshifts, GAaP colours and photometric redshifts, and Sersic shapes for
rendering; a few per cent of the bright galaxies are spirals, rings or mergers with the
parameters of their structure; :func:`draw_lrgs` adds luminous red galaxies on demand.
The model is tuned so that, like KiDS DR4 (120M sources, 3.8M BGs, 127k LRGs), about
3.2% of all sources are bright galaxies and about 3.3% of those pass the LRG cuts.

Columns are the KiDS DR4 names of the catalog contract (docs/architecture.md, Contracts)
plus ``MASK`` and the truth columns
(``TRUE_*``, ``N_SERSIC``, ``R_EFF``, ``AXIS_RATIO``, ``POS_ANGLE`` and the
:data:`STRUCTURE_COLUMNS`) that the mock adds.
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
RED_K_SLOPE = 1.2
"""K-correction of red-sequence galaxies in r, mag per unit redshift."""
BLUE_K_SLOPE = 0.3
TYPES = ("star", "red", "blue", "spiral", "ring", "merger")
"""Values of ``TRUE_TYPE`` (the codes are indices into this tuple)."""
STRUCTURE_MAG_MAX = 21.0
"""Spirals, rings and mergers are drawn among the galaxies at least this bright in r, mag
(the BG limit), so that their fractions are fractions of BGs."""
STRUCTURE_COLUMNS = (
    "STRUCT_FRACTION",
    "STRUCT_RADIUS",
    "STRUCT_WIDTH",
    "STRUCT_ANGLE",
    "STRUCT_PITCH",
    "STRUCT_g_r",
    "STRUCT_r_i",
)
"""Truth columns of the structure of spirals, rings and mergers (0 for other sources):
``STRUCT_FRACTION``, the structure's share of the r-band flux; ``STRUCT_RADIUS`` (arcsec),
the half-light radius of the arms' disc or the ring radius, along the major axis, or the
companion's distance; ``STRUCT_WIDTH``
(arcsec), the ring's Gaussian width or the companion's half-light radius (and tail width);
``STRUCT_ANGLE`` (deg), the arms' phase in the disc plane from the major axis, or the
companion's position angle east of north; ``STRUCT_PITCH`` (deg), the signed pitch angle of
the arms or of the tidal tail; ``STRUCT_g_r``, ``STRUCT_r_i`` (mag), the structure's colours.
See :mod:`lensdask.mock.structure` for how they are drawn on the images."""
LRG_MAG_RANGE = (17.0, 20.0)
"""r-band range of the extra LRGs of :func:`draw_lrgs`, mag."""
LRG_Z_RANGE = (0.15, 0.5)
"""Redshift range of the extra LRGs."""
LRG_CUT_MARGIN = 0.2
"""The extra LRGs are drawn at least this much brighter than the LRG magnitude cuts, mag
(about twice the scatter that photometric noise gives the ``c_par`` cut at r = 20)."""


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


def mag_error(mag: np.ndarray, depth: float) -> np.ndarray:
    """1-sigma magnitude error of a source of magnitude ``mag`` in a survey of 5-sigma ``depth``."""
    return np.hypot(0.01, 1.0857 / 5.0 * 10 ** (0.4 * (mag - depth)))


def draw_population(
    n: int, rng: np.random.Generator, *, config: MockSurveyConfig
) -> dict[str, np.ndarray]:
    """Draw ``n`` sources (without positions) of the mock survey.

    Among the galaxies brighter than :data:`STRUCTURE_MAG_MAX`, fractions
    ``config.spiral_fraction``, ``ring_fraction`` and ``merger_fraction`` carry a structure
    (:func:`_draw_structures`): spirals are blue-cloud discs, rings have a red-sequence core;
    their ``TRUE_*`` colours and magnitudes are those of all their light.

    Parameters
    ----------
    n : int
        Number of sources.
    rng : numpy.random.Generator
        Source of randomness (the tile's own generator).
    config : MockSurveyConfig
        Star, structure, NaN-colour and masked fractions, band depths.

    Returns
    -------
    dict of str to ndarray
        Columns ``SG2DPHOT``, ``MAG_AUTO``, ``COLOUR_GAAP_g_r``, ``COLOUR_GAAP_r_i``, ``Z_B``,
        ``MASK`` and the truth columns ``TRUE_TYPE`` (index into :data:`TYPES`),
        ``TRUE_Z``, ``TRUE_MAG_r``, ``TRUE_g_r``, ``TRUE_r_i`` (mag), ``N_SERSIC``,
        ``R_EFF`` (arcsec, major axis), ``AXIS_RATIO``, ``POS_ANGLE`` (deg, east of north)
        and the :data:`STRUCTURE_COLUMNS`.
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
    kind = _structure_kinds(gmag, rng, config=config)
    red[kind == TYPES.index("spiral")] = False
    red[kind == TYPES.index("ring")] = True
    abs_mag = np.where(
        red,
        rng.normal(*RED_ABS_MAG, n_gal),
        rng.normal(*BLUE_ABS_MAG, n_gal),
    )
    z_gal = np.where(
        red,
        _redshift(gmag, abs_mag, k_slope=RED_K_SLOPE),
        _redshift(gmag, abs_mag, k_slope=BLUE_K_SLOPE),
    )
    red_g_r, red_r_i = _red_colours(z_gal, rng)
    blue_g_r, blue_r_i = _blue_colours(z_gal, rng)
    gal = {"g_r": np.where(red, red_g_r, blue_g_r), "r_i": np.where(red, red_r_i, blue_r_i)}
    gal["n_sersic"], gal["r_eff"], gal["q"] = _galaxy_shapes(abs_mag, z_gal, red, rng)
    gal |= _draw_structures(
        kind, z_gal, rng, g_r=gal["g_r"], r_i=gal["r_i"], r_eff=gal["r_eff"], q=gal["q"]
    )

    intrinsic = {
        "TRUE_TYPE": np.full(n, TYPES.index("star"), dtype=np.int8),
        "TRUE_Z": np.zeros(n),
        "TRUE_g_r": np.empty(n),
        "TRUE_r_i": np.empty(n),
        "N_SERSIC": np.zeros(n),
        "R_EFF": np.zeros(n),
        "AXIS_RATIO": np.ones(n),
        **{name: np.zeros(n) for name in STRUCTURE_COLUMNS},
    }
    star_g_r = rng.uniform(0.2, 1.5, n_star)
    intrinsic["TRUE_g_r"][star] = star_g_r
    intrinsic["TRUE_r_i"][star] = 0.1 + 0.45 * star_g_r + rng.normal(0, 0.05, n_star)
    galaxies = {
        "TRUE_TYPE": np.where(
            kind > 0, kind, np.where(red, TYPES.index("red"), TYPES.index("blue"))
        ),
        "TRUE_Z": z_gal,
        "TRUE_g_r": gal.pop("g_r"),
        "TRUE_r_i": gal.pop("r_i"),
        "N_SERSIC": gal.pop("n_sersic"),
        "R_EFF": gal.pop("r_eff"),
        "AXIS_RATIO": gal.pop("q"),
        **gal,
    }
    for name, values in galaxies.items():
        intrinsic[name][~star] = values
    return _catalog_columns(mag, star, intrinsic, rng, config=config)


def draw_lrgs(
    n: int, rng: np.random.Generator, *, config: MockSurveyConfig
) -> dict[str, np.ndarray]:
    """Draw ``n`` extra luminous red galaxies that pass the LRG cuts of Li et al. (2020).

    Redshifts are uniform in :data:`LRG_Z_RANGE`; colours follow the red sequence of
    :func:`draw_population` at that redshift; r-band magnitudes follow the galaxy number
    counts between ``LRG_MAG_RANGE[0]`` and the fainter limit of the LRG cuts
    (``MAG_AUTO < 14 + c_par / 0.3`` and ``MAG_AUTO <= LRG_MAG_RANGE[1]``) less
    :data:`LRG_CUT_MARGIN`; absolute magnitudes, sizes and photometry follow as for the
    red galaxies of :func:`draw_population`. Photometric noise, NaN colours and masks are
    applied as to every source, so a few per cent miss the cuts.

    Parameters
    ----------
    n : int
        Number of galaxies.
    rng : numpy.random.Generator
        Source of randomness.
    config : MockSurveyConfig
        NaN-colour and masked fractions, band depths.

    Returns
    -------
    dict of str to ndarray
        The columns of :func:`draw_population`, with ``TRUE_TYPE`` = ``red``.
    """
    z = rng.uniform(*LRG_Z_RANGE, n)
    g_r, r_i = _red_colours(z, rng)
    c_par = 0.7 * g_r + 1.2 * (r_i - 0.18)
    bright, faint = LRG_MAG_RANGE
    faint_end = np.clip(np.minimum(faint, 14.0 + c_par / 0.3) - LRG_CUT_MARGIN, bright, faint)
    mag = _power_law_mags(rng, n, bright, faint_end, GALAXY_COUNT_SLOPE)
    cosmo = _cosmology()
    abs_mag = mag - np.interp(z, cosmo.z, cosmo.distance_modulus) - RED_K_SLOPE * z
    red = np.ones(n, dtype=bool)
    n_sersic, r_eff, q = _galaxy_shapes(abs_mag, z, red, rng)
    intrinsic = {
        "TRUE_TYPE": np.full(n, TYPES.index("red"), dtype=np.int8),
        "TRUE_Z": z,
        "TRUE_g_r": g_r,
        "TRUE_r_i": r_i,
        "N_SERSIC": n_sersic,
        "R_EFF": r_eff,
        "AXIS_RATIO": q,
        **{name: np.zeros(n) for name in STRUCTURE_COLUMNS},
    }
    return _catalog_columns(mag, np.zeros(n, dtype=bool), intrinsic, rng, config=config)


def _red_colours(z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True g-r and r-i of red-sequence galaxies at redshifts ``z``, mag."""
    g_r = 0.75 + 2.3 * np.minimum(z, 0.45) + rng.normal(0, 0.05, z.size)
    r_i = 0.38 + 0.55 * z + rng.normal(0, 0.04, z.size)
    return g_r, r_i


def _blue_colours(z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True g-r and r-i of blue-cloud galaxies at redshifts ``z``, mag."""
    g_r = 0.30 + 0.9 * np.minimum(z, 0.6) + rng.normal(0, 0.12, z.size)
    r_i = 0.15 + 0.5 * np.minimum(z, 1.0) + rng.normal(0, 0.10, z.size)
    return g_r, r_i


def _galaxy_shapes(
    abs_mag: np.ndarray, z: np.ndarray, red: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sersic index, half-light radius (arcsec) and axis ratio of galaxies."""
    n = z.size
    n_sersic = np.where(red, np.clip(rng.normal(4.0, 0.7, n), 2.0, 6.0), rng.uniform(0.7, 1.5, n))
    size_kpc = np.where(
        red,
        4.0 * 10 ** (-0.25 * (abs_mag - RED_ABS_MAG[0])) * rng.lognormal(0, 0.25, n),
        3.0 * 10 ** (-0.15 * (abs_mag - BLUE_ABS_MAG[0])) * rng.lognormal(0, 0.35, n),
    )
    cosmo = _cosmology()
    r_eff = np.clip(
        size_kpc / np.interp(z, cosmo.z, cosmo.angular_diameter_kpc) * 206_264.8, 0.08, 20.0
    )
    q = np.where(red, rng.uniform(0.5, 1.0, n), rng.uniform(0.2, 1.0, n))
    return n_sersic, r_eff, q


def _structure_kinds(
    mag: np.ndarray, rng: np.random.Generator, *, config: MockSurveyConfig
) -> np.ndarray:
    """``TYPES`` code of the structure of each galaxy (0: none), from the configured
    fractions among galaxies brighter than :data:`STRUCTURE_MAG_MAX`."""
    edges = np.cumsum([config.spiral_fraction, config.ring_fraction, config.merger_fraction])
    choice = np.searchsorted(edges, rng.random(mag.size), side="right")
    structured = (mag <= STRUCTURE_MAG_MAX) & (choice < edges.size)
    return np.where(structured, TYPES.index("spiral") + choice, 0).astype(np.int8)


def _draw_structures(
    kind: np.ndarray,
    z: np.ndarray,
    rng: np.random.Generator,
    *,
    g_r: np.ndarray,
    r_i: np.ndarray,
    r_eff: np.ndarray,
    q: np.ndarray,
) -> dict[str, np.ndarray]:
    """The structure of the galaxies with ``kind`` > 0, and their changed properties.

    Takes the colours and shape of the galaxies' bodies and returns the
    :data:`STRUCTURE_COLUMNS` (0 for galaxies without a structure) with the
    ``g_r, r_i`` of all their light and ``r_eff, q`` of their body:

    - spiral: arms with 40-65% of the r-band light on a disc of half-light radius 1.5-4
      arcsec, 0.2-0.4 mag bluer in g-r (0.05-0.15 in r-i) than the body, pitch 12-30 deg
      either way, any phase; the body becomes the bulge and inner disc (``r_eff`` 20-40%
      of the arms' radius), and the galaxy is not too inclined to show its arms
      (``q`` >= 0.4).
    - ring: a ring of radius 1-4 arcsec, width 8-15% of it (>= 0.1 arcsec), 20-45% of the
      light, blue (g-r 0.2-0.5, r-i 0-0.25) around the red core, whose ``r_eff`` is kept
      below a third of the ring radius.
    - merger: a companion with 25-50% of the light at 1-3 arcsec in any direction, of
      red-sequence or blue-cloud colours (even odds) at the same redshift, ``r_eff`` that
      of the body scaled by the square root of the flux ratio (0.2-2 arcsec), with a tidal
      tail of pitch 15-35 deg either way.
    """
    n = kind.size
    rows = np.flatnonzero(kind > 0)
    m = rows.size
    code = kind[rows]
    spiral = code == TYPES.index("spiral")
    ring = code == TYPES.index("ring")

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, m)

    body_g_r, body_r_i = g_r[rows], r_i[rows]
    body_r_eff = r_eff[rows]
    fraction = np.where(
        spiral, uniform(0.4, 0.65), np.where(ring, uniform(0.2, 0.45), uniform(0.25, 0.5))
    )
    sign = np.where(rng.random(m) < 0.5, -1.0, 1.0)
    ring_radius = uniform(1.0, 4.0)
    arms_radius = uniform(1.5, 4.0)
    red_companion = rng.random(m) < 0.5
    red_g_r, red_r_i = _red_colours(z[rows], rng)
    blue_g_r, blue_r_i = _blue_colours(z[rows], rng)
    merger_g_r = np.where(red_companion, red_g_r, blue_g_r)
    merger_r_i = np.where(red_companion, red_r_i, blue_r_i)
    companion = np.clip(body_r_eff * np.sqrt(fraction / (1 - fraction)), 0.2, 2.0)
    structure = {
        "STRUCT_FRACTION": fraction,
        "STRUCT_RADIUS": np.where(
            spiral, arms_radius, np.where(ring, ring_radius, uniform(1.0, 3.0))
        ),
        "STRUCT_WIDTH": np.where(
            spiral,
            0.0,
            np.where(ring, np.maximum(ring_radius * uniform(0.08, 0.15), 0.1), companion),
        ),
        "STRUCT_ANGLE": np.where(
            spiral, uniform(0.0, 180.0), np.where(ring, 0.0, uniform(0.0, 360.0))
        ),
        "STRUCT_PITCH": sign
        * np.where(spiral, uniform(12.0, 30.0), np.where(ring, 0.0, uniform(15.0, 35.0))),
        "STRUCT_g_r": np.where(
            spiral, body_g_r - uniform(0.2, 0.4), np.where(ring, uniform(0.2, 0.5), merger_g_r)
        ),
        "STRUCT_r_i": np.where(
            spiral, body_r_i - uniform(0.05, 0.15), np.where(ring, uniform(0.0, 0.25), merger_r_i)
        ),
    }
    out = {"g_r": g_r.copy(), "r_i": r_i.copy(), "r_eff": r_eff.copy(), "q": q.copy()}
    out["g_r"][rows] = -2.5 * np.log10(
        (1 - fraction) * 10 ** (-0.4 * body_g_r) + fraction * 10 ** (-0.4 * structure["STRUCT_g_r"])
    )
    out["r_i"][rows] = 2.5 * np.log10(
        (1 - fraction) * 10 ** (0.4 * body_r_i) + fraction * 10 ** (0.4 * structure["STRUCT_r_i"])
    )
    out["r_eff"][rows] = np.where(
        spiral,
        arms_radius * uniform(0.2, 0.4),
        np.where(ring, np.minimum(body_r_eff, ring_radius / 3.0), body_r_eff),
    )
    out["q"][rows] = np.where(spiral, uniform(0.4, 1.0), q[rows])
    for name, values in structure.items():
        out[name] = np.zeros(n)
        out[name][rows] = values
    return out


def _catalog_columns(
    mag: np.ndarray,
    star: np.ndarray,
    intrinsic: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    config: MockSurveyConfig,
) -> dict[str, np.ndarray]:
    """Observe sources of true r magnitude ``mag`` and ``intrinsic`` truth columns: noisy
    Kron magnitudes and GAaP colours, photometric redshifts, star/galaxy flags, masks."""
    n = mag.size
    g_r, r_i, z = intrinsic["TRUE_g_r"], intrinsic["TRUE_r_i"], intrinsic["TRUE_Z"]
    pos_angle = rng.uniform(0.0, 180.0, n)
    depths = {band.name: band.depth for band in config.bands}
    err_r = mag_error(mag, depths.get("r", 25.0))
    err_g = mag_error(mag + g_r, depths.get("g", 25.1))
    err_i = mag_error(mag - r_i, depths.get("i", 23.7))
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
    truth = {
        "TRUE_TYPE": intrinsic["TRUE_TYPE"].astype(np.int8),
        "TRUE_Z": z.astype(np.float32),
        "TRUE_MAG_r": mag.astype(np.float32),
        "TRUE_g_r": g_r.astype(np.float32),
        "TRUE_r_i": r_i.astype(np.float32),
        "N_SERSIC": intrinsic["N_SERSIC"].astype(np.float32),
        "R_EFF": intrinsic["R_EFF"].astype(np.float32),
        "AXIS_RATIO": intrinsic["AXIS_RATIO"].astype(np.float32),
        "POS_ANGLE": pos_angle.astype(np.float32),
    }
    return {
        "SG2DPHOT": sg2dphot.astype(np.int32),
        "MAG_AUTO": (mag + rng.normal(0, 1, n) * err_r).astype(np.float32),
        "COLOUR_GAAP_g_r": colour_g_r.astype(np.float32),
        "COLOUR_GAAP_r_i": colour_r_i.astype(np.float32),
        "Z_B": z_b.astype(np.float32),
        "MASK": mask,
        **truth,
        **{name: intrinsic[name].astype(np.float32) for name in STRUCTURE_COLUMNS},
    }


def colour_offset(band: str, g_r: np.ndarray, r_i: np.ndarray) -> np.ndarray:
    """Magnitude in ``band`` minus the r-band magnitude, from the g-r and r-i colours.

    Parameters
    ----------
    band : str
        ``r``, ``g``, ``i`` or ``u`` (``u - r = 1.5 (g - r)``, a rough blue extrapolation).
    g_r, r_i : ndarray, mag
        Colours.

    Returns
    -------
    ndarray, mag

    Raises
    ------
    ValueError
        For a band without a colour model.
    """
    g_r = np.asarray(g_r, dtype=np.float64)
    if band == "r":
        return np.zeros_like(g_r)
    if band == "g":
        return g_r
    if band == "i":
        return -np.asarray(r_i, dtype=np.float64)
    if band == "u":
        return 1.5 * g_r
    raise ValueError(f"bands: no colour model for band {band!r}")
