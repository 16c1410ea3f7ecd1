"""Typed configuration: frozen dataclasses, validated on construction.

Each stage's configuration is one dataclass with a docstring per field; a job file's
section of that stage becomes it through :func:`from_mapping` (:mod:`lensdask.job` reads
whole job files), and the stage commands' options are made from its fields. Unknown keys
and bad values fail with an error that names the section and the key. Cluster sizing is not
part of a job: it comes from the command line, ``deploy/`` and Dask's own configuration.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

KIDS_BANDS: Mapping[str, tuple[float, float]] = types.MappingProxyType(
    {"u": (1.0, 24.2), "g": (0.86, 25.1), "r": (0.70, 25.0), "i": (0.80, 23.7)}
)
"""KiDS DR4 median seeing FWHM (arcsec) and 5-sigma depth in a 2" aperture (AB mag)."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _str_mapping(value: Mapping[str, str] | None, *, where: str) -> dict[str, str]:
    """A plain (picklable) dict of str to str, checked."""
    result = dict(value or {})
    for key, item in result.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ConfigError(f"{where}: maps column names to column names, got {key!r}: {item!r}")
    return result


@dataclass(frozen=True, kw_only=True)
class BandSpec:
    """One photometric band of the mock survey."""

    name: str
    """Band name; tile images are ``<tile>_<name>.fits``."""
    seeing: float
    """FWHM of the Moffat PSF, arcsec."""
    depth: float
    """5-sigma limiting magnitude in a 2-arcsec aperture, AB mag (sets the sky noise)."""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"bands: band name {self.name!r} must be a plain word")
        if not self.seeing > 0:
            raise ConfigError(f"bands.{self.name}.seeing: must be > 0 arcsec, got {self.seeing}")
        if not 15 < self.depth < 35:
            raise ConfigError(f"bands.{self.name}.depth: {self.depth} is not a plausible depth")

    @classmethod
    def kids(cls, name: str) -> BandSpec:
        """The KiDS DR4 seeing and depth of band ``name``."""
        if name not in KIDS_BANDS:
            raise ConfigError(f"bands: unknown band {name!r}; give seeing and depth for it")
        seeing, depth = KIDS_BANDS[name]
        return cls(name=name, seeing=seeing, depth=depth)


MOCK_LAYOUTS = ("simple", "kids-dr4")
CATALOG_FORMATS = ("parquet", "hats")
"""File layouts of the mock survey (``mock_survey.layout``; see ``lensdask/mock/layouts.py``)."""
COMPRESSION_TYPES = ("RICE_1", "HCOMPRESS_1", "GZIP_1", "GZIP_2")
"""Tile compressions of FITS images (``mock_survey.compress``), as fpack writes them."""


