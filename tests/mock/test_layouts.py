"""The kids-dr4 layout of the mock survey: names, HDUs, pixels equal to the simple layout's,
weight and flag maps, headers, FITS catalogs through ``lensdask ingest``, determinism."""

from __future__ import annotations

import gzip
import hashlib
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner
from distributed import Client, LocalCluster

from lensdask.catalog.ingest import ingest_catalogs, tile_name
from lensdask.cli import main
from lensdask.config import ConfigError, IngestConfig
from lensdask.mock import layouts
from lensdask.mock.layouts import (
    BAD_PIXEL,
    MANUAL_MASK,
    PRIMARY_HALO,
    SATURATION_CORE,
    SATURATION_MAG,
    STAR_MASK_MAG,
    Defects,
    Stars,
    catalog_path,
    commit_fits,
    draw_defects,
    flag_map,
    image_hdus,
    image_path,
    kids_stem,
)
from lensdask.mock.render import sky_sigma
from lensdask.mock.survey import make_mock_survey, tile_catalog, tile_stars
from lensdask.mock.tiles import Tile, survey_tiles
from lensdask.testing import small_survey_config

BANDS = ("r", "g", "i")
CONTRACT = [
    "ID",
    "RAJ2000",
    "DECJ2000",
    "THELI_NAME",
    "SG2DPHOT",
    "MAG_AUTO",
    "COLOUR_GAAP_g_r",
    "COLOUR_GAAP_r_i",
    "Z_B",
    "MASK",
]


def survey_config(**overrides):
    values = {"tiles": 2, "tile_size": 0.025, "images": True, "density": 400_000.0}
    return small_survey_config(**(values | overrides))


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith("_") and path.parent.name != "_units"
    }


@pytest.fixture(scope="module")
def surveys(tmp_path_factory, client):
    """The same survey in the simple layout and in kids-dr4, plain, GZIP_2 and RICE_1."""
    root = tmp_path_factory.mktemp("layouts")
    variants = {
        "simple": survey_config(),
        "dr4": survey_config(layout="kids-dr4"),
        "gzip": survey_config(layout="kids-dr4", compress="GZIP_2"),
        "rice": survey_config(layout="kids-dr4", compress="RICE_1"),
    }
    for name, config in variants.items():
        report = make_mock_survey(root / name, config=config, client=client, progress=False)
        assert report.units.ok, report.units.failures
    return root, variants


def stem(tile: Tile) -> str:
    return f"KiDS_DR4.0_{tile.name.removeprefix('KIDS_')}"


def test_kids_names_follow_the_dr4_convention():
    tile = Tile(index=129 + 360, ra=129.0, dec=-0.5)
    assert tile.name == "KIDS_129.0_-0.5"
    config = survey_config(layout="kids-dr4")
    assert kids_stem(tile) == "KiDS_DR4.0_129.0_-0.5"
    assert image_path(tile, "r", config=config) == "images/KiDS_DR4.0_129.0_-0.5_r_sci.fits"
    assert image_path(tile, "g", config=config, product="wei").endswith("_g_wei.fits")
    assert image_path(tile, "i", config=config, product="msk").endswith("_i_msk.fits")
    assert catalog_path(tile, config=config) == (
        "catalogs/KiDS_DR4.0_129.0_-0.5_ugriZYJHKs_cat.fits"
    )
    packed = survey_config(layout="kids-dr4", compress="RICE_1")
    assert image_path(tile, "r", config=packed).endswith("_r_sci.fits.fz")
    simple = survey_config(compress="GZIP_2")
    assert image_path(tile, "r", config=simple) == "images/KIDS_129.0_-0.5_r.fits.fz"
    assert catalog_path(tile, config=simple) == "catalog/KIDS_129.0_-0.5.parquet"
    # the default tile_regex of the ingest reads the catalog's name
    name = Path(catalog_path(tile, config=config))
    assert tile_name(name, config=IngestConfig()) == "KIDS_129.0_-0.5"


def test_kids_layout_writes_exactly_its_files_and_lists_them_in_the_markers(surveys):
    root, variants = surveys
    for name, suffix in (("dr4", ""), ("rice", ".fz")):
        out = root / name
        expected = set()
        for tile in survey_tiles(2):
            expected.add(f"catalogs/{stem(tile)}_ugriZYJHKs_cat.fits")
            for band in BANDS:
                for product in ("sci", "wei", "msk"):
                    expected.add(f"images/{stem(tile)}_{band}_{product}.fits{suffix}")
        written = {
            str(path.relative_to(out))
            for path in out.rglob("*")
            if path.is_file() and path.parts[len(out.parts)][0] != "_"
        }
        assert written == expected | {"survey.json"}
        assert not (out / "catalog").exists()
        listed = {}
        for tile in survey_tiles(2):
            marker = json.loads((out / "_units" / f"{tile.name}.json").read_text())
            listed |= marker["files"]
        assert set(listed) == expected
        assert all(listed[rel] == (out / rel).stat().st_size for rel in listed)
        meta = json.loads((out / "survey.json").read_text())
        assert meta["layout"] == "kids-dr4"
        assert meta["image_pattern"] == f"KiDS_DR4.0_{{ra}}_{{dec}}_{{band}}_sci.fits{suffix}"
        assert variants[name].layout == "kids-dr4"


