"""HATS catalogs: the mock survey writes one, the selection takes one unit per HEALPix pixel
and gives the targets of the per-tile catalog and of DuckDB, and the targets written as HATS
are read back and cross-matched by LSDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from lensdask.catalog.hats import hats_units, write_targets_hats
from lensdask.catalog.schema import SchemaError
from lensdask.catalog.select import SelectReport, select_targets
from lensdask.config import ConfigError, MockSurveyConfig
from lensdask.formats.hats import is_hats, write_hats
from lensdask.formats.parquet import dataset_parts
from lensdask.mock.survey import make_mock_survey
from lensdask.testing import small_survey_config

lsdb = pytest.importorskip("lsdb")

pytestmark = pytest.mark.slow  # hats-import runs a few seconds per catalog

PIXEL_ROWS = 6000
"""Rows per partition of :func:`fine`: more than a tile of the small survey holds (the
finest pixels lensdask writes may hold a whole tile), for a few pixels per tile."""


def frame(path: Path) -> pd.DataFrame:
    """A Parquet dataset (or the targets) as one frame sorted by ID."""
    return pd.read_parquet(path).sort_values("ID").reset_index(drop=True)


def select(catalog: Path, out: Path, client) -> SelectReport:
    return select_targets(catalog, out, client=client, progress=False)


@pytest.fixture(scope="module")
def survey(client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mock survey written with ``catalog_format: hats`` (read only)."""
    out = tmp_path_factory.mktemp("survey") / "s"
    config = small_survey_config(tiles=3, tile_size=0.2, catalog_format="hats")
    made = make_mock_survey(out, config=config, client=client, progress=False)
    assert made.units.ok
    return out


