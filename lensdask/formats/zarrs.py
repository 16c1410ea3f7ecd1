"""Zarr arrays as lensdask writes and reads them: a CRC-32C checksum on every chunk (zarr
3's ``crc32c`` codec, after compression), and reads that name the file when a chunk fails
its checksum.

The cutout store and the training set are large: their completion markers record the
SHA-256 only of files up to :data:`lensdask.units.SMALL_FILE` (64 MiB) and the sizes of
larger ones (big shards), whose corruption of the same size is caught when the damaged
chunk is read (measured cost: tests/benchmarks/bench_checksums.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class DamagedDataError(OSError):
    """A chunk of an array does not match its checksum: the data on disk was damaged after it
    was written. The message names the array and the chunk's rows."""


def compressors(level: int = 0) -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of lensdask's Zarr arrays: zstd at ``level`` (none for 0),
    then the chunk's CRC-32C."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return ((ZstdCodec(level=level),) if level else ()) + (Crc32cCodec(),)


def zarr_store(path: Any, *, read_only: bool = False) -> Any:
    """What zarr opens for ``path``: the local path as a string, or zarr's fsspec store of
    a URL (:mod:`lensdask.storage`), with the path's credentials."""
    from lensdask.storage import is_url, url_or_path

    if not is_url(path):
        return str(path)
    from zarr.storage import FsspecStore

    options = dict(getattr(path, "storage_options", {}) or {})
    return FsspecStore.from_url(url_or_path(path), storage_options=options, read_only=read_only)


def is_checksum_error(err: BaseException) -> bool:
    """Whether ``err`` is zarr's failed checksum of a chunk."""
    return isinstance(err, ValueError) and "checksum" in str(err)


