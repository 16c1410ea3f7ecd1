"""PSF of tile images measured on their stars, against the seeing the mock survey drew."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.convolution import discretize_model
from astropy.io import fits
from astropy.modeling.models import Moffat2D
from astropy.wcs import WCS

from lensdask.cutouts.make import row_reader
from lensdask.images.psf import (
    PsfError,
    measure_psf,
    measure_tile_psf,
    moffat_fwhm,
    moffat_stamps,
    psf_from_header,
)
from lensdask.mock.survey import make_mock_survey
from lensdask.mock.tiles import survey_tiles
from lensdask.testing import small_survey_config

TILES = 3


@pytest.fixture(scope="module")
def survey(tmp_path_factory, client):
    """Three 0.04-deg tiles in r, g and i with per-tile seeing and plenty of stars."""
    out = tmp_path_factory.mktemp("seeing")
    config = small_survey_config(
        tiles=TILES, tile_size=0.04, images=True, vary_seeing=True, star_fraction=0.4
    )
    report = make_mock_survey(out, config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    return out, config


@pytest.fixture(scope="module")
def measured(survey):
    """Measured PSF and drawn seeing of every tile and band, and the rows each read took."""
    out, config = survey
    results = {}
    for tile in survey_tiles(TILES):
        catalog = pq.read_table(out / "catalog" / f"{tile.name}.parquet").to_pandas()
        truth = pq.read_table(out / "seeing" / f"{tile.name}.parquet").to_pandas()
        for band in config.bands:
            with fits.open(out / "images" / f"{tile.name}_{band.name}.fits") as hdul:
                wcs = WCS(hdul[0].header)
                x, y = wcs.world_to_pixel_values(catalog["RAJ2000"], catalog["DECJ2000"])
                star = (catalog["SG2DPHOT"] != 0).to_numpy()
                read = row_reader(hdul, 0, band=band.name)
                reads = []

                def counted(start, stop, read=read, reads=reads):
                    reads.append((start, stop))
                    return read(start, stop)

                estimate = measure_tile_psf(
                    counted,
                    hdul[0].shape,
                    stars_xy=np.column_stack([x[star], y[star]]),
                    neighbours_xy=np.column_stack([x, y]),
                    pixel_scale=config.pixel_scale,
                    max_stars=25,
                )
            seeing = float(truth.loc[truth["band"] == band.name, "seeing"].iloc[0])
            results[tile.name, band.name] = (estimate, seeing, reads, y[star])
    return results


@pytest.mark.slow
def test_measured_fwhm_agrees_with_the_drawn_seeing(measured):
    for (tile, band), (estimate, seeing, _, _) in measured.items():
        where = f"{tile} {band}: {estimate}, drawn {seeing}"
        assert estimate.method == "moffat" and estimate.reason == "", where
        assert estimate.n_stars >= 10, where
        assert 0 < estimate.fwhm_err_arcsec < 0.01 * seeing, where
        assert abs(estimate.fwhm_arcsec - seeing) <= 3 * estimate.fwhm_err_arcsec, where
        assert estimate.fwhm_arcsec == pytest.approx(seeing, rel=0.05), where
        assert estimate.beta == pytest.approx(3.0, abs=0.15), where


@pytest.mark.slow
def test_ordering_of_the_seeing_is_recovered(measured):
    values = list(measured.values())
    drawn = sorted({round(seeing, 3) for _, seeing, _, _ in values})
    assert drawn[-1] / drawn[0] > 1.3  # the survey's seeing does vary
    pairs = 0
    for (a, seeing_a, _, _), (b, seeing_b, _, _) in itertools.combinations(values, 2):
        if abs(seeing_a - seeing_b) > 0.02 * min(seeing_a, seeing_b):
            pairs += 1
            assert (a.fwhm_arcsec > b.fwhm_arcsec) == (seeing_a > seeing_b)
    assert pairs >= 20


@pytest.mark.slow
def test_tile_measurement_reads_only_rows_near_the_stars(measured):
    for _, _, reads, star_y in measured.values():
        assert reads
        for start, stop in reads:
            rows = np.arange(start, stop)
            nearest = np.min(np.abs(rows[:, None] - star_y[None, :]), axis=1)
            assert nearest.max() <= 64 + 13, (start, stop)


@pytest.mark.slow
def test_header_path_and_its_errors(survey):
    out, _ = survey
    tile = survey_tiles(1)[0]
    path = out / "images" / f"{tile.name}_r.fits"
    header = fits.getheader(path)
    truth = pq.read_table(out / "seeing" / f"{tile.name}.parquet").to_pandas()
    seeing = float(truth.loc[truth["band"] == "r", "seeing"].iloc[0])
    for keyword in ("PSF_FWHM", "SEEING"):
        estimate = psf_from_header(header, keyword, where=str(path))
        assert estimate.fwhm_arcsec == pytest.approx(seeing)
        assert (estimate.method, estimate.n_stars) == (f"header:{keyword}", 0)
        assert math.isnan(estimate.fwhm_err_arcsec)
    with pytest.raises(
        PsfError, match=r"KIDS_0.0_-0.5_r.fits: the header has no PSF_RAD .*PSF_FWHM"
    ):
        psf_from_header(header, "PSF_RAD", where=str(path))
    with pytest.raises(PsfError, match="FILTER = 'r' is not a number"):
        psf_from_header(header, "FILTER")
    with pytest.raises(PsfError, match="finite and > 0"):
        psf_from_header({"SEEING": -0.7}, "SEEING")


def test_moffat_fwhm_and_pixels_match_astropy():
    for alpha, beta in ((1.5, 2.5), (3.4, 3.0), (6.0, 4.765)):
        model = Moffat2D(amplitude=1.0, x_0=0.0, y_0=0.0, gamma=alpha, alpha=beta)
        assert moffat_fwhm(alpha, beta) == pytest.approx(model.fwhm, rel=1e-12)
        flux, size, dx, dy = 1000.0, 25, 0.3, -0.2
        model.amplitude = flux * (beta - 1) / (np.pi * alpha**2)
        model.x_0, model.y_0 = size // 2 + dx, size // 2 + dy
        reference = discretize_model(model, (0, size), (0, size), mode="oversample", factor=10)
        ours = moffat_stamps(
            np.array([[dx, dy, flux, alpha, beta, 0.0]]), size=size, supersample=10
        )[0]
        np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9 * flux)


def synthetic_field(fwhm: float, *, n: int, rng: np.random.Generator):
    """A 300 x 300 image of ``n`` astropy Moffat stars of FWHM ``fwhm`` pixels (beta 3) on a
    grid, with unit Gaussian noise, and the stars' positions."""
    size, beta = 300, 3.0
    image = rng.standard_normal((size, size))
    alpha = fwhm / moffat_fwhm(1.0, beta)
    side = math.ceil(math.sqrt(n))
    step = size / (side + 1)
    xy = np.array([(step * (1 + i % side), step * (1 + i // side)) for i in range(n)])
    xy += rng.uniform(-0.5, 0.5, xy.shape)
    for x, y in xy:
        model = Moffat2D(gamma=alpha, alpha=beta, x_0=x, y_0=y)
        model.amplitude = 5e4 * (beta - 1) / (np.pi * alpha**2)
        x0, y0 = int(x) - 15, int(y) - 15
        image[y0 : y0 + 31, x0 : x0 + 31] += discretize_model(
            model, (x0, x0 + 31), (y0, y0 + 31), mode="oversample", factor=8
        )
    return image, xy


def test_astropy_stars_and_selection():
    """Stars drawn by astropy give back their FWHM; stars with bad pixels, a neighbour or
    too low a signal-to-noise ratio are left out."""
    rng = np.random.default_rng(3)
    image, xy = synthetic_field(4.0, n=16, rng=rng)
    estimate = measure_psf(image, stars_xy=xy, pixel_scale=0.2)
    assert estimate.n_stars == 16
    # at this signal-to-noise ratio what is left is the sub-pixel sampling (5 x 5 here,
    # 8 x 8 in astropy's pixels): 0.05%
    assert estimate.fwhm_arcsec == pytest.approx(0.8, rel=1e-3)
    assert estimate.beta == pytest.approx(3.0, abs=0.02)
    bad = np.zeros(image.shape, dtype=bool)
    for x, y in xy[:10]:
        bad[int(y) + 3, int(x)] = True
    assert measure_psf(image, stars_xy=xy, pixel_scale=0.2, bad=bad).n_stars == 6
    neighbours = np.concatenate([xy, xy[:12] + np.array([5.0, 0.0])])
    crowded = measure_psf(
        image, stars_xy=xy, pixel_scale=0.2, neighbours_xy=neighbours, min_stars=3
    )
    assert crowded.n_stars == 4
    faint = measure_psf(image, stars_xy=xy, pixel_scale=0.2, snr_range=(1e6, np.inf))
    assert faint.n_stars == 0 and "signal-to-noise" in faint.reason


def test_too_few_stars_is_a_result_not_a_crash():
    rng = np.random.default_rng(4)
    image, xy = synthetic_field(3.5, n=4, rng=rng)
    none = measure_psf(image, stars_xy=np.empty((0, 2)), pixel_scale=0.2)
    assert (none.n_stars, none.reason) == (0, "no stars given")
    assert math.isnan(none.fwhm_arcsec) and math.isnan(none.fwhm_err_arcsec)
    few = measure_psf(image, stars_xy=xy, pixel_scale=0.2)
    assert few.n_stars == 0 and math.isnan(few.fwhm_arcsec)
    assert few.reason == "4 good fits of 4 stars fitted, fewer than 5"
    assert measure_psf(image, stars_xy=xy, pixel_scale=0.2, min_stars=3).n_stars == 4
    edge = measure_psf(image, stars_xy=[[2.0, 150.0], [150.0, 298.0]], pixel_scale=0.2)
    assert edge.reason == "none of 2 stars is inside the image with clean pixels"
    with pytest.raises(ValueError, match=r"star 1 is at \[nan, 3.0\]"):
        measure_psf(image, stars_xy=[[1.0, 2.0], [np.nan, 3.0]], pixel_scale=0.2)