@dataclass(frozen=True, kw_only=True)
class MockSurveyConfig:
    """A mock KiDS-like survey: catalog and, optionally, tile images."""

    tiles: int = 4
    """Number of tiles (KiDS has 1006 in DR4)."""
    seed: int = 0
    """Run seed; tile ``k`` draws from ``SeedSequence([seed, k])``."""
    tile_size: float = 1.0
    """Side of the square area covered by each tile, deg (at most 1, the tile spacing)."""
    density: float = 119_300.0
    """Mean number of catalog sources per deg^2 (KiDS DR4: ~120M in 1006 deg^2)."""
    star_fraction: float = 0.12
    """Fraction of sources that are stars."""
    nan_colour_fraction: float = 0.03
    """Fraction of sources with NaN GAaP colours (masked or failed photometry)."""
    masked_fraction: float = 0.03
    """Fraction of sources with a non-zero ``MASK`` flag."""
    images: bool = False
    """Write the tile images (FITS) too, not just the catalog."""
    bands: tuple[BandSpec, ...] = field(
        default_factory=lambda: tuple(BandSpec.kids(b) for b in ("r", "g", "i"))
    )
    """Bands of the tile images; ``r`` is required."""
    vary_seeing: bool = False
    """Vary the seeing from tile to tile: each tile's PSF FWHM in each band is drawn from a
    KiDS DR4-like log-normal distribution whose median is the band's ``seeing`` (r mostly
    0.5-0.9 arcsec; ``lensdask/mock/seeing.py``), written in the images' ``SEEING`` and
    ``PSF_FWHM`` keywords and in ``seeing/<tile>.parquet``. Off: every tile has the band's
    ``seeing``."""
    pixel_scale: float = 0.2
    """Pixel scale of the tile images, arcsec/pixel."""
    zeropoint: float = 30.0
    """Photometric zero point of the images, AB mag for 1 count."""
    image_pixels: int | None = None
    """Side of each tile image, pixels. Default: the tile itself (``tile_size`` /
    ``pixel_scale``, 18000 px for 1 deg). Larger values add a margin of empty sky around
    the tile, like KiDS coadds, which are ~21000 px for 1 deg tiles."""
    spiral_fraction: float = 0.05
    """Fraction of the galaxies brighter than r = 21 (the BGs) that are spirals: discs with
    two blue logarithmic spiral arms (``TRUE_TYPE`` ``spiral``), false positives of lens
    finders."""
    ring_fraction: float = 0.03
    """Fraction of the galaxies brighter than r = 21 that are ring galaxies: a blue ring of
    radius 1-4 arcsec around a red core, which mimics an Einstein ring."""
    merger_fraction: float = 0.03
    """Fraction of the galaxies brighter than r = 21 that are mergers: a companion 1-3
    arcsec away plus a faint tidal tail."""
    lrg_density: float = 0.0
    """Extra luminous red galaxies per deg^2 that pass the LRG cuts (r 17-20, z 0.15-0.5,
    on the red sequence), on top of the natural ~135 per deg^2: makes enough LRG cutouts
    for a training set from a small imaged area."""
    lens_fraction: float = 0.0
    """Fraction of the LRGs (by the cuts of Li et al. 2020) that get a lensed source painted
    into the images, with its parameters in ``lenses/<tile>.parquet`` (needs ``images``)."""
    lens_bg_fraction: float = 0.0
    """Fraction of the BGs that are not LRGs that get a lensed source (needs ``images``)."""
    lens_source_g_r: tuple[float, float] = (0.0, 0.6)
    """g - r colour of the lensed sources, uniform in [low, high], mag (blue, star-forming)."""
    lens_source_r_i: tuple[float, float] = (-0.1, 0.4)
    """r - i colour of the lensed sources, uniform in [low, high], mag."""
    lenses: MockLensConfig = field(default_factory=lambda: MockLensConfig())
    """Priors of the lenses painted into the images (as for the training set's mocks);
    their arcs are as bright as ``arc_peak_ratio`` times the lens galaxy's r-band peak."""
    layout: str = "simple"
    """File layout: ``simple`` (``catalog/<tile>.parquet``, ``images/<tile>_<band>.fits``) or
    ``kids-dr4``, as ESO distributes KiDS DR4: ``images/KiDS_DR4.0_<ra>_<dec>_<band>_sci.fits``
    with ``_wei`` weight and ``_msk`` flag maps beside it, and FITS catalogs
    ``catalogs/KiDS_DR4.0_<ra>_<dec>_ugriZYJHKs_cat.fits`` (read them with ``lensdask
    ingest``) instead of the Parquet catalog.

    Both layouts hold the same sources and pixels; see ``lensdask/mock/layouts.py``."""
    catalog_format: str = "parquet"
    """``parquet``: the catalog as one Parquet file per tile (``catalog/<tile>.parquet``);
    ``hats``: also as a HATS catalog (``catalog_hats/``, HEALPix-partitioned Parquet that
    LSDB reads and ``lensdask select`` takes one unit per pixel), made from the tile files
    with hats-import once every tile is written (needs the ``hats`` extra and ``layout:
    simple``; ``lensdask/mock/hats.py``)."""
    compress: str | None = None
    """Tile-compress the images as fpack does (``.fits.fz``, the image in HDU 1):
    ``RICE_1`` or ``HCOMPRESS_1`` (lossy: quantised to 1/16 of the noise), ``GZIP_1`` or
    ``GZIP_2`` (lossless). Weight and flag maps are always compressed losslessly (``GZIP_2``).
    Needs ``images``."""

    def __post_init__(self) -> None:
        if self.tiles < 1:
            raise ConfigError(f"mock_survey.tiles: must be >= 1, got {self.tiles}")
        if not 0 < self.tile_size <= 1.0:
            raise ConfigError(f"mock_survey.tile_size: must be in (0, 1] deg, got {self.tile_size}")
        if not self.density > 0:
            raise ConfigError(f"mock_survey.density: must be > 0, got {self.density}")
        for name in ("star_fraction", "nan_colour_fraction", "masked_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"mock_survey.{name}: must be in [0, 1), got {value}")
        structured = ("spiral_fraction", "ring_fraction", "merger_fraction")
        for name in (*structured, "lens_fraction", "lens_bg_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"mock_survey.{name}: must be in [0, 1], got {value}")
        if sum(getattr(self, name) for name in structured) > 1:
            raise ConfigError(
                "mock_survey.spiral_fraction + ring_fraction + merger_fraction: must not exceed 1"
            )
        if not self.lrg_density >= 0:
            raise ConfigError(f"mock_survey.lrg_density: must be >= 0, got {self.lrg_density}")
        if (self.lens_fraction or self.lens_bg_fraction) and not self.images:
            name = "lens_fraction" if self.lens_fraction else "lens_bg_fraction"
            raise ConfigError(
                f"mock_survey.{name}: lenses are painted into the tile images; set images: true"
            )
        _check_range("mock_survey.lens_source_g_r", self.lens_source_g_r, lo=-1.0, hi=3.0)
        _check_range("mock_survey.lens_source_r_i", self.lens_source_r_i, lo=-1.0, hi=3.0)
        if not self.pixel_scale > 0:
            raise ConfigError(f"mock_survey.pixel_scale: must be > 0, got {self.pixel_scale}")
        if self.image_pixels is not None and self.image_pixels < 1:
            raise ConfigError(f"mock_survey.image_pixels: must be >= 1, got {self.image_pixels}")
        if self.layout not in MOCK_LAYOUTS:
            raise ConfigError(
                f"mock_survey.layout: one of {', '.join(MOCK_LAYOUTS)}, got {self.layout!r}"
            )
        if self.catalog_format not in CATALOG_FORMATS:
            raise ConfigError(
                f"mock_survey.catalog_format: one of {', '.join(CATALOG_FORMATS)}, "
                f"got {self.catalog_format!r}"
            )
        if self.catalog_format == "hats" and self.layout != "simple":
            raise ConfigError(
                "mock_survey.catalog_format: hats is made from the Parquet tile catalogs of "
                f"layout: simple, not from layout: {self.layout}"
            )
        if self.compress is not None:
            if self.compress not in COMPRESSION_TYPES:
                raise ConfigError(
                    f"mock_survey.compress: one of {', '.join(COMPRESSION_TYPES)}, "
                    f"got {self.compress!r}"
                )
            if not self.images:
                raise ConfigError(
                    "mock_survey.compress: compresses the tile images; set images: true"
                )
        names = [band.name for band in self.bands]
        if "r" not in names:
            raise ConfigError("mock_survey.bands: the r band is required")
        if len(set(names)) != len(names):
            raise ConfigError(f"mock_survey.bands: repeated band in {names}")

    @property
    def image_size(self) -> int:
        """Side of each tile image, pixels."""
        return self.image_pixels or round(self.tile_size * 3600 / self.pixel_scale)


DUPLICATE_MODES = ("error", "keep-first")
"""How the selection treats a target ID that occurs more than once (``select.duplicates``)."""
SELECT_PRESETS = ("kids-dr4", "lsst", "euclid", "none")
"""The selection's presets (``select.preset``; see ``lensdask/catalog/presets.py``)."""
SELECT_SAMPLES = ("LRG", "BG")
"""The samples a selection makes (``select.samples`` keys)."""


@dataclass(frozen=True, kw_only=True)
class SelectConfig:
    """The BG and LRG samples (by default the cuts of Li et al. 2020) and what the targets
    table keeps."""

    preset: str = "kids-dr4"
    """The survey whose samples and column names to use: ``kids-dr4`` (the cuts of Li et
    al. 2020 on KiDS DR4 columns), ``lsst`` (Rubin DP1 Object table names), ``euclid``
    (Euclid Q1 MER catalogue names) or ``none`` (``samples`` gives both)."""
    samples: Mapping[str, str] = field(default_factory=dict)
    """Sample (``BG``, ``LRG``) -> an expression over catalog columns that replaces the
    preset's, e.g. ``LRG: "refExtendedness == 1 and -2.5*log10(r_cModelFlux) + 31.4 <=
    20"``: names, numbers, + - * / **, comparisons, and/or/not, abs, log10, sqrt, isnan. An
    LRG must also be a BG; a missing value (null, NaN) selects nothing."""
    bg_mag_max: float = 21.0
    """BG: ``MAG_AUTO <= bg_mag_max`` (r-band Kron magnitude; kids-dr4 preset)."""
    lrg_mag_max: float = 20.0
    """LRG: ``MAG_AUTO <= lrg_mag_max`` (kids-dr4 preset)."""
    c_perp_max: float = 0.2
    """LRG: ``|c_perp| < c_perp_max`` (kids-dr4 preset)."""
    extra_columns: tuple[str, ...] = ()
    """Catalog columns kept in the targets table beyond those of the catalog contract."""
    column_map: Mapping[str, str] = field(default_factory=dict)
    """Canonical KiDS name -> this catalog's column name, for catalogs not ingested."""
    duplicates: str = "error"
    """What to do with a target ID that occurs more than once (within a catalog file or
    across files): ``error`` fails the selection naming them (all listed in
    ``<targets>/_duplicates.csv``); ``keep-first`` keeps the first occurrence in (file name,
    row) order and drops the others."""
    mask_bits: int = 0
    """Drop sources whose catalog ``MASK`` has any of these bits (``MASK & mask_bits``);
    0 (the default): no cut, as in Li et al. (2020), and ``MASK`` is not read. A null
    ``MASK`` counts as unmasked."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "column_map", _str_mapping(self.column_map, where="select.column_map")
        )
        if self.preset not in SELECT_PRESETS:
            raise ConfigError(
                f"select.preset: one of {', '.join(SELECT_PRESETS)}, got {self.preset!r}"
            )
        object.__setattr__(self, "samples", _samples(self.samples, preset=self.preset))
        changed = [
            f.name
            for f in dataclasses.fields(self)
            if f.name in ("bg_mag_max", "lrg_mag_max", "c_perp_max")
            and getattr(self, f.name) != f.default
        ]
        if self.preset != "kids-dr4" and changed:
            raise ConfigError(
                f"select.{changed[0]} applies to the kids-dr4 preset; with preset "
                f"{self.preset}, write the cut into select.samples"
            )
        if self.duplicates not in DUPLICATE_MODES:
            raise ConfigError(
                f"select.duplicates: one of {', '.join(DUPLICATE_MODES)}, got {self.duplicates!r}"
            )
        if self.lrg_mag_max > self.bg_mag_max:
            raise ConfigError(
                f"select.lrg_mag_max ({self.lrg_mag_max}) must not exceed "
                f"select.bg_mag_max ({self.bg_mag_max}): LRGs are a subset of BGs"
            )
        if not self.c_perp_max > 0:
            raise ConfigError(f"select.c_perp_max: must be > 0, got {self.c_perp_max}")
        if self.mask_bits < 0:
            raise ConfigError(f"select.mask_bits: must be >= 0, got {self.mask_bits}")


def _samples(value: Mapping[str, str] | None, *, preset: str) -> dict[str, str]:
    """``select.samples`` checked against ``select.preset`` (the expressions are parsed by
    the selection and its pre-flight check, which know the catalog's columns)."""
    if value is not None and not isinstance(value, Mapping):
        raise ConfigError(f"select.samples: maps BG and LRG to expressions, got {value!r}")
    result = dict(value or {})
    for key, item in result.items():
        if key not in SELECT_SAMPLES:
            raise ConfigError(
                f"select.samples: the samples are {' and '.join(SELECT_SAMPLES)}, got {key!r}"
            )
        if not isinstance(item, str):
            raise ConfigError(f"select.samples.{key}: an expression in quotes, got {item!r}")
    missing = [name for name in SELECT_SAMPLES if name not in result]
    if preset == "none" and missing:
        raise ConfigError(
            f"select.samples: preset none needs an expression for {' and '.join(missing)}"
        )
    return result


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Turning per-tile FITS catalogs into the Parquet layout."""

    source: Path | None = None
    """Folder of FITS catalogs (needed when a job runs the ingest; the command takes it as
    an argument)."""
    pattern: str = "*.fits"
    """Glob of the FITS catalog files inside the input folder."""
    hdu: int = 1
    """HDU holding the source table."""
    column_map: Mapping[str, str] = field(default_factory=dict)
    """Canonical KiDS name -> the survey's column name (e.g. ``MAG_AUTO: MAG_AUTO_R``)."""
    tile_regex: str = r"(?:KIDS|KiDS_DR[0-9.]+)_([0-9]+\.[0-9]+)_(-?[0-9]+\.[0-9]+)"
    """Regular expression that finds the tile in a file name, used as the unit name and when
    the table has no ``THELI_NAME`` column. With two groups (RA and Dec of the tile centre)
    the tile is ``KIDS_<ra>_<dec>``; with one group, that group. The default reads both
    ``KIDS_186.0_0.5_cat.fits`` and KiDS DR4's ``KiDS_DR4.0_186.0_0.5_ugriZYJHKs_cat.fits``."""
    extra_columns: tuple[str, ...] = ()
    """Further columns copied as they are (after renaming)."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "column_map", _str_mapping(self.column_map, where="ingest.column_map")
        )
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))
        if self.hdu < 0:
            raise ConfigError(f"ingest.hdu: must be >= 0, got {self.hdu}")
        try:
            groups = re.compile(self.tile_regex).groups
        except re.error as err:
            raise ConfigError(f"ingest.tile_regex: not a regular expression: {err}") from None
        if groups not in (1, 2):
            raise ConfigError(f"ingest.tile_regex: needs one or two groups, has {groups}")


@dataclass(frozen=True, kw_only=True)
class CutoutConfig:
    """Cutouts of the targets from the tile images into a Zarr store."""

    bands: tuple[str, ...] = ("r", "g", "i")
    """Bands to cut; the first is the detection band that decides if a target is on its
    tile. Every band's image must exist for a tile to complete."""
    size: int = 101
    """Side of a cutout, pixels (odd; 101 px = 20 arcsec at 0.2 arcsec/pixel)."""
    image_pattern: str = "{tile}_{band}.fits"
    """File name of a tile image inside the images folder."""
    hdu: int | None = None
    """HDU of the image in each FITS file; None (the default): the first HDU with 2-D data
    (HDU 1 of a tile-compressed ``.fz`` file, whose primary HDU is empty)."""
    chunk: int = 256
    """Cutouts per Zarr chunk inside the tile's shard: 256 writes fastest (measured against
    16 and 64, tests/benchmarks/README.md) and reads whole tiles as fast as 64."""
    shard: bool = True
    """One shard per tile and band (one file, kind to parallel file systems, which suffer
    from millions of small files) or one file per chunk (no faster to write since lensdask
    writes the chunks itself, measured)."""
    compression_level: int = 0
    """Zstandard level of the cutout arrays; 0 (the default): no compression, because
    sky-noise-dominated float32 cutouts shrink by only 8% (measured) at the cost of a third
    of the write speed and half of the read speed."""
    flag_bits: int = 207
    """Bits of a flag map (KiDS DR4 mask values) whose pixels count as bad in a cutout's
    ``bad_fraction``. The default, 207 = 1 + 2 + 4 + 8 + 64 + 128, counts readout spikes
    (1), saturation cores (2) and diffraction spikes (4), whose pixel values are wrong and
    make line- and arc-like features; primary reflection halos (8), bright rings that mimic
    arcs; bad pixels (64) and manually masked regions (128), which have no data. It leaves
    out the secondary (16) and tertiary (32) halos: faint, extended and generous masks whose
    pixels are only slightly biased, and which would remove a large share of clean stamps.
    0: flag maps are not used."""
    keep_maps: bool = False
    """Also store each band's weight and flag stamps (``<band>_weight`` and ``<band>_flag``,
    float32 like the cutouts, NaN outside the image; flag values are exact) where the image
    has those maps."""
    psf_keyword: str | None = None
    """Header keyword of each image holding its PSF FWHM in arcsec (``PSF_FWHM`` of ESO's
    Phase 3 images, ``SEEING``); a tile whose image lacks it fails, naming the file. None
    (the default): the PSF is measured on the tile's stars (``measure_psf``)."""
    measure_psf: bool = True
    """Without ``psf_keyword``: measure each tile's PSF FWHM in every band on the bright,
    isolated, unsaturated stars of the catalog (its ``SG2DPHOT`` stars; the stage's
    ``catalog`` input, recorded nowhere without one) with Moffat fits, and record it with its
    uncertainty and the number of stars in the tile's ``psf`` and ``seeing`` attributes."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        if self.psf_keyword is not None and not str(self.psf_keyword).strip():
            raise ConfigError("cutouts.psf_keyword: a FITS keyword or null, got an empty name")
        if not self.bands:
            raise ConfigError("cutouts.bands: at least one band is needed")
        if len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"cutouts.bands: repeated band in {list(self.bands)}")
        if self.size < 1 or self.size % 2 != 1:
            raise ConfigError(f"cutouts.size: must be a positive odd number, got {self.size}")
        if "{tile}" not in self.image_pattern or "{band}" not in self.image_pattern:
            raise ConfigError(
                f"cutouts.image_pattern: needs {{tile}} and {{band}}, got {self.image_pattern!r}"
            )
        if self.hdu is not None and self.hdu < 0:
            raise ConfigError(f"cutouts.hdu: must be >= 0 or null, got {self.hdu}")
        if self.chunk < 1:
            raise ConfigError(f"cutouts.chunk: must be >= 1, got {self.chunk}")
        if not 0 <= self.compression_level <= 22:
            raise ConfigError(f"cutouts.compression_level: 0 to 22, got {self.compression_level}")
        if self.flag_bits < 0:
            raise ConfigError(f"cutouts.flag_bits: must be >= 0, got {self.flag_bits}")


def _check_range(where: str, value: tuple[float, ...], *, lo: float, hi: float) -> None:
    """A (low, high) range inside [lo, hi] (both finite, low <= high)."""
    if len(value) != 2 or not all(isinstance(v, int | float) for v in value):
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    low, high = value
    if not (lo <= low <= high <= hi):
        raise ConfigError(f"{where}: need {lo} <= low <= high <= {hi}, got [{low}, {high}]")


@dataclass(frozen=True, kw_only=True)
class MockLensConfig:
    """How mock lenses are drawn (lenstronomy conventions; ranges are [low, high])."""

    theta_E: tuple[float, float] = (1.0, 5.0)
    """Einstein radius, arcsec, log-uniform (Li et al. 2020: 1 to 5 arcsec)."""
    lens_q: tuple[float, float] = (0.5, 1.0)
    """Axis ratio of the SIE mass, uniform; its angle is uniform."""
    lens_offset: float = 0.05
    """RMS offset of the mass centre from the light centre of the LRG, arcsec per axis."""
    shear: tuple[float, float] = (0.0, 0.05)
    """Modulus of the external shear, uniform; its angle is uniform."""
    source_offset: tuple[float, float] = (0.0, 0.5)
    """Distance of the source from the optical axis in units of ``theta_E``, uniform (small
    values make arcs and rings, up to ~0.5 doubly-imaged sources)."""
    source_R: tuple[float, float] = (0.1, 0.6)
    """Half-light radius of the main source component, arcsec, log-uniform."""
    source_n: tuple[float, float] = (0.5, 2.0)
    """Sersic index of the main source component, uniform."""
    source_q: tuple[float, float] = (0.4, 1.0)
    """Axis ratio of the main source component, uniform."""
    clumps: tuple[int, int] = (0, 4)
    """Number of star-forming clumps on the source, uniform integer, inclusive."""
    clump_R: tuple[float, float] = (0.02, 0.08)
    """Half-light radius of a clump, arcsec, log-uniform."""
    clump_contrast: tuple[float, float] = (0.5, 3.0)
    """Clump ``amp`` over the main component's ``amp``, uniform."""
    grf_sigma: tuple[float, float] = (1e-3, 1e-2)
    """RMS of the Gaussian-random-field potential perturbation, arcsec^2, log-uniform
    (0 turns it off)."""
    grf_slope: tuple[float, float] = (4.0, 6.0)
    """Power-law index of the perturbation's spectrum, ``P(k) ∝ k^-slope``, uniform."""
    arc_peak_ratio: tuple[float, float] = (0.02, 0.3)
    """Peak of the PSF-convolved arc over the peak of the lens galaxy, log-uniform."""

    def __post_init__(self) -> None:
        w = "lenses."
        _check_range(w + "theta_E", self.theta_E, lo=1e-3, hi=30.0)
        _check_range(w + "lens_q", self.lens_q, lo=1e-3, hi=1.0)
        if not 0 <= self.lens_offset < 1:
            raise ConfigError(f"{w}lens_offset: must be in [0, 1) arcsec, got {self.lens_offset}")
        _check_range(w + "shear", self.shear, lo=0.0, hi=0.5)
        _check_range(w + "source_offset", self.source_offset, lo=0.0, hi=3.0)
        _check_range(w + "source_R", self.source_R, lo=1e-3, hi=10.0)
        _check_range(w + "source_n", self.source_n, lo=0.2, hi=8.0)
        _check_range(w + "source_q", self.source_q, lo=1e-3, hi=1.0)
        _check_range(w + "clumps", self.clumps, lo=0, hi=16)
        _check_range(w + "clump_R", self.clump_R, lo=1e-3, hi=10.0)
        _check_range(w + "clump_contrast", self.clump_contrast, lo=0.0, hi=100.0)
        _check_range(w + "grf_sigma", self.grf_sigma, lo=0.0, hi=1.0)
        _check_range(w + "grf_slope", self.grf_slope, lo=1e-3, hi=20.0)
        _check_range(w + "arc_peak_ratio", self.arc_peak_ratio, lo=1e-4, hi=100.0)
        if (self.grf_sigma[0] == 0) != (self.grf_sigma[1] == 0):
            raise ConfigError(f"{w}grf_sigma: log-uniform, so both ends 0 (off) or both > 0")


NEGATIVE_KINDS = ("LRG", "BG", "spiral", "ring", "merger")
"""Kinds of negatives: the two samples, and mock-survey truth types (``TRUE_TYPE``)."""


@dataclass(frozen=True, kw_only=True)
class SimulateConfig:
    """The training set: mock lenses on real LRG cutouts, and real negatives."""

    positives: int = 200_000
    """Mock lenses in the training and validation splits (Li et al. 2020: 200,000)."""
    negatives: int = 18_000
    """Real negatives in the training and validation splits (Li et al. 2020: 18,000)."""
    test_positives: int = 2000
    """Mock lenses in the test split, painted on LRGs kept out of the other splits."""
    test_negatives: int = 2000
    """Real negatives in the test split: distinct cutouts kept out of the other splits,
    shared among kinds by ``test_negative_mix`` (by default all LRGs). They need no
    simulation, so a test split can hold the 15,000 or more that rates at a
    false-positive rate of 1e-4 need, given the cutouts (0: a tenth of the clean LRGs)."""
    test_negative_mix: Mapping[str, float] = field(default_factory=lambda: {"LRG": 1.0})
    """Share of each kind among the test negatives (normalised; kinds the cutouts lack are
    dropped with a warning), e.g. ``{LRG: 0.8, ring: 0.07, spiral: 0.07, merger: 0.06}``
    for a mixed set beside the LRGs; evaluation reports the rates for every negative and,
    where mixed, for the LRGs alone. LRGs need a share: they host the test lenses."""
    validation_fraction: float = 0.1
    """Fraction of the training examples held out for validation."""
    negative_mix: Mapping[str, float] = field(
        default_factory=lambda: {
            "LRG": 0.85,
            "BG": 0.06,
            "spiral": 0.03,
            "ring": 0.03,
            "merger": 0.03,
        }
    )
    """Share of each kind among the negatives (normalised; kinds the cutouts lack are dropped
    with a warning). Kinds other than ``LRG`` and ``BG`` need a ``TRUE_TYPE`` column.
    Mostly LRGs: every mock lens is an LRG, so where few negatives are LRGs a network learns
    "is an LRG" instead of "has arcs" (with half LRGs, the test AUC against LRGs was 0.77
    where the validation AUC was 0.87; 85% LRGs gave a test AUC 0.008 higher than 70%). The
    price is paid on rings, the most lens-like of the other kinds: more of them score high
    (raise their share where a survey's candidates fill up with rings; the numbers are in
    tests/benchmarks/README.md)."""
    band: str = "r"
    """Band of the cutouts the training set is made from: the arcs' brightness is set in it
    (their peak a drawn fraction of the lens galaxy's peak), and its ``bad_fraction`` picks
    the cutouts."""
    bands: tuple[str, ...] | None = None
    """Bands of the training images, in channel order (e.g. ``[g, r, i]``: images of shape
    (size, size, 3)); each arc is painted in every band with its source's colours
    (``source_g_r``, ``source_r_i``) and that band's PSF. They must include ``band``. None
    (the default): ``band`` alone, the reference run's r-band images."""
    normalise: str = "per-band"
    """How images of several bands are scaled onto [0, 255]: ``per-band`` (each band by its
    own minimum and maximum) or ``joint`` (all bands of a stamp by one, keeping the colours;
    ``lensdask/normalise.py``). One band: the same either way."""
    source_g_r: tuple[float, float] = (0.0, 0.6)
    """g-r colour of the painted sources, mag, uniform (blue star-forming galaxies, as the
    mock survey's lensed sources); with several ``bands`` only."""
    source_r_i: tuple[float, float] = (-0.1, 0.4)
    """r-i colour of the painted sources, mag, uniform; with several ``bands`` only."""
    tile_psf: bool = True
    """Convolve each arc with the PSF of its host's tile in each band (a Moffat of the FWHM
    the cutout store records, ``seeing``, with ``psf_beta``); hosts on tiles that record
    none get the configured PSF (counted and logged). False: the configured PSF for all."""
    supersample: int = 3
    """Rays per pixel along each axis when rendering arcs."""
    psf_fwhm: float = 0.7
    """FWHM of the Moffat PSF the arcs are convolved with, arcsec (KiDS r: 0.7)."""
    psf_beta: float = 3.0
    """Moffat index of the PSF."""
    psf_image: Path | None = None
    """A FITS image of the PSF at the cutouts' pixel scale, used instead of the Moffat."""
    batch_size: int = 512
    """Examples per work unit (one task, one Zarr chunk)."""
    seed: int = 0
    """Run seed; batch ``k`` of a split draws from ``SeedSequence([seed, split, k])``."""
    max_bad_fraction: float = 0.05
    """Largest fraction of bad pixels (``bad_fraction`` of the cutout store in ``band``:
    non-finite, zero-weight or flagged) of a cutout taken as a real negative or as the host
    of a mock lens; cutouts above it (stars' halos, missing data) are left out and counted."""
    lenses: MockLensConfig = field(default_factory=MockLensConfig)
    """Priors of the mock lenses."""

    @property
    def channels(self) -> tuple[str, ...]:
        """The bands of the training images, in channel order (``bands``, else ``band``)."""
        return self.bands or (self.band,)

    def __post_init__(self) -> None:
        for name in ("positives", "negatives", "test_positives", "test_negatives"):
            if getattr(self, name) < 0:
                raise ConfigError(f"simulate.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(
                f"simulate.validation_fraction: must be in [0, 1), got {self.validation_fraction}"
            )
        mix = dict(self.negative_mix)
        unknown = sorted(set(mix) - set(NEGATIVE_KINDS))
        if unknown:
            raise ConfigError(
                f"simulate.negative_mix: unknown kind(s) {unknown}; known: {list(NEGATIVE_KINDS)}"
            )
        if any(not (isinstance(v, int | float) and v >= 0) for v in mix.values()) or not any(
            mix.values()
        ):
            raise ConfigError(f"simulate.negative_mix: shares must be >= 0, not all 0: {mix}")
        object.__setattr__(self, "negative_mix", mix)
        test_mix = dict(self.test_negative_mix)
        unknown = sorted(set(test_mix) - set(NEGATIVE_KINDS))
        if unknown:
            raise ConfigError(
                f"simulate.test_negative_mix: unknown kind(s) {unknown}; "
                f"known: {list(NEGATIVE_KINDS)}"
            )
        if any(not (isinstance(v, int | float) and v >= 0) for v in test_mix.values()) or not (
            test_mix.get("LRG", 0) > 0
        ):
            raise ConfigError(
                f"simulate.test_negative_mix: shares must be >= 0, with LRG > 0: {test_mix}"
            )
        object.__setattr__(self, "test_negative_mix", test_mix)
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
            if len(set(self.bands)) != len(self.bands) or self.band not in self.bands:
                raise ConfigError(
                    f"simulate.bands: distinct bands including simulate.band ({self.band!r}), "
                    f"got {list(self.bands)}"
                )
        if self.normalise not in ("per-band", "joint"):
            raise ConfigError(f"simulate.normalise: per-band or joint, got {self.normalise!r}")
        _check_range("simulate.source_g_r", self.source_g_r, lo=-1.0, hi=3.0)
        _check_range("simulate.source_r_i", self.source_r_i, lo=-1.0, hi=3.0)
        object.__setattr__(self, "source_g_r", tuple(self.source_g_r))
        object.__setattr__(self, "source_r_i", tuple(self.source_r_i))
        if self.supersample < 1:
            raise ConfigError(f"simulate.supersample: must be >= 1, got {self.supersample}")
        if not self.psf_fwhm > 0:
            raise ConfigError(f"simulate.psf_fwhm: must be > 0 arcsec, got {self.psf_fwhm}")
        if not self.psf_beta > 1:
            raise ConfigError(f"simulate.psf_beta: must be > 1, got {self.psf_beta}")
        if self.psf_image is not None:
            object.__setattr__(self, "psf_image", Path(self.psf_image))
        if self.batch_size < 1:
            raise ConfigError(f"simulate.batch_size: must be >= 1, got {self.batch_size}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(
                f"simulate.max_bad_fraction: must be in [0, 1], got {self.max_bad_fraction}"
            )


SCHEDULES = ("cosine", "plateau")
"""Learning-rate schedules of :class:`TrainConfig`."""
COMBINATIONS = ("mean", "median")
"""How a committee's members' scores combine into its p_CNN (:class:`TrainConfig`)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training the ResNet-18 classifier on a training set."""

    width: float = 1.0
    """Width multiplier of the ResNet-18 filters (1: the full 64..512 net; 0.25 for CPUs)."""
    epochs: int = 30
    """Most epochs; early stopping usually ends sooner."""
    batch_size: int = 64
    """Examples per training step."""
    learning_rate: float = 1e-3
    """Adam learning rate (the peak of the ``cosine`` schedule)."""
    schedule: str = "cosine"
    """Learning-rate schedule: ``cosine`` (a linear warm-up from a tenth of
    ``learning_rate`` over the first ``warmup`` epochs, then a cosine decay to 1% of it at
    the last of ``epochs``) or ``plateau`` (constant, halved after every ``lr_patience``
    epochs without a better validation loss)."""
    warmup: float = 0.5
    """``cosine``: epochs of linear warm-up (>= 0, fewer than ``epochs``)."""
    patience: int = 5
    """Early stopping: epochs without a better validation loss before stopping."""
    lr_patience: int = 2
    """``plateau``: halve the learning rate after every this many epochs without a better
    validation loss (0: never)."""
    augment: bool = True
    """Random 90-degree rotations, flips, whole-pixel shifts and brightness rescales of
    training batches."""
    arbitrary_rotation: bool = False
    """Augment with arbitrary angles, sub-pixel shifts and zooms too (one bilinear
    resampling, which smooths the sky noise: off by default, see ``lensdask.nn.data``)."""
    mixed_precision: bool | None = None
    """float16 compute: None (default) turns it on where a GPU is used."""
    seed: int = 0
    """Seed of weights, shuffling and augmentation (member ``k`` of a committee: ``seed + k``)."""
    members: int = 1
    """Networks of the committee, each trained independently (its own task, seed and
    checkpoints) and combined by ``combination`` (1: one network, no committee)."""
    member_widths: tuple[float, ...] = ()
    """Width multiplier of each committee member, one per member (empty: ``width`` for all)."""
    combination: str = "mean"
    """How a committee's p_CNN combines its members' scores: ``mean`` or ``median``."""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"train.width: must be > 0, got {self.width}")
        if self.members < 1:
            raise ConfigError(f"train.members: must be >= 1, got {self.members}")
        if self.member_widths and len(self.member_widths) != self.members:
            raise ConfigError(
                f"train.member_widths: one width per member ({self.members}), got "
                f"{len(self.member_widths)}"
            )
        if not all(width > 0 for width in self.member_widths):
            raise ConfigError(f"train.member_widths: must be > 0, got {self.member_widths}")
        if self.combination not in COMBINATIONS:
            raise ConfigError(
                f"train.combination: one of {', '.join(COMBINATIONS)}, got {self.combination!r}"
            )
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"train.schedule: one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not 0 <= self.warmup < self.epochs:
            raise ConfigError(
                f"train.warmup: must be >= 0 and fewer than train.epochs ({self.epochs}), "
                f"got {self.warmup}"
            )
        if self.lr_patience < 0:
            raise ConfigError(f"train.lr_patience: must be >= 0, got {self.lr_patience}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Fine-tuning a trained classifier on graded candidates, with a replay of its
    original training set."""

    positive_p: float | None = None
    """Label candidates as lenses by P = p_cnn * s_ave / 10 at or above this (the ranking's
    P) instead of by the graders' verdict (A or B); None: by the verdict."""
    min_grades: int = 1
    """Grades a candidate needs to be used."""
    agreement: float = 0.6
    """Share of a candidate's graders who must give the same verdict (lens: A or B;
    non-lens: C or D) for it to be used, in (0.5, 1]."""
    holdout: float = 0.2
    """Share of the labelled candidates kept out of the fine-tune to evaluate it, in [0, 1)."""
    val_fraction: float = 0.15
    """Share of the other labelled candidates that validate (early stopping), in (0, 1)."""
    copies: int = 4
    """Augmented copies (rotation, flip, shift, brightness) of each graded training example."""
    replay: float = 0.5
    """Share of the fine-tune's training and validation examples drawn from the original
    training set (so the network does not forget the simulations), in [0, 1)."""
    min_positives: int = 10
    """Fewest lenses among the labelled candidates to fine-tune with."""
    min_negatives: int = 10
    """Fewest non-lenses among the labelled candidates to fine-tune with."""
    epochs: int = 5
    """Most epochs of the fine-tune."""
    batch_size: int = 64
    """Examples per training step."""
    learning_rate: float = 2e-4
    """Adam learning rate, decayed by a cosine over the epochs (no warm-up: the weights are
    trained already)."""
    patience: int = 3
    """Early stopping: epochs without a better validation loss before stopping."""
    augment: bool = True
    """Random 90-degree rotations, flips, shifts and brightness rescales of training batches."""
    mixed_precision: bool | None = None
    """float16 compute: None (default) turns it on where a GPU is used."""
    seed: int = 0
    """Seed of the splits, the replay sample, the copies, shuffling and augmentation."""

    def __post_init__(self) -> None:
        if self.positive_p is not None and not 0 < self.positive_p <= 1:
            raise ConfigError(f"finetune.positive_p: must be in (0, 1], got {self.positive_p}")
        if not 0.5 < self.agreement <= 1:
            raise ConfigError(f"finetune.agreement: must be in (0.5, 1], got {self.agreement}")
        for name, low, high in (("holdout", 0, 1), ("replay", 0, 1)):
            if not low <= getattr(self, name) < high:
                raise ConfigError(
                    f"finetune.{name}: must be in [{low}, {high}), got {getattr(self, name)}"
                )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"finetune.val_fraction: must be in (0, 1), got {self.val_fraction}")
        counts = ("min_grades", "copies", "min_positives", "min_negatives", "epochs")
        for name in (*counts, "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"finetune.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"finetune.learning_rate: must be > 0, got {self.learning_rate}")

    def train_config(self, *, width: float) -> TrainConfig:
        """The training configuration of the fine-tune (``width``: the parent model's)."""
        return TrainConfig(
            width=width,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup=0.0,
            patience=self.patience,
            augment=self.augment,
            mixed_precision=self.mixed_precision,
            seed=self.seed,
        )


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    """Scoring every cutout with a trained classifier."""

    batch_size: int | None = None
    """Images per model call, fixed for every call (the last one is padded): None picks
    1024 on a GPU and 256 on a CPU."""
    read_chunk: int = 1024
    """Cutouts read from the store at a time; the next chunk is read while the model works
    on the current one."""
    mixed_precision: bool | None = None
    """float16 compute: None (default) turns it on where a GPU is used."""
    resample: bool = False
    """Resample the stamps of tiles whose pixel scale (in the model's band) differs from
    the model card's by more than 1% onto the model's scale and input size, conserving
    flux (reproject, the ``resample`` extra). Off (default): such tiles are refused before
    any is scored.

    Tiles within 1% are never resampled."""

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"score.batch_size: must be >= 1, got {self.batch_size}")
        if self.read_chunk < 1:
            raise ConfigError(f"score.read_chunk: must be >= 1, got {self.read_chunk}")


DEFAULT_THRESHOLDS: Mapping[str, float] = types.MappingProxyType({"LRG": 0.75, "BG": 0.98})
"""The reference run's p_cnn thresholds of candidates, per sample."""
EXPLORE_STRATEGIES = ("random", "uncertainty", "disagreement")
"""How targets below the thresholds are drawn for grading (``candidates.explore_strategy``)."""
THETA_E_BINS = (1.0, 1.5, 2.0, 3.0, 5.0)
"""arcsec: edges of the Einstein-radius bins of the test metrics and completeness tables."""
ARC_RATIO_BINS = (0.02, 0.04, 0.08, 0.15, 0.3)
"""Edges of the arc-brightness bins (arc peak / lens galaxy peak) of the test metrics and
completeness tables."""


@dataclass(frozen=True, kw_only=True)
class CandidateConfig:
    """Which scored targets become candidates, and how recovery is measured."""

    thresholds: Mapping[str, float] = field(default_factory=lambda: {"LRG": 0.75, "BG": 0.98})
    """Per sample: a target is a candidate when its ``p_cnn`` is above this (Li et al.
    2020: 0.75 for LRGs, 0.98 for other bright galaxies)."""
    match_radius: float = 1.0
    """arcsec: a known lens matched by position (no ID, or an ID that names no target) is
    the target nearest to it within this."""
    masked_fraction: float = 0.5
    """A known lens that is not recovered is reported ``on a masked stamp`` when its
    target's stamp has no p_cnn or at least this fraction of non-finite (or bad) pixels."""
    theta_e_bins: tuple[float, ...] = THETA_E_BINS
    """arcsec: edges of the Einstein-radius bins of the completeness table."""
    arc_ratio_bins: tuple[float, ...] = ARC_RATIO_BINS
    """Edges of the arc-brightness bins (arc peak / lens galaxy peak) of the completeness
    table."""
    known: Path | None = None
    """Known lenses or earlier candidates whose recovery is reported, one per row: CSV,
    ECSV, FITS, VOTable or Parquet, with the targets' ``ID`` and/or a position
    (``RAJ2000``/``DEJ2000``, ``RA``/``DEC``, VizieR's ``_RAJ2000``/``_DEJ2000``, ... in
    decimal degrees or sexagesimal, right ascension in hours)."""
    explore: int = 0
    """Targets below the thresholds added to the candidates for grading, to learn where
    the classifier errs: flagged ``explore`` in the candidates table (never shown to the
    graders), ranked apart from the search's candidates. 0: none."""
    explore_strategy: str = "random"
    """How the exploration targets are drawn: ``random`` (uniformly among all scored
    targets below their threshold: estimates the lenses the search misses),
    ``uncertainty`` (those just below their sample's threshold), or ``disagreement``
    (largest spread of a committee's member scores, score columns ``p_cnn_<k>``)."""
    explore_seed: int = 0
    """Seed of the exploration draw (``random``, and ties of the other strategies)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.explore, int) and self.explore >= 0):
            raise ConfigError(f"candidates.explore: a count >= 0, got {self.explore!r}")
        if self.explore_strategy not in EXPLORE_STRATEGIES:
            raise ConfigError(
                f"candidates.explore_strategy: one of {', '.join(EXPLORE_STRATEGIES)}, "
                f"got {self.explore_strategy!r}"
            )
        thresholds = {**DEFAULT_THRESHOLDS, **dict(self.thresholds)}
        unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise ConfigError(
                f"candidates.thresholds: one p_cnn threshold per sample (LRG, BG), got {thresholds}"
            )
        for sample, value in thresholds.items():
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise ConfigError(f"candidates.thresholds.{sample}: must be in [0, 1), got {value}")
        object.__setattr__(self, "thresholds", thresholds)
        if not self.match_radius > 0:
            raise ConfigError(f"candidates.match_radius: must be > 0, got {self.match_radius}")
        if not 0 < self.masked_fraction <= 1:
            raise ConfigError(
                f"candidates.masked_fraction: must be in (0, 1], got {self.masked_fraction}"
            )
        for name in ("theta_e_bins", "arc_ratio_bins"):
            edges = tuple(float(edge) for edge in getattr(self, name))
            if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ConfigError(
                    f"candidates.{name}: needs at least two increasing edges, got {edges}"
                )
            object.__setattr__(self, name, edges)
        if self.known is not None:
            object.__setattr__(self, "known", Path(self.known))


@dataclass(frozen=True, kw_only=True)
class StampConfig:
    """Colour stamps of the candidates and contact sheets of them (``lensdask stamps``).

    A colour stamp is :func:`astropy.visualization.make_lupton_rgb` of three bands after
    subtracting each band's sky (median) and dividing all three by the mono band's sky noise,
    so ``stretch`` and ``minimum`` are in units of that noise whatever the survey's units.
    """

    rgb_bands: tuple[str, ...] = ("i", "r", "g")
    """Bands of the red, green and blue channels (KiDS: i, r, g)."""
    mono_band: str = "r"
    """Band of the single-band stamps, and of the colour stamp (grey) when a colour band
    is missing from the store or has no data in the stamp."""
    band_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Multipliers of the red, green and blue bands (after sky subtraction), to balance
    the colours."""
    q: float = 8.0
    """asinh softening parameter Q of the Lupton stretch (> 0; larger compresses the bright
    end more)."""
    stretch: float = 5.0
    """Linear stretch of the Lupton mapping, in units of the mono band's sky noise sigma
    (> 0; smaller shows fainter features, saturates sooner)."""
    minimum: float = 0.0
    """Intensity shown black, in units of the mono band's sky noise sigma (0: the sky)."""
    sheet_columns: int = 6
    """Stamps per row of a contact sheet."""
    sheet_rows: int = 5
    """Rows of stamps per contact sheet."""
    sheet_limit: int | None = None
    """Most candidates on the contact sheets, from the top of the ranking (None: all)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rgb_bands", tuple(self.rgb_bands))
        object.__setattr__(self, "band_weights", tuple(self.band_weights))
        if len(self.rgb_bands) != 3 or not all(
            isinstance(band, str) and band for band in self.rgb_bands
        ):
            raise ConfigError(
                f"stamps.rgb_bands: three band names (red, green, blue), got {self.rgb_bands!r}"
            )
        if not isinstance(self.mono_band, str) or not self.mono_band:
            raise ConfigError(f"stamps.mono_band: a band name, got {self.mono_band!r}")
        if len(self.band_weights) != 3 or not all(
            isinstance(w, int | float) and w > 0 for w in self.band_weights
        ):
            raise ConfigError(f"stamps.band_weights: three numbers > 0, got {self.band_weights!r}")
        if not self.q > 0:
            raise ConfigError(f"stamps.q: must be > 0, got {self.q}")
        if not self.stretch > 0:
            raise ConfigError(f"stamps.stretch: must be > 0 sigma, got {self.stretch}")
        for name in ("sheet_columns", "sheet_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"stamps.{name}: must be >= 1, got {getattr(self, name)}")
        if self.sheet_limit is not None and self.sheet_limit < 1:
            raise ConfigError(f"stamps.sheet_limit: must be >= 1 or null, got {self.sheet_limit}")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "") -> T:
    """Build the config dataclass ``cls`` from a mapping, checking every key.

    Parameters
    ----------
    cls : type
        A config dataclass of this module.
    data : mapping or None
        Values by field name (None: all defaults).
    where : str
        Dotted name of the section the values come from (``mock_survey``), for messages.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'job'}: expected a mapping of keys, got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where or 'top level'}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(fields))}"
        )
    prefix = f"{where}." if where else ""
    kwargs = {
        name: convert(hints[name], value, where=prefix + name) for name, value in data.items()
    }
    return cls(**kwargs)


