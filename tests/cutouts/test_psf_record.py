"""Each tile's PSF recorded by the cutout stage, against the seeing the mock survey drew.

The reference is the mock survey's own draw (``seeing/<tile>.parquet``), never the header
keyword it wrote; the header path is checked separately, and against astropy's reading of
the header.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from lensdask.catalog.select import select_targets
from lensdask.config import CutoutConfig
from lensdask.cutouts.make import make_cutouts
from lensdask.formats.cutout_store import complete_tiles, read_tile_attrs
from lensdask.mock.layouts import CATALOG_DIR, IMAGES_DIR
from lensdask.mock.survey import make_mock_survey
from lensdask.mock.tiles import survey_tiles
from lensdask.testing import small_survey_config

TILES = 2
SURVEY = small_survey_config(
    tiles=TILES, tile_size=0.04, images=True, vary_seeing=True, star_fraction=0.4
)
"""Two 0.04-deg tiles in r, g and i with per-tile seeing and plenty of stars."""
NAMES = [tile.name for tile in survey_tiles(TILES)]
BANDS = tuple(band.name for band in SURVEY.bands)


@pytest.fixture(scope="module")
def survey(tmp_path_factory, client) -> tuple[Path, Path]:
    """The mock survey and its targets (a folder of Parquet files)."""
    base = tmp_path_factory.mktemp("psf_record")
    out = base / "survey"
    report = make_mock_survey(out, config=SURVEY, client=client, progress=False)
    assert report.units.ok, report.units.failures
    selected = select_targets(out / CATALOG_DIR, base / "selected", client=client, progress=False)
    targets = base / "targets"
    targets.mkdir()
    for path in sorted(selected.out.glob("*.parquet")):
        shutil.copy(path, targets / path.name)
    return out, targets


def drawn_seeing(survey: Path, tile: str) -> dict[str, float]:
    """The seeing the mock survey drew for ``tile``, by band, arcsec."""
    truth = pq.read_table(survey / "seeing" / f"{tile}.parquet").to_pandas()
    return dict(zip(truth["band"], truth["seeing"].astype(float), strict=True))


@pytest.fixture(scope="module")
def measured(survey, client, tmp_path_factory) -> Path:
    """Cutouts with the catalog: every tile's PSF measured on its stars."""
    out, targets = survey
    store = tmp_path_factory.mktemp("measured") / "cutouts.zarr"
    report = make_cutouts(
        targets,
        out / IMAGES_DIR,
        store,
        config=CutoutConfig(bands=BANDS),
        client=client,
        catalog=out / CATALOG_DIR,
        progress=False,
    )
    assert report.units.ok, report.units.failures
    assert complete_tiles(store) == NAMES
    return store


@pytest.mark.slow
def test_measured_fwhm_matches_the_drawn_seeing(survey, measured):
    out, _ = survey
    for tile in NAMES:
        attrs = read_tile_attrs(measured, tile)
        drawn = drawn_seeing(out, tile)
        for band in BANDS:
            psf = attrs["psf"][band]
            where = f"{tile} {band}: {psf}, drawn {drawn[band]}"
            assert psf["method"] == "moffat" and psf["reason"] == "", where
            assert psf["n_stars"] >= 10, where
            assert 0 < psf["fwhm_err_arcsec"] < 0.02 * drawn[band], where
            assert abs(psf["fwhm_arcsec"] - drawn[band]) <= 3 * psf["fwhm_err_arcsec"], where
            assert psf["fwhm_arcsec"] == pytest.approx(drawn[band], rel=0.05), where
            assert attrs["seeing"][band] == psf["fwhm_arcsec"]


@pytest.mark.slow
def test_seeing_differs_between_tiles_and_bands(survey, measured):
    """The check above is not passed by a constant: the drawn seeing varies and the
    measurement follows it."""
    out, _ = survey
    pairs = [
        (read_tile_attrs(measured, tile)["seeing"][band], drawn_seeing(out, tile)[band])
        for tile in NAMES
        for band in BANDS
    ]
    drawn = [seeing for _, seeing in pairs]
    assert max(drawn) / min(drawn) > 1.15
    widest = max(range(len(pairs)), key=lambda k: pairs[k][1])
    narrowest = min(range(len(pairs)), key=lambda k: pairs[k][1])
    assert pairs[widest][0] > pairs[narrowest][0]


@pytest.mark.slow
def test_no_catalog_records_no_psf(survey, client, tmp_path):
    out, targets = survey
    store = tmp_path / "cutouts.zarr"
    report = make_cutouts(
        targets,
        out / IMAGES_DIR,
        store,
        config=CutoutConfig(bands=("r",)),
        client=client,
        progress=False,
    )
    assert report.units.ok
    attrs = read_tile_attrs(store, NAMES[0])
    assert "psf" not in attrs and "seeing" not in attrs


@pytest.mark.slow
def test_header_keyword_path_and_a_missing_keyword(survey, client, tmp_path):
    out, targets = survey
    store = tmp_path / "header.zarr"
    report = make_cutouts(
        targets,
        out / IMAGES_DIR,
        store,
        config=CutoutConfig(bands=("r", "i"), psf_keyword="PSF_FWHM"),
        client=client,
        catalog=out / CATALOG_DIR,
        progress=False,
    )
    assert report.units.ok, report.units.failures
    for tile in NAMES:
        attrs = read_tile_attrs(store, tile)
        for band in ("r", "i"):
            header = fits.getheader(out / IMAGES_DIR / f"{tile}_{band}.fits")
            psf = attrs["psf"][band]
            assert psf["method"] == "header:PSF_FWHM"
            assert psf["fwhm_arcsec"] == header["PSF_FWHM"]
            assert psf["n_stars"] == 0 and psf["fwhm_err_arcsec"] is None
            assert attrs["seeing"][band] == header["PSF_FWHM"]

    missing = make_cutouts(
        targets,
        out / IMAGES_DIR,
        tmp_path / "missing.zarr",
        config=CutoutConfig(bands=("r",), psf_keyword="NO_PSF"),
        client=client,
        progress=False,
    )
    failures = {failure.unit: failure.error for failure in missing.units.failures}
    assert sorted(failures) == NAMES
    image = out / IMAGES_DIR / f"{NAMES[0]}_r.fits"
    assert str(image) in failures[NAMES[0]] and "NO_PSF" in failures[NAMES[0]]
