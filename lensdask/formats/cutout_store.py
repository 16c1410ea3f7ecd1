"""The cutout store: a Zarr v3 hierarchy with one group per tile.

Layout of ``cutouts.zarr``::

    zarr.json                    root group: lensdask version, bands, cutout size
    <tile>/zarr.json             group attributes: WCS header per band, pixel scale,
                                 bands, provenance (targets and image files, version)
    <tile>/<band>                (N, size, size) float32 cutouts, NaN outside the image
    <tile>/ID, sample            (N,) str
    <tile>/RAJ2000, DECJ2000     (N,) float64, deg
    <tile>/x, y                  (N,) float64, pixel position in the first band's image
    <tile>/edge                  (N,) bool: the cutout crosses the image border
    <tile>/nonfinite_fraction    (N, n_bands) float32: fraction of non-finite pixels
                                 (NaN, +inf, -inf) per band
    <tile>/zero_weight_fraction  (N, n_bands) float32: fraction of pixels with weight
                                 <= 0 per band (NaN: the image has no weight map)
    <tile>/flagged_fraction      (N, n_bands) float32: fraction of pixels with a counted
                                 flag bit (``cutouts.flag_bits``; NaN: no flag map)
    <tile>/bad_fraction          (N, n_bands) float32: fraction of pixels that are
                                 non-finite, zero-weight or flagged (each counted once);
                                 equals nonfinite_fraction where there are no maps
    <tile>/<band>_weight, <band>_flag
                                 (N, size, size) float32, only with ``cutouts.keep_maps``
                                 and where the band has the map: the weight and flag
                                 stamps (NaN outside the image)
    _units/<tile>.json           completion markers (only complete tiles are read)

Each tile is written into ``_staging/<tile>`` first and moved into place whole, so no two
tasks ever write into the same chunk or shard. By default each cutout array is one shard
per tile (one file per band, kind to parallel file systems) made of chunks of ``chunk``
cutouts, or (``shard=False``) one file per chunk. The numeric arrays' chunks and shards are
written by :func:`lensdask.formats.zarrs.write_array`, in zarr's own bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.formats.zarrs import (
    CheckedArray,
    compressors,
    create_arrays,
    write_array,
    zarr_store,
)
from lensdask.storage import as_path
from lensdask.units import Marker, has_units, invalidate, planned_units, read_marker

LAYOUT = 3
"""Version of the tile group's layout, part of the configuration hash of the tiles, so
that tiles written in an older layout are made again (2: ``nonfinite_fraction``, which
counts +-inf with NaN, in the place of ``nan_fraction``; 3: ``bad_fraction``,
``zero_weight_fraction`` and ``flagged_fraction`` from the weight and flag maps)."""


@dataclass(frozen=True)
class TileCutouts:
    """The cutouts of one tile, read back from the store."""

    tile: str
    ids: np.ndarray
    """IDs, in the order of the cutouts."""
    images: dict[str, np.ndarray]
    """Cutouts by band, each (N, size, size) float32."""
    sample: np.ndarray
    edge: np.ndarray
    nonfinite_fraction: np.ndarray
    attrs: dict[str, Any]
    bad_fraction: np.ndarray | None = None
    """(N, n_bands) fraction of non-finite, zero-weight or flagged pixels (all the tile's
    bands, in the order of ``attrs["bands"]``)."""


def open_root(path: str | Path, *, attrs: dict[str, Any] | None = None):
    """Open (creating if needed) the root group of a cutout store; ``attrs`` are merged in."""
    import zarr

    root = zarr.open_group(zarr_store(as_path(path)), mode="a")
    if attrs:
        root.attrs.update(attrs)
    return root


def write_tile_group(
    folder: Path,
    images: dict[str, np.ndarray],
    columns: dict[str, np.ndarray],
    *,
    attrs: dict[str, Any],
    chunk: int,
    compression_level: int,
    shard: bool = True,
) -> None:
    """Write one tile's group as a stand-alone Zarr group in ``folder`` (the staging place).

    Parameters
    ----------
    folder : path
        Where the group is made (must not exist).
    images : dict of str to ndarray
        Cutouts by band, (N, size, size) float32.
    columns : dict of str to ndarray
        Per-cutout arrays (ID, sample, positions, flags), first axis N.
    attrs : dict
        Group attributes (JSON-serialisable).
    chunk : int
        Cutouts per chunk.
    compression_level : int
        Zstandard level (0: none).
    shard : bool
        Put a band's chunks into one shard holding the whole tile (one file), or write
        them as files of their own.
    """
    import zarr

    clash = sorted(set(images) & set(columns))
    if clash:
        raise ValueError(f"{folder}: {clash} named both as bands and as per-cutout arrays")
    group = zarr.open_group(str(folder), mode="w-", attributes=attrs)
    contents = {**images, **{name: np.asarray(values) for name, values in columns.items()}}
    options = {}
    for band, data in images.items():
        n = data.shape[0]
        chunks = (max(min(chunk, n), 1), *data.shape[1:])
        shards = (
            (max(-(-n // chunks[0]) * chunks[0], chunks[0]), *data.shape[1:]) if shard else None
        )
        options[band] = {
            "shape": data.shape,
            "dtype": "float32",
            "chunks": chunks,
            "shards": shards,
            "compressors": compressors(compression_level),
            "fill_value": np.nan,
            "dimension_names": ("cutout", "y", "x"),
        }
    for name, values in contents.items():
        if name not in images:
            options[name] = {
                "shape": values.shape,
                "dtype": str if values.dtype.kind in "OUT" else values.dtype,
                "chunks": (max(values.shape[0], 1), *values.shape[1:]),
                "compressors": compressors(),
            }
    for name, array in create_arrays(group, options).items():
        write_array(array, contents[name])


def complete_tiles(path: str | Path) -> list[str]:
    """The tiles of the store, as the last finished run of ``lensdask cutouts`` left it."""
    return sorted(tile_markers(path))


def tile_markers(path: str | Path) -> dict[str, Marker]:
    """The completion marker of each tile of the store's last finished run, by tile
    (:func:`lensdask.units.planned_units`): what readers check their lineage against. A
    folder that ``lensdask cutouts`` never wrote has none."""
    return planned_units(as_path(path)) if has_units(as_path(path)) else {}


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is the root of a cutout store (a Zarr group)."""
    return (as_path(path) / "zarr.json").is_file()


