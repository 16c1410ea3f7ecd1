"""make_cutouts on a mock survey with images and a real LocalCluster, checked against Cutout2D.

The reference is astropy alone: each target's cutout is ``Cutout2D`` on the tile's FITS
image at the catalog RA/Dec, and a target is on its tile when Cutout2D's central pixel
comes from the image.
"""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NoOverlapError
from astropy.wcs import WCS
from astropy.wcs.utils import skycoord_to_pixel
from click.testing import CliRunner

import lensdask
import lensdask.cli
from lensdask.catalog.select import select_targets
from lensdask.config import CutoutConfig
from lensdask.cutouts.make import CutoutReport, make_cutouts
from lensdask.formats.cutout_store import complete_tiles, cutouts_array, read_tile
from lensdask.mock.layouts import CATALOG_DIR, IMAGES_DIR
from lensdask.mock.survey import make_mock_survey
from lensdask.mock.tiles import survey_tiles
from lensdask.runner import EXIT_PARTIAL, FAILURES_FILE
from lensdask.testing import cutout2d_stamps, small_survey_config
from lensdask.units import STAGING_DIR, ids_hash, is_complete, marker_path, read_marker

SURVEY = small_survey_config(tiles=3, tile_size=0.03, images=True, density=600_000.0)
"""Three tiles of 540 x 540 px in r, g, i."""
TILES = [tile.name for tile in survey_tiles(SURVEY.tiles)]
BANDS = CutoutConfig().bands
SIZE = CutoutConfig().size
HALF = SIZE // 2
CHUNK = 4
"""Cutouts per Zarr chunk in these tests: several chunks per tile."""
COLUMNS = (
    "ID",
    "sample",
    "RAJ2000",
    "DECJ2000",
    "x",
    "y",
    "edge",
    "nonfinite_fraction",
    "zero_weight_fraction",
    "flagged_fraction",
    "bad_fraction",
)
"""Per-cutout arrays of a tile group, beside one array per band (store module docstring)."""
OFF_TILE = {  # pixel positions (x, y) of rows added to the first two tiles' targets
    "far": lambda nx, ny: (nx / 2 + 3000.0, ny / 2),
    "far-corner": lambda nx, ny: (-400.0, -250.0),
    "just-off": lambda nx, ny: (-0.7, ny / 2),  # centre pixel -1: off, though it overlaps
    "corner-bottom-left": lambda nx, ny: (-0.3, -0.3),  # centre pixel (0, 0): on the tile
    "corner-top-right": lambda nx, ny: (nx - 0.7, ny - 0.7),
}
OFF_TILE_FILE = "zz_offtile.parquet"
"""Sorts after the per-tile targets files, so its rows come last in each tile."""


@dataclass(frozen=True)
class Expected:
    """One tile's cutouts made by astropy alone, and the targets they belong to."""

    targets: pd.DataFrame
    """The tile's targets whose centre is on the tile, in targets-file order, plus the
    pixel position ``x``, ``y`` in the first band's image."""
    stamps: dict[str, np.ndarray]
    """Cutout2D stamps by band, (N, size, size)."""
    n_outside: int
    """Targets of the tile whose centre is off its image."""

    @property
    def edge(self) -> np.ndarray:
        """Stamps crossing the image border in any band (the images have no NaN)."""
        return np.any([np.isnan(s).any(axis=(1, 2)) for s in self.stamps.values()], axis=0)

    @property
    def bad_counts(self) -> dict[str, int]:
        """Stamps with a bad (here: NaN) pixel in any band, and with more than 5% of them."""
        worst = np.max([np.isnan(s).mean(axis=(1, 2)) for s in self.stamps.values()], axis=0)
        return {"bad": int((worst > 0).sum()), "mostly_bad": int((worst > 0.05).sum())}

    @property
    def nonfinite_fraction(self) -> np.ndarray:
        """(N, bands) fraction of NaN pixels."""
        fractions = [np.isnan(s).mean(axis=(1, 2)) for s in self.stamps.values()]
        return np.stack(fractions, axis=1).astype(np.float32)


def image_path(images: Path, tile: str, band: str) -> Path:
    """The FITS image of ``tile`` in ``band`` (the default image pattern)."""
    return images / f"{tile}_{band}.fits"


def targets_of(folder: Path, tile: str) -> pd.DataFrame:
    """The targets of ``tile`` in the order the targets files hold them (files sorted)."""
    frame = pd.concat([pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))])
    return frame[frame["THELI_NAME"] == tile].reset_index(drop=True)


