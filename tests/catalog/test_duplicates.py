"""Repeated target IDs: found within a catalog file and across files by the distributed check
(a Dask shuffle by ID on the session's LocalCluster), refused by default, resolved by
``duplicates: keep-first``; real Parquet catalogs, DuckDB as the reference selection."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import lensdask.cli
from lensdask.catalog.duplicates import (
    CHECKED_FILE,
    DROPPED,
    DUPLICATES_FILE,
    KEPT_IN,
    find_duplicates,
    mark_first,
)
from lensdask.catalog.select import DuplicateIDError, SelectReport, select_targets
from lensdask.config import ConfigError, SelectConfig
from lensdask.formats.ids import DuplicateIDError as SharedDuplicateIDError
from lensdask.formats.targets import tile_sources
from lensdask.testing import catalog_frame, write_parquet_catalog
from lensdask.units import MANIFEST_FILE, StaleOutputError, planned_units

TILES = {  # file stem -> (rows, seed, ra0)
    "KIDS_20.0_0.5": (400, 21, 20.0),
    "KIDS_21.0_0.5": (350, 22, 21.0),
    "KIDS_22.0_0.5": (300, 23, 22.0),
}
A, B, C = TILES


def is_bg(frame: pd.DataFrame) -> pd.Series:
    return (frame["SG2DPHOT"] == 0) & (frame["MAG_AUTO"] <= 21.0)


def clean_frames() -> dict[str, pd.DataFrame]:
    """The catalog of each file, with its row number in ``ROWNUM`` (kept in the targets)."""
    frames = {}
    for tile, (n, seed, ra0) in TILES.items():
        frame = catalog_frame(n, seed=seed, tile=tile, ra0=ra0, boundary=False)
        frames[tile] = frame.assign(ROWNUM=np.arange(len(frame), dtype=np.int64))
    return frames


def with_duplicates(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Repeats among the BGs: a row of A written twice in A (within a file), an ID of A
    reused in C, one of C reused in B (another galaxy under a taken name), and an ID that
    occurs in all three files."""
    frames = {tile: frame.copy() for tile, frame in frames.items()}
    bg = {tile: frame.index[is_bg(frame)] for tile, frame in frames.items()}
    a = frames[A]
    twice = a.loc[[bg[A][4]]].assign(ROWNUM=len(a))
    frames[A] = pd.concat([a, twice], ignore_index=True)
    frames[C].loc[bg[C][2], "ID"] = frames[A].loc[bg[A][10], "ID"]
    frames[B].loc[bg[B][7], "ID"] = frames[C].loc[bg[C][9], "ID"]
    shared = frames[A].loc[bg[A][20], "ID"]
    frames[B].loc[bg[B][30], "ID"] = shared
    frames[C].loc[bg[C][40], "ID"] = shared
    return frames


def write(frames: dict[str, pd.DataFrame], folder: Path) -> Path:
    for tile, frame in frames.items():
        write_parquet_catalog(frame, folder / f"{tile}.parquet")
    return folder


def select(catalog: Path, out: Path, client, **options: object) -> SelectReport:
    config = SelectConfig(extra_columns=("ROWNUM",), **options)
    return select_targets(catalog, out, config=config, client=client, progress=False)


def unit_files(out: Path) -> pd.DataFrame:
    """Every targets file under ``out`` in (unit, row) order, with ``unit`` and ``row``
    (read directly: the output may have no manifest)."""
    frames = [
        pd.read_parquet(path).assign(unit=path.stem, row=lambda f: np.arange(len(f)))
        for path in sorted(out.glob("*.parquet"))
    ]
    return pd.concat(frames, ignore_index=True)


def reference_order(duckdb_targets: Callable, catalog: Path) -> pd.DataFrame:
    """DuckDB's selection in (unit, catalog row) order: the rows as the units hold them."""
    reference = duckdb_targets(catalog, SelectConfig(extra_columns=("ROWNUM",)))
    return reference.sort_values(["unit", "ROWNUM"], ignore_index=True)


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dup_catalog(tmp_path_factory) -> Path:
    return write(with_duplicates(clean_frames()), tmp_path_factory.mktemp("dup") / "catalog")


# --- found and refused -------------------------------------------------------------------


