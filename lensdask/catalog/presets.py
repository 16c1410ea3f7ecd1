"""The selection's presets: the BG and LRG samples of a survey's catalog, written in the
expression language of :mod:`lensdask.catalog.expressions`, and how the survey's ID and
position columns map onto the catalog contract (docs/architecture.md, Contracts).

- ``kids-dr4`` (the default): the cuts of Li et al. (2020) on KiDS DR4 columns, with the
  cut values of ``select.bg_mag_max``, ``lrg_mag_max`` and ``c_perp_max``. Without
  ``select.samples`` it runs as the vectorised kernel :func:`lensdask.catalog.cuts.target_masks`
  (with Parquet row-group pruning); its expressions here are the same cuts in the same
  order of evaluation (the tests prove both select the same rows).
- ``lsst``: a catalog with the names of the Rubin Data Preview 1 ``Object`` table
  (``objectId``, ``coord_ra``, ``coord_dec``, ``refExtendedness``: 1 extended, 0 point-like;
  ``<band>_cModelFlux`` in nJy, so AB magnitudes are ``-2.5 log10(f) + 31.4``). BG: extended
  and r-band cModel magnitude <= 21; LRG: the KiDS colour cuts (``c_par``, ``c_perp``,
  which come from the SDSS LRG selection) on the cModel colours g-r and r-i.
- ``euclid``: a catalog with the names of the Euclid Q1 MER final catalogue (``object_id``,
  ``right_ascension``, ``declination``, ``point_like_prob``; fluxes in µJy, so AB
  magnitudes are ``-2.5 log10(f) + 23.9``). BG: ``point_like_prob < 0.5`` and a VIS total
  magnitude (``flux_detection_total``, the Kron flux of the VIS detection image) <= 21, on
  VIS alone. LRG: the KiDS colour cuts on the ground-based DECam g, r, i template-fit fluxes
  the MER catalogue carries in the southern Q1 fields (``flux_<band>_ext_decam_templfit``),
  with the DECam r magnitude; fields with other ground-based bands set ``samples.LRG``.
- ``none``: no samples; ``select.samples`` gives both.

Neither the LSST nor the Euclid catalog names a tile the image index knows (a tract holds
many patches; a MER tile is a file, not a column), so their targets have no
``THELI_NAME`` and the cutouts place them on the images by position.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from lensdask.catalog.expressions import Expression, parse
from lensdask.config import SelectConfig

KERNEL_PRESET = "kids-dr4"
"""The preset that runs as the vectorised kernel of :mod:`lensdask.catalog.cuts` when no
sample is overridden."""
POSITION_COLUMNS = ("ID", "RAJ2000", "DECJ2000")
"""Contract columns every targets table has, whatever the survey."""


@dataclass(frozen=True)
class Preset:
    """One survey's samples and column names."""

    name: str
    """The ``select.preset`` value."""
    samples: Mapping[str, str]
    """Sample (``BG``, ``LRG``) -> its expression over the catalog's columns."""
    column_map: Mapping[str, str] = field(default_factory=dict)
    """Contract name -> the survey's column name (``select.column_map`` adds to it)."""


def magnitude(flux: str, zero_point: float) -> str:
    """An AB magnitude from a flux column: ``-2.5 log10(flux) + zero_point``."""
    return f"(-2.5 * log10({flux}) + {zero_point!r})"


def colour(blue: str, red: str) -> str:
    """A colour from two flux columns in the same unit: ``-2.5 log10(blue / red)``."""
    return f"(-2.5 * log10({blue} / {red}))"


def lrg_cuts(mag: str, g_r: str, r_i: str, *, lrg_mag_max: float, c_perp_max: float) -> str:
    """The LRG cuts of Li et al. (2020) as an expression, in the order of evaluation of
    :func:`lensdask.catalog.cuts.colour_cuts`: ``mag < 14 + c_par/0.3``, ``|c_perp| <
    c_perp_max`` and ``mag <= lrg_mag_max``, with ``c_par = 0.7 (g-r) + 1.2 [(r-i) - 0.18]``
    and ``c_perp = (r-i) - (g-r)/4.0 - 0.18``."""
    c_par = f"(0.7 * {g_r} + 1.2 * ({r_i} - 0.18))"
    c_perp = f"({r_i} - {g_r} / 4.0 - 0.18)"
    return (
        f"{mag} < 14.0 + {c_par} / 0.3 and abs({c_perp}) < {c_perp_max!r} "
        f"and {mag} <= {lrg_mag_max!r}"
    )