def test_compressed_files_are_fpack_style(surveys):
    root, _ = surveys
    tile = survey_tiles(2)[1]
    for product in ("sci", "wei", "msk"):
        with fits.open(root / "rice" / "images" / f"{stem(tile)}_r_{product}.fits.fz") as hdul:
            assert len(hdul) == 2
            assert hdul[0].data is None
            assert isinstance(hdul[1], fits.CompImageHDU)
            assert hdul[1].data.shape == (450, 450)
            assert hdul[1].header["FILTER"] == "r"
    with fits.open(root / "rice" / "images" / f"{stem(tile)}_r_sci.fits.fz") as hdul:
        assert hdul[1].compression_type == "RICE_1"
    with fits.open(root / "rice" / "images" / f"{stem(tile)}_r_wei.fits.fz") as hdul:
        assert hdul[1].compression_type == "GZIP_2"
    with fits.open(root / "dr4" / "images" / f"{stem(tile)}_r_sci.fits") as hdul:
        assert len(hdul) == 1 and hdul[0].data.shape == (450, 450)


def test_pixels_equal_the_simple_layout(surveys):
    root, _ = surveys
    for tile in survey_tiles(2):
        for band in BANDS:
            simple = fits.getdata(root / "simple" / "images" / f"{tile.name}_{band}.fits")
            plain = fits.getdata(root / "dr4" / "images" / f"{stem(tile)}_{band}_sci.fits")
            assert np.array_equal(plain, simple)
            with fits.open(root / "gzip" / "images" / f"{stem(tile)}_{band}_sci.fits.fz") as h:
                assert np.array_equal(h[1].data, simple)
            with fits.open(root / "rice" / "images" / f"{stem(tile)}_{band}_sci.fits.fz") as h:
                rice = h[1].data
            sigma = sky_sigma(dict(zip(BANDS, (25.0, 25.1, 23.7), strict=True))[band])
            error = np.abs(rice.astype(np.float64) - simple)
            assert 0 < error.max() < sigma / 8  # lossy, within the quantisation (sigma/16)
            assert abs(float(np.mean(rice - simple))) < sigma / 100


def test_weights_are_zero_exactly_where_the_flags_say_no_data(surveys):
    root, variants = surveys
    config = variants["dr4"]
    for tile in survey_tiles(2):
        for band in config.bands:
            images = root / "dr4" / "images"
            weights = fits.getdata(images / f"{stem(tile)}_{band.name}_wei.fits")
            flags = fits.getdata(images / f"{stem(tile)}_{band.name}_msk.fits")
            assert flags.dtype.kind == "i" and flags.dtype.itemsize == 2
            no_data = (flags & (BAD_PIXEL | MANUAL_MASK)) != 0
            assert np.array_equal(weights == 0, no_data)
            sigma = sky_sigma(band.depth, zeropoint=30.0, pixel_scale=0.2)
            assert np.allclose(weights[~no_data], 1 / sigma**2, rtol=1e-6)
            # one full strip along an edge, and whole bad columns
            strip = flags & MANUAL_MASK != 0
            edges = [strip[:, 0].all(), strip[:, -1].all(), strip[0].all(), strip[-1].all()]
            assert sum(edges) == 1
            assert 0.02 * 450 - 1 <= strip.sum() / 450 <= 0.05 * 450 + 1
            bad = np.flatnonzero((flags & BAD_PIXEL != 0).all(axis=0))
            assert 1 <= bad.size <= 3
            assert not (flags & BAD_PIXEL != 0)[:, np.setdiff1d(np.arange(450), bad)].any()
            with fits.open(
                root / "gzip" / "images" / f"{stem(tile)}_{band.name}_wei.fits.fz"
            ) as packed:
                assert np.array_equal(packed[1].data, weights)


