"""Write a mock survey: one Dask task per tile makes its catalog (and images) and commits it.

Layout of the output folder ``OUT`` (``layout: simple``, the default)::

    OUT/catalog/<tile>.parquet        the tile's sources, KiDS DR4 schema + truth columns
    OUT/images/<tile>_<band>.fits     tile images with a TAN WCS (with ``images: true``)
    OUT/lenses/<tile>.parquet         truth table of the lenses painted into the images
                                      (with ``lens_fraction`` or ``lens_bg_fraction`` > 0)
    OUT/seeing/<tile>.parquet         the tile's seeing in each band: the FWHM and beta of
                                      the Moffat PSF its images are drawn with (with images
                                      and ``vary_seeing``; :func:`seeing_truth`)
    OUT/catalog_hats/                 the catalog as a HATS catalog, made from the tile
                                      files (``catalog_format: hats``; lensdask/mock/hats.py)
    OUT/_units/<tile>.json            completion marker of the tile, listing its files
    OUT/survey.json                   the configuration and the tiles

``layout: kids-dr4`` writes the files as ESO distributes KiDS DR4 instead: FITS catalogs
``OUT/catalogs/KiDS_DR4.0_<ra>_<dec>_ugriZYJHKs_cat.fits`` (no Parquet catalog), and
``OUT/images/KiDS_DR4.0_<ra>_<dec>_<band>_{sci,wei,msk}.fits`` (image, weight map, flag
map); ``compress`` tile-compresses the images as fpack does (``.fits.fz``). The names and
formats are :mod:`lensdask.mock.layouts`.

Tile ``k`` draws all its randomness from ``SeedSequence([seed, k])``, spawned into
independent streams for the catalog, the image noise, the lenses, the image defects
(weight and flag maps) and the seeing (:mod:`lensdask.mock.seeing`), so the survey is the
same for a given seed whatever the number of workers, both layouts hold the same sources
and pixels, a survey with lenses differs from the one without only by its arcs (and the
catalog's ``TRUE_LENS``), and a rerun rewrites only the tiles whose marker is missing or
was made with another configuration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask import __version__
from lensdask.config import BandSpec, MockSurveyConfig
from lensdask.formats.parquet import commit_parquet
from lensdask.lensing.mocks import PEAK_RADIUS
from lensdask.lensing.psf import moffat_psf
from lensdask.mock.layouts import Stars, image_pattern, write_catalog, write_images
from lensdask.mock.lenses import LensPlan, choose_lenses, lens_samples, plan_lenses
from lensdask.mock.population import TYPES, colour_offset, draw_lrgs, draw_population
from lensdask.mock.render import (
    add_profiles,
    mag_to_flux,
    render_sources,
    sky_sigma,
    source_peaks,
)
from lensdask.mock.seeing import tile_seeing
from lensdask.mock.structure import KINDS, add_structures
from lensdask.mock.tiles import (
    ID_LENGTH,
    Tile,
    draw_positions,
    ids_to_arrow,
    kids_ids,
    survey_tiles,
    tile_seeds,
    tile_wcs,
)
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.storage import as_path
from lensdask.units import (
    Marker,
    clear_marker,
    config_hash,
    ids_hash,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "mock-survey"
LENSES_DIR = "lenses"
SEEING_DIR = "seeing"
MOFFAT_BETA = 3.0
KIDS_EXPTIME = {"u": 1000.0, "g": 900.0, "r": 1800.0, "i": 1200.0}
"""Total exposure time of a KiDS coadd per band, s (4x250, 5x180, 5x360, 5x240)."""


def tile_catalog(tile: Tile, *, config: MockSurveyConfig):
    """The catalog of one tile as a pyarrow Table (pure: no I/O).

    Parameters
    ----------
    tile : Tile
        The tile.
    config : MockSurveyConfig
        Survey configuration (density, fractions, seed).

    Returns
    -------
    pyarrow.Table
        The tile's sources in draw order (the natural population, then the extra LRGs of
        ``config.lrg_density``), with KiDS DR4 columns (``ID``, ``RAJ2000``, ``DECJ2000``,
        ``THELI_NAME``, ``SG2DPHOT``, ``MAG_AUTO``, ``COLOUR_GAAP_g_r``,
        ``COLOUR_GAAP_r_i``, ``Z_B``, ``MASK``), the truth columns of
        :func:`lensdask.mock.population.draw_population` and ``TRUE_LENS`` (bool: a lensed
        source is painted around this galaxy, see :func:`tile_lenses`).
    """
    import pyarrow as pa

    rng = np.random.default_rng(tile_seeds(config, tile)[0])
    area = config.tile_size**2
    ra, dec = draw_positions(
        tile, rng.poisson(config.density * area), rng, tile_size=config.tile_size
    )
    columns = draw_population(ra.size, rng, config=config)
    extra_ra, extra_dec = draw_positions(
        tile, rng.poisson(config.lrg_density * area), rng, tile_size=config.tile_size
    )
    extra = draw_lrgs(extra_ra.size, rng, config=config)
    ra, dec = np.concatenate([ra, extra_ra]), np.concatenate([dec, extra_dec])
    columns = {name: np.concatenate([values, extra[name]]) for name, values in columns.items()}
    ids = kids_ids(ra, dec)
    # An extra galaxy on the ID of an earlier source is dropped: IDs stay unique.
    _, first = np.unique(ids.view(f"S{ID_LENGTH}").ravel(), return_index=True)
    if first.size < ra.size:
        keep = np.sort(first)
        ra, dec, ids = ra[keep], dec[keep], ids[keep]
        columns = {name: values[keep] for name, values in columns.items()}
    masks = lens_samples(
        columns["SG2DPHOT"],
        columns["MAG_AUTO"],
        columns["COLOUR_GAAP_g_r"],
        columns["COLOUR_GAAP_r_i"],
    )
    true_lens = choose_lenses(
        masks,
        rng.random(ra.size),
        lens_fraction=config.lens_fraction,
        lens_bg_fraction=config.lens_bg_fraction,
    )
    true_type = columns.pop("TRUE_TYPE")
    table = {
        "ID": ids_to_arrow(ids),
        "RAJ2000": pa.array(ra),
        "DECJ2000": pa.array(dec),
        "THELI_NAME": pa.array(np.full(ra.size, tile.name), type=pa.string()),
        **{name: pa.array(values) for name, values in columns.items()},
        "TRUE_TYPE": pa.DictionaryArray.from_arrays(
            pa.array(true_type.astype(np.int32)), pa.array(TYPES)
        ),
        "TRUE_LENS": pa.array(true_lens),
    }
    return pa.table(table)


def band_magnitudes(catalog, band: str) -> np.ndarray:
    """True magnitudes of the sources in ``band`` (r, and the others from the true colours)."""
    r = catalog["TRUE_MAG_r"].to_numpy().astype(np.float64)
    return r + colour_offset(band, catalog["TRUE_g_r"].to_numpy(), catalog["TRUE_r_i"].to_numpy())


def structure_flux(catalog, band: str, *, zeropoint: float) -> np.ndarray:
    """Flux of the structure (arms, ring, companion and tail) of each source in ``band``,
    counts (0 for sources without one); the rest of a source's flux is its Sersic body."""
    r = catalog["TRUE_MAG_r"].to_numpy().astype(np.float64)
    offset = colour_offset(band, catalog["STRUCT_g_r"].to_numpy(), catalog["STRUCT_r_i"].to_numpy())
    fraction = catalog["STRUCT_FRACTION"].to_numpy().astype(np.float64)
    return fraction * mag_to_flux(r + offset, zeropoint=zeropoint)


