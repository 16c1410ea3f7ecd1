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


def test_a_job_on_s3_runs_the_selection_and_names_a_bad_endpoint(
    local_run, client, s3_bucket, s3_storage_options, tmp_path
):
    import yaml
    from click.testing import CliRunner

    from lensdask.cli import main

    catalog, want = local_run
    root = as_path(f"s3://{s3_bucket}", storage_options=s3_storage_options)
    upload(catalog, root / "catalog")
    job = {
        "workdir": f"s3://{s3_bucket}/work",
        "catalog": f"s3://{s3_bucket}/catalog",
        "storage_options": s3_storage_options,
        "select": {},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    args = ["run", str(tmp_path / "job.yaml"), "--cluster", client.scheduler.address]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(targets_table(root / "work" / "targets.parquet"), want)
    assert (tmp_path / "lensdask.log").exists()  # the run's log stays on local disk

    away = {**s3_storage_options, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    away["config_kwargs"] = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
    (tmp_path / "away.yaml").write_text(yaml.safe_dump({**job, "storage_options": away}))
    args = ["run", str(tmp_path / "away.yaml"), "--cluster", "nonexistent:1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert f"s3://{s3_bucket}/catalog: cannot be reached" in result.output


def test_cutouts_from_images_on_s3_into_a_store_on_s3_equal_local(
    client, s3_bucket, s3_storage_options, tmp_path
):
    """The cutout stage with its targets, its tile images and its Zarr store on S3 makes
    the same store as on disk; a rerun finds every tile complete."""
    import numpy as np

    from lensdask.config import BandSpec, CutoutConfig, MockSurveyConfig
    from lensdask.cutouts.make import make_cutouts
    from lensdask.formats.cutout_store import complete_tiles, read_tile
    from lensdask.mock.survey import make_mock_survey

    survey = tmp_path / "survey"
    mock = MockSurveyConfig(
        tiles=2, tile_size=0.03, seed=4, images=True, bands=(BandSpec.kids("r"),)
    )
    make_mock_survey(survey, config=mock, client=client, progress=False)
    config = CutoutConfig(bands=("r",))
    select_targets(survey / "catalog", tmp_path / "targets", client=client, progress=False)
    local = tmp_path / "cutouts.zarr"
    make_cutouts(
        tmp_path / "targets", survey / "images", local, config=config, client=client, progress=False
    )
    root = as_path(f"s3://{s3_bucket}", storage_options=s3_storage_options)
    upload(survey / "catalog", root / "catalog")
    upload(survey / "images", root / "images")
    select_targets(root / "catalog", root / "targets", client=client, progress=False)
    remote = root / "cutouts.zarr"
    report = make_cutouts(
        root / "targets", root / "images", remote, config=config, client=client, progress=False
    )
    assert report.units.ok and report.written == len(complete_tiles(local)) > 0
    assert complete_tiles(remote) == complete_tiles(local)
    for tile in complete_tiles(local):
        want, got = read_tile(local, tile), read_tile(remote, tile)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.images["r"], want.images["r"])
        np.testing.assert_array_equal(got.bad_fraction, want.bad_fraction)
        assert got.attrs["images"]["r"].startswith(f"s3://{s3_bucket}/images/")
    again = make_cutouts(
        root / "targets", root / "images", remote, config=config, client=client, progress=False
    )
    assert again.written == 0 and again.skipped == report.written


@pytest.mark.parametrize("how", ["template", "headers"])
def test_an_image_index_of_images_on_s3_equals_the_local_one(
    how, client, s3_bucket, s3_storage_options, tmp_path
):
    """``lensdask index-images`` of a KiDS DR4 download on S3, by the file names' template
    and by the files' headers alone, gives the local index's rows (paths aside)."""

    from lensdask.config import BandSpec, ImageIndexConfig, MockSurveyConfig
    from lensdask.formats.image_index import read_image_index
    from lensdask.images.index import index_images
    from lensdask.mock.survey import make_mock_survey

    survey = tmp_path / "survey"
    mock = MockSurveyConfig(
        tiles=2,
        tile_size=0.03,
        seed=4,
        images=True,
        bands=(BandSpec.kids("r"),),
        layout="kids-dr4",
        compress="RICE_1",
    )
    make_mock_survey(survey, config=mock, client=client, progress=False)
    config = ImageIndexConfig(preset="kids-dr4") if how == "template" else ImageIndexConfig()
    root = as_path(f"s3://{s3_bucket}", storage_options=s3_storage_options)
    upload(survey / "images", root / "images")
    local = index_images(
        survey / "images", tmp_path / "images.parquet", config=config, client=client, progress=False
    )
    remote = index_images(
        root / "images", root / "images.parquet", config=config, client=client, progress=False
    )
    assert local.units.ok and remote.units.ok
    want, got = read_image_index(local.out), read_image_index(remote.out)
    paths = [c for c in want.columns if c.endswith("path")]
    pd.testing.assert_frame_equal(got.drop(columns=paths), want.drop(columns=paths))
    assert got["path"].str.startswith(f"s3://{s3_bucket}/images/KiDS_DR4.0_").all()


@pytest.mark.slow
def test_a_job_from_mock_survey_to_training_set_on_s3_equals_the_local_run(
    client, s3_bucket, s3_storage_options, tmp_path
):
    """``lensdask run`` of the stages mock-survey to simulate with its workdir on S3 makes
    the same training set, image for image, as with its workdir on local disk."""
    import numpy as np
    import yaml
    from click.testing import CliRunner

    from lensdask.cli import main
    from lensdask.formats.trainset import ChunkReader, read_table

    job = {
        "mock_survey": {
            "tiles": 2,
            "tile_size": 0.04,
            "seed": 7,
            "images": True,
            "bands": ["r"],
            "lrg_density": 20000,
        },
        "select": {},
        "cutouts": {"bands": ["r"]},
        "simulate": {
            "positives": 40,
            "negatives": 20,
            "test_positives": 10,
            "test_negatives": 10,
            "batch_size": 20,
        },
    }
    workdirs = {"local": str(tmp_path / "work"), "s3": f"s3://{s3_bucket}/work"}
    for where, workdir in workdirs.items():
        path = tmp_path / f"{where}.yaml"
        path.write_text(
            yaml.safe_dump({**job, "workdir": workdir, "storage_options": s3_storage_options})
        )
        args = ["run", str(path), "--cluster", client.scheduler.address, "--no-progress"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    local = tmp_path / "work" / "trainset.zarr"
    remote = as_path(f"s3://{s3_bucket}/work/trainset.zarr", storage_options=s3_storage_options)
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(read_table(remote, split), read_table(local, split))
        want, got = ChunkReader(local, split), ChunkReader(remote, split)
        rows = np.arange(len(want))
        np.testing.assert_array_equal(got.images[rows], want.images[rows])