def has_tile(path: str | Path, tile: str) -> bool:
    """Whether the store has ``tile``, complete (its marker and its group exist)."""
    return read_marker(as_path(path), tile) is not None and (as_path(path) / tile).exists()


def read_store_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of a cutout store (``bands``, ``size``, lensdask version)."""
    import zarr

    return dict(zarr.open_group(zarr_store(as_path(path), read_only=True), mode="r").attrs)


def read_tile_attrs(path: str | Path, tile: str) -> dict[str, Any]:
    """The attributes of one tile's group (``bands``, ``pixel_scale`` by band, ``size``,
    WCS headers, provenance)."""
    import zarr

    group = zarr.open_group(zarr_store(as_path(path) / tile, read_only=True), mode="r")
    return dict(group.attrs)


def read_tile_columns(path: str | Path, tile: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-cutout arrays of one tile (``ID``, ``sample``, ``edge``,
    ``nonfinite_fraction``, ...) by name, in the order of the cutouts."""
    return {name: _checked(path, tile, name)[:] for name in names}


def open_band(path: str | Path, tile: str, band: str) -> CheckedArray:
    """The cutouts of one band of a tile as a lazy array (N, size, size), read by slicing.

    A chunk that fails its checksum raises
    :class:`lensdask.formats.zarrs.DamagedDataError` naming the array, and takes back the
    tile's completion (:func:`lensdask.units.invalidate`), so that the next run of the
    cutouts remakes it.
    """
    return _checked(path, tile, band)


def _checked(path: str | Path, tile: str, name: str) -> CheckedArray:
    import zarr

    where = as_path(path) / tile / name
    array = zarr.open_array(zarr_store(where, read_only=True), mode="r")
    return CheckedArray(
        array, str(where), on_damage=lambda reason: invalidate(as_path(path), tile, reason)
    )


def read_band_rows(path: str | Path, tile: str, band: str, rows: np.ndarray) -> np.ndarray:
    """The ``band`` cutouts at positions ``rows`` of a tile (any order, repeats allowed),
    reading only the chunks that hold them.

    Returns
    -------
    ndarray, shape (len(rows), size, size), float32
    """
    unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    data = open_band(path, tile, band)[unique]
    return np.asarray(data)[inverse]


def read_tile(path: str | Path, tile: str, *, bands: tuple[str, ...] | None = None) -> TileCutouts:
    """Read one tile's cutouts (all bands, or ``bands``) and per-cutout columns into memory."""
    attrs = read_tile_attrs(path, tile)
    bands = bands or tuple(attrs["bands"])
    missing = [band for band in bands if band not in attrs["bands"]]
    if missing:
        raise KeyError(f"{path}/{tile}: no band(s) {missing}; has {attrs['bands']}")
    columns = read_tile_columns(path, tile, ["ID", "sample", "edge", "nonfinite_fraction"])
    return TileCutouts(
        tile=tile,
        ids=columns["ID"],
        images={band: open_band(path, tile, band)[:] for band in bands},
        sample=columns["sample"],
        edge=columns["edge"],
        nonfinite_fraction=columns["nonfinite_fraction"],
        attrs=attrs,
        bad_fraction=read_bad_fraction(path, tile, fallback=columns["nonfinite_fraction"]),
    )


def read_bad_fraction(
    path: str | Path, tile: str, *, fallback: np.ndarray | None = None
) -> np.ndarray:
    """The ``bad_fraction`` (N, n_bands) of one tile; a tile of a store written before it
    existed (layout 2) gives its ``nonfinite_fraction`` (or ``fallback``) instead."""
    if (as_path(path) / tile / "bad_fraction").exists():
        return _checked(path, tile, "bad_fraction")[:]
    if fallback is not None:
        return fallback
    return _checked(path, tile, "nonfinite_fraction")[:]


def cutouts_array(path: str | Path, band: str = "r"):
    """All complete tiles' cutouts of ``band`` as one lazy Dask array (N_total, size, size).

    Tiles are concatenated in sorted order (:func:`complete_tiles`); each keeps its Zarr
    chunks as Dask chunks.
    """
    import dask.array as da
    import zarr

    arrays = [
        da.from_zarr(
            zarr.open_array(zarr_store(as_path(path) / tile / band, read_only=True), mode="r")
        )
        for tile in complete_tiles(path)
    ]
    if not arrays:
        raise FileNotFoundError(f"{path}: no complete tile in the cutout store")
    return da.concatenate(arrays, axis=0)