def _bodies(catalog, tile: Tile, band: BandSpec, *, config: MockSurveyConfig) -> dict[str, Any]:
    """Pixel positions, fluxes (counts, less the structures') and Sersic shapes (pixels,
    radians) of the sources' bodies in ``band``: the arguments of ``render_sources``."""
    wcs = tile_wcs(tile, size=config.image_size, pixel_scale=config.pixel_scale)
    x, y = wcs.world_to_pixel_values(catalog["RAJ2000"].to_numpy(), catalog["DECJ2000"].to_numpy())
    point = catalog["TRUE_TYPE"].to_numpy().astype(str) == "star"
    total = mag_to_flux(band_magnitudes(catalog, band.name), zeropoint=config.zeropoint)
    structure = structure_flux(catalog, band.name, zeropoint=config.zeropoint)
    return {
        "x": x,
        "y": y,
        "flux": np.maximum(total - structure, 0.0),
        "n_sersic": np.where(point, 1.0, catalog["N_SERSIC"].to_numpy()),
        "r_eff": np.where(point, 1.0, catalog["R_EFF"].to_numpy() / config.pixel_scale),
        "q": catalog["AXIS_RATIO"].to_numpy(),
        "theta": _sky_angle(catalog["POS_ANGLE"].to_numpy()),
        "point": point,
    }


