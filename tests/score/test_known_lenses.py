"""Known lenses as astronomers have them: CSV, ECSV, FITS, VOTable and Parquet files written
by astropy, decimal and sexagesimal coordinates, VizieR column names, foreign ID schemes,
and a reason for every known lens that is not recovered."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

from lensdask.config import CandidateConfig
from lensdask.formats.files import TableError
from lensdask.score.candidates import select_candidates
from lensdask.score.recovery import (
    BELOW_THRESHOLD,
    MASKED_STAMP,
    NO_SUCH_TARGET,
    NOT_SCORED,
    NOT_SELECTED,
    REPORT_COLUMNS,
    recover_known,
)

NO_TARGET = 'no target within 1.0"'
TARGETS = pd.DataFrame(
    {
        "ID": [f"KiDS J{k}" for k in range(6)],
        "RAJ2000": [150.1, 150.2, 150.3, 150.4, 188.7, 10.0],
        "DECJ2000": [-1.2, -0.5, 0.3, 2.1, -0.05, -30.0],
        "THELI_NAME": ["KIDS_150.0_-1.0"] * 4 + ["KIDS_188.0_0.0", "KIDS_10.0_-30.0"],
    }
)
"""Six targets; KiDS J3 has no score, KiDS J4 sits at a declination of -0 deg 03'."""
SCORES = pd.DataFrame(
    {
        "ID": ["KiDS J0", "KiDS J1", "KiDS J2", "KiDS J4", "KiDS J5"],
        "sample": ["LRG", "LRG", "BG", "LRG", "BG"],
        "p_cnn": np.array([0.9, 0.3, np.nan, 0.8, 0.99], dtype=np.float32),
        "nonfinite_fraction": np.array([0.0, 0.0, 1.0, 0.1, 0.0], dtype=np.float32),
    }
)
"""J0 recovered, J1 below threshold, J2 on a blank stamp, J4 recovered."""
OFFSETS = [(0.3, 0.2), (-0.4, 0.1), (0.0, -0.5), (0.2, 0.2), (0.1, -0.6)]
"""arcsec east and north of targets J0, J1, J2, J3 and J4: the known lenses near them."""
STRAY = (200.0, 5.0)
"""deg: a known lens far from every target and every catalog source."""
UNSELECTED = (160.0, 1.0)
"""deg: a catalog source that is not a target, with a known lens 0.3" north of it."""


