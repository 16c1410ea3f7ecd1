"""Zarr arrays as lensdask writes and reads them: a CRC-32C checksum on every chunk (zarr
3's ``crc32c`` codec, after compression), and reads that name the file when a chunk fails
its checksum.

The cutout store and the training set are large: their completion markers record sizes,
not content hashes, so corruption of the same size is caught when the damaged chunk is read
(measured cost: tests/benchmarks/bench_checksums.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DamagedDataError(OSError):
    """A chunk of an array does not match its checksum: the data on disk was damaged after it
    was written. The message names the array and the chunk's rows."""


def compressors(level: int = 0) -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of lensdask's Zarr arrays: zstd at ``level`` (none for 0),
    then the chunk's CRC-32C."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return ((ZstdCodec(level=level),) if level else ()) + (Crc32cCodec(),)


def is_checksum_error(err: BaseException) -> bool:
    """Whether ``err`` is zarr's failed checksum of a chunk."""
    return isinstance(err, ValueError) and "checksum" in str(err)


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
