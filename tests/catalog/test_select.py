"""select_targets on real Parquet catalogs and a real LocalCluster, checked against DuckDB."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from design_columns import CONTRACT

import lensdask.cli
from lensdask.catalog import classify_targets
from lensdask.catalog.schema import SchemaError
from lensdask.catalog.select import CatalogError, SelectReport, select_targets, targets_frame
from lensdask.config import SelectConfig
from lensdask.mock.survey import make_mock_survey
from lensdask.testing import (
    catalog_frame,
    damage_parquet_pages,
    small_survey_config,
    write_parquet_catalog,
)

TILES = {  # tile -> (rows, seed, ra0, dec0)
    "KIDS_10.0_0.5": (1500, 1, 10.0, 0.5),
    "KIDS_11.0_0.5": (2200, 2, 11.0, 0.5),
    "KIDS_12.0_-0.5": (900, 3, 12.0, -0.5),
}
COUNTS = ("sources", "rows", "LRG", "BG", "nan_colour")


def tile_frame(tile: str) -> pd.DataFrame:
    """The catalog rows of one of :data:`TILES` (boundary rows included)."""
    n, seed, ra0, dec0 = TILES[tile]
    return catalog_frame(n, seed=seed, tile=tile, ra0=ra0, dec0=dec0, boundary=True)


def write_catalog(folder: Path) -> Path:
    """A catalog folder with one Parquet file per tile of :data:`TILES`."""
    for tile in TILES:
        write_parquet_catalog(tile_frame(tile), folder / f"{tile}.parquet")
    return folder


def select(catalog: Path, out: Path, client, **options: object) -> SelectReport:
    """select_targets without a progress bar; ``options`` go to SelectConfig."""
    return select_targets(
        catalog, out, config=SelectConfig(**options), client=client, progress=False
    )


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative path -> bytes)."""
    return {
        str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()
    }


def mtimes(out: Path) -> dict[str, int]:
    """Modification times of the targets files and completion markers under ``out``."""
    paths = [*out.glob("*.parquet"), *(out / "_units").glob("*.json")]
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in paths}


