"""Per-tile seeing of the mock survey: drawn once per tile and band, seeded, KiDS-like."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from lensdask.config import KIDS_BANDS, BandSpec
from lensdask.mock.layouts import dr4_columns
from lensdask.mock.seeing import SEEING_CLIP, SEEING_SCATTER, draw_seeing, tile_seeing
from lensdask.mock.survey import band_psf, make_mock_survey, seeing_truth, tile_catalog
from lensdask.mock.tiles import survey_tiles
from lensdask.testing import small_survey_config

UGRI = tuple(BandSpec.kids(name) for name in "ugri")


def test_fixed_seeing_is_the_bands_seeing_exactly():
    config = small_survey_config(tiles=3)
    assert not config.vary_seeing
    for tile in survey_tiles(3):
        assert tile_seeing(tile, config=config) == {b.name: b.seeing for b in config.bands}


def test_same_seed_same_seeing_and_tiles_differ():
    config = small_survey_config(tiles=6, vary_seeing=True)
    first = [tile_seeing(tile, config=config) for tile in survey_tiles(6)]
    again = [tile_seeing(tile, config=config) for tile in survey_tiles(6)]
    assert first == again
    assert len({values["r"] for values in first}) == 6
    other = small_survey_config(tiles=6, vary_seeing=True, seed=8)
    assert [tile_seeing(t, config=other) for t in survey_tiles(6)] != first


def test_seeing_leaves_the_other_streams_as_they_were():
    """Varying the seeing changes the PSF only: the catalog is the same."""
    fixed = small_survey_config(tiles=1, tile_size=0.05)
    varied = small_survey_config(tiles=1, tile_size=0.05, vary_seeing=True)
    tile = survey_tiles(1)[0]
    assert (
        tile_catalog(tile, config=fixed)
        .to_pandas()
        .equals(tile_catalog(tile, config=varied).to_pandas())
    )


def test_distribution_is_kids_like_per_band():
    """Over many tiles: the median is the band's KiDS DR4 seeing, r stays within 0.5-0.95
    arcsec, i spreads wider than r, and nothing passes the clip."""
    rng = np.random.default_rng(1)
    draws = [draw_seeing(UGRI, rng, vary=True) for _ in range(4000)]
    for name, (median, _) in KIDS_BANDS.items():
        values = np.array([d[name] for d in draws])
        assert np.median(values) == pytest.approx(median, rel=0.01)
        log_spread = np.std(np.log(values))
        assert log_spread == pytest.approx(SEEING_SCATTER[name], rel=0.06)
        limit = median * np.exp(SEEING_CLIP * SEEING_SCATTER[name])
        assert values.max() <= limit * (1 + 1e-12)
    r = np.array([d["r"] for d in draws])
    assert np.mean((r > 0.5) & (r < 0.95)) > 0.99
    assert 0.55 < np.percentile(r, 2.5) < np.percentile(r, 97.5) < 0.9
    i = np.array([d["i"] for d in draws])
    assert np.percentile(i, 97.5) - np.percentile(i, 2.5) > 1.3 * (
        np.percentile(r, 97.5) - np.percentile(r, 2.5)
    )


def test_psf_catalog_and_truth_follow_the_tiles_seeing():
    config = small_survey_config(tiles=2, tile_size=0.02, vary_seeing=True)
    for tile in survey_tiles(2):
        seeing = tile_seeing(tile, config=config)
        truth = seeing_truth(tile, config=config).to_pandas()
        assert truth["band"].tolist() == [band.name for band in config.bands]
        assert truth["seeing"].tolist() == [seeing[band.name] for band in config.bands]
        assert (truth["THELI_NAME"] == tile.name).all()
        # the PSF image's half-maximum width is the drawn FWHM (to a pixel's sampling)
        for band in config.bands:
            psf = band_psf(tile, band, config=config)
            centre = psf.shape[0] // 2
            outward = psf[centre, centre:] / psf[centre, centre]
            half = np.interp(0.5, outward[::-1], np.arange(outward.size)[::-1])
            fwhm = 2 * half * config.pixel_scale
            assert fwhm == pytest.approx(seeing[band.name], rel=0.08)
        kids = dataclasses.replace(config, layout="kids-dr4")
        catalog = tile_catalog(tile, config=kids)
        columns = dr4_columns(catalog, tile, config=kids)
        star = catalog["TRUE_TYPE"].to_numpy().astype(str) == "star"
        fwhm_world = columns["FWHM_WORLD"][0][star] * 3600.0
        assert fwhm_world == pytest.approx(seeing["r"], rel=1e-5)


def test_images_carry_their_tiles_seeing(tmp_path, client):
    """The survey writes the truth table, lists it in the marker, and each image's SEEING
    and PSF_FWHM keywords hold its tile's drawn seeing; without vary_seeing there is no
    truth table and the headers hold the band's seeing."""
    config = small_survey_config(tiles=2, tile_size=0.01, images=True, vary_seeing=True)
    report = make_mock_survey(tmp_path / "varied", config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    for tile in survey_tiles(2):
        truth = pq.read_table(tmp_path / "varied" / "seeing" / f"{tile.name}.parquet")
        seeing = dict(zip(truth["band"].to_pylist(), truth["seeing"].to_pylist(), strict=True))
        assert seeing == tile_seeing(tile, config=config)
        for band in config.bands:
            path = tmp_path / "varied" / "images" / f"{tile.name}_{band.name}.fits"
            header = fits.getheader(path)
            assert header["SEEING"] == header["PSF_FWHM"] == pytest.approx(seeing[band.name])
    fixed = small_survey_config(tiles=1, tile_size=0.01, images=True)
    make_mock_survey(tmp_path / "fixed", config=fixed, client=client, progress=False)
    assert not (tmp_path / "fixed" / "seeing").exists()
    header = fits.getheader(tmp_path / "fixed" / "images" / "KIDS_0.0_-0.5_g.fits")
    assert header["PSF_FWHM"] == KIDS_BANDS["g"][0]