def create_arrays(group: Any, arrays: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Create the arrays of ``group`` named in ``arrays`` all at once.

    One by one, each creation waits on zarr's event loop (~1.3 ms an array: a quarter of
    writing a cutout tile's group); together, they wait once
    (tests/benchmarks/bench_zarr_layout.py).

    Parameters
    ----------
    group : zarr.Group
        Where the arrays go (none of them may exist).
    arrays : mapping of str to mapping
        Name -> keyword arguments of :func:`zarr.create_array` (``shape``, ``dtype``, ...).

    Returns
    -------
    dict of str to zarr.Array
        The new arrays, by name.
    """
    import asyncio

    import zarr
    from zarr.api.asynchronous import create_array
    from zarr.core.sync import sync

    prefix = f"{group.path}/" if group.path else ""

    async def create_all() -> list[Any]:
        return await asyncio.gather(
            *(
                create_array(group.store, name=prefix + name, **options)
                for name, options in arrays.items()
            )
        )

    return {name: zarr.Array(array) for name, array in zip(arrays, sync(create_all()), strict=True)}


EMPTY_CHUNK = 2**64 - 1
"""Offset and length of a chunk absent from a shard, in the shard's index (Zarr v3)."""


def write_array(array: Any, data: np.ndarray) -> None:
    """Write the whole content of the new ``array`` (made with :func:`compressors`).

    Zarr's encoder copies each chunk twice, to append its checksum and to put it into its
    shard: half of a cutout tile's time (tests/benchmarks/bench_zarr_layout.py). An
    uncompressed array of numbers in a local folder is therefore written here, straight
    from ``data``, in the files zarr itself writes (the same bytes: the chunks in order, each
    followed by its CRC-32C, then, in a shard, the index and its CRC-32C), so zarr reads it
    as its own. Any other array (compressed, strings, in another store) is written by zarr.

    Parameters
    ----------
    array : zarr.Array
        Newly created; ``data`` fills all of it.
    data : ndarray
        The values, of the array's shape.
    """
    from zarr.storage import LocalStore

    data = np.asarray(data)
    if data.shape != tuple(array.shape):
        raise ValueError(f"{array.path}: data of shape {data.shape} for shape {array.shape}")
    if not data.size:
        return
    layout = row_layout(array)
    dtype = np.dtype(array.dtype)
    if layout is None or dtype.kind not in "biuf" or not isinstance(array.store, LocalStore):
        array[...] = data
        return
    outer, inner = layout
    data = np.ascontiguousarray(data, dtype=dtype.newbyteorder("<"))
    folder = Path(array.store.root) / array.path
    fill = np.asarray(array.metadata.fill_value, dtype=data.dtype)
    for start in range(0, data.shape[0], outer):
        rows = data[start : start + outer]
        if inner is None:  # a chunk of its own
            parts = _checked_chunk(rows, outer, fill)
        else:
            parts, index, offset = [], np.full((outer // inner, 2), EMPTY_CHUNK, "<u8"), 0
            for k, at in enumerate(range(0, rows.shape[0], inner)):
                chunk = _checked_chunk(rows[at : at + inner], inner, fill)
                size = sum(memoryview(part).nbytes for part in chunk)
                index[k] = offset, size
                offset += size
                parts += chunk
            parts += [index, _crc(index)]
        key = array.metadata.encode_chunk_key((start // outer,) + (0,) * (data.ndim - 1))
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for part in parts:
                handle.write(part)


def row_layout(array: Any) -> tuple[int, int | None] | None:
    """How :func:`write_array` writes ``array`` itself: (rows per file, rows per chunk of a
    shard or None without shards), for an array of chunks (or shards) of whole rows whose
    bytes are the values, little-endian, followed by their CRC-32C; None for any other
    array (zarr writes it)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.bytes import Endian
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    def plain(codecs: tuple[Any, ...]) -> bool:
        return (
            len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and codecs[0].endian in (None, Endian.little)
            and isinstance(codecs[1], Crc32cCodec)
        )

    metadata = array.metadata
    outer = getattr(metadata.chunk_grid, "chunk_shape", None)
    if (
        getattr(metadata, "zarr_format", None) != 3
        or outer is None
        or tuple(outer[1:]) != tuple(array.shape[1:])
        or len(array.shape) == 0
    ):
        return None
    codecs = tuple(metadata.codecs)
    if plain(codecs):
        return outer[0], None
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        shard = codecs[0]
        inner = tuple(shard.chunk_shape)
        if (
            plain(tuple(shard.codecs))
            and plain(tuple(shard.index_codecs))
            and shard.index_location == ShardingCodecIndexLocation.end
            and inner[1:] == tuple(array.shape[1:])
            and outer[0] % inner[0] == 0
        ):
            return outer[0], inner[0]
    return None


def _checked_chunk(rows: np.ndarray, size: int, fill: np.ndarray) -> list[Any]:
    """The encoded chunk of ``rows`` as buffers: the rows, ``fill`` rows up to ``size`` (a
    chunk is stored whole at the array's end, as zarr does), and their CRC-32C."""
    parts: list[Any] = [rows.reshape(-1).view(np.uint8)]
    if rows.shape[0] < size:
        padding = np.empty((size - rows.shape[0], *rows.shape[1:]), dtype=rows.dtype)
        padding[...] = fill
        parts.append(padding.reshape(-1).view(np.uint8))
    return [*parts, _crc(*parts)]


def _crc(*parts: Any) -> bytes:
    """The CRC-32C of the concatenated ``parts``, as the 4 little-endian bytes zarr stores."""
    import google_crc32c

    crc = 0
    for part in parts:
        crc = google_crc32c.extend(crc, np.ascontiguousarray(part).reshape(-1).view(np.uint8))
    return int(crc).to_bytes(4, "little")


class CheckedArray:
    """A Zarr array whose reads turn a failed chunk checksum into :class:`DamagedDataError`
    naming ``where``, after calling ``on_damage(reason)`` (which may take back the
    completion of the unit that wrote it)."""

    def __init__(self, array: Any, where: str, on_damage: Callable[[str], None] | None = None):
        self._array = array
        self._where = where
        self._on_damage = on_damage

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> Any:
        return self._array.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        return self._array.chunks

    @property
    def ndim(self) -> int:
        return self._array.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._array[key]
        except ValueError as err:
            if not is_checksum_error(err):
                raise
            reason = f"{self._where}: damaged chunk at {key!r} ({err})"
            if self._on_damage is not None:
                self._on_damage(reason)
            raise DamagedDataError(reason) from None