def _sky_angle(position_angle: np.ndarray) -> np.ndarray:
    """Angle in the image (radians from +x towards +y) of a position angle (deg, east of
    north): north is +y and east is -x in the tile images."""
    return np.deg2rad(90.0 + np.asarray(position_angle, dtype=np.float64))


def band_psf(tile: Tile, band: BandSpec, *, config: MockSurveyConfig) -> np.ndarray:
    """The PSF image of ``tile`` in ``band``: a Moffat profile of the tile's seeing in the
    band (:func:`lensdask.mock.seeing.tile_seeing`)."""
    seeing = tile_seeing(tile, config=config)[band.name]
    return moffat_psf(seeing, pixel_scale=config.pixel_scale, beta=MOFFAT_BETA)


def tile_stars(catalog, tile: Tile, band: BandSpec, *, config: MockSurveyConfig) -> Stars:
    """Pixel positions (0-based) and magnitudes in ``band`` of the tile's stars: what the
    flag maps mask (:func:`lensdask.mock.layouts.flag_map`)."""
    star = catalog["TRUE_TYPE"].to_numpy().astype(str) == "star"
    wcs = tile_wcs(tile, size=config.image_size, pixel_scale=config.pixel_scale)
    x, y = wcs.world_to_pixel_values(
        catalog["RAJ2000"].to_numpy()[star], catalog["DECJ2000"].to_numpy()[star]
    )
    return Stars(x=x, y=y, mag=band_magnitudes(catalog, band.name)[star])


def render_tile(
    catalog,
    tile: Tile,
    band: BandSpec,
    *,
    config: MockSurveyConfig,
    rng: np.random.Generator,
    lenses: LensPlan | None = None,
) -> np.ndarray:
    """The image of one tile in one band (pure: no I/O).

    Galaxies are PSF-convolved Sersic bodies, plus the arms, rings or companions of
    spirals, rings and mergers (:mod:`lensdask.mock.structure`); stars are the PSF (the
    tile's own in the band, :func:`band_psf`); the lensed sources of ``lenses`` are added;
    then Gaussian sky noise at the band's depth (the sky level is subtracted, as in KiDS
    coadds).

    Parameters
    ----------
    catalog : pyarrow.Table
        The tile's catalog (:func:`tile_catalog`).
    tile : Tile
    band : BandSpec
    config : MockSurveyConfig
    rng : numpy.random.Generator
        The tile's image-noise generator (bands drawn in order from it).
    lenses : LensPlan, optional
        Lensed sources to paint (:func:`tile_lenses`).

    Returns
    -------
    ndarray of float32, shape (image_size, image_size), counts (zero point ``config.zeropoint``)
    """
    psf = band_psf(tile, band, config=config)
    bodies = _bodies(catalog, tile, band, config=config)
    image = render_sources((config.image_size,) * 2, psf=psf, **bodies)
    kind = catalog["TRUE_TYPE"].to_numpy().astype(str)
    rows = np.flatnonzero(np.isin(kind, KINDS))
    if rows.size:
        ps = config.pixel_scale

        def column(name: str) -> np.ndarray:
            return catalog[name].to_numpy()[rows].astype(np.float64)

        structure_angle = np.where(
            kind[rows] == "spiral",
            np.deg2rad(column("STRUCT_ANGLE")),
            _sky_angle(column("STRUCT_ANGLE")),
        )
        add_structures(
            image,
            bodies["x"][rows],
            bodies["y"][rows],
            structure_flux(catalog, band.name, zeropoint=config.zeropoint)[rows],
            kind=kind[rows],
            q=column("AXIS_RATIO"),
            theta=bodies["theta"][rows],
            radius=column("STRUCT_RADIUS") / ps,
            width=column("STRUCT_WIDTH") / ps,
            angle=structure_angle,
            pitch=np.deg2rad(column("STRUCT_PITCH")),
            psf=psf,
        )
    if lenses is not None and lenses.x.size:
        add_profiles(image, lenses.x, lenses.y, lenses.flux(band.name), lenses.arcs, psf=psf)
    sigma = sky_sigma(band.depth, zeropoint=config.zeropoint, pixel_scale=config.pixel_scale)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return image