def reference_tile(folder: Path, images: Path, tile: str) -> Expected:
    """What the store must hold for ``tile``, with Cutout2D (the first band decides on-tile)."""
    frame = targets_of(folder, tile)
    coords = SkyCoord(frame["RAJ2000"].to_numpy(), frame["DECJ2000"].to_numpy(), unit="deg")
    stamps: dict[str, np.ndarray] = {}
    for band in BANDS:
        data = fits.getdata(image_path(images, tile, band))
        wcs = WCS(fits.getheader(image_path(images, tile, band)))
        assert np.isfinite(data).all()
        if not stamps:
            centres = []
            for coord in coords:
                try:
                    centres.append(cutout2d_stamps(data, [coord], wcs=wcs)[0, HALF, HALF])
                except NoOverlapError:
                    centres.append(np.nan)
            on_tile = np.isfinite(centres)
            x, y = skycoord_to_pixel(coords, wcs, mode="all")
            frame = frame.assign(x=x, y=y)
        stamps[band] = cutout2d_stamps(data, coords[on_tile], wcs=wcs)
    return Expected(
        targets=frame[on_tile].reset_index(drop=True),
        stamps=stamps,
        n_outside=int((~on_tile).sum()),
    )


def cut(targets: Path, images: Path, out: Path, client, **options: object) -> CutoutReport:
    """make_cutouts without a progress bar, :data:`CHUNK` cutouts per chunk; ``options`` go
    to CutoutConfig."""
    config = CutoutConfig(**{"chunk": CHUNK, **options})
    return make_cutouts(targets, images, out, config=config, client=client, progress=False)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def shard_file(group: Path, band: str) -> Path:
    """The one shard file of a band's array in a tile group."""
    return group / band / "c" / "0" / "0" / "0"


def copy_store(store: Path, tmp_path: Path) -> Path:
    """A private copy of a cutout store (its contents name no path of its own)."""
    return Path(shutil.copytree(store, tmp_path / "cutouts.zarr"))


def assert_tile_matches(out: Path, tile: str, expected: Expected) -> None:
    """The tile group holds exactly the expected targets and Cutout2D's pixels."""
    group = zarr.open_group(str(out / tile), mode="r")
    frame = expected.targets
    assert group["ID"][:].tolist() == frame["ID"].tolist()
    assert group["sample"][:].tolist() == frame["sample"].tolist()
    for name in ("RAJ2000", "DECJ2000", "x", "y"):
        np.testing.assert_array_equal(group[name][:], frame[name].to_numpy(), err_msg=name)
    np.testing.assert_array_equal(group["edge"][:], expected.edge)
    np.testing.assert_array_equal(group["nonfinite_fraction"][:], expected.nonfinite_fraction)
    for band in BANDS:
        stored = group[band][:]
        assert stored.shape == expected.stamps[band].shape, band
        for k, (got, want) in enumerate(zip(stored, expected.stamps[band], strict=True)):
            assert np.array_equal(got, want, equal_nan=True), f"{tile} {band} cutout {k}"


def invoke(*args: object):
    """Run the ``lensdask`` command in-process."""
    return CliRunner().invoke(lensdask.cli.main, [str(arg) for arg in args], catch_exceptions=False)


def invoke_cutouts(targets: Path, images: Path, out: Path, client):
    """``lensdask cutouts`` on the session's cluster."""
    return invoke(
        "cutouts",
        targets,
        "--images",
        images,
        "--out",
        out,
        "--cluster",
        client.scheduler.address,
        "--no-progress",
    )


def broken_images(images: Path, folder: Path, *, corrupt: str = "", missing: str = "") -> Path:
    """A copy of ``images`` with the file named ``corrupt`` overwritten by garbage bytes
    and the one named ``missing`` deleted."""
    copy = Path(shutil.copytree(images, folder))
    if corrupt:
        (copy / corrupt).write_bytes(np.random.default_rng(0).bytes(30_000))
    if missing:
        (copy / missing).unlink()
    return copy


# --- fixtures: one survey, one targets dataset, one clean store (all read only) ----------------


