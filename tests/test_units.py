"""Completion markers: a unit counts as complete only when its marker matches the disk."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from lensdask.config import SelectConfig
from lensdask.formats.parquet import commit_parquet
from lensdask.units import (
    Marker,
    complete_units,
    config_hash,
    file_identity,
    file_sha256,
    ids_hash,
    is_complete,
    read_marker,
    write_marker,
)


def make_unit(root, unit="T1", chash="abc"):
    table = pa.table({"ID": ["a", "b", "c"]})
    size = commit_parquet(table, root, f"{unit}.parquet")
    marker = Marker(
        unit=unit,
        rows=3,
        ids_hash=ids_hash(table["ID"]),
        config_hash=chash,
        files={f"{unit}.parquet": size},
        checksums={f"{unit}.parquet": file_sha256(root / f"{unit}.parquet")},
    )
    write_marker(root, marker)
    return marker


def test_marker_round_trip_and_completeness(tmp_path):
    marker = make_unit(tmp_path)
    assert read_marker(tmp_path, "T1") == marker
    assert is_complete(tmp_path, "T1", config_hash="abc")
    assert not is_complete(tmp_path, "T1", config_hash="other")
    assert list(complete_units(tmp_path)) == ["T1"]


def test_a_changed_or_missing_file_makes_the_unit_incomplete(tmp_path):
    make_unit(tmp_path)
    with open(tmp_path / "T1.parquet", "ab") as handle:
        handle.write(b"junk")
    assert not is_complete(tmp_path, "T1", config_hash="abc")
    (tmp_path / "T1.parquet").unlink()
    assert not is_complete(tmp_path, "T1", config_hash="abc")


def test_a_same_size_change_of_a_small_file_makes_the_unit_incomplete(tmp_path):
    make_unit(tmp_path)
    data = bytearray((tmp_path / "T1.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "T1.parquet").write_bytes(bytes(data))
    assert not is_complete(tmp_path, "T1", config_hash="abc")


def test_write_marker_records_the_sha256_of_small_files(tmp_path):
    table = pa.table({"ID": ["a"]})
    size = commit_parquet(table, tmp_path, "U.parquet")
    marker = Marker(
        unit="U", rows=1, ids_hash=ids_hash(table["ID"]), config_hash="c", files={"U.parquet": size}
    )
    write_marker(tmp_path, marker)
    expected = hashlib.sha256((tmp_path / "U.parquet").read_bytes()).hexdigest()
    assert read_marker(tmp_path, "U").checksums == {"U.parquet": expected}


def test_damaged_marker_is_ignored(tmp_path):
    make_unit(tmp_path)
    (tmp_path / "_units" / "T1.json").write_text("{not json")
    assert read_marker(tmp_path, "T1") is None
    assert not is_complete(tmp_path, "T1", config_hash="abc")


def test_ids_hash_is_the_same_for_arrow_and_python_and_order_sensitive():
    ids = ["KiDS J1", "KiDS J2", "KiDS J3"]
    assert (
        ids_hash(ids) == ids_hash(pa.array(ids)) == ids_hash(pa.chunked_array([ids[:1], ids[1:]]))
    )
    assert ids_hash(ids) != ids_hash(ids[::-1])
    assert ids_hash(["ab", "c"]) != ids_hash(["a", "bc"])


def test_config_hash_follows_values(tmp_path):
    assert config_hash(SelectConfig()) == config_hash(SelectConfig())
    assert config_hash(SelectConfig()) != config_hash(SelectConfig(bg_mag_max=20.5))
    source = tmp_path / "c.parquet"
    source.write_bytes(b"x")
    first = file_identity(source)
    source.write_bytes(b"xy")
    assert file_identity(source) != first


def test_commit_parquet_leaves_no_staging_file(tmp_path):
    size = commit_parquet(pa.table({"a": [1, 2]}), tmp_path, "sub/x.parquet")
    assert (tmp_path / "sub" / "x.parquet").stat().st_size == size
    assert list((tmp_path / "_staging").iterdir()) == []


def test_config_hash_rejects_unhashable_values():
    with pytest.raises(TypeError, match="cannot hash"):
        config_hash({"a": object()})