def test_flag_maps_mask_the_bright_stars(surveys):
    root, variants = surveys
    config = variants["dr4"]
    masked = 0
    for tile in survey_tiles(2):
        catalog = tile_catalog(tile, config=config)
        for band in config.bands:
            flags = fits.getdata(root / "dr4" / "images" / f"{stem(tile)}_{band.name}_msk.fits")
            stars = tile_stars(catalog, tile, band, config=config)
            bright = stars.mag < STAR_MASK_MAG
            ix, iy = np.round(stars.x).astype(int), np.round(stars.y).astype(int)
            inside = (ix >= 0) & (ix < 450) & (iy >= 0) & (iy < 450)
            for k in np.flatnonzero(inside & bright):
                assert flags[iy[k], ix[k]] & PRIMARY_HALO
                masked += 1
            # every halo pixel lies within the radius of a bright star
            yy, xx = np.nonzero(flags & PRIMARY_HALO)
            radius = 3.0 * 10 ** (0.2 * (STAR_MASK_MAG - stars.mag[bright])) / 0.2
            distance = np.hypot(
                xx[:, None] - stars.x[bright][None, :], yy[:, None] - stars.y[bright][None, :]
            )
            assert (distance <= radius[None, :] + 1e-9).any(axis=1).all()
            # and every saturation-core pixel within the core of a saturated star
            saturated = stars.mag < SATURATION_MAG
            yy, xx = np.nonzero(flags & SATURATION_CORE)
            core = 0.3 * 3.0 * 10 ** (0.2 * (STAR_MASK_MAG - stars.mag[saturated])) / 0.2
            distance = np.hypot(
                xx[:, None] - stars.x[saturated][None, :],
                yy[:, None] - stars.y[saturated][None, :],
            )
            assert (distance <= core[None, :] + 1e-9).any(axis=1).all()
    assert masked >= 1


def test_flag_map_kernel():
    """Halo discs of 3" x 10^(0.2 (18 - mag)), saturation cores of 0.3 of that below 17 mag,
    whole bad columns and the strip without data."""
    defects = Defects(edge="top", edge_width=3, bad_columns=(5, 17))
    stars = Stars(
        x=np.array([30.0, 100.0, 100.0]),
        y=np.array([40.0, 80.0, 15.0]),
        mag=np.array([16.0, 19.0, 17.5]),
    )
    flags = flag_map((100, 120), defects=defects, stars=stars, pixel_scale=0.2)
    assert flags.dtype == np.int16
    assert (flags[-3:] & MANUAL_MASK).all() and not (flags[:-3] & MANUAL_MASK).any()
    assert (flags[:, [5, 17]] & BAD_PIXEL).all()
    assert not (np.delete(flags, [5, 17], axis=1) & BAD_PIXEL).any()
    # 16 mag: halo 37.7 px, core 11.3 px
    assert flags[40, 30] & PRIMARY_HALO and flags[40, 30] & SATURATION_CORE
    assert flags[40, 30 + 37] & PRIMARY_HALO and not flags[40, 30 + 39] & PRIMARY_HALO
    assert flags[40, 30 + 11] & SATURATION_CORE and not flags[40, 30 + 13] & SATURATION_CORE
    # 17.5 mag: halo 18.9 px, not saturated; 19 mag: not masked
    assert flags[15, 100] & PRIMARY_HALO and not flags[15, 100] & SATURATION_CORE
    assert flags[15, 100 + 18] & PRIMARY_HALO
    assert flags[80, 100] == 0
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = draw_defects((100, 80), rng)
        assert drawn.edge in layouts.EDGES
        assert 1 <= drawn.edge_width <= 5
        assert 1 <= len(drawn.bad_columns) <= 3
        assert all(0 <= c < 80 for c in drawn.bad_columns)


def test_headers_let_a_scan_recognise_the_files(surveys):
    root, _ = surveys
    tile = survey_tiles(2)[1]
    for name, suffix, hdu in (("dr4", "", 0), ("rice", ".fz", 1)):
        for product, category in (
            ("sci", "SCIENCE.IMAGE"),
            ("wei", "ANCILLARY.WEIGHTMAP"),
            ("msk", "ANCILLARY.MASK"),
        ):
            path = root / name / "images" / f"{stem(tile)}_g_{product}.fits{suffix}"
            with fits.open(path) as hdul:
                header = hdul[hdu].header
            assert header["OBJECT"] == "KIDS_1.0_-0.5"
            assert header["FILTER"] == "g"
            assert header["EXPTIME"] == 900.0
            assert header["MAGZERO"] == 30.0
            assert header["SEEING"] == pytest.approx(0.86)
            assert header["PSF_FWHM"] == pytest.approx(0.86)
            assert header["PRODCATG"] == category
            ra, dec = WCS(header).pixel_to_world_values(449 / 2, 449 / 2)
            assert np.allclose([ra, dec], [1.0, -0.5])