def tile_lenses(catalog, tile: Tile, *, config: MockSurveyConfig) -> tuple[LensPlan, Any]:
    """The lensed sources of a tile and their truth table (pure: no I/O).

    The lens galaxies are the catalog's ``TRUE_LENS`` rows; their parameters, source
    colours and arcs are drawn from the tile's lens seed (:func:`tile_seeds`), and each arc
    is scaled to the r-band peak of its galaxy's body as :func:`render_tile` draws it
    (:func:`lensdask.mock.render.source_peaks` within ``lensdask.lensing.mocks.PEAK_RADIUS``
    pixels, no neighbours, no noise).

    Returns
    -------
    plan : LensPlan
        What :func:`render_tile` paints.
    truth : pyarrow.Table
        One row per lens: ``ID``, ``THELI_NAME``, ``RAJ2000``, ``DECJ2000`` of the lens
        galaxy, its ``sample`` (``LRG`` or ``BG``, by the default cuts), then
        :meth:`LensPlan.columns` (``theta_E``, ``magnification``, ``arc_peak_ratio``,
        ``arc_flux_r``, ``arc_mag_r``, ``lens_peak_r``, ``source_g_r``, ``source_r_i`` and
        every drawn parameter).
    """
    import pyarrow as pa

    rows = np.flatnonzero(catalog["TRUE_LENS"].to_numpy(zero_copy_only=False))
    r_band = next(band for band in config.bands if band.name == "r")
    psf_r = band_psf(tile, r_band, config=config)
    bodies = {
        name: values[rows] for name, values in _bodies(catalog, tile, r_band, config=config).items()
    }
    peaks = source_peaks(psf=psf_r, radius=PEAK_RADIUS, **bodies)
    plan = plan_lenses(
        bodies["x"],
        bodies["y"],
        peaks,
        np.random.default_rng(tile_seeds(config, tile)[2]),
        lenses=config.lenses,
        psf_r=psf_r,
        pixel_scale=config.pixel_scale,
        source_g_r=config.lens_source_g_r,
        source_r_i=config.lens_source_r_i,
    )
    lenses = catalog.take(pa.array(rows, type=pa.int64()))
    masks = lens_samples(
        lenses["SG2DPHOT"].to_numpy(),
        lenses["MAG_AUTO"].to_numpy(),
        lenses["COLOUR_GAAP_g_r"].to_numpy(),
        lenses["COLOUR_GAAP_r_i"].to_numpy(),
    )
    truth = {
        "ID": lenses["ID"],
        "THELI_NAME": lenses["THELI_NAME"],
        "RAJ2000": lenses["RAJ2000"],
        "DECJ2000": lenses["DECJ2000"],
        "sample": pa.array(np.where(masks.lrg, "LRG", "BG").astype(object), type=pa.string()),
        **{
            name: pa.array(values)
            for name, values in plan.columns(zeropoint=config.zeropoint).items()
        },
    }
    return plan, pa.table(truth)