def kids_dr4(config: SelectConfig) -> Preset:
    """Li et al. (2020) on KiDS DR4 columns, with the cut values of ``config``."""
    return Preset(
        name="kids-dr4",
        samples={
            "BG": f"SG2DPHOT == 0 and MAG_AUTO <= {config.bg_mag_max!r}",
            "LRG": lrg_cuts(
                "MAG_AUTO",
                "COLOUR_GAAP_g_r",
                "COLOUR_GAAP_r_i",
                lrg_mag_max=config.lrg_mag_max,
                c_perp_max=config.c_perp_max,
            ),
        },
    )


LSST_ZERO_POINT = 31.4
"""AB magnitude of 1 nJy."""
EUCLID_ZERO_POINT = 23.9
"""AB magnitude of 1 µJy."""


def _lsst() -> Preset:
    mag = {band: magnitude(f"{band}_cModelFlux", LSST_ZERO_POINT) for band in "gri"}
    g_r, r_i = colour("g_cModelFlux", "r_cModelFlux"), colour("r_cModelFlux", "i_cModelFlux")
    return Preset(
        name="lsst",
        samples={
            "BG": f"refExtendedness == 1 and {mag['r']} <= 21.0",
            "LRG": lrg_cuts(mag["r"], g_r, r_i, lrg_mag_max=20.0, c_perp_max=0.2),
        },
        column_map={"ID": "objectId", "RAJ2000": "coord_ra", "DECJ2000": "coord_dec"},
    )


def _euclid() -> Preset:
    flux = {band: f"flux_{band}_ext_decam_templfit" for band in "gri"}
    vis = magnitude("flux_detection_total", EUCLID_ZERO_POINT)
    return Preset(
        name="euclid",
        samples={
            "BG": f"point_like_prob < 0.5 and {vis} <= 21.0",
            "LRG": lrg_cuts(
                magnitude(flux["r"], EUCLID_ZERO_POINT),
                colour(flux["g"], flux["r"]),
                colour(flux["r"], flux["i"]),
                lrg_mag_max=20.0,
                c_perp_max=0.2,
            ),
        },
        column_map={"ID": "object_id", "RAJ2000": "right_ascension", "DECJ2000": "declination"},
    )


SURVEY_PRESETS = {"lsst": _lsst(), "euclid": _euclid()}
"""The presets whose samples do not depend on the configuration."""


def preset_of(config: SelectConfig) -> Preset:
    """The preset ``config.preset`` names (``none``: one without samples)."""
    if config.preset == KERNEL_PRESET:
        return kids_dr4(config)
    if config.preset == "none":
        return Preset(name="none", samples={})
    return SURVEY_PRESETS[config.preset]


def uses_kernel(config: SelectConfig) -> bool:
    """Whether the selection runs as the kernel of :mod:`lensdask.catalog.cuts` (the
    kids-dr4 preset, no sample overridden) rather than by expressions."""
    return config.preset == KERNEL_PRESET and not config.samples


def column_map(config: SelectConfig) -> dict[str, str]:
    """Contract name -> catalog column: the preset's map, updated by ``select.column_map``."""
    return {**preset_of(config).column_map, **config.column_map}


def sample_texts(config: SelectConfig) -> dict[str, str]:
    """``BG`` and ``LRG`` -> the expression of each: the preset's, or ``select.samples``."""
    return {**preset_of(config).samples, **config.samples}


def sample_source(config: SelectConfig, sample: str) -> str:
    """Where a sample's expression comes from, for messages."""
    if sample in config.samples:
        return f"select.samples.{sample}"
    return f"select.preset {config.preset}, sample {sample}"


@dataclass(frozen=True)
class Selection:
    """The parsed samples of a configuration, and the catalog column each name reads."""

    bg: Expression
    lrg: Expression
    names: Mapping[str, str]
    """Name in an expression -> catalog column (through the column map)."""


def parse_samples(config: SelectConfig, *, columns: Collection[str] | None = None) -> Selection:
    """Parse and check the BG and LRG expressions of ``config``.

    Parameters
    ----------
    config : SelectConfig
        The selection's configuration.
    columns : collection of str, optional
        The catalog's column names: an expression may name these, or a contract name that
        the column map maps onto one of them. None: any name.

    Raises
    ------
    lensdask.catalog.expressions.ExpressionError
        An expression does not parse, leaves the language or names an unknown column.
    """
    mapping = column_map(config)
    known = None
    if columns is not None:
        known = {*columns, *(name for name, column in mapping.items() if column in columns)}
    texts = sample_texts(config)
    parsed = {
        sample: parse(texts[sample], where=sample_source(config, sample), columns=known)
        for sample in ("BG", "LRG")
    }
    names = {
        name: mapping.get(name, name)
        for expression in parsed.values()
        for name in expression.columns
    }
    return Selection(bg=parsed["BG"], lrg=parsed["LRG"], names=names)
