"""The mock survey job: deterministic over worker counts, resumable, images match catalog."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner
from distributed import Client, LocalCluster

from lensdask.catalog.cuts import target_masks
from lensdask.catalog.select import select_targets
from lensdask.cli import main
from lensdask.config import BandSpec, SelectConfig
from lensdask.mock.survey import make_mock_survey, render_tile, tile_catalog
from lensdask.mock.tiles import survey_tiles
from lensdask.testing import small_survey_config


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in (".parquet", ".fits")
    }


@pytest.fixture(scope="module")
def survey_with_images(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("survey")
    config = small_survey_config(tiles=2, tile_size=0.03, images=True, density=400_000.0)
    report = make_mock_survey(out, config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    return out, config


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path, client):
    config = small_survey_config(tiles=3, tile_size=0.05)
    make_mock_survey(tmp_path / "two", config=config, client=client, progress=False)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as one,
    ):
        make_mock_survey(tmp_path / "one", config=config, client=one, progress=False)
    two, one_worker = digests(tmp_path / "two"), digests(tmp_path / "one")
    assert len(two) == 3
    assert two == one_worker
    other_seed = small_survey_config(tiles=3, tile_size=0.05, seed=8)
    make_mock_survey(tmp_path / "seed8", config=other_seed, client=client, progress=False)
    assert digests(tmp_path / "seed8") != two


def test_rerun_skips_complete_tiles_and_redoes_an_interrupted_one(tmp_path, client):
    config = small_survey_config(tiles=3, tile_size=0.05)
    first = make_mock_survey(tmp_path, config=config, client=client, progress=False)
    assert first.written == 3 and first.rows_written > 0
    before = digests(tmp_path)
    again = make_mock_survey(tmp_path, config=config, client=client, progress=False)
    assert (again.written, again.skipped) == (0, 3)
    # interrupted half-way: the catalog file is truncated and the marker never written
    victim = survey_tiles(3)[1].name
    (tmp_path / "_units" / f"{victim}.json").unlink()
    path = tmp_path / "catalog" / f"{victim}.parquet"
    path.write_bytes(path.read_bytes()[:100])
    resumed = make_mock_survey(tmp_path, config=config, client=client, progress=False)
    assert list(resumed.units.results) == [victim]
    assert digests(tmp_path) == before


def test_catalog_contract_and_truth_columns():
    config = small_survey_config(tile_size=0.1)
    table = tile_catalog(survey_tiles(1)[0], config=config)
    assert table.column_names[:4] == ["ID", "RAJ2000", "DECJ2000", "THELI_NAME"]
    assert str(table.schema.field("ID").type) == "string"
    assert str(table.schema.field("RAJ2000").type) == "double"
    assert set(table["THELI_NAME"].to_pylist()) == {"KIDS_0.0_-0.5"}
    assert len(set(table["ID"].to_pylist())) == table.num_rows
    expected = config.density * config.tile_size**2
    assert abs(table.num_rows - expected) < 5 * np.sqrt(expected)


def test_survey_json_records_config(survey_with_images):
    out, config = survey_with_images
    meta = json.loads((out / "survey.json").read_text())
    assert meta["tiles"] == ["KIDS_0.0_-0.5", "KIDS_1.0_-0.5"]
    assert meta["config"]["seed"] == config.seed


def test_images_have_a_real_wcs_and_provenance(survey_with_images):
    out, config = survey_with_images
    for band in ("r", "g", "i"):
        with fits.open(out / "images" / f"KIDS_1.0_-0.5_{band}.fits") as hdul:
            header = hdul[0].header
            assert hdul[0].data.shape == (config.image_size, config.image_size)
            assert hdul[0].data.dtype.name in ("float32", ">f4")
            assert header["FILTER"] == band and header["MAGZERO"] == 30.0
            wcs = WCS(header)
            assert wcs.wcs.ctype[0] == "RA---TAN"
            ra, dec = wcs.pixel_to_world_values(
                (config.image_size - 1) / 2, (config.image_size - 1) / 2
            )
            assert np.allclose([ra, dec], [1.0, -0.5])


def test_rendered_sources_sit_where_the_catalog_says(survey_with_images):
    """Round trip through the WCS: bright isolated sources, centroided in the r image and
    converted back to RA/Dec, land on their catalog positions."""
    out, _ = survey_with_images
    table = pq.read_table(out / "catalog" / "KIDS_0.0_-0.5.parquet").to_pandas()
    with fits.open(out / "images" / "KIDS_0.0_-0.5_r.fits") as hdul:
        image = hdul[0].data.astype(np.float64)
        wcs = WCS(hdul[0].header)
    x, y = wcs.world_to_pixel_values(table["RAJ2000"], table["DECJ2000"])
    table["x"], table["y"] = x, y
    margin = 12
    inside = (
        (x > margin) & (x < image.shape[1] - margin) & (y > margin) & (y < image.shape[0] - margin)
    )
    plain = table["TRUE_TYPE"].isin(["star", "red", "blue"])  # mergers are off-centre
    bright = table[inside & plain & (table["TRUE_MAG_r"] < 20.5) & (table["R_EFF"] < 1.5)]
    checked = 0
    for row in bright.itertuples():
        others = table[(table.index != row.Index) & (table["TRUE_MAG_r"] < 25.0)]
        if np.min(np.hypot(others.x - row.x, others.y - row.y)) < 15:
            continue  # blended
        ix, iy = round(row.x), round(row.y)
        stamp = image[iy - 6 : iy + 7, ix - 6 : ix + 7]
        weights = np.clip(stamp, 0, None)
        yy, xx = np.mgrid[iy - 6 : iy + 7, ix - 6 : ix + 7]
        cx, cy = (weights * xx).sum() / weights.sum(), (weights * yy).sum() / weights.sum()
        ra, dec = wcs.pixel_to_world_values(cx, cy)
        offset = np.hypot((ra - row.RAJ2000) * np.cos(np.deg2rad(dec)), dec - row.DECJ2000)
        assert offset * 3600 < 0.06, (row.ID, offset * 3600)
        checked += 1
    assert checked >= 3


def test_sky_noise_matches_the_band_depth(survey_with_images):
    out, config = survey_with_images
    from lensdask.mock.render import sky_sigma

    for band in config.bands:
        with fits.open(out / "images" / f"KIDS_0.0_-0.5_{band.name}.fits") as hdul:
            data = hdul[0].data.astype(np.float64)
        # robust sigma of the sky: median absolute deviation of pixel differences
        diff = (data[:, 1:] - data[:, :-1]).ravel()
        sigma = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2)
        assert sigma == pytest.approx(sky_sigma(band.depth, pixel_scale=0.2), rel=0.1)


def test_flux_in_image_matches_catalog_magnitudes():
    """Sum of an image without noise over a tile equals the total flux of its sources."""
    config = small_survey_config(tile_size=0.02, density=200_000.0)
    tile = survey_tiles(1)[0]
    table = tile_catalog(tile, config=config)
    band = BandSpec(name="r", seeing=0.7, depth=34.9)  # practically no noise
    image = render_tile(table, tile, band, config=config, rng=np.random.default_rng(0))
    mags = table["TRUE_MAG_r"].to_numpy().astype(np.float64)
    small = table["R_EFF"].to_numpy() < 1.0  # whose light stays inside the tile
    flux = 10 ** (-0.4 * (mags - 30.0))
    assert image.sum() == pytest.approx(flux.sum(), rel=0.15)
    assert image.sum() > flux[small].sum()


def test_extra_lrgs_add_to_the_selected_lrgs():
    """lrg_density adds red galaxies after the natural population, which stays the same,
    and the real cuts classify them as LRGs (all but those with NaN colours)."""
    config = small_survey_config(tiles=1, tile_size=0.1, lrg_density=20_000.0)
    tile = survey_tiles(1)[0]
    natural = tile_catalog(tile, config=small_survey_config(tiles=1, tile_size=0.1))
    boosted = tile_catalog(tile, config=config)
    n_extra = boosted.num_rows - natural.num_rows
    expected = config.lrg_density * config.tile_size**2
    assert abs(n_extra - expected) < 5 * np.sqrt(expected)
    head = boosted.slice(0, natural.num_rows).drop(["TRUE_LENS"]).to_pandas()
    assert head.equals(natural.drop(["TRUE_LENS"]).to_pandas())

    def lrgs(table) -> int:
        masks = target_masks(
            table["SG2DPHOT"].to_numpy(),
            table["MAG_AUTO"].to_numpy(),
            table["COLOUR_GAAP_g_r"].to_numpy(),
            table["COLOUR_GAAP_r_i"].to_numpy(),
            config=SelectConfig(),
        )
        return int(masks.lrg.sum())

    assert lrgs(boosted) - lrgs(natural) == pytest.approx(
        n_extra * (1 - config.nan_colour_fraction), rel=0.05
    )


def test_survey_with_lenses_commits_truth_and_is_deterministic(tmp_path, client):
    """Truth tables are committed with their tile (listed in the marker), match the
    catalog's TRUE_LENS, travel through the selection as an extra column, and every byte
    is the same whatever the number of workers."""
    config = small_survey_config(
        tile_size=0.03, images=True, lrg_density=5000.0, lens_fraction=1.0, density=60_000.0
    )
    report = make_mock_survey(tmp_path / "two", config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    out = tmp_path / "two"
    n_lenses = 0
    for tile in survey_tiles(config.tiles):
        marker = json.loads((out / "_units" / f"{tile.name}.json").read_text())
        rel = f"lenses/{tile.name}.parquet"
        assert marker["files"][rel] == (out / rel).stat().st_size
        truth = pq.read_table(out / rel).to_pandas()
        catalog = pq.read_table(out / "catalog" / f"{tile.name}.parquet").to_pandas()
        assert sorted(truth["ID"]) == sorted(catalog.loc[catalog["TRUE_LENS"], "ID"])
        assert marker["extra"]["lenses"] == len(truth)
        n_lenses += len(truth)
    assert n_lenses >= 4
    selected = select_targets(
        out / "catalog",
        tmp_path / "targets",
        config=SelectConfig(extra_columns=("TRUE_LENS", "TRUE_TYPE")),
        client=client,
        progress=False,
    )
    assert selected.units.ok
    targets = pd.read_parquet(tmp_path / "targets")
    assert targets.loc[targets["sample"] == "LRG", "TRUE_LENS"].all()
    assert targets["TRUE_LENS"].sum() == n_lenses
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as one,
    ):
        make_mock_survey(tmp_path / "one", config=config, client=one, progress=False)
    assert digests(tmp_path / "one") == digests(out)


def test_cli_mock_survey_has_the_lens_and_population_options():
    result = CliRunner().invoke(main, ["mock-survey", "--help"])
    assert result.exit_code == 0
    for option in (
        "--lrg-density",
        "--lens-fraction",
        "--lens-bg-fraction",
        "--spiral-fraction",
        "--ring-fraction",
        "--merger-fraction",
    ):
        assert option in result.output