@pytest.fixture(scope="module")
def survey(client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mock survey (catalog and images) of :data:`SURVEY`."""
    out = tmp_path_factory.mktemp("survey") / "survey"
    made = make_mock_survey(out, config=SURVEY, client=client, progress=False)
    assert made.units.ok and made.written == len(TILES)
    return out


@pytest.fixture(scope="module")
def images(survey: Path) -> Path:
    """The survey's tile images."""
    return survey / IMAGES_DIR


def off_tile_rows(template: pd.DataFrame, header: fits.Header, tile: str) -> pd.DataFrame:
    """Rows of :data:`OFF_TILE` for ``tile``: copies of a target moved to those pixels."""
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    xy = np.array([place(nx, ny) for place in OFF_TILE.values()])
    ra, dec = WCS(header).pixel_to_world_values(xy[:, 0], xy[:, 1])
    rows = pd.concat([template.iloc[:1]] * len(OFF_TILE), ignore_index=True)
    return rows.assign(ID=[f"{tile} {name}" for name in OFF_TILE], RAJ2000=ra, DECJ2000=dec)


@pytest.fixture(scope="module")
def targets(survey: Path, client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The selected targets, one file per tile, plus :data:`OFF_TILE_FILE` holding
    :data:`OFF_TILE` rows of the first two tiles (a file with two tiles in it)."""
    base = tmp_path_factory.mktemp("targets")
    selected = select_targets(
        survey / CATALOG_DIR, base / "selected", client=client, progress=False
    )
    folder = base / "targets"
    folder.mkdir()
    for path in sorted(selected.out.glob("*.parquet")):
        shutil.copy(path, folder / path.name)
    assert sorted(path.stem for path in folder.glob("*.parquet")) == TILES
    extra = [
        off_tile_rows(
            pd.read_parquet(folder / f"{tile}.parquet"),
            fits.getheader(image_path(survey / IMAGES_DIR, tile, BANDS[0])),
            tile,
        )
        for tile in TILES[:2]
    ]
    schema = pq.read_schema(folder / f"{TILES[0]}.parquet")
    table = pa.Table.from_pandas(pd.concat(extra), schema=schema, preserve_index=False)
    pq.write_table(table, folder / OFF_TILE_FILE)
    return folder


@pytest.fixture(scope="module")
def expected(targets: Path, images: Path) -> dict[str, Expected]:
    """The Cutout2D reference of every tile."""
    return {tile: reference_tile(targets, images, tile) for tile in TILES}


@pytest.fixture(scope="module")
def made(
    targets: Path, images: Path, client, tmp_path_factory: pytest.TempPathFactory
) -> CutoutReport:
    """One clean run into a new store (read only: tests that change it copy it)."""
    return cut(targets, images, tmp_path_factory.mktemp("made") / "cutouts.zarr", client)


@pytest.fixture(scope="module")
def clean(made: CutoutReport) -> dict[str, bytes]:
    """The files of the clean store."""
    return snapshot(made.out)


# --- what the store holds ------------------------------------------------------------------


def test_reference_covers_edges_corners_and_off_tile(expected: dict[str, Expected]) -> None:
    """The comparison below is not vacuous: every tile has cutouts, some cross the border,
    the corner rows are on their tile and the other added rows are off it."""
    for tile, exp in expected.items():
        assert len(exp.targets) >= 5, tile
        assert 0 < exp.edge.sum() < len(exp.targets), tile
    for tile in TILES[:2]:
        ids = set(expected[tile].targets["ID"])
        assert {f"{tile} corner-bottom-left", f"{tile} corner-top-right"} <= ids
        assert not {f"{tile} {name}" for name in ("far", "far-corner", "just-off")} & ids
        assert expected[tile].n_outside >= 3


def test_every_cutout_equals_cutout2d(made: CutoutReport, expected: dict[str, Expected]) -> None:
    for tile in TILES:
        assert_tile_matches(made.out, tile, expected[tile])


def test_report_counts(made: CutoutReport, expected: dict[str, Expected]) -> None:
    assert made.units.ok and not (made.out / FAILURES_FILE).exists()
    assert (made.tiles, made.written, made.skipped) == (3, 3, 0)
    assert sorted(made.units.results) == TILES
    assert made.counts == {
        "cutouts": sum(len(exp.targets) for exp in expected.values()),
        "outside": sum(exp.n_outside for exp in expected.values()),
        "edge": sum(int(exp.edge.sum()) for exp in expected.values()),
        **{
            key: sum(exp.bad_counts[key] for exp in expected.values())
            for key in ("bad", "mostly_bad")
        },
    }
    for tile, exp in expected.items():
        assert made.units.results[tile] == {
            "cutouts": len(exp.targets),
            "outside": exp.n_outside,
            "edge": int(exp.edge.sum()),
            **exp.bad_counts,
        }
    assert complete_tiles(made.out) == TILES


def test_off_tile_targets_are_skipped_and_counted(
    made: CutoutReport, expected: dict[str, Expected]
) -> None:
    for tile in TILES:
        group = zarr.open_group(str(made.out / tile), mode="r")
        stored = set(group["ID"][:].tolist())
        assert group.attrs["n_outside"] == expected[tile].n_outside
        assert read_marker(made.out, tile).extra["outside"] == expected[tile].n_outside
        for name in OFF_TILE:
            assert (f"{tile} {name}" in stored) == (name.startswith("corner") and tile in TILES[:2])
    assert made.counts["outside"] >= 6


def test_zarr_layout(made: CutoutReport, expected: dict[str, Expected], images: Path) -> None:
    out = made.out
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs.asdict() == {
        "lensdask_version": lensdask.__version__,
        "bands": list(BANDS),
        "size": SIZE,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes _units and _staging are not its own
        assert sorted(root.group_keys()) == TILES
    for tile, exp in expected.items():
        n = len(exp.targets)
        group = zarr.open_group(str(out / tile), mode="r")
        assert sorted(group.array_keys()) == sorted([*BANDS, *COLUMNS])
        for band in BANDS:
            array = group[band]
            assert array.dtype == np.float32 and array.shape == (n, SIZE, SIZE)
            assert array.chunks == (min(CHUNK, n), SIZE, SIZE)
            assert array.shards == (-(-n // CHUNK) * CHUNK, SIZE, SIZE)  # the tile in one shard
            assert array.metadata.dimension_names == ("cutout", "y", "x")
            assert np.isnan(array.fill_value)
            files = sorted(p for p in (out / tile / band).rglob("*") if p.is_file())
            assert files == [shard_file(out / tile, band), out / tile / band / "zarr.json"]
            meta = json.loads((out / tile / band / "zarr.json").read_text())
            assert (meta["zarr_format"], meta["node_type"]) == (3, "array")
            assert meta["data_type"] == "float32"
        for name in ("ID", "sample"):
            assert group[name].shape == (n,)
            assert (
                json.loads((out / tile / name / "zarr.json").read_text())["data_type"] == "string"
            )
            assert all(type(value) is str for value in group[name][:].tolist())
        for name in ("RAJ2000", "DECJ2000", "x", "y"):
            assert (group[name].dtype, group[name].shape) == (np.float64, (n,)), name
        assert (group["edge"].dtype, group["edge"].shape) == (np.bool_, (n,))
        for name in COLUMNS[7:]:
            assert (group[name].dtype, group[name].shape) == (np.float32, (n, len(BANDS))), name
        # no weight or flag maps: nothing known of them, bad pixels are the non-finite ones
        assert np.isnan(group["zero_weight_fraction"][:]).all()
        assert np.isnan(group["flagged_fraction"][:]).all()
        np.testing.assert_array_equal(group["bad_fraction"][:], group["nonfinite_fraction"][:])

        attrs = group.attrs.asdict()
        marker = read_marker(out, tile)
        sources = [OFF_TILE_FILE] if tile in TILES[:2] else []
        assert attrs["tile"] == tile
        assert attrs["bands"] == list(BANDS) and attrs["size"] == SIZE
        assert attrs["lensdask_version"] == lensdask.__version__
        assert attrs["n_outside"] == exp.n_outside
        assert attrs["config_hash"] == marker.config_hash
        assert [Path(path).name for path in attrs["targets"]] == [f"{tile}.parquet", *sources]
        for band in BANDS:
            image = image_path(images, tile, band)
            assert attrs["pixel_scale"][band] == pytest.approx(0.2, rel=1e-9)
            assert Path(attrs["images"][band]).resolve() == image.resolve()
            stored_wcs, image_wcs = WCS(attrs["wcs"][band]), WCS(fits.getheader(image))
            assert stored_wcs.wcs.ctype[0] == "RA---TAN"
            grid = np.meshgrid(np.linspace(-50.0, 600.0, 14), np.linspace(-50.0, 600.0, 14))
            for got, want in zip(
                stored_wcs.pixel_to_world_values(*grid),
                image_wcs.pixel_to_world_values(*grid),
                strict=True,
            ):
                np.testing.assert_array_equal(got, want)

        # the completion marker lists every file of the group with its size
        files = {
            str(path.relative_to(out)): path.stat().st_size
            for path in (out / tile).rglob("*")
            if path.is_file()
        }
        assert marker.files == files and marker.rows == n
        assert marker.ids_hash == ids_hash(exp.targets["ID"].tolist())


def test_readers_agree_with_zarr(made: CutoutReport, expected: dict[str, Expected], client) -> None:
    out = made.out
    for tile in TILES:
        group = zarr.open_group(str(out / tile), mode="r")
        read = read_tile(out, tile)
        assert read.tile == tile and read.attrs == group.attrs.asdict()
        assert read.ids.tolist() == group["ID"][:].tolist() == expected[tile].targets["ID"].tolist()
        assert read.sample.tolist() == group["sample"][:].tolist()
        np.testing.assert_array_equal(read.edge, group["edge"][:])
        np.testing.assert_array_equal(read.nonfinite_fraction, group["nonfinite_fraction"][:])
        assert list(read.images) == list(BANDS)
        for band in BANDS:
            assert np.array_equal(read.images[band], group[band][:], equal_nan=True)
        only_g = read_tile(out, tile, bands=("g",))
        assert list(only_g.images) == ["g"]
        assert np.array_equal(only_g.images["g"], read.images["g"], equal_nan=True)
    with pytest.raises(KeyError, match="'z'"):
        read_tile(out, TILES[0], bands=("z",))

    total = made.counts["cutouts"]
    for band in BANDS:
        lazy = cutouts_array(out, band)
        assert lazy.shape == (total, SIZE, SIZE) and lazy.dtype == np.float32
        sizes = [len(expected[tile].targets) for tile in TILES]
        assert lazy.chunks[0] == tuple(
            min(CHUNK, n - start) for n in sizes for start in range(0, n, CHUNK)
        )
        values = client.compute(lazy).result()
        want = np.concatenate([expected[tile].stamps[band] for tile in TILES])
        assert np.array_equal(values, want, equal_nan=True)
    with pytest.raises(FileNotFoundError, match="no complete tile"):
        cutouts_array(out.parent / "nothing.zarr")


def test_tile_with_every_target_off_it(targets: Path, images: Path, client, tmp_path: Path) -> None:
    """A tile whose targets are all off its image gets an empty group and is complete."""
    rows = pd.read_parquet(targets / OFF_TILE_FILE)
    off = rows[(rows["THELI_NAME"] == TILES[0]) & ~rows["ID"].str.contains("corner")]
    folder = tmp_path / "targets"
    folder.mkdir()
    off.to_parquet(folder / "off.parquet", index=False)
    out = tmp_path / "cutouts.zarr"
    report = cut(folder, images, out, client)
    assert report.units.ok
    assert report.counts == {
        "cutouts": 0,
        "outside": len(off),
        "edge": 0,
        "bad": 0,
        "mostly_bad": 0,
    }
    assert complete_tiles(out) == [TILES[0]]
    read = read_tile(out, TILES[0])
    assert read.ids.shape == (0,) and read.nonfinite_fraction.shape == (0, len(BANDS))
    assert all(image.shape == (0, SIZE, SIZE) for image in read.images.values())
    assert read.attrs["n_outside"] == len(off)
    assert cut(folder, images, out, client).skipped == 1


def test_each_band_uses_its_own_wcs(
    expected: dict[str, Expected], targets: Path, images: Path, client, tmp_path: Path
) -> None:
    """Bands need not share a pixel grid: the g image of a tile, with its WCS moved by a few
    pixels, is cut where its own WCS puts the targets."""
    tile = TILES[0]
    moved = Path(shutil.copytree(images, tmp_path / "images"))
    with fits.open(image_path(moved, tile, "g"), mode="update") as hdul:
        hdul[0].header["CRPIX1"] += 7.3
        hdul[0].header["CRPIX2"] -= 4.6
    out = tmp_path / "cutouts.zarr"
    assert cut(targets, moved, out, client).units.ok
    reference = reference_tile(targets, moved, tile)
    assert not np.array_equal(
        reference.stamps["g"], expected[tile].stamps["g"], equal_nan=True
    )  # the move shows
    assert_tile_matches(out, tile, reference)
    np.testing.assert_array_equal(
        WCS(read_tile(out, tile).attrs["wcs"]["g"]).wcs.crpix,
        WCS(fits.getheader(image_path(moved, tile, "g"))).wcs.crpix,
    )


# --- resume --------------------------------------------------------------------------------


def test_rerun_skips_every_complete_tile(
    made: CutoutReport, targets: Path, images: Path, client, tmp_path: Path
) -> None:
    out = copy_store(made.out, tmp_path)
    before = snapshot(out)
    times = {p: p.stat().st_mtime_ns for tile in TILES for p in (out / tile).rglob("*")}
    again = cut(targets, images, out, client)
    assert (again.written, again.skipped) == (0, 3)
    assert again.units.results == {} and sorted(again.units.skipped) == TILES
    assert again.counts == dict.fromkeys(("cutouts", "outside", "edge", "bad", "mostly_bad"), 0)
    assert snapshot(out) == before
    assert {p: p.stat().st_mtime_ns for p in times} == times  # nothing was rewritten


@pytest.mark.parametrize("old_group", ["kept", "gone"])
def test_resume_after_a_half_written_staging_group(
    old_group: str,
    made: CutoutReport,
    clean: dict[str, bytes],
    targets: Path,
    images: Path,
    client,
    tmp_path: Path,
) -> None:
    """Killed while writing a tile into ``_staging``: no marker, a partial staged group
    (one shard cut short, one array missing), and the committed group of an earlier run
    either still there or never made."""
    out = copy_store(made.out, tmp_path)
    tile = TILES[1]
    marker_path(out, tile).unlink()
    staged = out / STAGING_DIR / tile
    shutil.copytree(out / tile, staged)
    shard = shard_file(staged, "r")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    shutil.rmtree(staged / "nonfinite_fraction")
    if old_group == "gone":
        shutil.rmtree(out / tile)
    assert complete_tiles(out) == [TILES[0], TILES[2]]

    again = cut(targets, images, out, client)
    assert list(again.units.results) == [tile]
    assert sorted(again.units.skipped) == [TILES[0], TILES[2]]
    assert not staged.exists()
    assert snapshot(out) == clean  # byte for byte the clean run


def test_resume_after_a_truncated_shard(
    made: CutoutReport,
    clean: dict[str, bytes],
    targets: Path,
    images: Path,
    client,
    tmp_path: Path,
) -> None:
    """A shard file cut short after the marker was written: its size no longer agrees."""
    out = copy_store(made.out, tmp_path)
    tile = TILES[0]
    shard = shard_file(out / tile, "g")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    hashes = {name: read_marker(out, name).config_hash for name in TILES}
    assert [is_complete(out, name, config_hash=hashes[name]) for name in TILES] == [
        False,
        True,
        True,
    ]

    again = cut(targets, images, out, client)
    assert list(again.units.results) == [tile]
    assert sorted(again.units.skipped) == TILES[1:]
    assert snapshot(out) == clean


def test_changed_config_redoes_every_tile(
    made: CutoutReport,
    expected: dict[str, Expected],
    targets: Path,
    images: Path,
    client,
    tmp_path: Path,
) -> None:
    out = copy_store(made.out, tmp_path)
    again = cut(targets, images, out, client, size=51)
    assert sorted(again.units.results) == TILES and again.units.skipped == []
    assert zarr.open_group(str(out), mode="r").attrs["size"] == 51
    for tile in TILES:
        group = zarr.open_group(str(out / tile), mode="r")
        assert group.attrs["size"] == 51
        for band in BANDS:
            # same central pixel: a 51 px stamp is the middle of the 101 px one
            want = expected[tile].stamps[band][:, HALF - 25 : HALF + 26, HALF - 25 : HALF + 26]
            assert group[band].shape == (len(expected[tile].targets), 51, 51)
            assert np.array_equal(group[band][:], want, equal_nan=True)


def test_changed_targets_file_redoes_its_tiles(
    targets: Path, images: Path, client, tmp_path: Path
) -> None:
    """A new selection rewrites a tile's targets file: that tile's cutouts must follow
    (neither stale cutouts kept nor new targets dropped); the other tiles are skipped."""
    folder = Path(shutil.copytree(targets, tmp_path / "targets"))
    out = tmp_path / "cutouts.zarr"
    assert cut(folder, images, out, client).units.ok
    tile = TILES[2]
    path = folder / f"{tile}.parquet"
    before = read_tile(out, tile).ids.tolist()
    fewer = pq.read_table(path).slice(2)  # the first two targets are no longer selected
    pq.write_table(fewer, path)

    again = cut(folder, images, out, client)
    assert list(again.units.results) == [tile] and sorted(again.units.skipped) == TILES[:2]
    assert read_tile(out, tile).ids.tolist() == before[2:]
    reference = reference_tile(folder, images, tile)
    assert reference.targets["ID"].tolist() == fewer["ID"].to_pylist()  # all on the tile
    assert_tile_matches(out, tile, reference)


# --- failures ------------------------------------------------------------------------------


def test_bad_images_fail_their_tiles_only(
    made: CutoutReport,
    expected: dict[str, Expected],
    targets: Path,
    images: Path,
    client,
    tmp_path: Path,
) -> None:
    corrupt = image_path(Path(), TILES[0], "g").name
    missing = image_path(Path(), TILES[1], "i").name
    bad = broken_images(images, tmp_path / "images", corrupt=corrupt, missing=missing)
    out = tmp_path / "cutouts.zarr"

    report = cut(targets, bad, out, client)
    failures = {failure.unit: failure for failure in report.units.failures}
    assert sorted(failures) == TILES[:2]
    assert str(bad / corrupt) in failures[TILES[0]].error
    assert "OSError" in failures[TILES[0]].error
    assert str(bad / missing) in failures[TILES[1]].error
    assert "FileNotFoundError" in failures[TILES[1]].error
    assert {failure.stage for failure in failures.values()} == {"cutouts"}
    assert list(report.units.results) == [TILES[2]]
    assert complete_tiles(out) == [TILES[2]]
    assert not (out / TILES[0]).exists() and not (out / TILES[1]).exists()
    assert_tile_matches(out, TILES[2], expected[TILES[2]])
    with (out / FAILURES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["unit"], row["stage"]) for row in rows] == [(t, "cutouts") for t in TILES[:2]]
    assert str(bad / corrupt) in rows[0]["error"] and str(bad / missing) in rows[1]["error"]

    # repaired: only the failed tiles run, and the failures table goes away
    for name in (corrupt, missing):
        shutil.copy(images / name, bad / name)
    again = cut(targets, bad, out, client)
    assert sorted(again.units.results) == TILES[:2] and again.units.skipped == [TILES[2]]
    assert again.units.ok and not (out / FAILURES_FILE).exists()
    assert complete_tiles(out) == TILES
    for tile in TILES:
        assert_tile_matches(out, tile, expected[tile])


# --- the commands ----------------------------------------------------------------------------


def test_cutouts_command(
    targets: Path, images: Path, expected: dict[str, Expected], client, tmp_path: Path
) -> None:
    out = tmp_path / "cutouts.zarr"
    result = invoke_cutouts(targets, images, out, client)
    assert result.exit_code == 0, result.output
    n = sum(len(exp.targets) for exp in expected.values())
    edge = sum(int(exp.edge.sum()) for exp in expected.values())
    outside = sum(exp.n_outside for exp in expected.values())
    bad = {k: sum(exp.bad_counts[k] for exp in expected.values()) for k in ("bad", "mostly_bad")}
    assert (
        f"cutouts: 3 tiles written, 0 already complete, 0 failed; {n} cutouts ({edge} at an "
        f"image border; {bad['bad']} with bad pixels, {bad['mostly_bad']} of them over 5%), "
        f"{outside} targets outside their tile -> {out}"
    ) in result.output
    assert complete_tiles(out) == TILES
    for tile in TILES:
        assert_tile_matches(out, tile, expected[tile])
    again = invoke_cutouts(targets, images, out, client)
    assert again.exit_code == 0 and "0 tiles written, 3 already complete" in again.output


def test_cutouts_command_exits_3_listing_failed_tiles(
    targets: Path, images: Path, client, tmp_path: Path
) -> None:
    corrupt = image_path(Path(), TILES[2], "r").name
    bad = broken_images(images, tmp_path / "images", corrupt=corrupt)
    out = tmp_path / "cutouts.zarr"
    result = invoke_cutouts(targets, bad, out, client)
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"FAILED cutouts {TILES[2]}" in result.output
    assert str(bad / corrupt) in result.output
    assert "1 unit(s) failed" in result.output
    assert f"FAILED cutouts {TILES[0]}" not in result.output
    assert complete_tiles(out) == TILES[:2]


def test_run_job_makes_the_cutout_store(client, tmp_path: Path) -> None:
    work = tmp_path / "work"
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {work}\n"
        "mock_survey: {tiles: 2, tile_size: 0.03, seed: 11, density: 400000.0, images: true}\n"
        "cutouts: {chunk: 8}\n"
    )
    result = invoke("run", job, "--cluster", client.scheduler.address, "--no-progress")
    assert result.exit_code == 0, result.output
    store = work / "cutouts.zarr"
    tiles = [tile.name for tile in survey_tiles(2)]
    assert complete_tiles(store) == tiles
    targets = pd.read_parquet(work / "targets.parquet")
    n = 0
    for tile in tiles:
        read = read_tile(store, tile)
        ids = targets.loc[targets["THELI_NAME"] == tile, "ID"].tolist()
        assert len(read.ids) + read.attrs["n_outside"] == len(ids)
        assert read.ids.tolist() == [i for i in ids if i in set(read.ids.tolist())]
        assert read.images["r"].shape[1:] == (SIZE, SIZE)
        n += len(read.ids)
    assert n > 0
    assert f"cutouts written now: {n}" in result.output
    assert f"cutouts -> {store}" in result.output
    again = invoke("run", job, "--cluster", client.scheduler.address, "--no-progress")
    assert again.exit_code == 0 and "cutouts written now: 0" in again.output


@pytest.mark.parametrize("scaled", [False, True])
def testrow_reader_reads_the_rows_of_plain_and_scaled_images(tmp_path: Path, scaled: bool) -> None:
    """Plain float images are mapped block by block; scaled integer images (BSCALE/BZERO)
    go through astropy's section; both give the image's (scaled) rows."""
    from lensdask.cutouts.make import row_reader

    rng = np.random.default_rng(3)
    if scaled:
        hdu = fits.PrimaryHDU(rng.integers(0, 30000, (50, 40)).astype(np.int16))
        hdu.scale("int16", bzero=32768, bscale=0.5)
    else:
        hdu = fits.PrimaryHDU(rng.normal(size=(50, 40)).astype(np.float32))
    path = tmp_path / "image.fits"
    hdu.writeto(path)
    with fits.open(path) as hdul:
        expected = hdul[0].data.astype(np.float64)
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        read_rows = row_reader(hdul, 0)
        for start, stop in ((0, 50), (7, 19), (49, 50)):
            rows = read_rows(start, stop)
            assert isinstance(rows, np.memmap) is not scaled
            assert np.array_equal(np.asarray(rows, dtype=np.float64), expected[start:stop])


def test_unsharded_store_has_the_same_cutouts_one_file_per_chunk(
    targets: Path, images: Path, expected: dict[str, Expected], client, tmp_path: Path
) -> None:
    """``shard=False`` writes each chunk as a file of its own; the values are the same."""
    report = cut(targets, images, tmp_path / "plain.zarr", client, shard=False)
    assert report.units.ok
    for tile in TILES:
        assert_tile_matches(report.out, tile, expected[tile])
        for band in BANDS:
            array = zarr.open_array(str(report.out / tile / band), mode="r")
            n = array.shape[0]
            assert array.shards is None
            assert array.chunks == (min(CHUNK, max(n, 1)), SIZE, SIZE)
            chunk_files = [p for p in (report.out / tile / band).rglob("*") if p.is_file()]
            assert len(chunk_files) == -(-n // CHUNK) + 1  # the chunks and zarr.json


# --- naming what went wrong -------------------------------------------------------------------


def test_a_truncated_fits_image_names_the_file_band_and_hdu(
    targets: Path, images: Path, client, tmp_path: Path
) -> None:
    """A FITS file cut short (written by astropy, then truncated in its data) fails its tile
    with an error naming the file, the band and the HDU, not just "mmap length is greater
    than file size"."""
    bad = Path(shutil.copytree(images, tmp_path / "images"))
    path = image_path(bad, TILES[1], "g")
    with fits.open(image_path(images, TILES[1], "g")) as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    path.unlink()
    fits.writeto(path, data, header)
    with path.open("r+b") as handle:  # keep the header and a third of the pixels
        handle.truncate(2880 + data.nbytes // 3)

    report = cut(targets, bad, tmp_path / "cutouts.zarr", client)
    failures = {failure.unit: failure.error for failure in report.units.failures}
    assert list(failures) == [TILES[1]]
    error = failures[TILES[1]]
    assert f"{path} (band g, HDU 0)" in error, error
    assert "cannot read" in error and "OSError" in error
    assert sorted(report.units.results) == [TILES[0], TILES[2]]


def test_a_missing_hdu_names_the_band(targets: Path, images: Path, client, tmp_path: Path) -> None:
    report = cut(targets, images, tmp_path / "cutouts.zarr", client, hdu=3)
    assert len(report.units.failures) == len(TILES)
    for failure in report.units.failures:
        path = image_path(images, failure.unit, BANDS[0])
        assert f"{path} (band {BANDS[0]}, HDU 3)" in failure.error


def test_off_tile_targets_are_named(made: CutoutReport, expected: dict[str, Expected]) -> None:
    far = [name for name in OFF_TILE if not name.startswith("corner")]
    for tile in TILES:
        named = read_marker(made.out, tile).extra["outside_ids"]
        assert len(named) == expected[tile].n_outside
        if tile in TILES[:2]:
            assert named == [f"{tile} {name}" for name in far]
    assert made.outside_ids == {tile: [f"{tile} {name}" for name in far] for tile in TILES[:2]}


def test_cutouts_command_names_off_tile_targets(
    targets: Path, images: Path, client, tmp_path: Path
) -> None:
    result = invoke_cutouts(targets, images, tmp_path / "cutouts.zarr", client)
    assert result.exit_code == 0, result.output
    first = f"{TILES[0]} far ({TILES[0]}), {TILES[0]} far-corner ({TILES[0]})"
    assert f"cutouts: 6 targets outside their tile: {first}" in result.output
    assert "and 1 more; all are listed in <cutouts>/_units/<tile>.json" in result.output


def test_inf_pixels_of_an_image_count_in_nonfinite_fraction(
    made: CutoutReport, targets: Path, images: Path, client, tmp_path: Path
) -> None:
    """Three +-inf pixels in a FITS image, inside one cutout: its nonfinite_fraction in that
    band is exactly 3 / 101^2 (counted by hand), and 0 in the other bands."""
    tile = TILES[2]
    group = zarr.open_group(str(made.out / tile), mode="r")
    k = int(np.flatnonzero(~group["edge"][:])[0])
    x0 = int(np.ceil(group["x"][k] - SIZE / 2))
    y0 = int(np.ceil(group["y"][k] - SIZE / 2))
    changed = Path(shutil.copytree(images, tmp_path / "images"))
    with fits.open(image_path(changed, tile, BANDS[0]), mode="update") as hdul:
        hdul[0].data[y0 + 10, x0 + 20] = np.inf
        hdul[0].data[y0 + 50, x0 + 50] = -np.inf
        hdul[0].data[y0 + 100, x0 + 100] = np.inf
    out = tmp_path / "cutouts.zarr"
    assert cut(targets, changed, out, client).units.ok
    fractions = read_tile(out, tile).nonfinite_fraction
    assert fractions[k, 0] == np.float32(3 / SIZE**2)
    assert (fractions[k, 1:] == 0).all()
    stamp = read_tile(out, tile, bands=(BANDS[0],)).images[BANDS[0]][k]
    assert np.isposinf(stamp).sum() == 2 and np.isneginf(stamp).sum() == 1
