"""Write a mock survey: one Dask task per tile makes its catalog (and images) and commits it.

Layout of the output folder ``OUT``::

    OUT/catalog/<tile>.parquet        the tile's sources, KiDS DR4 schema + truth columns
    OUT/images/<tile>_<band>.fits     tile images with a TAN WCS (with ``images: true``)
    OUT/_units/<tile>.json            completion marker of the tile
    OUT/survey.json                   the configuration and the tiles

Tile ``k`` draws all its randomness from ``SeedSequence([seed, k])``, so the survey is the
same for a given seed whatever the number of workers, and a rerun rewrites only the tiles
whose marker is missing or was made with another configuration.
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
from lensdask.mock.population import TYPES, draw_population
from lensdask.mock.tiles import Tile, draw_positions, ids_to_arrow, kids_ids, survey_tiles, tile_wcs
from lensdask.runner import UnitReport, run_stage
from lensdask.units import (
    Marker,
    clear_marker,
    commit_file,
    commit_parquet,
    config_hash,
    ids_hash,
    staging_path,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "mock-survey"
CATALOG_DIR = "catalog"
IMAGES_DIR = "images"
IMAGE_PATTERN = "{tile}_{band}.fits"
"""File name of a tile image (the default of the cutout stage too)."""
MOFFAT_BETA = 3.0


def tile_seeds(config: MockSurveyConfig, tile: Tile) -> tuple[np.random.SeedSequence, ...]:
    """Independent seeds of a tile: (catalog, images)."""
    return tuple(np.random.SeedSequence([config.seed, tile.index]).spawn(2))


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
        The tile's sources, sorted by nothing but their draw order, with KiDS DR4 columns
        (``ID``, ``RAJ2000``, ``DECJ2000``, ``THELI_NAME``, ``SG2DPHOT``, ``MAG_AUTO``,
        ``COLOUR_GAAP_g_r``, ``COLOUR_GAAP_r_i``, ``Z_B``, ``MASK``) and truth columns.
    """
    import pyarrow as pa

    rng = np.random.default_rng(tile_seeds(config, tile)[0])
    n_draw = rng.poisson(config.density * config.tile_size**2)
    ra, dec = draw_positions(tile, n_draw, rng, tile_size=config.tile_size)
    columns = draw_population(ra.size, rng, config=config)
    true_type = columns.pop("TRUE_TYPE")
    table = {
        "ID": ids_to_arrow(kids_ids(ra, dec)),
        "RAJ2000": pa.array(ra),
        "DECJ2000": pa.array(dec),
        "THELI_NAME": pa.array(np.full(ra.size, tile.name), type=pa.string()),
        **{name: pa.array(values) for name, values in columns.items()},
        "TRUE_TYPE": pa.DictionaryArray.from_arrays(
            pa.array(true_type.astype(np.int32)), pa.array(TYPES)
        ),
    }
    return pa.table(table)


def band_magnitudes(catalog, band: str) -> np.ndarray:
    """True magnitudes of the sources in ``band`` (r, and g/i from the true colours)."""
    r = catalog["TRUE_MAG_r"].to_numpy().astype(np.float64)
    if band == "r":
        return r
    if band == "g":
        return r + catalog["TRUE_g_r"].to_numpy()
    if band == "i":
        return r - catalog["TRUE_r_i"].to_numpy()
    if band == "u":
        return r + 1.5 * catalog["TRUE_g_r"].to_numpy()
    raise ValueError(f"bands: no colour model for band {band!r}")


def render_tile(
    catalog, tile: Tile, band: BandSpec, *, config: MockSurveyConfig, rng: np.random.Generator
) -> np.ndarray:
    """The image of one tile in one band (pure: no I/O).

    Galaxies are PSF-convolved Sersic profiles, stars the PSF, plus Gaussian sky noise at
    the band's depth; the sky level is subtracted, as in KiDS coadds.

    Returns
    -------
    ndarray of float32, shape (image_size, image_size), counts (zero point ``config.zeropoint``)
    """
    from lensdask.mock.render import mag_to_flux, moffat_psf, render_sources, sky_sigma

    size = config.image_size
    wcs = tile_wcs(tile, size=size, pixel_scale=config.pixel_scale)
    x, y = wcs.world_to_pixel_values(catalog["RAJ2000"].to_numpy(), catalog["DECJ2000"].to_numpy())
    point = catalog["TRUE_TYPE"].to_numpy().astype(str) == "star"
    image = render_sources(
        (size, size),
        x,
        y,
        mag_to_flux(band_magnitudes(catalog, band.name), zeropoint=config.zeropoint),
        n_sersic=np.where(point, 1.0, catalog["N_SERSIC"].to_numpy()),
        r_eff=np.where(point, 1.0, catalog["R_EFF"].to_numpy() / config.pixel_scale),
        q=catalog["AXIS_RATIO"].to_numpy(),
        theta=np.deg2rad(90.0 + catalog["POS_ANGLE"].to_numpy()),
        point=point,
        psf=moffat_psf(band.seeing, pixel_scale=config.pixel_scale, beta=MOFFAT_BETA),
    )
    sigma = sky_sigma(band.depth, zeropoint=config.zeropoint, pixel_scale=config.pixel_scale)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return image


