"""Lenses in the mock survey: the truth table matches what is painted into the images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lensdask.catalog.cuts import classify_targets
from lensdask.config import ConfigError, MockLensConfig, MockSurveyConfig, from_mapping
from lensdask.mock.lenses import lens_stamp_size
from lensdask.mock.survey import band_psf, render_tile, tile_catalog, tile_lenses, tile_wcs
from lensdask.mock.tiles import survey_tiles
from lensdask.testing import small_survey_config

TILE = survey_tiles(1)[0]


@pytest.fixture(scope="module")
def injected():
    """One 0.08-deg tile (sparse, so that most lenses lie apart) rendered with lenses (all
    LRGs, half of the other BGs) and without (same seed), in every band, same noise."""
    config = small_survey_config(
        tiles=1,
        tile_size=0.08,
        seed=5,
        images=True,
        density=30_000.0,
        lrg_density=1500.0,
        lens_fraction=1.0,
        lens_bg_fraction=0.5,
    )
    plain = dataclasses.replace(config, lens_fraction=0.0, lens_bg_fraction=0.0)
    catalog = tile_catalog(TILE, config=config)
    plan, truth = tile_lenses(catalog, TILE, config=config)
    plain_catalog = tile_catalog(TILE, config=plain)
    diffs = {}
    for band in config.bands:
        lensed = render_tile(
            catalog, TILE, band, config=config, rng=np.random.default_rng(1), lenses=plan
        )
        unlensed = render_tile(
            plain_catalog, TILE, band, config=plain, rng=np.random.default_rng(1)
        )
        diffs[band.name] = lensed.astype(np.float64) - unlensed
    truth = truth.to_pandas()
    wcs = tile_wcs(TILE, size=config.image_size, pixel_scale=config.pixel_scale)
    truth["x"], truth["y"] = wcs.world_to_pixel_values(truth["RAJ2000"], truth["DECJ2000"])
    return config, catalog, plain_catalog, truth, diffs


def lens_boxes(config: MockSurveyConfig, truth: pd.DataFrame) -> tuple[int, list[bool]]:
    """Half-side of the region a lens can touch (stamp plus the widest PSF), and which
    lenses have theirs inside the image and apart from every other lens's."""
    psf_radius = max(band_psf(TILE, band, config=config).shape[0] // 2 for band in config.bands)
    half = lens_stamp_size(config.lenses, pixel_scale=config.pixel_scale) // 2 + psf_radius
    ix, iy = np.floor(truth["x"] + 0.5), np.floor(truth["y"] + 0.5)
    size = config.image_size
    inside = (ix - half >= 0) & (ix + half < size) & (iy - half >= 0) & (iy + half < size)
    apart = []
    for k in range(len(truth)):
        others = np.maximum(np.abs(ix - ix[k]), np.abs(iy - iy[k])).drop(index=k)
        apart.append(bool(inside[k]) and bool((others > 2 * half).all()))
    return half, apart


def test_catalogs_differ_only_by_true_lens(injected):
    _, catalog, plain, truth, _ = injected
    assert catalog.drop(["TRUE_LENS"]).to_pandas().equals(plain.drop(["TRUE_LENS"]).to_pandas())
    assert not plain["TRUE_LENS"].to_numpy().any()
    lenses = catalog.to_pandas()
    assert set(truth["ID"]) == set(lenses.loc[lenses["TRUE_LENS"], "ID"])


def test_truth_table_columns_and_samples(injected):
    _, catalog, _, truth, _ = injected
    assert list(truth.columns[:13]) == [
        "ID",
        "THELI_NAME",
        "RAJ2000",
        "DECJ2000",
        "sample",
        "theta_E",
        "magnification",
        "arc_peak_ratio",
        "arc_flux_r",
        "arc_mag_r",
        "lens_peak_r",
        "source_g_r",
        "source_r_i",
    ]
    for name in ("e1", "gamma2", "src_R", "src_x", "clump0_amp", "grf_sigma", "grf_slope"):
        assert name in truth.columns
    assert truth["theta_E"].between(1.0, 5.0).all()
    assert (truth["magnification"] > 1).all()
    assert truth["arc_mag_r"].to_numpy() == pytest.approx(30 - 2.5 * np.log10(truth["arc_flux_r"]))
    # the samples are those the selection gives; every LRG is a lens (lens_fraction 1)
    targets = classify_targets(catalog.to_pandas()).set_index("ID")
    assert (targets.loc[truth["ID"], "sample"].to_numpy() == truth["sample"].to_numpy()).all()
    assert targets.loc[targets["sample"] == "LRG", "TRUE_LENS"].all()
    assert (truth["sample"] == "LRG").sum() >= 5 and (truth["sample"] == "BG").sum() >= 1


def test_difference_image_is_zero_away_from_the_lenses(injected):
    config, _, _, truth, diffs = injected
    half, _ = lens_boxes(config, truth)
    away = np.ones(diffs["r"].shape, dtype=bool)
    for x, y in zip(np.floor(truth["x"] + 0.5), np.floor(truth["y"] + 0.5), strict=True):
        away[
            max(int(y) - half, 0) : int(y) + half + 1, max(int(x) - half, 0) : int(x) + half + 1
        ] = False
    assert away.mean() > 0.2
    for diff in diffs.values():
        assert np.abs(diff[away]).max() == 0.0


def test_arc_flux_radius_peak_and_colours_match_the_truth(injected):
    config, _, _, truth, diffs = injected
    half, apart = lens_boxes(config, truth)
    yy, xx = np.indices(diffs["r"].shape)
    checked = 0
    for k, row in truth.iterrows():
        if not apart[k]:
            continue
        ix, iy = int(np.floor(row.x + 0.5)), int(np.floor(row.y + 0.5))
        box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        arc = diffs["r"][box]
        assert arc.sum() == pytest.approx(row.arc_flux_r, rel=1e-4)
        assert arc.max() == pytest.approx(row.arc_peak_ratio * row.lens_peak_r, rel=1e-4)
        radius = np.hypot(xx[box] - row.x, yy[box] - row.y) * config.pixel_scale
        weighted = (arc * radius).sum() / arc.sum()
        assert weighted == pytest.approx(row.theta_E, abs=0.2 * row.theta_E + 0.5)
        assert diffs["g"][box].sum() / arc.sum() == pytest.approx(10 ** (-0.4 * row.source_g_r))
        assert diffs["i"][box].sum() / arc.sum() == pytest.approx(10 ** (0.4 * row.source_r_i))
        checked += 1
    assert checked >= 4


def test_lens_galaxy_peak_is_its_peak_in_the_image(injected):
    """``lens_peak_r`` is the lens galaxy's peak in a noise-free r image, up to neighbours."""
    config, _, plain, truth, _ = injected
    quiet = dataclasses.replace(config.bands[0], depth=34.9)  # r, practically no noise
    assert quiet.name == "r"
    image = render_tile(plain, TILE, quiet, config=config, rng=np.random.default_rng(0))
    ratios = []
    for row in truth.itertuples():
        ix, iy = int(np.floor(row.x + 0.5)), int(np.floor(row.y + 0.5))
        if 3 <= ix < config.image_size - 3 and 3 <= iy < config.image_size - 3:
            ratios.append(image[iy - 3 : iy + 4, ix - 3 : ix + 4].max() / row.lens_peak_r)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.01)
    assert min(ratios) > 0.99


