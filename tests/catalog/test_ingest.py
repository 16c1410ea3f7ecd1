"""ingest_catalogs: KiDS-like FITS catalogs to the Parquet layout, on a real LocalCluster."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from design_columns import CATALOG

from lensdask.catalog import classify_targets
from lensdask.catalog.ingest import IngestReport, ingest_catalogs, read_fits_catalog, tile_name
from lensdask.catalog.schema import SchemaError
from lensdask.catalog.select import select_targets
from lensdask.config import IngestConfig
from lensdask.testing import catalog_frame, write_fits_catalog

OTHER_SURVEY = {"MAG_AUTO": "MAG_AUTO_R", "RAJ2000": "RA", "DECJ2000": "DEC"}
"""Canonical name -> column name of a survey that is not KiDS."""


@dataclass(frozen=True)
class Source:
    """A FITS catalog written for a test, with the rows it should ingest to."""

    path: Path
    unit: str
    expected: pd.DataFrame  # the catalog columns as the Parquet file should hold them


def write_source(
    folder: Path,
    name: str,
    *,
    tile: str,
    seed: int,
    theli_column: bool,
    rename: dict[str, str] | None = None,
    n: int = 800,
) -> Source:
    """Write a KiDS-like FITS catalog ``folder/name`` of tile ``tile``.

    With ``theli_column`` the table has a THELI_NAME column (padded with blanks, which the
    ingest strips); without, the tile comes from the file name.
    """
    ra0, dec0 = (float(part) for part in tile.split("_")[1:])
    frame = catalog_frame(n, seed=seed, tile=tile, ra0=ra0, dec0=dec0)
    written = frame.copy()
    if theli_column:
        written["THELI_NAME"] = f"  {tile} "
    else:
        written = written.drop(columns="THELI_NAME")
    path = write_fits_catalog(written, folder / name, rename=rename)
    return Source(path=path, unit=tile, expected=frame)


def make_sources(folder: Path, *, rename: dict[str, str] | None = None) -> list[Source]:
    """Two catalogs: one named after its tile without THELI_NAME, one DR4-named with it."""
    return [
        write_source(
            folder,
            "KIDS_10.0_0.5_cat.fits",
            tile="KIDS_10.0_0.5",
            seed=1,
            theli_column=False,
            rename=rename,
        ),
        write_source(
            folder,
            "KiDS_DR4.0_11.0_-0.5_ugriZYJHKs_cat.fits",
            tile="KIDS_11.0_-0.5",
            seed=2,
            theli_column=True,
            rename=rename,
        ),
    ]


def ingest(source: Path, out: Path, client, **options: object) -> IngestReport:
    """ingest_catalogs without a progress bar; ``options`` go to IngestConfig."""
    return ingest_catalogs(
        source, out, config=IngestConfig(**options), client=client, progress=False
    )


def assert_ingested(out: Path, sources: list[Source], extra: tuple[str, ...] = ()) -> None:
    """``out/<unit>.parquet`` holds exactly the source rows, in order, with contract types."""
    assert sorted(path.name for path in out.glob("*.parquet")) == sorted(
        f"{source.unit}.parquet" for source in sources
    )
    for source in sources:
        path = out / f"{source.unit}.parquet"
        schema = pq.read_schema(path)
        assert schema.names == [*CATALOG, *extra]
        for name in ("ID", "THELI_NAME"):
            assert pa.types.is_string(schema.field(name).type), name
        for name in ("RAJ2000", "DECJ2000", "COLOUR_GAAP_g_r", "COLOUR_GAAP_r_i"):
            assert schema.field(name).type == pa.float64(), name
        for name in ("MAG_AUTO", "Z_B"):  # kept as the catalog stores them
            assert schema.field(name).type == pa.float32(), name
        got = pd.read_parquet(path)
        expected = source.expected
        assert list(got["ID"]) == list(expected["ID"])  # same rows, same order
        assert set(got["THELI_NAME"]) == {expected["THELI_NAME"].iloc[0]}
        for name in CATALOG[1:]:  # NaN colours stay NaN
            np.testing.assert_array_equal(
                got[name].to_numpy(), expected[name].to_numpy(), err_msg=name
            )
        for name in extra:  # EXTRA_k of write_fits_catalog is arange(n) * (k + 1)
            factor = int(name.rsplit("_", 1)[1]) + 1
            np.testing.assert_array_equal(got[name].to_numpy(), np.arange(len(got)) * factor)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    return make_sources(tmp_path_factory.mktemp("fits"))


@pytest.fixture(scope="module")
def ingested(sources: list[Source], client, tmp_path_factory: pytest.TempPathFactory):
    """One ingest of :func:`sources` (read only): (report, output folder)."""
    out = tmp_path_factory.mktemp("ingested") / "catalog"
    return ingest(sources[0].path.parent, out, client), out


def test_ingest_copies_every_value(ingested, sources: list[Source]) -> None:
    report, out = ingested
    assert report.files == 2 and report.units.ok
    assert report.rows == sum(len(source.expected) for source in sources)
    assert report.units.results == {source.unit: len(source.expected) for source in sources}
    assert_ingested(out, sources)
    assert not (out / "_failures.csv").exists()


def test_tile_from_file_name_and_column(sources: list[Source]) -> None:
    config = IngestConfig()
    assert tile_name(sources[0].path, config=config) == "KIDS_10.0_0.5"
    assert tile_name(sources[1].path, config=config) == "KIDS_11.0_-0.5"  # a DR4 file name
    assert tile_name(Path("KIDS_129.0_-0.5_r.fits"), config=config) == "KIDS_129.0_-0.5"
    with pytest.raises(SchemaError, match="tile_regex"):
        tile_name(Path("catalog_17.fits"), config=config)
    one_group = IngestConfig(tile_regex=r"cat_(\w+)\.fits")
    assert tile_name(Path("cat_N17.fits"), config=one_group) == "N17"
    table = read_fits_catalog(sources[1].path, config=config)
    assert set(table["THELI_NAME"].to_pylist()) == {"KIDS_11.0_-0.5"}  # blanks stripped


def test_tile_from_bare_file_name() -> None:
    assert tile_name(Path("KIDS_10.0_0.5.fits"), config=IngestConfig()) == "KIDS_10.0_0.5"


def test_extra_columns(sources: list[Source], client, tmp_path: Path) -> None:
    report = ingest(
        sources[0].path.parent, tmp_path / "out", client, extra_columns=("EXTRA_0", "EXTRA_2")
    )
    assert report.units.ok
    assert_ingested(tmp_path / "out", sources, extra=("EXTRA_0", "EXTRA_2"))


def test_column_map(client, tmp_path: Path) -> None:
    sources = make_sources(tmp_path / "fits", rename=OTHER_SURVEY)
    unmapped = ingest(tmp_path / "fits", tmp_path / "unmapped", client)
    assert sorted(failure.unit for failure in unmapped.units.failures) == sorted(
        source.unit for source in sources
    )
    for failure in unmapped.units.failures:
        assert "SchemaError" in failure.error
        assert all(name in failure.error for name in OTHER_SURVEY)

    report = ingest(tmp_path / "fits", tmp_path / "out", client, column_map=OTHER_SURVEY)
    assert report.units.ok
    assert_ingested(tmp_path / "out", sources)


def test_missing_column(client, tmp_path: Path) -> None:
    good = write_source(
        tmp_path, "KIDS_10.0_0.5_cat.fits", tile="KIDS_10.0_0.5", seed=1, theli_column=True
    )
    frame = catalog_frame(50, seed=3, tile="KIDS_12.0_0.5").drop(columns="Z_B")
    bad = write_fits_catalog(frame, tmp_path / "KIDS_12.0_0.5_cat.fits")
    with pytest.raises(SchemaError, match="Z_B") as info:
        read_fits_catalog(bad, config=IngestConfig())
    assert str(bad) in str(info.value)

    out = tmp_path / "out"
    report = ingest(tmp_path, out, client)
    [failure] = report.units.failures
    assert failure.unit == "KIDS_12.0_0.5"
    assert "SchemaError" in failure.error and "Z_B" in failure.error and str(bad) in failure.error
    assert list(report.units.results) == [good.unit]
    with (out / "_failures.csv").open() as handle:
        assert [row["unit"] for row in csv.DictReader(handle)] == ["KIDS_12.0_0.5"]
    assert_ingested(out, [good])


def test_ingested_catalog_selects_like_the_frame(
    ingested, sources: list[Source], client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    _, catalog = ingested
    report = select_targets(catalog, tmp_path / "targets.parquet", client=client, progress=False)
    assert report.units.ok
    got = pd.read_parquet(tmp_path / "targets.parquet").sort_values("ID", ignore_index=True)
    frame = pd.concat([source.expected for source in sources], ignore_index=True)
    expected = classify_targets(frame).sort_values("ID", ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=True)
    reference = duckdb_targets(frame)
    assert set(got.loc[got["sample"] == "LRG", "ID"]) == set(
        reference.loc[reference["sample"] == "LRG", "ID"]
    )


def test_resume_skips_complete_files(sources: list[Source], client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest(sources[0].path.parent, out, client)
    times = {path.name: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}
    again = ingest(sources[0].path.parent, out, client)
    assert again.units.results == {} and again.rows == 0
    assert sorted(again.units.skipped) == sorted(source.unit for source in sources)
    assert {path.name: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()} == (
        times
    )
