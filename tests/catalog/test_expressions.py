"""The selection's expression language and presets: the whitelist, error positions, the
evaluation against DuckDB SQL on the same Parquet file (boundary values, NULL and NaN), the
kids-dr4 preset against its kernel, the LSST and Euclid presets on mock catalogs in their
schemas (one through a LocalCluster), and a bad expression refused before a cluster starts.

DuckDB is the reference with every NaN turned into NULL (the macro ``nn``): lensdask treats
NaN as missing, DuckDB orders it above every number.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from design_columns import CATALOG

from lensdask.catalog import classify_targets, target_masks
from lensdask.catalog.expressions import ExpressionError, evaluate, parse
from lensdask.catalog.presets import parse_samples
from lensdask.catalog.select import read_tile_targets, select_targets
from lensdask.cli import main
from lensdask.config import ConfigError, SelectConfig
from lensdask.testing import catalog_frame

NN = "CREATE MACRO nn(x) AS CASE WHEN isnan(x) THEN NULL ELSE x END"


def caret(message: str) -> int:
    """The position the caret of an error message points at, in the expression."""
    expression, marker = message.splitlines()[-2:]
    assert expression.startswith("    ") and marker.startswith("    ")
    return marker.index("^") - 4


# --- the language ----------------------------------------------------------------------------

REFUSED = [
    ("a.real < 1", "attribute access", "a.real"),
    ("a.__class__ < 1", "attribute access", "a.__class__"),
    ('__import__("os").system("ls") < 1', "unsupported function", "__import__"),
    ('__import__("os")', "unsupported function", "__import__"),
    ("(lambda: 1)() < a", "unsupported function", "(lambda"),
    ("lambda: a < 1", "lambda", "lambda"),
    ("a[0] < 1", "subscript", "a[0]"),
    ('a < "1"', "numbers only", '"1"'),
    ("a < b'1'", "numbers only", "b'1'"),
    ("a < True", "numbers only", "True"),
    ("[a][0] < 1", "subscript", "[a][0]"),
    ("(b := 1) < a", "assignment", "b := 1"),
    ("a if b else c", "conditional expression", "a if b"),
    ("a & b", "`&` (write `and`)", "& b"),
    ("a < 1 | b", "`|` (write `or`)", "| b"),
    ("a in b", "`in`", "in b"),
    ("a < 1 and b is c", "`is`", "is c"),
    ("~(a < 1)", "`~` (write `not`)", "~(a"),
    ("a // 2 < 1", "`//`", "// 2"),
    ("eval(a) < 1", "unsupported function `eval`", "eval"),
    ("log10(a, 10) < 1", "`log10` takes one number", "log10(a, 10)"),
    ("abs(x=a) < 1", "`abs` takes one number", "abs(x=a)"),
    ("a + 1", "expected a condition, this is a number", "a + 1"),
    ("a < 1 and 2", "`and` takes a condition, `2` is a number", "2"),
    ("not a", "`not` takes a condition", "a"),
    ("(a < 1) + 1 < 3", "arithmetic takes a number", "a < 1"),
    ("log10(a < 1) < 3", "`log10` takes a number", "a < 1"),
    ("a < 1 and foo > 2", "unknown column `foo` (known: a, b, c)", "foo"),
    ("a <", "bad syntax", ""),
    ("a < (1", "bad syntax: '(' was never closed", "(1"),
    ("a <<< 2", "bad syntax", "< 2"),
]


@pytest.mark.parametrize(("text", "what", "at"), REFUSED)
def test_syntax_outside_the_language_is_refused_where_it_is(text: str, what: str, at: str):
    with pytest.raises(ExpressionError) as err:
        parse(text, where="select.samples.LRG", columns=["a", "b", "c"])
    message = str(err.value)
    first = message.splitlines()[0]
    assert first.startswith("select.samples.LRG: ") and what in first, message
    assert message.splitlines()[-2] == f"    {text}"
    assert caret(message) == (text.index(at) if at else len(text)), message


def test_positions_count_characters_and_survive_line_breaks():
    text = "  é_flux > 0 and\n   foo < 1"
    with pytest.raises(ExpressionError) as err:
        parse(text, columns=["é_flux"])
    assert caret(str(err.value)) == text.index("foo")
    assert "\n" not in str(err.value).splitlines()[-2]


def test_many_columns_are_summarised_with_the_closest_names():
    columns = [f"{band}_cModelFlux" for band in "ugrizy"] + [f"col{i}" for i in range(40)]
    with pytest.raises(ExpressionError, match=r"did you mean r_cModelFlux.*46 columns"):
        parse("r_cModelFlx > 0", columns=columns)


def test_columns_are_listed_in_order_of_first_use():
    expression = parse("b < 1 and (a > -b or isnan(c)) and 2 * a ** 2 <= sqrt(abs(d))")
    assert expression.columns == ("b", "a", "c", "d")


def test_a_builtin_name_is_only_ever_a_column():
    expression = parse("__import__ < 1")
    assert expression.columns == ("__import__",)
    np.testing.assert_array_equal(evaluate(expression, {"__import__": [0, 2]}, rows=2), [1, 0])


# --- evaluation against DuckDB ---------------------------------------------------------------

EXPRESSIONS = [  # (lensdask, DuckDB SQL on the columns with NaN as NULL)
    ("a <= 20", "a <= 20"),
    ("a < 20", "a < 20"),
    ("a == 20", "a = 20"),
    ("a != 20", "a <> 20"),
    ("a >= 20.0 and a > 19.5", "a >= 20.0 AND a > 19.5"),
    ("not (a < 20)", "NOT (a < 20)"),
    ("18 < a <= 20", "18 < a AND a <= 20"),
    ("a <= 20 or b == 0", "a <= 20 OR b = 0"),
    ("not (a <= 20 and b == 0)", "NOT (a <= 20 AND b = 0)"),
    ("not (a <= 20 or b != 0)", "NOT (a <= 20 OR b <> 0)"),
    ("-2.5 * log10(f) + 31.4 <= 21", "nn(-2.5 * log10(f) + 31.4) <= 21"),
    ("-2.5 * log10(f) + 31.4 > 21", "nn(-2.5 * log10(f) + 31.4) > 21"),
    ("-2.5 * log10(f / g) < 0.5", "nn(-2.5 * log10(f / g)) < 0.5"),
    ("abs(a - 20) < 0.5", "abs(a - 20) < 0.5"),
    ("isnan(a) or a > 21", "a IS NULL OR a > 21"),
    ("not isnan(f) and sqrt(f) > 30", "f IS NOT NULL AND nn(sqrt(f)) > 30"),
    ("a / b > 10", "nn(a / b) > 10"),
    ("b ** 2 >= 4 and f ** 0.5 < 40", "nn(b ** 2) >= 4 AND nn(f ** 0.5) < 40"),
    ("-a > -20", "-a > -20"),
    ("e == 1", "e = 1"),
    ("not (e == 1) and a < 20", "NOT (e = 1) AND a < 20"),
]


def mag_flux(mag: float, zero_point: float, *, fainter: bool = False) -> float:
    """A flux whose ``-2.5 log10(flux) + zero_point`` is exactly ``mag`` in float64 (with
    the C library's log10), found by stepping ulp by ulp; with ``fainter``, the largest
    flux whose magnitude is above ``mag``."""
    import math

    def magnitude(flux: float) -> float:
        return -2.5 * math.log10(flux) + zero_point

    flux = 10 ** ((zero_point - mag) / 2.5)
    for _ in range(256):
        if magnitude(flux) == mag:
            break
        flux = float(np.nextafter(flux, 0 if magnitude(flux) < mag else np.inf))
    else:
        raise ValueError(f"no flux gives {mag}")
    while fainter and magnitude(flux) <= mag:
        flux = float(np.nextafter(flux, 0))
    return flux


@pytest.fixture(scope="module")
def values_file(tmp_path_factory) -> Path:
    """A Parquet file with boundary values, nulls and stored NaNs in every column."""
    rng = np.random.default_rng(3)
    n = 400
    a = rng.uniform(17.0, 23.0, n)
    a[:6] = [20.0, np.nextafter(20.0, 21), np.nextafter(20.0, 19), 21.0, 19.5, 18.0]
    f = 10 ** rng.uniform(0.5, 5.5, n)
    f[:6] = [mag_flux(21.0, 31.4), 0.0, -5.0, 900.0, 1600.0, np.inf]
    g = f * 10 ** rng.uniform(-0.5, 0.5, n)
    g[:3] = [f[0] * 10 ** (-0.5 / 2.5), 0.0, 1.0]
    b = rng.integers(-3, 4, n)
    e = rng.choice([0.0, 1.0], n)
    e[7] = np.nan
    columns = {"a": a, "f": f, "g": g, "b": b, "e": e}
    arrays = {}
    for index, (name, values) in enumerate(columns.items()):
        null = np.zeros(n, dtype=bool)
        null[10 + index :: 17] = True  # NULLs, in a different place per column
        if name != "b":
            values[11 + index :: 23] = np.nan  # and NaNs stored as values
        arrays[name] = pa.array(values, mask=null)
    arrays["idx"] = pa.array(np.arange(n))
    path = tmp_path_factory.mktemp("values") / "values.parquet"
    pq.write_table(pa.table(arrays), path)
    return path


@pytest.mark.parametrize(("text", "sql"), EXPRESSIONS)
def test_evaluation_matches_duckdb_with_nan_as_null(values_file: Path, text: str, sql: str):
    table = pq.read_table(values_file)
    columns = {
        name: pc.cast(table[name], pa.float64()).to_numpy() for name in ("a", "f", "g", "b", "e")
    }
    ours = table["idx"].to_numpy()[evaluate(parse(text), columns, rows=table.num_rows)]
    with duckdb.connect() as con:
        con.execute(NN)
        expected = con.sql(
            f"""WITH t AS (
                SELECT idx, nn(CAST(a AS DOUBLE)) AS a, nn(f) AS f, nn(g) AS g,
                    CAST(b AS DOUBLE) AS b, nn(e) AS e
                FROM read_parquet('{values_file}'))
            SELECT idx FROM t WHERE {sql} ORDER BY idx"""
        ).fetchnumpy()["idx"]
    np.testing.assert_array_equal(ours, expected)
    assert 0 < len(ours) < table.num_rows


def test_boundaries_and_missing_values_row_by_row():
    columns = {
        "m": np.array([20.0, np.nextafter(20.0, 21.0), np.nan, 19.0]),
        "f": np.array([mag_flux(20.0, 31.4), mag_flux(20.0, 31.4), 1e5, -1.0]),
    }
    rows = 4
    assert evaluate(parse("m <= 20"), columns, rows=rows).tolist() == [1, 0, 0, 1]
    assert evaluate(parse("not (m <= 20)"), columns, rows=rows).tolist() == [0, 1, 0, 0]
    assert evaluate(parse("isnan(m)"), columns, rows=rows).tolist() == [0, 0, 1, 0]
    magnitude = "-2.5 * log10(f) + 31.4"
    assert evaluate(parse(f"{magnitude} <= 20"), columns, rows=rows).tolist() == [1, 1, 1, 0]
    # unknown or true is true, unknown and false is false, not unknown stays unknown
    assert evaluate(parse("m < 0 or m > 0"), columns, rows=rows).tolist() == [1, 1, 0, 1]
    assert evaluate(parse("not (m > 19.5 and m < 30)"), columns, rows=rows).tolist() == [
        0,
        0,
        0,
        1,
    ]
    assert evaluate(parse("isnan(m) or m < 0"), columns, rows=rows).tolist() == [0, 0, 1, 0]


# --- presets -----------------------------------------------------------------------------------

KIDS_CONFIGS = [
    SelectConfig(),
    SelectConfig(bg_mag_max=20.5, lrg_mag_max=19.5, c_perp_max=0.15, mask_bits=6),
]


def spelled_out(config: SelectConfig) -> SelectConfig:
    """``config`` with the kids-dr4 preset's samples given as ``select.samples``, so that
    the selection runs by expressions instead of the kernel."""
    selection = parse_samples(config)
    return dataclasses.replace(config, samples={"BG": selection.bg.text, "LRG": selection.lrg.text})


def kids_frame(seed: int) -> pd.DataFrame:
    """A KiDS catalog frame with boundary rows, null star/galaxy flags and a MASK."""
    frame = catalog_frame(3000, seed=seed, boundary=True)
    frame.loc[::97, "SG2DPHOT"] = pd.NA  # a null flag is not a galaxy in either
    frame["SG2DPHOT"] = frame["SG2DPHOT"].astype("Int32")
    frame["MASK"] = np.random.default_rng(seed).choice([0, 0, 0, 2, 4, 8], len(frame))
    return frame


@pytest.mark.parametrize("config", KIDS_CONFIGS)
def test_the_kids_dr4_preset_as_expressions_is_the_kernel(config: SelectConfig):
    frame = kids_frame(11)
    kernel = target_masks(
        frame["SG2DPHOT"].to_numpy(dtype=np.int64, na_value=-1),
        frame["MAG_AUTO"].to_numpy(dtype=np.float64),
        frame["COLOUR_GAAP_g_r"].to_numpy(dtype=np.float64),
        frame["COLOUR_GAAP_r_i"].to_numpy(dtype=np.float64),
        config=config,
        mask=frame["MASK"].to_numpy(),
    )
    by_kernel = classify_targets(frame, config=config)
    by_expressions = classify_targets(frame, config=spelled_out(config))
    pd.testing.assert_frame_equal(by_kernel, by_expressions)
    assert kernel.bg.sum() == len(by_kernel) and kernel.lrg.sum() > 0
    if config == SelectConfig():  # the boundary rows on MAG_AUTO = 21 and 20 are selected
        assert {21.0, 20.0} <= set(by_kernel["MAG_AUTO"].astype(float))


@pytest.mark.parametrize("config", KIDS_CONFIGS)
def test_a_parquet_file_selected_by_expressions_is_selected_as_by_the_kernel(
    tmp_path: Path, config: SelectConfig
):
    path = tmp_path / "KIDS_10.0_0.5.parquet"
    pq.write_table(pa.Table.from_pandas(kids_frame(12), preserve_index=False), path)
    kernel = read_tile_targets(path, config=config)
    expressions = read_tile_targets(path, config=spelled_out(config))
    assert expressions.table.equals(kernel.table)
    assert expressions.nan_colour == kernel.nan_colour > 0
    assert expressions.table.column_names == [*CATALOG, "sample"]


def lsst_frame(n: int, *, seed: int, tract: int, patch: int) -> pd.DataFrame:
    """A catalog with Rubin DP1 Object table names: fluxes in nJy, boundary rows on r = 21
    and r = 20, negative and null fluxes, NaN extendedness."""
    rng = np.random.default_rng(seed)
    r_mag = rng.uniform(16.0, 22.5, n)
    g_r, r_i = rng.uniform(0.0, 2.2, n), rng.uniform(0.0, 1.0, n)
    r = 10 ** ((31.4 - r_mag) / 2.5)
    frame = pd.DataFrame(
        {
            "objectId": (tract * 1_000_000 + patch * 10_000 + np.arange(n)).astype(np.int64),
            "coord_ra": 62.0 + rng.uniform(0, 0.2, n),
            "coord_dec": -37.0 + rng.uniform(0, 0.2, n),
            "refExtendedness": rng.choice([0.0, 1.0, 1.0, 1.0], n),
            "g_cModelFlux": r / 10 ** (g_r / 2.5),  # red: fainter in g
            "r_cModelFlux": r,
            "i_cModelFlux": r * 10 ** (r_i / 2.5),
            "tract": np.full(n, tract, dtype=np.int64),
            "patch": np.full(n, patch, dtype=np.int64),
        }
    )
    frame.loc[:3, "refExtendedness"] = 1.0
    frame.loc[0, "r_cModelFlux"] = mag_flux(21.0, 31.4)  # exactly on the BG cut
    frame.loc[1, "r_cModelFlux"] = mag_flux(21.0, 31.4, fainter=True)  # just fainter
    frame.loc[2, "r_cModelFlux"] = mag_flux(20.0, 31.4)  # on the LRG magnitude cut
    frame.loc[2, ["g_cModelFlux", "i_cModelFlux"]] = [
        frame.loc[2, "r_cModelFlux"] / 10 ** (2.0 / 2.5),
        frame.loc[2, "r_cModelFlux"] * 10 ** (0.85 / 2.5),
    ]
    frame.loc[3, "i_cModelFlux"] = -12.0  # a negative flux: no r-i colour
    frame.loc[4::41, "refExtendedness"] = np.nan
    frame.loc[5::37, "g_cModelFlux"] = None
    return frame


LSST_SQL = """
    WITH m AS (
        SELECT *,
            nn(-2.5 * log10(r_cModelFlux) + 31.4) AS r_,
            nn(-2.5 * log10(g_cModelFlux / r_cModelFlux)) AS gr_,
            nn(-2.5 * log10(r_cModelFlux / i_cModelFlux)) AS ri_
        FROM {relation}
    )
    SELECT CAST(objectId AS VARCHAR) AS ID,
        CASE WHEN r_ < 14 + (0.7 * gr_ + 1.2 * (ri_ - 0.18)) / 0.3
            AND abs(ri_ - gr_ / 4.0 - 0.18) < 0.2 AND r_ <= 20
        THEN 'LRG' ELSE 'BG' END AS sample
    FROM m WHERE nn(refExtendedness) = 1 AND r_ <= 21
    ORDER BY ID
"""
"""The LSST preset typed in from its docstring: extended, r <= 21 (cModel, nJy); LRG: the
KiDS colour cuts on cModel g-r and r-i, r <= 20."""


def duckdb_select(sql: str, relation: str, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    with duckdb.connect() as con:
        con.execute(NN)
        if frame is not None:
            con.register("catalog_", frame)
        return con.sql(sql.format(relation=relation)).df()


def test_the_lsst_preset_through_a_cluster_matches_duckdb(tmp_path: Path, client):
    catalog = tmp_path / "dp1"
    catalog.mkdir()
    for tract, patch, seed in ((5063, 14, 1), (5063, 15, 2)):
        frame = lsst_frame(1200, seed=seed, tract=tract, patch=patch)
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), catalog / f"{tract}_{patch}.parquet"
        )
    report = select_targets(
        catalog,
        tmp_path / "targets",
        config=SelectConfig(preset="lsst"),
        client=client,
        progress=False,
    )
    assert not report.units.failures
    targets = pq.read_table(tmp_path / "targets").to_pandas()
    expected = duckdb_select(LSST_SQL, f"read_parquet('{catalog}/*.parquet')")
    got = targets[["ID", "sample"]].sort_values("ID").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert {"LRG", "BG"} == set(got["sample"])
    assert report.total("LRG") == (expected["sample"] == "LRG").sum()
    # the contract's ID and position, the columns the samples read; no tile
    assert list(targets.columns[:3]) == ["ID", "RAJ2000", "DECJ2000"]
    assert {"refExtendedness", "g_cModelFlux", "r_cModelFlux", "i_cModelFlux"} <= set(targets)
    assert "THELI_NAME" not in targets and targets["ID"].map(type).eq(str).all()
    on_cut = str(5063 * 1_000_000 + 14 * 10_000 + 0)
    assert on_cut in set(targets["ID"]) and str(int(on_cut) + 1) not in set(targets["ID"])


def euclid_frame(n: int, *, seed: int) -> pd.DataFrame:
    """A catalog with Euclid Q1 MER names: fluxes in µJy, DECam fluxes null for some."""
    rng = np.random.default_rng(seed)
    vis = rng.uniform(16.0, 22.5, n)
    r_mag = vis + rng.uniform(0.2, 0.8, n)
    g_r, r_i = rng.uniform(0.0, 2.2, n), rng.uniform(0.0, 1.0, n)
    r = 10 ** ((23.9 - r_mag) / 2.5)
    frame = pd.DataFrame(
        {
            "object_id": -(np.arange(n, dtype=np.int64) + 509_000_000_000),
            "right_ascension": 52.0 + rng.uniform(0, 0.2, n),
            "declination": -28.0 + rng.uniform(0, 0.2, n),
            "point_like_prob": rng.uniform(0, 1, n),
            "flux_detection_total": 10 ** ((23.9 - vis) / 2.5),
            "flux_g_ext_decam_templfit": r / 10 ** (g_r / 2.5),
            "flux_r_ext_decam_templfit": r,
            "flux_i_ext_decam_templfit": r * 10 ** (r_i / 2.5),
        }
    )
    frame.loc[0, ["point_like_prob", "flux_detection_total"]] = [0.5, 1e3]  # on the cut: not
    frame.loc[1, ["point_like_prob", "flux_detection_total"]] = [0.1, mag_flux(21.0, 23.9)]
    frame.loc[2::29, "flux_r_ext_decam_templfit"] = None
    frame.loc[3::31, "point_like_prob"] = None
    return frame


EUCLID_SQL = """
    WITH m AS (
        SELECT *,
            nn(-2.5 * log10(flux_detection_total) + 23.9) AS vis_,
            nn(-2.5 * log10(flux_r_ext_decam_templfit) + 23.9) AS r_,
            nn(-2.5 * log10(flux_g_ext_decam_templfit / flux_r_ext_decam_templfit)) AS gr_,
            nn(-2.5 * log10(flux_r_ext_decam_templfit / flux_i_ext_decam_templfit)) AS ri_
        FROM {relation}
    )
    SELECT CAST(object_id AS VARCHAR) AS ID,
        CASE WHEN r_ < 14 + (0.7 * gr_ + 1.2 * (ri_ - 0.18)) / 0.3
            AND abs(ri_ - gr_ / 4.0 - 0.18) < 0.2 AND r_ <= 20
        THEN 'LRG' ELSE 'BG' END AS sample
    FROM m WHERE point_like_prob < 0.5 AND vis_ <= 21
    ORDER BY ID
"""
"""The Euclid preset typed in from its docstring: point_like_prob < 0.5, VIS <= 21 (µJy);
LRG: the KiDS colour cuts on DECam g-r and r-i, DECam r <= 20."""


def test_the_euclid_preset_matches_duckdb():
    frame = euclid_frame(3000, seed=5)
    targets = classify_targets(frame, config=SelectConfig(preset="euclid"))
    got = pd.DataFrame(
        {"ID": targets["object_id"].astype(str), "sample": targets["sample"].astype(str)}
    )
    got = got.sort_values("ID").reset_index(drop=True)
    expected = duckdb_select(EUCLID_SQL, "catalog_", frame)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert (expected["sample"] == "LRG").sum() > 10 and (expected["sample"] == "BG").sum() > 10
    assert str(frame.loc[1, "object_id"]) in set(got["ID"])
    assert str(frame.loc[0, "object_id"]) not in set(got["ID"])


def test_samples_override_the_preset_and_read_the_column_map():
    frame = lsst_frame(800, seed=9, tract=1, patch=2)
    config = SelectConfig(
        preset="lsst",
        samples={"LRG": "RAJ2000 < 62.1 and -2.5 * log10(r_cModelFlux) + 31.4 < 19"},
    )
    targets = classify_targets(frame, config=config)
    bg = classify_targets(frame, config=SelectConfig(preset="lsst"))
    assert targets.index.equals(bg.index)  # BG from the preset
    lrg = targets[targets["sample"] == "LRG"]
    assert len(lrg) and (lrg["coord_ra"] < 62.1).all()
    r = -2.5 * np.log10(bg["r_cModelFlux"]) + 31.4
    expected = bg.index[(bg["coord_ra"] < 62.1) & (r < 19)]
    assert set(lrg.index) == set(expected)


# --- configuration and pre-flight -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "sdss"}, "select.preset: one of kids-dr4, lsst, euclid, none"),
        ({"samples": {"QSO": "a < 1"}}, "select.samples: the samples are LRG and BG"),
        ({"samples": {"LRG": 3}}, "select.samples.LRG: an expression in quotes"),
        ({"preset": "none", "samples": {"BG": "a < 1"}}, "preset none needs an expression for LRG"),
        ({"preset": "lsst", "bg_mag_max": 22.0}, "select.bg_mag_max applies to the kids-dr4"),
    ],
)
def test_bad_sample_configurations_are_refused(options: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        SelectConfig(**options)


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if a command starts (or joins) a cluster."""

    def connect(spec):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("lensdask.cluster.connect", connect)


@pytest.fixture
def lsst_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "dp1" / "5063_14.parquet"
    path.parent.mkdir()
    frame = lsst_frame(50, seed=1, tract=5063, patch=14)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path.parent


def test_a_job_with_an_unknown_column_fails_pre_flight_showing_where(
    tmp_path: Path, lsst_catalog: Path, no_cluster
):
    expression = "refExtendedness == 1 and -2.5 * log10(r_cModelFlx) + 31.4 <= 20"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\ncatalog: {lsst_catalog}\n"
        f"select:\n  preset: lsst\n  samples:\n    LRG: '{expression}'\n"
    )
    result = CliRunner().invoke(main, ["run", str(job)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("Error: select: "))
    assert "select.samples.LRG: unknown column `r_cModelFlx`" in lines[error]
    assert "did you mean r_cModelFlux" in lines[error]
    assert lines[error + 1] == f"    {expression}"
    assert lines[error + 2].index("^") - 4 == expression.index("r_cModelFlx")
    assert not (tmp_path / "work" / "targets.parquet").exists()


def test_the_select_command_refuses_bad_syntax_before_a_cluster(
    tmp_path: Path, lsst_catalog: Path, no_cluster
):
    result = CliRunner().invoke(
        main,
        [
            "select",
            str(lsst_catalog),
            "--out",
            str(tmp_path / "targets"),
            "--preset",
            "lsst",
            "--samples",
            "BG=refExtendedness == 1 and (r_cModelFlux > 0",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    assert "select.samples.BG: bad syntax: '(' was never closed" in result.output
    shown = result.output.splitlines()
    at = next(i for i, line in enumerate(shown) if "was never closed" in line)
    assert shown[at + 2].index("^") - 4 == "refExtendedness == 1 and (".index("(")