def test_lens_stamp_holds_the_largest_einstein_radius():
    assert lens_stamp_size(MockLensConfig(), pixel_scale=0.2) == 101
    assert lens_stamp_size(MockLensConfig(theta_E=(1.0, 8.0)), pixel_scale=0.2) == 161


def test_lenses_need_images_and_fractions_in_range():
    with pytest.raises(ConfigError, match=r"mock_survey\.lens_fraction: .* images"):
        MockSurveyConfig(lens_fraction=0.1)
    with pytest.raises(ConfigError, match=r"mock_survey\.lens_bg_fraction"):
        MockSurveyConfig(images=True, lens_bg_fraction=1.5)
    with pytest.raises(ConfigError, match=r"mock_survey\.lrg_density"):
        MockSurveyConfig(lrg_density=-1.0)
    with pytest.raises(ConfigError, match=r"mock_survey\.spiral_fraction \+ ring_fraction"):
        MockSurveyConfig(spiral_fraction=0.5, ring_fraction=0.4, merger_fraction=0.2)
    with pytest.raises(ConfigError, match=r"mock_survey\.lens_source_g_r"):
        MockSurveyConfig(lens_source_g_r=(0.6, 0.0))


def test_lens_options_load_from_a_job_section():
    config = from_mapping(
        MockSurveyConfig,
        {
            "images": True,
            "lens_fraction": 0.2,
            "lrg_density": 3000,
            "lens_source_g_r": [0.1, 0.5],
            "lenses": {"theta_E": [1.5, 3.0]},
        },
        where="mock_survey",
    )
    assert config.lenses.theta_E == (1.5, 3.0)
    assert config.lens_source_g_r == (0.1, 0.5)
    assert config.lrg_density == 3000.0
    with pytest.raises(ConfigError, match=r"mock_survey\.lenses: unknown key"):
        from_mapping(MockSurveyConfig, {"lenses": {"einstein": 2}}, where="mock_survey")