def assert_matches_duckdb(
    report: SelectReport,
    catalog: Path | list[Path],
    duckdb_targets: Callable[..., pd.DataFrame],
    config: SelectConfig | None = None,
) -> pd.DataFrame:
    """The targets dataset of ``report`` is what DuckDB selects from ``catalog``; returns it."""
    out = report.out
    reference = duckdb_targets(catalog, config)
    targets = pd.read_parquet(out)

    assert list(targets.columns) == CONTRACT
    assert not targets["ID"].duplicated().any()
    assert len(targets) == len(reference)
    for sample in ("LRG", "BG"):
        expected = set(reference.loc[reference["sample"] == sample, "ID"])
        assert expected, f"no {sample} in the reference: the comparison would be empty"
        assert set(targets.loc[targets["sample"] == sample, "ID"]) == expected

    # every value of a target is the catalog's value, unchanged
    merged = targets.merge(reference, on="ID", suffixes=("", "_ref"), validate="one_to_one")
    for column in CONTRACT[1:]:
        pd.testing.assert_series_equal(
            merged[column],
            merged[f"{column}_ref"],
            check_names=False,
            check_dtype=False,
            check_exact=True,
        )

    # counts per tile: the report, _tiles.csv and _summary.json
    files = sorted(catalog.glob("*.parquet")) if isinstance(catalog, Path) else catalog
    sources = {Path(path).stem: len(pd.read_parquet(path)) for path in files}
    expected_tiles = {
        unit: {
            "sources": sources[unit],
            "rows": len(group),
            "LRG": int((group["sample"] == "LRG").sum()),
            "BG": int((group["sample"] == "BG").sum()),
            "nan_colour": int(group["nan_colour"].sum()),
        }
        for unit, group in reference.groupby("unit")
    }
    assert report.per_tile == expected_tiles
    with (out / "_tiles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    columns = {key: key for key in COUNTS} | {"rows": "targets"}
    from_csv = {row["tile"]: {key: int(row[columns[key]]) for key in COUNTS} for row in rows}
    assert from_csv == expected_tiles
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["bright_galaxies"] == len(reference)
    assert summary["sources"] == sum(sources[unit] for unit in expected_tiles)
    assert summary["bg_fraction_of_sources"] == pytest.approx(len(reference) / summary["sources"])
    assert summary["sample_LRG"] == int((reference["sample"] == "LRG").sum())
    assert summary["sample_BG"] == int((reference["sample"] == "BG").sum())
    assert summary["bg_with_nan_colour"] == int(reference["nan_colour"].sum()) > 0
    assert summary["files_done"] == len(expected_tiles)

    # the contract types, in every file of the dataset
    for path in out.glob("*.parquet"):
        schema = pq.read_schema(path)
        assert schema.names == CONTRACT
        for name in ("ID", "THELI_NAME", "sample"):
            assert pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(
                schema.field(name).type
            ), name
        for name in ("RAJ2000", "DECJ2000"):
            assert schema.field(name).type == pa.float64(), name
    return targets


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three Parquet catalog files (read only: tests that change files copy them)."""
    return write_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def selected(catalog: Path, client, tmp_path_factory: pytest.TempPathFactory) -> SelectReport:
    """One selection of :func:`catalog` (read only)."""
    return select(catalog, tmp_path_factory.mktemp("selected") / "targets.parquet", client)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger onto CliRunner's streams: undo it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


# --- the selection ------------------------------------------------------------------------


def test_select_matches_duckdb(
    selected: SelectReport, catalog: Path, duckdb_targets: Callable
) -> None:
    targets = assert_matches_duckdb(selected, catalog, duckdb_targets)
    assert sorted(selected.units.results) == sorted(TILES)
    assert selected.units.failures == [] and selected.units.skipped == []
    assert selected.units.results == selected.per_tile
    assert selected.total("rows") == len(targets)
    assert not (selected.out / "_failures.csv").exists()


def test_tiles_csv_columns(selected: SelectReport) -> None:
    lines = (selected.out / "_tiles.csv").read_text().splitlines()
    assert lines[0] == "tile,sources,targets,LRG,BG,nan_colour"
    assert [line.split(",")[0] for line in lines[1:]] == sorted(TILES)


def test_select_mock_survey(
    client, tmp_path_factory: pytest.TempPathFactory, duckdb_targets: Callable
) -> None:
    survey = tmp_path_factory.mktemp("survey") / "s"
    config = small_survey_config(tiles=3, tile_size=0.2)
    made = make_mock_survey(survey, config=config, client=client, progress=False)
    assert made.units.ok and made.written == 3
    report = select(survey / "catalog", survey.parent / "targets.parquet", client)
    assert len(report.per_tile) == 3 and report.units.ok
    targets = assert_matches_duckdb(report, survey / "catalog", duckdb_targets)
    assert set(targets["THELI_NAME"]) == set(report.per_tile)  # files are named by tile


def test_targets_frame_is_lazy_and_equal(selected: SelectReport, catalog: Path, client) -> None:
    frame = targets_frame(catalog)
    assert frame.npartitions == len(TILES)
    computed = client.compute(frame).result()
    expected = pd.read_parquet(selected.out)
    assert list(computed.columns) == CONTRACT
    pd.testing.assert_frame_equal(
        computed.sort_values("ID").reset_index(drop=True),
        expected.sort_values("ID").reset_index(drop=True),
        check_dtype=False,
        check_exact=True,
    )


# --- resume ---------------------------------------------------------------------------------


def test_resume_skips_complete_units(catalog: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "targets.parquet"
    first = select(catalog, out, client)
    files, times = snapshot(out), mtimes(out)

    again = select(catalog, out, client)
    assert again.units.results == {}
    assert sorted(again.units.skipped) == sorted(TILES)
    assert again.per_tile == first.per_tile
    assert snapshot(out) == files
    assert mtimes(out) == times  # nothing was rewritten


def test_resume_redoes_interrupted_units(
    catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    out = tmp_path / "targets.parquet"
    first = select(catalog, out, client)
    files = snapshot(out)

    # killed before its marker: data in place, no marker, a half-written staged file
    (out / "_units" / "KIDS_11.0_0.5.json").unlink()
    (out / "_staging").mkdir(exist_ok=True)
    (out / "_staging" / "KIDS_11.0_0.5.parquet").write_bytes(b"PAR1 half a file")
    # a data file damaged after its marker was written
    (out / "KIDS_12.0_-0.5.parquet").write_bytes(b"junk")

    again = select(catalog, out, client)
    assert sorted(again.units.results) == ["KIDS_11.0_0.5", "KIDS_12.0_-0.5"]
    assert again.units.skipped == ["KIDS_10.0_0.5"]
    assert again.per_tile == first.per_tile
    assert not (out / "_staging" / "KIDS_11.0_0.5.parquet").exists()
    assert snapshot(out) == files  # identical bytes, the staging junk gone
    assert_matches_duckdb(again, catalog, duckdb_targets)


def test_mask_bits_drop_masked_sources_and_the_default_keeps_them(
    client, tmp_path_factory: pytest.TempPathFactory, duckdb_targets: Callable
) -> None:
    survey = tmp_path_factory.mktemp("survey") / "s"
    made = make_mock_survey(
        survey, config=small_survey_config(tiles=2, tile_size=0.2), client=client, progress=False
    )
    assert made.units.ok
    catalog = pd.concat([pd.read_parquet(path) for path in (survey / "catalog").glob("*.parquet")])
    mask = catalog.set_index("ID")["MASK"]
    kept = select(survey / "catalog", survey.parent / "all.parquet", client)
    everyone = assert_matches_duckdb(kept, survey / "catalog", duckdb_targets)
    assert (mask.loc[everyone["ID"]] != 0).any()  # the default keeps masked sources
    bits = 0b1010_1010_1010
    config = SelectConfig(mask_bits=bits)
    out = survey.parent / "unmasked.parquet"
    report = select_targets(survey / "catalog", out, config=config, client=client, progress=False)
    assert report.units.ok
    targets = assert_matches_duckdb(report, survey / "catalog", duckdb_targets, config)
    assert "MASK" not in targets.columns  # read for the cut only
    assert not (mask.loc[targets["ID"]] & bits).any()
    dropped = set(everyone["ID"]) - set(targets["ID"])
    assert dropped and (mask.loc[sorted(dropped)] & bits).all()
    assert (mask.loc[targets["ID"]] != 0).any()  # other bits are kept


def test_changed_config_redoes_all_units(
    catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    out = tmp_path / "targets.parquet"
    first = select(catalog, out, client)
    config = SelectConfig(bg_mag_max=20.7)  # not a float32 value: MAG_AUTO is float32
    again = select_targets(catalog, out, config=config, client=client, progress=False)
    assert sorted(again.units.results) == sorted(TILES) and again.units.skipped == []
    assert again.total("rows") < first.total("rows")
    assert_matches_duckdb(again, catalog, duckdb_targets, config)


def test_changed_source_file_is_redone(
    catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    out = tmp_path / "targets.parquet"
    select(source, out, client)
    changed = catalog_frame(700, seed=9, tile="KIDS_11.0_0.5", ra0=11.0)
    write_parquet_catalog(changed, source / "KIDS_11.0_0.5.parquet")
    again = select(source, out, client)
    assert list(again.units.results) == ["KIDS_11.0_0.5"]
    assert_matches_duckdb(again, source, duckdb_targets)


def test_removed_source_file_drops_its_targets(catalog: Path, client, tmp_path: Path) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    out = tmp_path / "targets.parquet"
    select(source, out, client)
    (source / "KIDS_12.0_-0.5.parquet").unlink()
    again = select(source, out, client)
    assert sorted(again.per_tile) == ["KIDS_10.0_0.5", "KIDS_11.0_0.5"]
    assert set(pd.read_parquet(out)["THELI_NAME"]) == {"KIDS_10.0_0.5", "KIDS_11.0_0.5"}


def test_back_to_back_runs_do_their_own_work(client, tmp_path: Path) -> None:
    """Runs right after one another with the same unit names (one file ``t.parquet`` each)
    must each run their own task: Dask must not hand a run the result of the previous one."""
    runs = range(8)
    for k in runs:
        frame = catalog_frame(200 + 10 * k, seed=k, tile="KIDS_10.0_0.5")
        write_parquet_catalog(frame, tmp_path / f"catalog{k}" / "t.parquet")
    reports = [select(tmp_path / f"catalog{k}", tmp_path / f"out{k}", client) for k in runs]
    for k, report in zip(runs, reports, strict=True):
        expected = classify_targets(catalog_frame(200 + 10 * k, seed=k, tile="KIDS_10.0_0.5"))
        assert (report.out / "t.parquet").exists(), f"run {k} wrote nothing"
        assert report.units.results == report.per_tile, f"run {k}"
        assert report.per_tile["t"]["rows"] == len(expected), f"run {k}"


# --- bad input -----------------------------------------------------------------------------


def test_missing_column_in_first_file(catalog: Path, client, tmp_path: Path) -> None:
    # the first file is a file like the others (the command refuses it up front)
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    first = source / "KIDS_10.0_0.5.parquet"
    write_parquet_catalog(tile_frame("KIDS_10.0_0.5").drop(columns="Z_B"), first)
    report = select(source, tmp_path / "out", client)
    [failure] = report.units.failures
    assert failure.unit == "KIDS_10.0_0.5" and failure.attempts == 1
    assert SchemaError.__name__ in failure.error and "Z_B" in failure.error
    assert str(first) in failure.error


def test_missing_column_in_later_file_fails_that_unit(
    catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    bad = source / "KIDS_12.0_-0.5.parquet"
    write_parquet_catalog(tile_frame("KIDS_12.0_-0.5").drop(columns="COLOUR_GAAP_r_i"), bad)
    report = select(source, tmp_path / "out", client)
    [failure] = report.units.failures
    assert failure.unit == "KIDS_12.0_-0.5"
    assert "SchemaError" in failure.error
    assert "COLOUR_GAAP_r_i" in failure.error and str(bad) in failure.error
    assert_matches_duckdb(report, sorted(source.glob("KIDS_1[01]*.parquet")), duckdb_targets)


def test_corrupt_file_fails_its_unit_only(
    catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    corrupt = source / "x.parquet"  # sorts after the KIDS_* files
    corrupt.write_bytes(b"this is not a parquet file" * 50)
    out = tmp_path / "targets.parquet"

    report = select(source, out, client)
    assert sorted(report.per_tile) == sorted(TILES)
    assert [failure.unit for failure in report.units.failures] == ["x"]
    [failure] = report.units.failures
    assert str(corrupt) in failure.error and "CatalogError" in failure.error
    assert failure.stage == "select"
    with (out / "_failures.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["unit"], row["stage"]) for row in rows] == [("x", "select")]
    assert str(corrupt) in rows[0]["error"]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["files_failed"] == ["x"] and summary["files"] == len(TILES) + 1
    assert_matches_duckdb(report, catalog, duckdb_targets)

    # repaired: only the failed unit runs, and the failures table goes away
    write_parquet_catalog(catalog_frame(300, seed=4, tile="x", ra0=20.0), corrupt)
    again = select(source, out, client)
    assert list(again.units.results) == ["x"] and again.units.ok
    assert not (out / "_failures.csv").exists()
    assert_matches_duckdb(again, source, duckdb_targets)


def test_corrupt_first_file(catalog: Path, client, tmp_path: Path) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    corrupt = source / "A_corrupt.parquet"
    corrupt.write_bytes(b"garbage")
    report = select(source, tmp_path / "out", client)
    assert sorted(report.per_tile) == sorted(TILES)
    [failure] = report.units.failures
    assert failure.unit == "A_corrupt" and "CatalogError" in failure.error
    assert str(corrupt) in failure.error


def test_no_parquet_files(client, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.csv").write_text("a,b\n")
    with pytest.raises(CatalogError, match=r"no \.parquet"):
        select(empty, tmp_path / "out", client)
    with pytest.raises(CatalogError, match="does not exist"):
        select(tmp_path / "missing", tmp_path / "out", client)


def test_refuses_to_write_into_a_foreign_folder(catalog: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(CatalogError, match="not a targets dataset"):
        select(catalog, out, client)
    assert (out / "precious.txt").read_text() == "keep me"


def test_column_map(client, tmp_path: Path) -> None:
    frame = tile_frame("KIDS_10.0_0.5")
    write_parquet_catalog(frame, tmp_path / "kids" / "t.parquet")
    renamed = frame.rename(columns={"MAG_AUTO": "MAG_AUTO_R"})
    write_parquet_catalog(renamed, tmp_path / "other" / "t.parquet")

    kids = select(tmp_path / "kids", tmp_path / "kids_out", client)
    unmapped = select(tmp_path / "other", tmp_path / "unmapped_out", client)
    [failure] = unmapped.units.failures  # the command refuses it up front
    assert SchemaError.__name__ in failure.error and "MAG_AUTO" in failure.error
    other = select(
        tmp_path / "other",
        tmp_path / "other_out",
        client,
        column_map={"MAG_AUTO": "MAG_AUTO_R"},
    )
    assert other.per_tile == kids.per_tile
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "other_out"), pd.read_parquet(tmp_path / "kids_out")
    )


# --- the command --------------------------------------------------------------------------


def invoke_select(catalog: Path, out: Path) -> object:
    """``lensdask select`` on its own one-worker LocalCluster."""
    args = ["select", str(catalog), "--out", str(out), "--workers", "1", "--no-progress"]
    return CliRunner().invoke(lensdask.cli.main, [*args, "--dashboard-address", ":0"])


def test_cli_select(
    catalog: Path, selected: SelectReport, tmp_path: Path, restore_logging: None
) -> None:
    source = tmp_path / "catalog"
    shutil.copytree(catalog, source)
    out = tmp_path / "targets.parquet"
    result = invoke_select(source, out)
    assert result.exit_code == 0, result.output
    assert "Dask dashboard: http://" in result.output
    total, lrg, bg = (selected.total(key) for key in ("rows", "LRG", "BG"))
    assert f"select: {total} targets ({lrg} LRG, {bg} BG)" in result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(selected.out))

    (source / "x.parquet").write_bytes(b"garbage" * 100)  # refused before the cluster
    result = invoke_select(source, out)
    assert result.exit_code == 1, result.output
    assert f"select: {source / 'x.parquet'}: cannot read Parquet" in result.output
    assert "Dask dashboard" not in result.output
    shutil.copy(sorted(source.glob("KIDS_*.parquet"))[0], source / "x.parquet")
    damage_parquet_pages(source / "x.parquet")  # its rows only fail to read
    result = invoke_select(source, out)
    assert result.exit_code == 3, result.output
    assert "FAILED select x:" in result.output
    assert "1 unit(s) failed" in result.output
    assert (out / "_failures.csv").exists()