def convert(hint: Any, value: Any, *, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        return convert(hint, value, where=where)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where=where)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            value = [value]
        if args and args[0] is BandSpec:
            return tuple(_band(item, where=where) for item in value)
        return tuple(value)
    if hint is Path:
        return Path(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is float and isinstance(value, int):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _band(item: Any, *, where: str) -> BandSpec:
    if isinstance(item, str):
        return BandSpec.kids(item)
    if isinstance(item, Mapping):
        name = item.get("name")
        base = dataclasses.asdict(BandSpec.kids(name)) if name in KIDS_BANDS else {}
        return from_mapping(BandSpec, {**base, **item}, where=where)
    raise ConfigError(f"{where}: a band is a name or a mapping, got {item!r}")


IMAGE_PRESETS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        "kids-dr4": types.MappingProxyType(
            {
                "template": "KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits[.fz]",
                "weight_template": "KiDS_DR4.0_{ra}_{dec}_{band}_wei.fits[.fz]",
                "flag_template": "KiDS_DR4.0_{ra}_{dec}_{band}_msk.fits[.fz]",
                "tile_template": "KIDS_{ra}_{dec}",
                "band_map": {"u_SDSS": "u", "g_SDSS": "g", "r_SDSS": "r", "i_SDSS": "i"},
            }
        ),
        "kids-dr4-headers": types.MappingProxyType(
            {"band_map": {"u_SDSS": "u", "g_SDSS": "g", "r_SDSS": "r", "i_SDSS": "i"}}
        ),
    }
)
"""Named settings of the image index (``index_images.preset``): ``kids-dr4`` finds KiDS DR4
coadds by their names (``KiDS_DR4.0_129.0_-0.5_r_sci.fits``, plain or ``.fz``, with the
``_wei`` weight and ``_msk`` flag maps beside them) under the catalog's tile key
``KIDS_129.0_-0.5``; ``kids-dr4-headers`` reads the headers of renamed files (ESO's
``ADP.*.fits``), mapping OmegaCAM's ``FILTER`` values (``r_SDSS``) to bands."""

