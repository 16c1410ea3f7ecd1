"""The BG/LRG kernel against DuckDB, against a row-by-row Python version, and on the edges."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lensdask.catalog import classify_targets, colour_cuts, target_masks
from lensdask.config import ConfigError, SelectConfig
from lensdask.testing import boundary_rows, c_perp_colours, catalog_frame

COLOURS = ("COLOUR_GAAP_g_r", "COLOUR_GAAP_r_i")


def kernel_masks(frame: pd.DataFrame, config: SelectConfig):
    """:func:`target_masks` on the four columns of a catalog frame."""
    return target_masks(
        frame["SG2DPHOT"].to_numpy(),
        frame["MAG_AUTO"].to_numpy(),
        frame["COLOUR_GAAP_g_r"].to_numpy(),
        frame["COLOUR_GAAP_r_i"].to_numpy(),
        config=config,
    )


def samples_by_row(frame: pd.DataFrame, config: SelectConfig | None = None) -> list[str | None]:
    """``sample`` of every row of ``frame`` after :func:`classify_targets` (None: not selected)."""
    targets = classify_targets(frame, config=config)
    labels = dict(zip(targets.index, targets["sample"], strict=True))
    return [labels.get(index) for index in frame.index]


def python_sample(
    sg2dphot: int, mag: float, g_r: float, r_i: float, config: SelectConfig
) -> str | None:
    """The cuts of Li et al. (2020) for one source, in plain Python floats (None: not a BG)."""
    if sg2dphot != 0 or not mag <= config.bg_mag_max:
        return None
    if math.isnan(g_r) or math.isnan(r_i):
        return "BG"
    c_par = 0.7 * g_r + 1.2 * (r_i - 0.18)
    c_perp = r_i - g_r / 4.0 - 0.18
    lrg = mag < 14 + c_par / 0.3 and abs(c_perp) < config.c_perp_max and mag <= config.lrg_mag_max
    return "LRG" if lrg else "BG"


def boundary_frame(mag_dtype: type = np.float32) -> pd.DataFrame:
    """The boundary rows with ``MAG_AUTO`` stored as ``mag_dtype`` (float32 as in KiDS)."""
    frame = pd.DataFrame(boundary_rows())
    frame["MAG_AUTO"] = frame["MAG_AUTO"].astype(mag_dtype)
    return frame


# --- the kernel against DuckDB -------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        SelectConfig(),
        SelectConfig(bg_mag_max=20.7, lrg_mag_max=19.3, c_perp_max=0.15),
        SelectConfig(bg_mag_max=22.0, lrg_mag_max=22.0, c_perp_max=0.5),
    ],
    ids=["li2020", "tighter", "looser"],
)
def test_kernel_matches_duckdb(config: SelectConfig, duckdb_targets: Callable) -> None:
    frame = catalog_frame(5000, seed=11, boundary=True)
    reference = duckdb_targets(frame, config)
    targets = classify_targets(frame, config=config)

    for sample in ("LRG", "BG"):
        expected = set(reference.loc[reference["sample"] == sample, "ID"])
        assert set(targets.loc[targets["sample"] == sample, "ID"]) == expected
        assert expected, f"no {sample} in the test frame: the comparison would be empty"
    assert len(targets) == len(reference) == targets["ID"].nunique()

    masks = kernel_masks(frame, config)
    assert set(frame.loc[masks.bg, "ID"]) == set(reference["ID"])
    assert set(frame.loc[masks.lrg, "ID"]) == set(reference.loc[reference["sample"] == "LRG", "ID"])
    assert set(frame.loc[masks.nan_colour, "ID"]) == set(
        reference.loc[reference["nan_colour"], "ID"]
    )
    assert masks.nan_colour.sum() > 0


def test_classify_keeps_rows_and_order() -> None:
    frame = catalog_frame(500, seed=3)
    targets = classify_targets(frame)
    assert list(targets.columns) == [*frame.columns, "sample"]
    assert targets.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(targets.drop(columns="sample"), frame.loc[targets.index])
    assert set(targets["sample"]) == {"LRG", "BG"}
    assert isinstance(targets["sample"].dtype, pd.StringDtype)
    assert "sample" not in frame.columns  # the input frame is not modified


def test_colour_cuts_matches_duckdb_lrgs(duckdb_targets: Callable) -> None:
    """The colour-magnitude part alone: applied to the BGs, it gives exactly the LRGs."""
    frame = catalog_frame(3000, seed=5)
    reference = duckdb_targets(frame).set_index("ID")
    bgs = frame.set_index("ID").loc[reference.index]
    passed = colour_cuts(
        bgs["MAG_AUTO"].to_numpy(), bgs["COLOUR_GAAP_g_r"].to_numpy(), bgs["COLOUR_GAAP_r_i"]
    )
    np.testing.assert_array_equal(passed, (reference["sample"] == "LRG").to_numpy())


# --- the edges of the cuts, by hand ------------------------------------------------------


def test_c_perp_colours_are_exact() -> None:
    for c_perp in (0.2, -0.2):
        g_r, r_i = c_perp_colours(c_perp)
        assert r_i - g_r / 4.0 - 0.18 == c_perp  # float64, in the order of Li et al.
    rows = boundary_rows()
    for row, c_perp in ((rows[4], 0.2), (rows[5], -0.2)):
        g_r, r_i = row["COLOUR_GAAP_g_r"], row["COLOUR_GAAP_r_i"]
        assert r_i - g_r / 4.0 - 0.18 == c_perp


@pytest.mark.parametrize("mag_dtype", [np.float32, np.float64])
def test_boundary_rows(mag_dtype: type) -> None:
    frame = boundary_frame(mag_dtype)
    mag = frame["MAG_AUTO"].to_numpy()
    # the rows are what they claim to be
    assert mag[0] == 21.0 and mag[2] == 20.0
    assert mag[1] == np.nextafter(np.float32(21.0), np.float32(22.0)) > 21.0
    assert mag[3] == np.nextafter(np.float32(20.0), np.float32(21.0)) > 20.0
    expected = [
        "BG",  # MAG_AUTO == 21.0: a BG (<= 21); too faint for an LRG
        None,  # next float32 above 21.0: not selected
        "LRG",  # MAG_AUTO == 20.0 with red colours: an LRG (<= 20)
        "BG",  # next float32 above 20.0, same colours: only a BG
        "BG",  # c_perp == +0.2 exactly: |c_perp| < 0.2 fails
        "BG",  # c_perp == -0.2 exactly
        "BG",  # NaN g-r: a BG, never an LRG
        "BG",  # NaN r-i
        None,  # SG2DPHOT == 1: a star
        None,  # SG2DPHOT == 4
    ]
    assert samples_by_row(frame) == expected
    masks = kernel_masks(frame, SelectConfig())
    np.testing.assert_array_equal(masks.nan_colour, [False] * 6 + [True, True, False, False])


def test_boundary_rows_are_decided_by_the_boundary_alone() -> None:
    """One step inside each edge flips the outcome: the rows test the edges, not the colours."""
    frame = boundary_frame()
    inside = frame.copy()
    inside.loc[1, "MAG_AUTO"] = np.float32(21.0)
    inside.loc[3, "MAG_AUTO"] = np.float32(20.0)
    for row, c_perp in ((4, 0.2), (5, -0.2)):  # r-i one float64 step towards c_perp = 0
        g_r, r_i = c_perp_colours(c_perp)
        r_i = float(np.nextafter(r_i, -np.inf if c_perp > 0 else np.inf))
        assert abs(r_i - g_r / 4.0 - 0.18) < 0.2
        inside.loc[row, list(COLOURS)] = [g_r, r_i]
    inside.loc[[6, 7], list(COLOURS)] = [1.8, 0.63]
    inside.loc[[8, 9], "SG2DPHOT"] = 0
    # MAG_AUTO 21.0 is too faint for an LRG whatever the colours; every other row is one
    assert samples_by_row(inside) == ["BG", "BG"] + ["LRG"] * 8


def test_nan_colours_never_lrg_even_when_magnitude_passes() -> None:
    mag = np.array([16.0, 16.0, 16.0])
    g_r = np.array([np.nan, 1.8, np.nan])
    r_i = np.array([0.63, np.nan, np.nan])
    assert not colour_cuts(mag, g_r, r_i).any()
    assert colour_cuts(mag, np.full(3, 1.8), np.full(3, 0.63)).all()


def test_colour_cuts_options() -> None:
    g_r, r_i = c_perp_colours(0.2)
    mag, g, r = np.array([16.0]), np.array([g_r]), np.array([r_i])
    assert not colour_cuts(mag, g, r)[0]
    assert colour_cuts(mag, g, r, c_perp_max=0.21)[0]
    assert not colour_cuts(mag, g, r, c_perp_max=0.21, lrg_mag_max=15.9)[0]


# --- properties ------------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
FINITE32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
MAGS = st.one_of(st.floats(12.0, 23.0, width=32), st.sampled_from([20.0, 21.0]), FINITE32)
COLOUR = st.one_of(st.floats(-1.0, 3.0), FINITE)
ROWS = st.lists(
    st.tuples(st.sampled_from([0, 0, 1, 2, -1]), MAGS, COLOUR, COLOUR), min_size=1, max_size=40
)


@st.composite
def configs(draw: st.DrawFn) -> SelectConfig:
    bg = draw(st.floats(15.0, 25.0))
    lrg = draw(st.one_of(st.just(bg), st.floats(14.0, bg)))
    return SelectConfig(bg_mag_max=bg, lrg_mag_max=lrg, c_perp_max=draw(st.floats(1e-3, 1.0)))


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, config=st.one_of(st.just(SelectConfig()), configs()))
def test_kernel_equals_row_by_row_python(
    rows: list[tuple[int, float, float, float]], config: SelectConfig
) -> None:
    frame = pd.DataFrame(rows, columns=["SG2DPHOT", "MAG_AUTO", *COLOURS])
    frame["MAG_AUTO"] = frame["MAG_AUTO"].astype(np.float32)  # values drawn as float32
    with np.errstate(over="ignore", invalid="ignore"):  # huge colours overflow to inf, as in Python
        masks = kernel_masks(frame, config)
        got = samples_by_row(frame, config)
    expected = [python_sample(*row, config) for row in rows]
    assert got == expected
    assert not (masks.lrg & ~masks.bg).any()  # LRG implies BG
    np.testing.assert_array_equal(masks.bg, [label is not None for label in expected])
    np.testing.assert_array_equal(masks.lrg, [label == "LRG" for label in expected])


@settings(max_examples=200, deadline=None)
@given(
    g_r=st.floats(-0.5, 3.0),
    c_perp=st.sampled_from([0.2, -0.2]),
    mag=st.floats(10.0, 20.0, width=32),
)
def test_c_perp_edge_is_never_lrg(g_r: float, c_perp: float, mag: float) -> None:
    """Colours exactly on |c_perp| = 0.2 (in the evaluation order of Li et al.), any g-r."""
    try:
        g_r, r_i = c_perp_colours(c_perp, g_r=g_r)
    except ValueError:  # no float64 r-i hits this c_perp for this g-r
        assume(False)
    assert not colour_cuts(np.array([mag]), np.array([g_r]), np.array([r_i]))[0]
    frame = pd.DataFrame({"SG2DPHOT": [0], "MAG_AUTO": [mag], COLOURS[0]: [g_r], COLOURS[1]: [r_i]})
    assert samples_by_row(frame) == ["BG"] == [python_sample(0, mag, g_r, r_i, SelectConfig())]


# --- configuration -----------------------------------------------------------------------


def test_select_config_lrg_fainter_than_bg() -> None:
    with pytest.raises(ConfigError, match=r"lrg_mag_max.*bg_mag_max"):
        SelectConfig(bg_mag_max=20.0, lrg_mag_max=20.5)
    assert SelectConfig(bg_mag_max=20.0, lrg_mag_max=20.0).lrg_mag_max == 20.0


@pytest.mark.parametrize("c_perp_max", [0.0, -0.2, float("nan")])
def test_select_config_c_perp_max_positive(c_perp_max: float) -> None:
    with pytest.raises(ConfigError, match="c_perp_max"):
        SelectConfig(c_perp_max=c_perp_max)