def test_repeated_ids_are_refused_naming_them(
    dup_catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    out = tmp_path / "targets.parquet"
    with pytest.raises(DuplicateIDError) as raised:
        select(dup_catalog, out, client)
    assert isinstance(raised.value, SharedDuplicateIDError)  # one error class for all
    message = str(raised.value)

    # the reference: DuckDB's selection in (unit, row) order, every row of a repeated ID
    reference = reference_order(duckdb_targets, dup_catalog)
    reference["row"] = reference.groupby("unit").cumcount()
    repeated = reference[reference["ID"].duplicated(keep=False)]
    assert repeated["ID"].nunique() == 4 and len(repeated) == 9
    assert "4 target ID(s) occur more than once (9 rows; 1 within one catalog file, 3 across" in (
        message
    )
    for key, group in repeated.groupby("ID"):
        assert repr(key) in message
        for unit, rows in group.groupby("unit"):
            word = "row" if len(rows) == 1 else "rows"
            assert f"{unit} {word} {', '.join(map(str, rows['row']))}" in message
    assert str(out / DUPLICATES_FILE) in message and "keep-first" in message

    # the full list, with the row keep-first would keep and the catalog file
    listed = pd.read_csv(out / DUPLICATES_FILE)
    assert list(listed.columns) == ["ID", "unit", "row", "first", "source"]
    expected = repeated.assign(first=~repeated["ID"].duplicated(keep="first"))
    expected = expected.sort_values(["ID", "unit", "row"], ignore_index=True)
    pd.testing.assert_frame_equal(
        listed[["ID", "unit", "row", "first"]],
        expected[["ID", "unit", "row", "first"]],
        check_dtype=False,
    )
    assert set(listed["source"]) == {str(dup_catalog / f"{unit}.parquet") for unit in TILES}
    # the rows named are the units' own rows
    files = unit_files(out)
    for _, item in listed.iterrows():
        row = files[(files["unit"] == item["unit"]) & (files["row"] == item["row"])]
        assert row["ID"].tolist() == [item["ID"]]

    # not usable by the next stages: no manifest, readers refuse
    assert not (out / MANIFEST_FILE).exists()
    with pytest.raises(StaleOutputError):
        planned_units(out)
    with pytest.raises(StaleOutputError):
        tile_sources(out)  # what the cutouts read first


def test_a_rerun_without_a_fix_still_refuses(dup_catalog: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "targets.parquet"
    with pytest.raises(DuplicateIDError):
        select(dup_catalog, out, client)
    with pytest.raises(DuplicateIDError, match="4 target ID"):
        select(dup_catalog, out, client)
    assert not (out / MANIFEST_FILE).exists()


def test_a_rerun_after_fixing_the_catalog_works(
    client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    catalog = write(with_duplicates(clean_frames()), tmp_path / "catalog")
    out = tmp_path / "targets.parquet"
    with pytest.raises(DuplicateIDError):
        select(catalog, out, client)
    write(clean_frames(), catalog)  # fixed: every file rewritten without repeats
    report = select(catalog, out, client)
    assert report.units.ok and report.dropped == 0
    assert sorted(planned_units(out)) == sorted(TILES)
    assert not (out / DUPLICATES_FILE).exists()
    targets = pd.read_parquet(out)
    assert not targets["ID"].duplicated().any()
    assert len(targets) == len(reference_order(duckdb_targets, catalog))
    assert sorted(tile_sources(out)) == sorted(TILES)


def test_more_than_twenty_repeats_are_counted(client, tmp_path: Path) -> None:
    frames = clean_frames()
    bg_a = frames[A].index[is_bg(frames[A])][:25]
    bg_b = frames[B].index[is_bg(frames[B])][:25]
    frames[B].loc[bg_b, "ID"] = frames[A].loc[bg_a, "ID"].to_numpy()
    catalog = write(frames, tmp_path / "catalog")
    with pytest.raises(DuplicateIDError) as raised:
        select(catalog, tmp_path / "targets.parquet", client)
    message = str(raised.value)
    assert "25 target ID(s) occur more than once (50 rows; 0 within" in message
    assert message.count(f"({A} row ") == 20 and "and 5 more" in message


# --- keep-first --------------------------------------------------------------------------


def test_keep_first_equals_pandas_drop_duplicates(
    dup_catalog: Path, client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    out = tmp_path / "targets.parquet"
    report = select(dup_catalog, out, client, duplicates="keep-first")
    reference = reference_order(duckdb_targets, dup_catalog)
    expected = reference.drop_duplicates("ID", keep="first").reset_index(drop=True)
    got = unit_files(out)
    assert got["ID"].is_unique
    columns = [name for name in got.columns if name not in ("unit", "row")]
    pd.testing.assert_frame_equal(
        got[columns],
        expected[columns],
        check_dtype=False,
        check_exact=True,
    )
    assert got["unit"].tolist() == expected["unit"].tolist()

    # counted: in the markers, the report, the per-tile counts and the summary
    dropped = reference.groupby("unit")["ID"].count() - expected.groupby("unit")["ID"].count()
    assert dropped.to_dict() == {A: 1, B: 1, C: 3}  # units in name order: A < B < C
    markers = planned_units(out)
    assert {unit: m.extra.get(DROPPED, 0) for unit, m in markers.items()} == dropped.to_dict()
    assert markers[B].extra[KEPT_IN] == {A: markers[A].config_hash}
    assert markers[C].extra[KEPT_IN] == {A: markers[A].config_hash, B: markers[B].config_hash}
    assert KEPT_IN not in markers[A].extra or markers[A].extra[KEPT_IN] == {}
    assert report.dropped == 5
    for unit, counts in report.per_tile.items():
        assert counts["rows"] == int((got["unit"] == unit).sum()) == markers[unit].rows
        assert counts["LRG"] + counts["BG"] == counts["rows"]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["duplicate_rows_dropped"] == 5 and summary["duplicates"] == "keep-first"
    assert summary["bright_galaxies"] == len(expected)
    listed = pd.read_csv(out / DUPLICATES_FILE)
    assert int((~listed["first"]).sum()) == 5
    # usable: a manifest, the markers' IDs and the readers
    assert sorted(tile_sources(out)) == sorted(TILES)


def test_keep_first_is_the_same_on_any_number_of_workers(
    dup_catalog: Path, client, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    many = tmp_path / "two-workers"
    select(dup_catalog, many, client, duplicates="keep-first")
    one = tmp_path / "one-worker"
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as single,
    ):
        select(dup_catalog, one, single, duplicates="keep-first")
    kept = [name for name in snapshot(many) if name.endswith((".parquet", ".csv"))]
    kept += [name for name in snapshot(many) if name.startswith("_units/")]
    assert kept and {k: snapshot(many)[k] for k in kept} == {k: snapshot(one)[k] for k in kept}


def test_keep_first_rerun_redoes_nothing(dup_catalog: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "targets.parquet"
    select(dup_catalog, out, client, duplicates="keep-first")
    before = snapshot(out)
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for written_each_run in ("_summary.json", "_tiles.csv"):
        times.pop(out / written_each_run)
    again = select(dup_catalog, out, client, duplicates="keep-first")
    assert again.units.results == {} and sorted(again.units.skipped) == sorted(TILES)
    assert again.dropped == 5
    assert snapshot(out) == before
    assert {p: p.stat().st_mtime_ns for p in times} == times  # the check did not run again
    assert (out / CHECKED_FILE).exists()


def test_keep_first_restores_a_row_whose_kept_copy_is_gone(
    client, tmp_path: Path, duckdb_targets: Callable
) -> None:
    """B and C dropped rows kept in A; A's file changes and loses those IDs: B and C are
    made again from their catalog files, and the rows they had dropped come back."""
    frames = with_duplicates(clean_frames())
    catalog = write(frames, tmp_path / "catalog")
    out = tmp_path / "targets.parquet"
    select(catalog, out, client, duplicates="keep-first")
    bg_a = frames[A].index[is_bg(frames[A])]
    frames[A] = frames[A].drop(index=[bg_a[10], bg_a[20]])  # the IDs reused in B and C
    write({A: frames[A]}, catalog)
    again = select(catalog, out, client, duplicates="keep-first")
    assert sorted(again.units.results) == [A, B, C]  # A changed; B and C had kept rows in A
    reference = reference_order(duckdb_targets, catalog)
    expected = reference.drop_duplicates("ID", keep="first").reset_index(drop=True)
    got = unit_files(out)
    assert got["ID"].tolist() == expected["ID"].tolist()
    assert got["ROWNUM"].tolist() == expected["ROWNUM"].tolist()


def test_back_to_error_refuses_again(dup_catalog: Path, client, tmp_path: Path) -> None:
    out = tmp_path / "targets.parquet"
    select(dup_catalog, out, client, duplicates="keep-first")
    with pytest.raises(DuplicateIDError, match="4 target ID"):
        select(dup_catalog, out, client)  # the units that dropped rows are made whole again
    assert not (out / MANIFEST_FILE).exists()


# --- the distributed check ------------------------------------------------------------------


@pytest.mark.parametrize("gather_limit", [10**9, 0], ids=["hashes", "shuffle"])
def test_find_duplicates_on_many_files_matches_pandas(
    client, tmp_path: Path, gather_limit: int
) -> None:
    rng = np.random.default_rng(5)
    pool = np.array([f"KiDS J{k:06d}" for k in range(1500)], dtype=object)
    files, frames = {}, []
    for k in range(7):
        ids = rng.choice(pool, size=int(rng.integers(0, 300)))
        path = tmp_path / f"u{k}.parquet"
        pd.DataFrame({"ID": ids, "x": np.arange(len(ids))}).to_parquet(path)
        files[f"u{k}"] = path
        frames.append(pd.DataFrame({"ID": ids, "unit": f"u{k}", "row": np.arange(len(ids))}))
    every = pd.concat(frames, ignore_index=True)
    expected = every[every["ID"].duplicated(keep=False)].reset_index(drop=True)
    assert expected["unit"].nunique() > 3  # within and across files
    found = find_duplicates(files, client=client, gather_limit=gather_limit, rows=len(every))
    pd.testing.assert_frame_equal(found, expected, check_dtype=False)
    marked = mark_first(found)
    assert marked.loc[marked["first"], "ID"].is_unique
    kept = every.drop_duplicates("ID", keep="first")
    dropped = marked[~marked["first"]]
    assert len(every) - len(dropped) == len(kept)


def test_find_duplicates_without_repeats_returns_nothing(client, tmp_path: Path) -> None:
    files = {}
    for k in range(3):
        path = tmp_path / f"u{k}.parquet"
        pd.DataFrame({"ID": [f"{k}-{j}" for j in range(50)]}).to_parquet(path)
        files[f"u{k}"] = path
    assert find_duplicates(files, client=client).empty
    assert find_duplicates(files, client=client, gather_limit=0, rows=150).empty
    assert find_duplicates({}, client=client).empty


def test_a_hash_collision_is_not_taken_for_a_repeat(client, tmp_path: Path) -> None:
    """Two different IDs with the same 64-bit hash (forced by giving every ID the same
    hash) are compared as strings: only the real repeat is found."""
    from lensdask.catalog import duplicates

    path = tmp_path / "u0.parquet"
    pd.DataFrame({"ID": ["a", "b", "a", None, None]}).to_parquet(path)
    parts = [(0, path)]
    wanted = np.unique(duplicates.id_hashes(path))
    rows = duplicates.rows_with_hashes((0, path, wanted))
    assert sorted(rows["ID"]) == ["a", "a", "b"]  # what a collision would send back
    found = duplicates.duplicated_rows(rows)
    assert found["ID"].tolist() == ["a", "a"] and found["row"].tolist() == [0, 2]
    assert duplicates._gathered_duplicates(parts, client=client)["row"].tolist() == [0, 2]


# --- configuration and command --------------------------------------------------------------


def test_the_duplicates_option_is_checked() -> None:
    assert SelectConfig().duplicates == "error"
    with pytest.raises(ConfigError, match=r"select\.duplicates: one of error, keep-first"):
        SelectConfig(duplicates="keep-last")


def test_the_select_command_has_the_option_and_fails_clearly(
    dup_catalog: Path, client, tmp_path: Path
) -> None:
    out = tmp_path / "targets.parquet"
    runner = CliRunner()
    assert "--duplicates" in runner.invoke(lensdask.cli.main, ["select", "--help"]).output
    base = ["select", str(dup_catalog), "--out", str(out), "--no-progress"]
    base += ["--cluster", client.scheduler.address]
    result = runner.invoke(lensdask.cli.main, base)
    assert result.exit_code not in (0, 3), result.output
    assert "4 target ID(s) occur more than once" in result.output
    result = runner.invoke(lensdask.cli.main, [*base, "--duplicates", "keep-first"])
    assert result.exit_code == 0, result.output
    assert "5 rows of repeated IDs dropped (keep-first" in result.output
    shutil.rmtree(out)