def image_header(tile: Tile, band: BandSpec, *, config: MockSurveyConfig):
    """FITS header of a tile image: its WCS plus band, PSF, zero point and provenance."""
    wcs = tile_wcs(tile, size=config.image_size, pixel_scale=config.pixel_scale)
    header = wcs.to_header()
    header["THELI_NA"] = (tile.name, "tile name (THELI_NAME)")
    header["FILTER"] = (band.name, "band")
    header["SEEING"] = (band.seeing, "[arcsec] FWHM of the Moffat PSF")
    header["PSFBETA"] = (MOFFAT_BETA, "Moffat beta of the PSF")
    header["MAGZERO"] = (config.zeropoint, "[mag] AB magnitude of 1 count")
    header["DEPTH"] = (band.depth, "[mag] 5-sigma limit in a 2 arcsec aperture")
    header["PIXSCALE"] = (config.pixel_scale, "[arcsec/pixel]")
    header["BUNIT"] = "count"
    header["ORIGIN"] = f"lensdask {__version__} mock survey"
    header["SEED"] = (config.seed, "run seed of the mock survey")
    return header


def write_tile(
    tile: Tile, out: Path, *, unit: str, chash: str, config: MockSurveyConfig
) -> dict[str, Any]:
    """Make and commit one tile (unit ``unit`` = the tile's name): catalog Parquet, images,
    then the completion marker.

    Returns
    -------
    dict
        ``rows`` and per-type counts of the tile's catalog.
    """
    from astropy.io import fits

    out = Path(out)
    if unit != tile.name:
        raise ValueError(f"unit {unit!r} is not tile {tile.name!r}")
    clear_marker(out, unit)
    catalog = tile_catalog(tile, config=config)
    rel = f"{CATALOG_DIR}/{tile.name}.parquet"
    files = {rel: commit_parquet(catalog, out, rel)}
    if config.images:
        rng = np.random.default_rng(tile_seeds(config, tile)[1])
        for band in config.bands:
            image = render_tile(catalog, tile, band, config=config, rng=rng)
            name = IMAGE_PATTERN.format(tile=tile.name, band=band.name)
            staged = staging_path(out, name)
            fits.PrimaryHDU(image, header=image_header(tile, band, config=config)).writeto(staged)
            rel = f"{IMAGES_DIR}/{name}"
            commit_file(staged, out / rel)
            files[rel] = (out / rel).stat().st_size
    types = catalog["TRUE_TYPE"].to_numpy().astype(str)
    counts = {name: int((types == name).sum()) for name in TYPES}
    write_marker(
        out,
        Marker(
            unit=tile.name,
            rows=catalog.num_rows,
            ids_hash=ids_hash(catalog["ID"]),
            config_hash=chash,
            files=files,
            extra=counts,
        ),
    )
    return {"rows": catalog.num_rows, **counts}


@dataclass(frozen=True)
class SurveyReport:
    """Outcome of :func:`make_mock_survey`."""

    out: Path
    tiles: int
    written: int
    skipped: int
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chash = config_hash(config)
    tiles = survey_tiles(config.tiles)
    (out / "survey.json").write_text(
        json.dumps(
            {
                "lensdask_version": __version__,
                "config": dataclasses.asdict(config),
                "config_hash": chash,
                "tiles": [tile.name for tile in tiles],
                "image_pattern": IMAGE_PATTERN,
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
    rows = sum(result["rows"] for result in report.results.values())
    return SurveyReport(
        out=out,
        tiles=len(tiles),
        written=len(report.results),
        skipped=len(report.skipped),
        rows_written=rows,
        units=report,
    )
