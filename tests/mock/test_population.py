"""The mock population: KiDS-like number counts, colours, and BG/LRG fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lensdask.catalog.cuts import classify_targets
from lensdask.config import MockSurveyConfig
from lensdask.mock.population import (
    LRG_MAG_RANGE,
    LRG_Z_RANGE,
    STRUCTURE_COLUMNS,
    TYPES,
    draw_lrgs,
    draw_population,
)

N = 400_000


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return pd.DataFrame(draw_population(N, np.random.default_rng(11), config=MockSurveyConfig()))


def test_bg_and_lrg_fractions_match_kids_dr4(population):
    """KiDS DR4: 3.81M BGs of ~120M sources (3.2%), 126,884 LRGs of them (3.3%).
    Tolerances: BG fraction within 0.4 percentage points, LRG/BG within 1.0 point."""
    targets = classify_targets(population)
    bg_fraction = len(targets) / N
    lrg_per_bg = (targets["sample"] == "LRG").mean()
    assert bg_fraction == pytest.approx(0.0317, abs=0.004)
    assert lrg_per_bg == pytest.approx(0.033, abs=0.010)


def test_number_counts_rise_to_r_25(population):
    galaxies = population[population["SG2DPHOT"] == 0]
    counts, _ = np.histogram(galaxies["MAG_AUTO"], bins=np.arange(16.0, 25.5, 1.0))
    assert np.all(np.diff(counts) > 0)
    # Euclidean-like slope: dlog N / dm between 0.2 and 0.5 over 18..24
    slope = np.polyfit(np.arange(16.5, 25.0, 1.0)[2:], np.log10(counts[2:]), 1)[0]
    assert 0.2 < slope < 0.5
    assert population["MAG_AUTO"].max() < 27.5  # noisy Kron magnitudes at the limit


def test_star_fraction_and_flags(population):
    stars = population["SG2DPHOT"] > 0
    assert stars.mean() == pytest.approx(0.12, abs=0.005)
    assert (population.loc[stars, "TRUE_TYPE"] == TYPES.index("star")).all()
    assert (population.loc[~stars, "TRUE_TYPE"] != TYPES.index("star")).all()
    assert (population["MASK"] != 0).mean() == pytest.approx(0.03, abs=0.003)


def test_nan_colours_are_a_few_percent(population):
    nan = population["COLOUR_GAAP_g_r"].isna()
    assert nan.mean() == pytest.approx(0.03, abs=0.003)
    assert (nan == population["COLOUR_GAAP_r_i"].isna()).all()


def test_red_sequence_is_redder_than_blue_cloud(population):
    red = population[population["TRUE_TYPE"] == TYPES.index("red")]
    blue = population[population["TRUE_TYPE"] == TYPES.index("blue")]
    assert red["TRUE_g_r"].median() > blue["TRUE_g_r"].median() + 0.4
    assert red["N_SERSIC"].median() > 3 > blue["N_SERSIC"].median()
    assert blue["AXIS_RATIO"].min() < 0.3 < red["AXIS_RATIO"].min() + 0.21


def test_photo_z_tracks_true_z(population):
    galaxies = population[population["SG2DPHOT"] == 0]
    dz = (galaxies["Z_B"] - galaxies["TRUE_Z"]) / (1 + galaxies["TRUE_Z"])
    nmad = 1.4826 * np.median(np.abs(dz - np.median(dz)))
    assert 0.03 < nmad < 0.08
    assert np.allclose(galaxies["Z_B"] * 100, np.round(galaxies["Z_B"] * 100), atol=1e-3)


def test_brighter_galaxies_are_bigger_and_nearer(population):
    galaxies = population[population["SG2DPHOT"] == 0]
    bright = galaxies[galaxies["MAG_AUTO"] < 19]
    faint = galaxies[galaxies["MAG_AUTO"] > 23]
    assert bright["R_EFF"].median() > 2 * faint["R_EFF"].median()
    assert bright["TRUE_Z"].median() < faint["TRUE_Z"].median()


@pytest.mark.parametrize(("kind", "fraction"), [("spiral", 0.05), ("ring", 0.03), ("merger", 0.03)])
def test_structured_galaxies_are_bgs_in_the_configured_fractions(population, kind, fraction):
    """Spirals, rings and mergers are fractions of the galaxies brighter than r = 21, and
    the BG selection keeps them (SG2DPHOT == 0, MAG_AUTO <= 21) as it keeps any galaxy."""
    code = TYPES.index(kind)
    bright = population[(population["SG2DPHOT"] == 0) & (population["TRUE_MAG_r"] <= 21.0)]
    assert (bright["TRUE_TYPE"] == code).mean() == pytest.approx(fraction, abs=0.006)
    assert (population.loc[population["TRUE_MAG_r"] > 21.0, "TRUE_TYPE"] != code).all()
    targets = classify_targets(population)
    selected = (targets["TRUE_TYPE"] == code).sum()
    assert selected == pytest.approx((population["TRUE_TYPE"] == code).sum(), rel=0.05)


def test_structures_have_their_parameters_and_bluer_light(population):
    kinds = population["TRUE_TYPE"].map(dict(enumerate(TYPES)))
    plain = kinds.isin(["star", "red", "blue"])
    assert (population.loc[plain, list(STRUCTURE_COLUMNS)] == 0).all().all()
    spiral, ring, merger = (population[kinds == kind] for kind in ("spiral", "ring", "merger"))
    assert spiral["STRUCT_FRACTION"].between(0.4, 0.65).all()
    assert spiral["STRUCT_RADIUS"].between(1.5, 4.0).all()
    assert (spiral["R_EFF"] <= 0.4 * spiral["STRUCT_RADIUS"] + 1e-6).all()
    assert (spiral["STRUCT_g_r"] < spiral["TRUE_g_r"]).all()  # blue arms
    assert ring["STRUCT_RADIUS"].between(1.0, 4.0).all()
    assert (ring["STRUCT_g_r"] < ring["TRUE_g_r"]).all()  # blue ring, red core
    assert (ring["R_EFF"] <= ring["STRUCT_RADIUS"] / 3 + 1e-6).all()
    assert merger["STRUCT_RADIUS"].between(1.0, 3.0).all()
    assert merger["STRUCT_WIDTH"].between(0.2, 2.0).all()


def test_structures_can_be_turned_off():
    config = MockSurveyConfig(spiral_fraction=0, ring_fraction=0, merger_fraction=0)
    columns = draw_population(50_000, np.random.default_rng(2), config=config)
    assert set(np.unique(columns["TRUE_TYPE"]).tolist()) == {0, 1, 2}
    assert not columns["STRUCT_FRACTION"].any()


def test_extra_lrgs_pass_the_lrg_cuts():
    """Every extra LRG passes the cuts but for NaN colours (and a rare photometric outlier)."""
    n = 20_000
    config = MockSurveyConfig()
    lrgs = pd.DataFrame(draw_lrgs(n, np.random.default_rng(4), config=config))
    assert set(lrgs.columns) == set(draw_population(10, np.random.default_rng(0), config=config))
    targets = classify_targets(lrgs)
    assert len(targets) == n
    measured = lrgs["COLOUR_GAAP_g_r"].notna()
    assert (targets["sample"] == "LRG").sum() >= 0.995 * measured.sum()
    assert lrgs["TRUE_MAG_r"].between(*LRG_MAG_RANGE).all()
    assert lrgs["TRUE_Z"].between(*LRG_Z_RANGE).all()
    assert (lrgs["TRUE_TYPE"] == TYPES.index("red")).all()
    assert lrgs["N_SERSIC"].median() > 3
