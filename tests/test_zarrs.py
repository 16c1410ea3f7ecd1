"""lensdask's own writer of Zarr chunks (:func:`lensdask.formats.zarrs.write_array`): the
files zarr-python itself writes, byte for byte, and read back by zarr-python."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.formats.zarrs import (
    CheckedArray,
    DamagedDataError,
    compressors,
    create_arrays,
    row_layout,
    write_array,
)


def make_array(folder: Path, data: np.ndarray, *, chunk: int, shard: bool, level: int = 0):
    """An array for ``data`` as the cutout store makes them: chunks of ``chunk`` rows, each
    with its CRC-32C, optionally all in one shard."""
    rows = data.shape[0]
    chunks = (chunk, *data.shape[1:])
    shards = ((-(-rows // chunk) * chunk) or chunk, *data.shape[1:]) if shard else None
    kind = data.dtype.kind
    return zarr.open_group(str(folder), mode="a").create_array(
        "a",
        shape=data.shape,
        dtype=str if kind in "OUT" else data.dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressors(level),
        fill_value=np.nan if kind == "f" else None,
    )


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def write_both(tmp_path: Path, data: np.ndarray, **layout) -> tuple[Path, Path]:
    """``data`` written by zarr (every chunk, even one all of fill value) and by
    :func:`write_array`, into arrays made alike; the two array folders."""
    ours, theirs = tmp_path / "ours", tmp_path / "zarr"
    array = make_array(ours, data, **layout)
    chunk = layout["chunk"]
    rows = -(-data.shape[0] // chunk) * chunk if layout["shard"] else chunk
    assert row_layout(array) == (rows, chunk if layout["shard"] else None)  # not zarr's writer
    write_array(array, data)
    with zarr.config.set({"array.write_empty_chunks": True}):
        reference = make_array(theirs, data, **layout)
        reference[...] = data
    return ours / "a", theirs / "a"


def cutouts(rows: int, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).normal(10, 3, size=(rows, 7, 5)).astype(np.float32)
    data[: rows // 3, :, :2] = np.nan  # cutouts at an image border
    return data


@pytest.mark.parametrize("shard", [True, False])
@pytest.mark.parametrize("rows", [1, 9, 16, 37])
def test_writes_the_bytes_zarr_writes(tmp_path, rows, shard):
    ours, theirs = write_both(tmp_path, cutouts(rows), chunk=8, shard=shard)
    assert files(ours) == files(theirs)
    assert len(files(ours)) == (2 if shard else 1 + -(-rows // 8))  # zarr.json and chunks
    np.testing.assert_array_equal(zarr.open_array(str(ours), mode="r")[:], cutouts(rows))


@pytest.mark.parametrize(
    "column",
    [
        np.linspace(0.0, 360.0, 13),  # RAJ2000
        np.arange(13) % 3 == 0,  # edge
        np.arange(13, dtype=np.int64) - 5,
        np.random.default_rng(1).random((13, 3)).astype(np.float32),  # fractions per band
    ],
    ids=["float64", "bool", "int64", "float32-2d"],
)
def test_per_cutout_columns_as_zarr_writes_them(tmp_path, column):
    ours, theirs = write_both(tmp_path, column, chunk=column.shape[0], shard=False)
    assert files(ours) == files(theirs)
    np.testing.assert_array_equal(zarr.open_array(str(ours), mode="r")[:], column)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 70), chunk=st.integers(1, 30), shard=st.booleans())
def test_any_rows_and_chunking(tmp_path_factory, rows, chunk, shard):
    tmp_path = tmp_path_factory.mktemp("layout")
    ours, theirs = write_both(tmp_path, cutouts(rows, seed=rows), chunk=chunk, shard=shard)
    assert files(ours) == files(theirs)


def test_a_damaged_chunk_fails_its_checksum(tmp_path):
    data = cutouts(20)
    write_array(make_array(tmp_path, data, chunk=8, shard=True), data)
    shard = tmp_path / "a" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[8 * 7 * 5 * 4 + 4 + 100] ^= 0xFF  # a pixel of the second chunk
    shard.write_bytes(bytes(raw))
    array = CheckedArray(zarr.open_array(str(tmp_path / "a"), mode="r"), "a")
    np.testing.assert_array_equal(array[:8], data[:8])  # the first chunk is intact
    with pytest.raises(DamagedDataError, match="a: damaged chunk"):
        array[8:16]


@pytest.mark.parametrize(
    ("data", "level"),
    [(cutouts(11), 3), (np.array([f"KiDS J{i:04d}" for i in range(11)]), 0)],
    ids=["zstd", "strings"],
)
def test_what_it_does_not_encode_goes_through_zarr(tmp_path, data, level):
    array = make_array(tmp_path, data, chunk=4, shard=True, level=level)
    assert row_layout(array) is None
    write_array(array, data)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"), mode="r")[:], data)


def test_no_rows_no_chunk_files(tmp_path):
    data = np.zeros((0, 7, 5), dtype=np.float32)
    write_array(make_array(tmp_path, data, chunk=1, shard=True), data)
    assert sorted(files(tmp_path / "a")) == ["zarr.json"]


def test_data_of_another_shape_is_refused(tmp_path):
    array = make_array(tmp_path, cutouts(4), chunk=2, shard=True)
    with pytest.raises(ValueError, match=r"a: data of shape \(3, 7, 5\) for shape \(4, 7, 5\)"):
        write_array(array, cutouts(3))


@pytest.mark.parametrize("where", ["", "tile"])
def test_arrays_created_together_are_those_made_one_by_one(tmp_path, where):
    options = {
        "r": {"shape": (5, 7, 5), "dtype": "float32", "chunks": (2, 7, 5), "shards": (6, 7, 5)},
        "ID": {"shape": (5,), "dtype": str, "chunks": (5,)},
        "edge": {"shape": (5,), "dtype": bool, "chunks": (5,)},
    }
    made = {}
    for name, together in (("together", True), ("apart", False)):
        group = zarr.open_group(str(tmp_path / name), mode="w-")
        group = group.create_group(where) if where else group
        specs = {key: {**value, "compressors": compressors()} for key, value in options.items()}
        if together:
            made[name] = create_arrays(group, specs)
        else:
            made[name] = {key: group.create_array(key, **spec) for key, spec in specs.items()}
    assert list(made["together"]) == list(options)
    assert [a.path for a in made["together"].values()] == [a.path for a in made["apart"].values()]
    assert files(tmp_path / "together") == files(tmp_path / "apart")  # the same zarr.json