def seeing_truth(tile: Tile, *, config: MockSurveyConfig):
    """The seeing truth table of a tile (pure: no I/O): one row per band of ``config``.

    Returns
    -------
    pyarrow.Table
        ``THELI_NAME``, ``band``, ``seeing`` (FWHM of the Moffat PSF the tile's images in
        the band are drawn with, arcsec) and ``moffat_beta``; the same values as the
        images' ``SEEING`` and ``PSF_FWHM`` header keywords.
    """
    import pyarrow as pa

    seeing = tile_seeing(tile, config=config)
    return pa.table(
        {
            "THELI_NAME": pa.array([tile.name] * len(seeing), type=pa.string()),
            "band": pa.array(list(seeing), type=pa.string()),
            "seeing": pa.array(list(seeing.values()), type=pa.float64()),
            "moffat_beta": pa.array([MOFFAT_BETA] * len(seeing), type=pa.float64()),
        }
    )


def image_header(tile: Tile, band: BandSpec, *, config: MockSurveyConfig):
    """FITS header of a tile image: its WCS plus tile, band, exposure time, PSF, zero point
    and provenance, in the keywords of KiDS coadds (``OBJECT``, ``FILTER``, ``EXPTIME``,
    ``MAGZERO``, ``SEEING``) and of ESO's Phase 3 products (``PSF_FWHM``, ``PHOTZP``,
    ``ABMAGLIM``, ``PRODCATG``), so that a header scan recognises a renamed file.
    ``SEEING`` and ``PSF_FWHM`` hold the tile's own seeing in the band
    (:func:`lensdask.mock.seeing.tile_seeing`)."""
    wcs = tile_wcs(tile, size=config.image_size, pixel_scale=config.pixel_scale)
    seeing = tile_seeing(tile, config=config)[band.name]
    header = wcs.to_header()
    header["OBJECT"] = (tile.name, "tile")
    header["THELI_NA"] = (tile.name, "tile name (THELI_NAME)")
    header["FILTER"] = (band.name, "band")
    if band.name in KIDS_EXPTIME:
        header["EXPTIME"] = (KIDS_EXPTIME[band.name], "[s] total exposure time (KiDS)")
    header["SEEING"] = (seeing, "[arcsec] FWHM of the Moffat PSF")
    header["PSF_FWHM"] = (seeing, "[arcsec] FWHM of the PSF")
    header["PSFBETA"] = (MOFFAT_BETA, "Moffat beta of the PSF")
    header["MAGZERO"] = (config.zeropoint, "[mag] AB magnitude of 1 count")
    header["PHOTZP"] = (config.zeropoint, "[mag] AB magnitude of 1 count")
    header["DEPTH"] = (band.depth, "[mag] 5-sigma limit in a 2 arcsec aperture")
    header["ABMAGLIM"] = (band.depth, "[mag] 5-sigma limit in a 2 arcsec aperture")
    header["PRODCATG"] = "SCIENCE.IMAGE"
    header["PIXSCALE"] = (config.pixel_scale, "[arcsec/pixel]")
    header["BUNIT"] = "count"
    header["ORIGIN"] = f"lensdask {__version__} mock survey"
    header["SEED"] = (config.seed, "run seed of the mock survey")
    return header