@pytest.fixture(scope="module")
def fine(survey: Path, client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The survey's catalog as HATS with at most :data:`PIXEL_ROWS` rows per pixel."""
    out = tmp_path_factory.mktemp("fine") / "catalog_hats"
    assert write_hats(
        dataset_parts(survey / "catalog"), out, client=client, pixel_rows=PIXEL_ROWS, progress=False
    )
    return out


@pytest.fixture(scope="module")
def selected(fine: Path, client, tmp_path_factory: pytest.TempPathFactory) -> SelectReport:
    """The selection of :func:`fine` (read only)."""
    return select(fine, tmp_path_factory.mktemp("selected") / "targets.parquet", client)


def test_mock_survey_writes_the_same_rows_as_hats(survey: Path, client) -> None:
    assert is_hats(survey / "catalog_hats") and not is_hats(survey / "catalog")
    tiles = frame(survey / "catalog")
    hats = lsdb.open_catalog(survey / "catalog_hats").compute()
    hats = hats.sort_values("ID").reset_index(drop=True)
    assert len(hats) == len(tiles) > 1000
    for column in ("ID", "RAJ2000", "DECJ2000", "MAG_AUTO", "SG2DPHOT", "COLOUR_GAAP_g_r"):
        pd.testing.assert_series_equal(
            hats[column], tiles[column], check_dtype=False, check_exact=True
        )
    # a rerun finds every tile and the HATS catalog complete: nothing is rewritten
    stamp = survey / "catalog_hats" / "hats.properties"
    before = stamp.stat().st_mtime_ns
    config = small_survey_config(tiles=3, tile_size=0.2, catalog_format="hats")
    again = make_mock_survey(survey, config=config, client=client, progress=False)
    assert again.written == 0 and again.skipped == 3
    assert stamp.stat().st_mtime_ns == before


def test_hats_needs_the_simple_layout() -> None:
    with pytest.raises(ConfigError, match="catalog_format"):
        MockSurveyConfig(catalog_format="hats", layout="kids-dr4")
    with pytest.raises(ConfigError, match="catalog_format: one of parquet, hats"):
        MockSurveyConfig(catalog_format="fits")


def test_units_are_the_pixels(fine: Path) -> None:
    units = hats_units(fine, columns=["ID", "MAG_AUTO"])
    assert len(units) >= 3
    catalog = lsdb.open_catalog(fine)
    pixels = catalog.get_healpix_pixels()
    assert sorted(units) == sorted(f"Norder{p.order}_Npix{p.pixel}" for p in pixels)
    for unit, (path, identity) in units.items():
        order, pixel = (
            int(part[6:] if i == 0 else part[4:]) for i, part in enumerate(unit.split("_"))
        )
        assert path.parts[-3:] == (
            f"Norder={order}",
            f"Dir={pixel // 10000 * 10000}",
            f"Npix={pixel}.parquet",
        )
        assert path.is_file() and len(identity) == 16


def test_hats_selection_equals_per_tile_and_duckdb(
    selected: SelectReport,
    survey: Path,
    fine: Path,
    client,
    tmp_path: Path,
    duckdb_targets: Callable,
) -> None:
    assert selected.units.ok
    assert sorted(selected.units.results) == sorted(hats_units(fine, columns=["ID"]))
    targets = frame(selected.out)
    assert not targets["ID"].duplicated().any()

    per_tile = select(survey / "catalog", tmp_path / "tiles.parquet", client)
    expected = frame(per_tile.out)
    pd.testing.assert_frame_equal(targets, expected, check_exact=True)
    assert selected.total("sources") == per_tile.total("sources")
    assert selected.total("nan_colour") == per_tile.total("nan_colour") > 0

    files = sorted(path for path, _ in hats_units(fine, columns=["ID"]).values())
    reference = duckdb_targets(files)
    assert len(reference) == len(targets)
    for sample in ("LRG", "BG"):
        ids = set(reference.loc[reference["sample"] == sample, "ID"])
        assert ids and set(targets.loc[targets["sample"] == sample, "ID"]) == ids


def test_resume_redoes_only_the_pixel_without_marker(fine: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "targets.parquet"
    first = select(fine, out, client)
    before = frame(out)
    unit = sorted(first.units.results)[1]
    (out / "_units" / f"{unit}.json").unlink()

    again = select(fine, out, client)
    assert list(again.units.results) == [unit]
    assert sorted(again.units.skipped) == sorted(set(first.units.results) - {unit})
    after = frame(out)
    assert not after["ID"].duplicated().any()
    pd.testing.assert_frame_equal(after, before, check_exact=True)
    assert again.per_tile == first.per_tile


def test_missing_column_names_the_column_and_the_catalog(client, tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "ID": ["a", "b"],
            "RAJ2000": [10.0, 10.1],
            "DECJ2000": [0.5, 0.6],
            "THELI_NAME": ["T", "T"],
            "SG2DPHOT": [0, 0],
            "COLOUR_GAAP_g_r": [1.0, 1.0],
            "COLOUR_GAAP_r_i": [0.5, 0.5],
            "Z_B": [0.3, 0.3],
        }
    )  # no MAG_AUTO
    catalog = tmp_path / "no_mag"
    lsdb.from_dataframe(rows, ra_column="RAJ2000", dec_column="DECJ2000").write_catalog(catalog)
    assert is_hats(catalog)
    out = tmp_path / "targets.parquet"
    with pytest.raises(SchemaError, match=r"HATS catalog .*no_mag.*MAG_AUTO"):
        select(catalog, out, client)
    assert not (out / "_units").exists()  # refused before any unit ran


def test_targets_as_hats_read_back_and_crossmatched(
    selected: SelectReport, fine: Path, client, tmp_path: Path
) -> None:
    out = tmp_path / "targets_hats"
    assert write_targets_hats(selected.out, out, client=client, progress=False)
    assert not write_targets_hats(selected.out, out, client=client, progress=False)
    targets = frame(selected.out)
    hats = lsdb.open_catalog(out)
    assert hats.hc_structure.catalog_info.ra_column == "RAJ2000"
    back = hats.compute().sort_values("ID").reset_index(drop=True)
    pd.testing.assert_frame_equal(back[list(targets.columns)], targets, check_dtype=False)

    # every target finds itself, at distance 0, among the catalog's sources
    catalog = lsdb.open_catalog(fine, columns=["ID", "RAJ2000", "DECJ2000"])
    matched = hats.crossmatch(
        catalog,
        radius_arcsec=0.5,
        n_neighbors=1,
        suffixes=("", "_cat"),
        suffix_method="all_columns",
    )
    matched = matched.compute()
    assert len(matched) == len(targets)
    assert (matched["ID"] == matched["ID_cat"]).all()
    assert (matched["_dist_arcsec"] < 1e-6).all()


def test_write_hats_refuses_a_foreign_folder(
    selected: SelectReport, client, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="not a HATS catalog lensdask wrote"):
        write_targets_hats(selected.out, tmp_path / "mine", client=client, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_cli_targets_to_hats(selected: SelectReport, client, tmp_path: Path) -> None:
    import logging

    from click.testing import CliRunner

    from lensdask.cli import main

    out = tmp_path / "targets_hats"
    args = ["targets-to-hats", str(selected.out), "--out", str(out), "--no-progress"]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # the command configures the root logger onto CliRunner's streams
        result = CliRunner().invoke(main, [*args, "--cluster", client.scheduler.address])
        again = CliRunner().invoke(main, [*args, "--cluster", client.scheduler.address])
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    assert result.exit_code == 0, result.output
    assert f"targets-to-hats: {out} written" in result.output
    assert f"targets-to-hats: {out} already complete" in again.output
    assert len(lsdb.open_catalog(out).compute()) == selected.total("rows")