def test_fits_catalogs_have_the_dr4_columns_and_ingest_to_the_simple_catalog(
    surveys, tmp_path, client
):
    root, _ = surveys
    tile = survey_tiles(2)[0]
    with fits.open(root / "dr4" / "catalogs" / f"{stem(tile)}_ugriZYJHKs_cat.fits") as hdul:
        assert hdul[0].data is None and isinstance(hdul[1], fits.BinTableHDU)
        table = hdul[1].data
        names = hdul[1].columns.names
        for column in (
            *CONTRACT,
            "SeqNr",
            "MAG_GAAP_u",
            "MAG_GAAP_Ks",
            "MAGERR_GAAP_r",
            "FLUX_RADIUS",
            "CLASS_STAR",
            "A_WORLD",
            "B_WORLD",
            "THETA_J2000",
            "KRON_RADIUS",
            "FWHM_IMAGE",
            "Flag",
            "TRUE_TYPE",
            "TRUE_LENS",
        ):
            assert column in names
        assert len(names) > 50
        colour = table["MAG_GAAP_g"] - table["MAG_GAAP_r"]
        known = np.isfinite(table["COLOUR_GAAP_g_r"])
        assert np.allclose(colour[known], table["COLOUR_GAAP_g_r"][known], atol=1e-5)
        assert np.isnan(colour[~known]).all() and np.isnan(table["MAG_GAAP_Ks"]).all()
        assert np.array_equal(table["MAG_GAAP_r"], table["MAG_AUTO"])
        star = table["TRUE_TYPE"] == "star"
        assert table["CLASS_STAR"][star].mean() > table["CLASS_STAR"][~star].mean()
    report = ingest_catalogs(
        root / "dr4" / "catalogs",
        tmp_path / "catalog",
        config=IngestConfig(extra_columns=("MASK", "TRUE_LENS", "TRUE_MAG_r")),
        client=client,
        progress=False,
    )
    assert report.units.ok and report.files == 2
    for tile in survey_tiles(2):
        ingested = pd.read_parquet(tmp_path / "catalog" / f"{tile.name}.parquet")
        simple = pd.read_parquet(root / "simple" / "catalog" / f"{tile.name}.parquet")
        columns = [*CONTRACT, "TRUE_LENS", "TRUE_MAG_r"]
        assert ingested.dtypes[columns].equals(simple.dtypes[columns])
        assert ingested[columns].equals(simple[columns])


def test_same_bytes_whatever_the_worker_count(surveys, tmp_path):
    root, variants = surveys
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as one,
    ):
        make_mock_survey(tmp_path, config=variants["rice"], client=one, progress=False)
    assert digests(tmp_path) == digests(root / "rice")
    assert len(digests(tmp_path)) == 2 * (1 + 3 * 3) + 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"layout": "kids"}, "mock_survey.layout"),
        ({"images": False, "compress": "RICE_1"}, "set images: true"),
        ({"compress": "BZIP2"}, "mock_survey.compress"),
        ({"compress": "rice_1"}, "mock_survey.compress"),
    ],
)
def test_config_refuses_bad_layouts_and_compressions(overrides, message):
    with pytest.raises(ConfigError, match=message):
        survey_config(**overrides)


def test_config_accepts_the_layouts_and_compressions():
    assert survey_config().layout == "simple" and survey_config().compress is None
    for compress in ("RICE_1", "HCOMPRESS_1", "GZIP_1", "GZIP_2"):
        assert survey_config(layout="kids-dr4", compress=compress).compress == compress


def test_cli_mock_survey_has_the_layout_options():
    result = CliRunner().invoke(main, ["mock-survey", "--help"])
    assert result.exit_code == 0
    assert "--layout" in result.output and "--compress" in result.output


def test_compressed_bytes_do_not_depend_on_the_time_of_writing(tmp_path, monkeypatch):
    """astropy stamps each gzip tile with the time; the layouts clear the stamps."""
    flags = np.zeros((40, 30), dtype=np.int16)
    flags[:, 3] = BAD_PIXEL
    weights = np.where(flags, 0.0, 0.25).astype(np.float32)
    written = []
    for when in (1e9, 2e9):
        monkeypatch.setattr(gzip, "time", types.SimpleNamespace(time=lambda when=when: when))
        out = tmp_path / str(int(when))
        for data in (flags, weights):
            hdus = image_hdus(data, fits.Header(), compress="GZIP_2", dither_seed=1)
            commit_fits(hdus, out, f"images/{data.dtype.name}.fits.fz")
        written.append(digests(out))
        with fits.open(out / "images" / "float32.fits.fz") as hdul:
            assert np.array_equal(hdul[1].data, weights)
    assert written[0] == written[1]