def known_positions() -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (deg) of the seven known lenses, read back from their sexagesimal form, so
    that both notations hold the same positions."""
    ra, dec = [], []
    for k, (east, north) in enumerate(OFFSETS):
        target = TARGETS.iloc[k]
        cos = np.cos(np.radians(target["DECJ2000"]))
        ra.append(target["RAJ2000"] + east / 3600 / cos)
        dec.append(target["DECJ2000"] + north / 3600)
    ra += [STRAY[0], UNSELECTED[0]]
    dec += [STRAY[1], UNSELECTED[1] + 0.3 / 3600]
    hours, degrees = sexagesimal(np.array(ra), np.array(dec), sep=" ")
    return Angle(hours, unit=u.hourangle).deg, Angle(degrees, unit=u.deg).deg


def sexagesimal(ra: np.ndarray, dec: np.ndarray, *, sep: str) -> tuple[list[str], list[str]]:
    """RA in hours and Dec in degrees as strings (``12 34 56.7`` / ``-01 23 45``)."""
    hours = Angle(ra, unit=u.deg).to_string(unit=u.hourangle, sep=sep, precision=5, pad=True)
    degrees = Angle(dec, unit=u.deg).to_string(
        unit=u.deg, sep="dms" if sep == "hms" else sep, precision=4, pad=True, alwayssign=True
    )
    return list(hours), list(degrees)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """Targets, scores (two tiles) and a catalog of the targets plus one unselected galaxy."""
    TARGETS.to_parquet(tmp_path / "targets.parquet", index=False)
    scores = tmp_path / "scores"
    scores.mkdir()
    with_tile = SCORES.merge(TARGETS[["ID", "THELI_NAME"]], on="ID").assign(model_id="m0")
    for tile, part in with_tile.groupby("THELI_NAME"):
        part.to_parquet(scores / f"{tile}.parquet", index=False)
    catalog = pd.concat(
        [
            TARGETS[["ID", "RAJ2000", "DECJ2000"]],
            pd.DataFrame({"ID": ["KiDS G"], "RAJ2000": [160.0], "DECJ2000": [1.0]}),
        ]
    )
    catalog.to_parquet(tmp_path / "catalog.parquet", index=False)
    return {
        "targets": tmp_path / "targets.parquet",
        "scores": scores,
        "catalog": tmp_path / "catalog.parquet",
    }


def known_table(*, notation: str, ra_name: str = "RAJ2000", dec_name: str = "DEJ2000") -> Table:
    """The seven known lenses with a foreign ID scheme, in decimal degrees, sexagesimal
    strings (three separators) or columns with units (RA in hours)."""
    ra, dec = known_positions()
    table = Table({"ID": [f"SLACS J{k:04d}" for k in range(len(ra))]})
    if notation == "decimal":
        table[ra_name], table[dec_name] = ra, dec
    elif notation in ("hourangle", "hour"):  # FITS has no hourangle: its RA is in h
        table[ra_name] = (ra / 15) * (u.hourangle if notation == "hourangle" else u.hour)
        table[dec_name] = dec * u.deg
    else:
        hours, degrees = sexagesimal(ra, dec, sep=notation)  # "hms": 10h00m24s, -01d12m00s
        table[ra_name], table[dec_name] = hours, degrees
    table["z_lens"] = np.linspace(0.1, 0.7, len(ra))
    return table


WRITE = {
    "csv": ("known.csv", "ascii.csv"),
    "ecsv": ("known.ecsv", "ascii.ecsv"),
    "fits": ("known.fits", "fits"),
    "votable": ("known.xml", "votable"),
}


def report(path: Path, world: dict[str, Path], **options) -> pd.DataFrame:
    options.setdefault("targets", world["targets"])
    measured = recover_known(
        path, world["scores"], config=CandidateConfig(), stem=path.with_suffix(""), **options
    )
    on_disk = pd.read_csv(Path(f"{path.with_suffix('')}_known.csv"), dtype={"matched_ID": str})
    assert list(on_disk.columns) == list(measured.table.columns)
    return measured.table


def expected_separations() -> np.ndarray:
    """astropy's own separation of each of the first five known lenses from its target."""
    ra, dec = known_positions()
    lenses = SkyCoord(ra[:5] * u.deg, dec[:5] * u.deg)
    near = TARGETS.iloc[:5]
    targets = SkyCoord(near["RAJ2000"].to_numpy() * u.deg, near["DECJ2000"].to_numpy() * u.deg)
    return lenses.separation(targets).to(u.arcsec).value


@pytest.mark.parametrize("kind", list(WRITE))
@pytest.mark.parametrize("notation", ["decimal", " ", ":", "hms", "hourangle"])
def test_every_format_and_notation_gives_the_same_report(world, tmp_path, kind, notation):
    if notation == "hourangle" and kind == "csv":
        pytest.skip("a CSV file has no units")
    name, fmt = WRITE[kind]
    if notation == "hourangle" and kind == "fits":
        notation = "hour"
    path = tmp_path / name
    known_table(notation=notation).write(path, format=fmt)
    table = report(path, world)
    assert table["matched_ID"].tolist()[:5] == [f"KiDS J{k}" for k in range(5)]
    assert table["matched_ID"].isna().tolist()[5:] == [True, True]
    assert (table["matched_by"][:5] == "position").all()
    assert table["recovered"].tolist() == [True, False, False, False, True, False, False]
    assert table["reason"].tolist() == [
        "",
        BELOW_THRESHOLD,
        MASKED_STAMP,
        NOT_SCORED,
        "",
        NO_TARGET,
        NO_TARGET,  # without the catalog, an unselected galaxy is no target either
    ]
    np.testing.assert_allclose(table["separation_arcsec"][:5], expected_separations(), atol=1e-3)
    np.testing.assert_allclose(
        table["separation_arcsec"][:5], np.hypot(*np.array(OFFSETS).T), rtol=1e-3
    )
    assert table["p_cnn"][:2].tolist() == pytest.approx([0.9, 0.3])
    assert np.isnan(table["p_cnn"][2])
    assert table["ID"].tolist()[0] == "SLACS J0000"  # the known lenses' own columns stay
    assert table["z_lens"].tolist() == pytest.approx(np.linspace(0.1, 0.7, 7))
    reference = report(write_reference(tmp_path), world)
    pd.testing.assert_frame_equal(
        table[list(REPORT_COLUMNS)].drop(columns="separation_arcsec"),
        reference[list(REPORT_COLUMNS)].drop(columns="separation_arcsec"),
        check_dtype=False,
    )