def write_tile(
    tile: Tile,
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    config: MockSurveyConfig,
) -> dict[str, Any]:
    """Make and commit one tile (unit ``unit`` = the tile's name): catalog, lens and seeing
    truth tables, images (with weight and flag maps in ``kids-dr4``), in the configured layout
    (:mod:`lensdask.mock.layouts`), then the completion marker listing every file.

    Returns
    -------
    dict
        ``rows`` and per-type counts of the tile's catalog, and ``lenses`` painted when
        lenses are configured.
    """
    out = as_path(out)
    if unit != tile.name:
        raise ValueError(f"unit {unit!r} is not tile {tile.name!r}")
    clear_marker(out, unit)
    catalog = tile_catalog(tile, config=config)
    files = write_catalog(catalog, tile, out, config=config)
    counts: dict[str, int] = {}
    if config.images:
        plan = None
        if config.lens_fraction or config.lens_bg_fraction:
            plan, truth = tile_lenses(catalog, tile, config=config)
            rel = f"{LENSES_DIR}/{tile.name}.parquet"
            files[rel] = commit_parquet(truth, out, rel)
            counts["lenses"] = truth.num_rows
        if config.vary_seeing:
            rel = f"{SEEING_DIR}/{tile.name}.parquet"
            files[rel] = commit_parquet(seeing_truth(tile, config=config), out, rel)
        seeds = tile_seeds(config, tile)
        rng = np.random.default_rng(seeds[1])
        defects = np.random.default_rng(seeds[3])
        for band in config.bands:
            image = render_tile(catalog, tile, band, config=config, rng=rng, lenses=plan)
            files |= write_images(
                image,
                tile,
                band,
                out,
                config=config,
                header=image_header(tile, band, config=config),
                stars=tile_stars(catalog, tile, band, config=config),
                rng=defects,
            )
    types = catalog["TRUE_TYPE"].to_numpy().astype(str)
    counts |= {name: int((types == name).sum()) for name in TYPES}
    write_marker(
        out,
        Marker(
            unit=tile.name,
            rows=catalog.num_rows,
            ids_hash=ids_hash(catalog["ID"]),
            config_hash=chash,
            inputs=lineage,
            files=files,
            extra=counts,
        ),
    )
    return {"rows": catalog.num_rows, **counts}


@dataclass(frozen=True)
class SurveyReport(UnitCounts):
    """Outcome of :func:`make_mock_survey`."""

    out: Path
    tiles: int
    rows_written: int
    units: UnitReport


def make_mock_survey(
    out: str | Path, *, config: MockSurveyConfig, client: Any, progress: bool = True
) -> SurveyReport:
    """Generate a mock survey into ``out`` on the Dask cluster of ``client``.

    Parameters
    ----------
    out : path
        Output folder (created); see the module docstring for its layout.
    config : MockSurveyConfig
        What to generate.
    client : distributed.Client
        The injected Dask client; one task per tile.
    progress : bool
        Show a progress bar over tiles.

    Returns
    -------
    SurveyReport
        Tiles written and skipped, rows written and the failures.
    """
    out = as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the tiles are the same in either catalog format
    chash = config_hash(
        {k: v for k, v in dataclasses.asdict(config).items() if k != "catalog_format"}
    )
    tiles = survey_tiles(config.tiles)
    (out / "survey.json").write_text(
        json.dumps(
            {
                "lensdask_version": __version__,
                "config": dataclasses.asdict(config),
                "config_hash": chash,
                "tiles": [tile.name for tile in tiles],
                "layout": config.layout,
                "image_pattern": image_pattern(config),
            },
            indent=2,
        )
    )
    report = run_stage(
        client,
        write_tile,
        out,
        {tile.name: tile for tile in tiles},
        chash=chash,
        stage=STAGE,
        progress=progress,
        config=config,
    )
    if config.catalog_format == "hats" and report.ok:  # from the tiles once all are written
        from lensdask.mock.hats import write_catalog_hats

        write_catalog_hats(out, client=client, progress=progress)
    rows = sum(result["rows"] for result in report.results.values())
    return SurveyReport(
        out=out,
        tiles=len(tiles),
        rows_written=rows,
        units=report,
    )


def run(
    config: MockSurveyConfig, io: StageIO, *, client: Any, progress: bool = True
) -> StageOutcome:
    """The ``mock-survey`` stage: :func:`make_mock_survey` into the ``survey`` artifact."""
    report = make_mock_survey(io.out("survey"), config=config, client=client, progress=progress)
    return StageOutcome(
        reports=[report.units],
        outputs={"mock survey": report.out},
        lines=[
            f"mock survey: {report.written} tiles written, {report.skipped} already complete, "
            f"{report.rows_written} sources written -> {report.out}"
        ],
    )
