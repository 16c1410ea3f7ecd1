"""One commit protocol, two backends: the selection stage on a local disk and on a real S3
server (moto on loopback, through s3fs over HTTP), and on ``memory://``; a unit cut short
(its objects written, no marker) is made again with identical output and no duplicate
rows; unreachable locations fail early, naming the URL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lensdask.catalog.select import select_targets
from lensdask.config import SelectConfig
from lensdask.formats.parquet import dataset_parts, open_dataset
from lensdask.storage import StorageError, as_path, check_reachable, file_state, is_url
from lensdask.testing import catalog_frame, write_parquet_catalog
from lensdask.units import MARKER_DIR, read_marker

TILES = {"KIDS_10.0_0.5": (10.0, 0.5), "KIDS_11.0_0.5": (11.0, 0.5), "KIDS_12.0_-0.5": (12.0, -0.5)}


def write_catalog(folder: Path) -> Path:
    """A small KiDS-like catalog, one Parquet file per tile (boundary rows included)."""
    for seed, (tile, (ra0, dec0)) in enumerate(TILES.items()):
        frame = catalog_frame(800, seed=seed, tile=tile, ra0=ra0, dec0=dec0)
        write_parquet_catalog(frame, folder / f"{tile}.parquet")
    return folder


def targets_table(out) -> pd.DataFrame:
    """The targets a stage's manifest lists, sorted by ID."""
    frame = open_dataset(list(dataset_parts(out, what="targets"))).to_table().to_pandas()
    return frame.sort_values("ID").reset_index(drop=True)


def upload(local: Path, url) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            (url / path.relative_to(local).as_posix()).write_bytes(path.read_bytes())


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, client):
    folder = tmp_path_factory.mktemp("local")
    catalog = write_catalog(folder / "catalog")
    out = folder / "targets.parquet"
    select_targets(catalog, out, config=SelectConfig(), client=client, progress=False)
    return catalog, targets_table(out)


def test_paths_and_urls():
    assert not is_url("/data/x") and not is_url(Path("x")) and not is_url("file:///data/x")
    assert is_url("s3://bucket/key") and is_url("memory://x")
    assert as_path("file:///data/x") == Path("/data/x")
    url = as_path("s3://bucket/a/b.parquet", storage_options={"anon": True})
    assert is_url(url) and url.storage_options["anon"] is True
    assert as_path(url) is url and (url.parent / "c").path.endswith("bucket/a/c")


def test_selection_on_s3_equals_local_and_resumes_a_unit_cut_short(
    local_run, client, s3_bucket, s3_storage_options
):
    catalog, want = local_run
    root = as_path(f"s3://{s3_bucket}", storage_options=s3_storage_options)
    upload(catalog, root / "catalog")
    out = root / "targets.parquet"
    report = select_targets(root / "catalog", out, client=client, progress=False)
    assert report.units.ok and sorted(report.units.results) == sorted(TILES)
    pd.testing.assert_frame_equal(targets_table(out), want)
    assert (out / "_manifest.json").exists() and not (out / "_staging").exists()

    # a worker killed after writing a unit's objects, before its marker: the objects are
    # there (one garbled), the marker is not, a stray object sits beside them
    unit = sorted(TILES)[0]
    marker = read_marker(out, unit)
    (out / MARKER_DIR / f"{unit}.json").unlink()
    (out / f"{unit}.parquet").write_bytes(b"PAR1 cut short")
    again = select_targets(root / "catalog", out, client=client, progress=False)
    assert sorted(again.units.results) == [unit]  # only that unit is made again
    got = targets_table(out)
    pd.testing.assert_frame_equal(got, want)
    assert not got["ID"].duplicated().any()
    assert read_marker(out, unit).ids_hash == marker.ids_hash
    # a third run finds everything complete and rewrites no unit (only the summaries)
    states = {path.name: file_state(path) for path in out.rglob("*") if path.is_file()}
    third = select_targets(root / "catalog", out, client=client, progress=False)
    assert third.units.results == {}
    again = {path.name: file_state(path) for path in out.rglob("*") if path.is_file()}
    changed = {name for name in states if states[name] != again[name]}
    assert changed <= {"_summary.json", "_tiles.csv"}


def test_selection_on_memory_filesystem(local_run, tmp_path):
    """``memory://`` lives in one process: a cluster of threads shares it."""
    from distributed import Client, LocalCluster

    catalog, want = local_run
    root = as_path(f"memory://{tmp_path.name}")
    upload(catalog, root / "catalog")
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        Client(cluster) as threads,
    ):
        select_targets(root / "catalog", root / "targets", client=threads, progress=False)
    pd.testing.assert_frame_equal(targets_table(root / "targets"), want)


def test_unreachable_locations_are_named(s3_bucket, s3_storage_options):
    missing = as_path(f"s3://{s3_bucket}-absent/catalog", storage_options=s3_storage_options)
    with pytest.raises(StorageError, match=rf"catalog s3://{s3_bucket}-absent/catalog"):
        check_reachable(missing, what="catalog")
    nothing = as_path(f"s3://{s3_bucket}/nothing", storage_options=s3_storage_options)
    with pytest.raises(StorageError, match="no such object"):
        check_reachable(nothing, what="catalog")
    check_reachable(nothing, what="output", must_exist=False)  # the bucket exists
    closed = {**s3_storage_options, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    closed["config_kwargs"] = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
    away = as_path("s3://bucket/catalog", storage_options=closed)
    with pytest.raises(StorageError, match="s3://bucket/catalog: cannot be reached"):
        check_reachable(away, what="catalog")