def write_reference(tmp_path: Path) -> Path:
    """The known lenses as Parquet in decimal degrees: the report every format must give."""
    path = tmp_path / "reference" / "known.parquet"
    path.parent.mkdir()
    known_table(notation="decimal").to_pandas().to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["fits", "votable", "ascii.ecsv"])
def test_the_format_of_another_extension_comes_from_the_content(world, tmp_path, fmt):
    path = tmp_path / "known.cat"
    known_table(notation=":").write(path, format=fmt)
    assert report(path, world)["reason"].tolist()[:2] == ["", BELOW_THRESHOLD]


def test_sexagesimal_strings_are_read_by_astropy(world, tmp_path):
    path = tmp_path / "known.csv"
    pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "RA": ["10 00 24.0", "10:00:48.0", "10h01m12s"],
            "DEC": ["-01 12 00", "-00:30:00", "+00d18m00s"],
        }
    ).to_csv(path, index=False)
    table = report(path, world)
    # 10h00m24s = 150.1 deg; "-00 30 00" keeps its sign (-0.5 deg)
    assert table["matched_ID"].tolist() == ["KiDS J0", "KiDS J1", "KiDS J2"]
    assert table["separation_arcsec"].max() < 1e-6


def test_vizier_columns_with_a_foreign_id_scheme(world, tmp_path, caplog):
    ra, dec = known_positions()
    _, degrees = sexagesimal(ra, dec, sep=" ")
    table = Table({"ID": [f"J{k:05d}" for k in range(len(ra))], "_RAJ2000": ra * u.deg})
    table["DEJ2000"] = degrees
    table["DEJ2000"].unit = u.Unit("d:m:s", parse_strict="silent")
    with warnings.catch_warnings():  # VizieR's d:m:s is no unit that astropy knows
        warnings.simplefilter("ignore", AstropyWarning)
        table.write(tmp_path / "vizier.vot", format="votable")
    with caplog.at_level(logging.INFO, logger="lensdask.score.recovery"):
        got = report(tmp_path / "vizier.vot", world)
    assert "another naming scheme" in caplog.text and "matching by position" in caplog.text
    assert got["matched_ID"].tolist()[:5] == [f"KiDS J{k}" for k in range(5)]
    assert got["recovered"].sum() == 2


def test_ids_of_the_targets_match_without_positions(world, tmp_path):
    path = tmp_path / "known.ecsv"
    Table({"id": ["KiDS J0", "KiDS J1", "KiDS J3", "KiDS J9"]}).write(path)
    got = report(path, world)
    assert got["matched_by"].tolist() == ["ID"] * 4
    assert got["reason"].tolist() == ["", BELOW_THRESHOLD, NOT_SCORED, NO_SUCH_TARGET]
    assert got["note"][3] == "not among the scored targets"
    no_targets = report(path, world, targets=None)  # only the scores can tell
    assert no_targets["reason"].tolist() == ["", BELOW_THRESHOLD, NOT_SCORED, NOT_SCORED]


def test_the_catalog_tells_unselected_galaxies(world, tmp_path):
    path = tmp_path / "known.fits"
    known_table(notation="decimal").write(path)
    got = report(path, world, catalog=world["catalog"])
    assert got["reason"].tolist()[5:] == [NO_TARGET, NOT_SELECTED]
    assert got["matched_ID"].isna().tolist()[5:] == [True, True]
    assert "KiDS G" in got["note"][6] and "0.30 arcsec" in got["note"][6]
    assert "the nearest, KiDS J" in got["note"][5]