_TEMPLATE_FIELD = re.compile(r"\{(\w+)(?::[^{}]+)?\}")


def _template_fields(where: str, text: str) -> set[str]:
    """The field names of a file-name template, checked for stray braces."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: a file-name template, got {text!r}")
    if any(char in _TEMPLATE_FIELD.sub("", text) for char in "{}"):
        raise ConfigError(f"{where}: unbalanced brace in {text!r} (fields are {{name}})")
    return set(_TEMPLATE_FIELD.findall(text))


@dataclass(frozen=True, kw_only=True)
class ImageIndexConfig:
    """The image index: which FITS file holds each tile's image of each band.

    It is built one of three ways: from the file names, with ``template`` (or a
    ``preset``); from a ``manifest`` table; or, with neither, from the headers of every
    file of ``source`` (the band from ``band_keyword``, the tile from ``tile_keyword``).
    In all three the rest (HDU, size, WCS footprint, compression, seeing) is read from
    the headers, one task per batch of files.
    """

    source: str | None = None
    """Folder of the images (templates are relative to it), or a glob of the files whose
    headers are read (``images/ADP.*.fits``); default: the job's ``images:`` folder."""
    preset: str | None = None
    """Named settings of a survey: ``kids-dr4`` (templates of the KiDS DR4 coadds and their
    ``_wei`` and ``_msk`` maps, tile key ``KIDS_<ra>_<dec>``) or ``kids-dr4-headers``
    (OmegaCAM ``FILTER`` values for a scan of renamed files). Fields given beside it win."""
    template: str | None = None
    """File-name template of the images, relative to ``source``: ``{tile}_{band}.fits``,
    ``KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits[.fz]`` (``{name}``: a field; ``[text]``: text
    that may be absent)."""
    weight_template: str | None = None
    """Template of an image's weight map, from the image's fields
    (``KiDS_DR4.0_{ra}_{dec}_{band}_wei.fits[.fz]``); an image without one has none."""
    flag_template: str | None = None
    """Template of an image's flag (mask) map, from the image's fields."""
    tile_template: str | None = None
    """The catalog's tile key made from the image's fields (``KIDS_{ra}_{dec}``); default:
    the ``{tile}`` field, else the tile keyword of the header."""
    manifest: Path | None = None
    """CSV or Parquet table of the images: columns ``path`` (relative to the table's
    folder, or absolute) and ``band``; optional ``tile``, ``hdu``, ``weight_path``,
    ``weight_hdu``, ``flag_path``, ``flag_hdu``."""
    hdu: int | None = None
    """HDU of the image in every file; default: the first HDU with 2-D data (1 in a
    tile-compressed ``.fits.fz`` file)."""
    weight_hdu: int | None = None
    """HDU of the weight maps; default: their first HDU with 2-D data."""
    flag_hdu: int | None = None
    """HDU of the flag maps; default: their first HDU with 2-D data."""
    band_keyword: str = "FILTER"
    """Header keyword of the band, where the name or the manifest gives none."""
    band_map: Mapping[str, str] = field(default_factory=dict)
    """Header band value -> band (``r_SDSS: r``); values not listed are the band as they
    are."""
    tile_keyword: str = "OBJECT"
    """Header keyword of the tile key, where the name or the manifest gives none (empty:
    none); failing that, an image's tile is its own key, its file name without the FITS
    suffixes."""
    seeing_keywords: tuple[str, ...] = ("PSF_FWHM", "SEEING")
    """Header keywords of the PSF FWHM in arcsec, the first present wins (none: no
    seeing)."""
    batch_size: int = 256
    """Files whose headers one task reads."""

    def __post_init__(self) -> None:
        if self.preset is not None:
            if self.preset not in IMAGE_PRESETS:
                raise ConfigError(
                    f"index_images.preset: one of {', '.join(IMAGE_PRESETS)}, got {self.preset!r}"
                )
            preset = IMAGE_PRESETS[self.preset]
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in preset.items():
                if name == "band_map":
                    object.__setattr__(self, name, {**value, **dict(self.band_map)})
                elif getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)
        object.__setattr__(
            self, "band_map", _str_mapping(self.band_map, where="index_images.band_map")
        )
        object.__setattr__(self, "seeing_keywords", tuple(self.seeing_keywords))
        if self.manifest is not None:
            object.__setattr__(self, "manifest", Path(self.manifest))
            if self.template is not None:
                raise ConfigError("index_images: give either a manifest or a template, not both")
        if self.source is not None and not isinstance(self.source, str):
            object.__setattr__(self, "source", str(self.source))
        fields = set()
        if self.template is not None:
            fields = _template_fields("index_images.template", self.template)
        for name in ("weight_template", "flag_template", "tile_template"):
            text = getattr(self, name)
            if text is None:
                continue
            if self.template is None:
                raise ConfigError(f"index_images.{name}: needs index_images.template")
            unknown = _template_fields(f"index_images.{name}", text) - fields
            if unknown:
                raise ConfigError(
                    f"index_images.{name}: field(s) {', '.join(sorted(unknown))} are not in "
                    f"the template {self.template!r}"
                )
        for name in ("hdu", "weight_hdu", "flag_hdu"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ConfigError(f"index_images.{name}: must be >= 0 or null, got {value}")
        if not self.band_keyword:
            raise ConfigError("index_images.band_keyword: a FITS keyword is needed")
        if self.batch_size < 1:
            raise ConfigError(f"index_images.batch_size: must be >= 1, got {self.batch_size}")