def test_known_lenses_all_off_the_targets(world, tmp_path):
    path = tmp_path / "known.ecsv"
    Table({"RA": [STRAY[0], 0.5] * u.deg, "DEC": [STRAY[1], 0.5] * u.deg}).write(path)
    got = report(path, world)
    assert got["reason"].tolist() == [NO_TARGET, NO_TARGET]
    assert got["matched_ID"].isna().all() and not got["recovered"].any()


def test_a_masked_stamp_with_a_score(world, tmp_path):
    path = tmp_path / "known.csv"
    pd.DataFrame({"ID": ["KiDS J1", "KiDS J4"]}).to_csv(path, index=False)
    config = CandidateConfig(masked_fraction=0.05)  # J4's stamp is 10% non-finite
    measured = recover_known(
        path, world["scores"], config=config, targets=world["targets"], stem=tmp_path / "m"
    )
    assert measured.table["reason"].tolist() == [BELOW_THRESHOLD, ""]  # J4 is recovered anyway
    assert "p_cnn 0.300 not above the LRG threshold 0.75" in measured.table["note"][0]


@pytest.mark.parametrize(
    ("ra", "dec", "column", "row", "match"),
    [
        ("10 00 4x.0", "-00 30 00", "RAJ2000", 1, "cannot read '10 00 4x.0'"),
        ("150.2", "-00 30 00", "RAJ2000", 1, r"'150.2' is decimal, row 0 sexagesimal"),
        ("25 00 00", "-00 30 00", "RAJ2000", 1, "must be in the range"),
        ("10 00 48", "-95 00 00", "DEJ2000", 1, r"outside \[-90, 90\]"),
        ("10 00 48", "", "DEJ2000", 1, "empty, while the other is given"),
    ],
)
def test_an_unparsable_coordinate_names_file_row_and_column(
    world, tmp_path, ra, dec, column, row, match
):
    path = tmp_path / "broken.csv"
    pd.DataFrame({"RAJ2000": ["10 00 24.0", ra], "DEJ2000": ["-01 12 00", dec]}).to_csv(
        path, index=False
    )
    with pytest.raises(TableError, match=match) as caught:
        report(path, world)
    assert f"{path}: row {row}, column {column}" in str(caught.value)


def test_an_unparsable_declination_in_a_fits_file(world, tmp_path):
    path = tmp_path / "broken.fits"
    Table({"RA": [150.1, 150.2, 150.3], "Dec": ["-01 12 00", "-00 30 00", "north"]}).write(path)
    with pytest.raises(TableError, match=r"broken\.fits: row 2, column Dec: cannot read 'north'"):
        report(path, world)


def test_no_position_columns_lists_the_columns(world, tmp_path):
    path = tmp_path / "known.ecsv"
    Table({"name": ["x"], "ra_deg": [1.0], "z": [0.3]}).write(path)
    with pytest.raises(KeyError, match=r"its columns are name, ra_deg, z"):
        report(path, world)


def test_the_candidates_stage_reports_each_known_lens(client, world, tmp_path):
    path = tmp_path / "known.vot"
    known_table(notation=":").write(path, format="votable")
    result = select_candidates(
        world["scores"],
        tmp_path / "cands" / "c.parquet",
        client=client,
        targets=world["targets"],
        known=path,
        progress=False,
    )
    assert result.summary["known"] == {"known": 7, "scored": 3, "recovered": 2, "fraction": 2 / 7}
    table = pd.read_csv(tmp_path / "cands" / "c_known.csv", keep_default_na=False)
    assert list(table.columns)[-len(REPORT_COLUMNS) :] == list(REPORT_COLUMNS)
    assert table["reason"].tolist() == [
        "",
        BELOW_THRESHOLD,
        MASKED_STAMP,
        NOT_SCORED,
        "",
        NO_TARGET,
        NO_TARGET,
    ]
    assert table["matched_ID"].tolist()[:5] == [f"KiDS J{k}" for k in range(5)]
