"""The training set (``trainset.zarr``): mock lenses and real negatives, split three ways.

Layout::

    zarr.json                        root attributes: configuration, plan hash, composition,
                                     normalisation, band, pixel scale, source cutout store
    <split>/images                   (N, size, size) float32 in [0, 255] (``normalise_stamps``);
                                     (N, size, size, B) for B > 1 bands (``bands`` attribute,
                                     in channel order; ``normalise_bands``)
    <split>/label                    (N,) int8: 1 mock lens, 0 real negative
    <split>/kind                     (N,) str: ``lens`` or the negative's kind (LRG, BG, spiral...)
    <split>/source_id, source_tile   (N,) str: the real cutout each example is made from
    <split>/params/<name>            (N,) float64: every mock-lens parameter (NaN for negatives),
                                     the magnification and the arc scale (provenance)
    <split>/hosts/<name>             (N,) float64: the ``seeing``, ``host_mag``, ``host_size``
                                     and ``neighbours`` of every example, lens or negative
                                     (NaN where unknown; absent in older training sets)
    _units/<split>-<batch>.json      completion markers

``split`` is ``train``, ``val`` or ``test``. Every array of a split is chunked by the
simulation batch, so that each batch writes exactly one chunk of every array (and so is a
unit of its own) and a reader can stream the images one chunk at a time (:class:`ChunkReader`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.formats.zarrs import CheckedArray, compressors, zarr_store
from lensdask.storage import as_path, remove
from lensdask.units import read_manifest

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TEXT_COLUMNS = ("kind", "source_id", "source_tile")
"""Per-example string arrays of a split."""


def prepare_trainset(
    out: Path,
    *,
    attrs: Mapping[str, Any],
    split_sizes: Mapping[str, int],
    chunk: int,
    size: int,
    parameters: list[str],
    hosts: list[str] = (),
    bands: int = 1,
) -> None:
    """Create the (empty) arrays of a training set, or keep them if the plan is the same.

    A store made from another plan or configuration (``attrs["plan_hash"]`` and
    ``attrs["config"]``) is removed first, so that no batch of an old plan survives under a
    new one.

    Parameters
    ----------
    out : path
        The training set.
    attrs : mapping
        Root attributes (JSON types), with ``plan_hash`` and ``config``.
    split_sizes : mapping of str to int
        Examples per split.
    chunk : int
        Examples per chunk (the simulation batch).
    size : int, pixels
        Side of the images.
    parameters : list of str
        Names of the ``params/`` arrays.
    hosts : list of str
        Names of the ``hosts/`` arrays (quantities of every example, NaN where unknown).
    bands : int
        Channels of the images: 1 keeps them (N, size, size), more adds a last axis.

    Raises
    ------
    FileExistsError
        If ``out`` exists and is not a Zarr group.
    """
    import zarr

    out = as_path(out)
    if out.exists():
        try:
            old = read_attrs(out)
        except (FileNotFoundError, ValueError):  # not a Zarr group: never a training set
            raise FileExistsError(
                f"{out}: exists and is not a training set; not touching it"
            ) from None
        if old.get("plan_hash") == attrs["plan_hash"] and old.get("config") == attrs["config"]:
            return
        logger.warning("simulate: %s was made from another plan or configuration: remade", out)
        remove(out)
    root = zarr.open_group(zarr_store(out), mode="w-", attributes=dict(attrs))
    for split in SPLITS:
        n = int(split_sizes.get(split, 0))
        group = root.create_group(split)
        channels = (bands,) if bands > 1 else ()
        group.create_array(
            "images",
            shape=(n, size, size, *channels),
            dtype="float32",
            chunks=(chunk, size, size, *channels),
            compressors=compressors(),
            dimension_names=("example", "y", "x", "band")[: 3 + len(channels)],
        )
        group.create_array(
            "label",
            shape=(n,),
            dtype="int8",
            chunks=(chunk,),
            fill_value=-1,
            compressors=compressors(),
        )
        for name in TEXT_COLUMNS:
            group.create_array(
                name, shape=(n,), dtype=str, chunks=(chunk,), compressors=compressors()
            )
        for kind, names in (("params", parameters), ("hosts", list(hosts))):
            columns = group.create_group(kind, attributes={"columns": names})
            for name in names:
                columns.create_array(
                    name, shape=(n,), dtype="float64", chunks=(chunk,), compressors=compressors()
                )


def write_batch_arrays(
    out: Path, split: str, *, index: int, start: int, arrays: Mapping[str, np.ndarray]
) -> dict[str, int]:
    """Write one batch into its chunk of every array of ``split``.

    Parameters
    ----------
    out : path
        The training set (made by :func:`prepare_trainset`).
    split : str
    index : int
        The batch's number in its split: the chunk it fills.
    start : int
        Its first example.
    arrays : mapping of str to ndarray
        ``images``, ``label``, :data:`TEXT_COLUMNS` and ``params/<name>`` values of the
        batch's examples.

    Returns
    -------
    dict of str to int
        The chunk files written (relative to ``out``) and their sizes in bytes, for the
        batch's completion marker.
    """
    import zarr

    group = zarr.open_group(zarr_store(as_path(out) / split), mode="r+")
    files = {}
    # Every chunk becomes a file, even one of fill values only, so the marker can list it.
    with zarr.config.set({"array.write_empty_chunks": True}):
        for name, values in arrays.items():
            array = group[name]
            array[start : start + len(values)] = values
            rel = f"{split}/{array.path}/c/{index}" + "/0" * (array.ndim - 1)
            files[rel] = (as_path(out) / rel).stat().st_size
    return files


def check_trainset(path: str | Path) -> None:
    """Raise FileNotFoundError unless ``path`` holds the images of every split, and
    :class:`lensdask.units.StaleOutputError` unless its last simulation finished."""
    for split in SPLITS:
        if not (as_path(path) / split / "images" / "zarr.json").is_file():
            raise FileNotFoundError(f"{path}: not a training set (no {split} split)")
    read_manifest(as_path(path))


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of a training set (``size``, ``band``, ``normalisation``,
    ``plan_hash``, ...)."""
    import zarr

    return dict(zarr.open_group(zarr_store(as_path(path), read_only=True), mode="r").attrs)


def read_table(path: str | Path, split: str):
    """The per-example table of a split (labels, kinds, sources, parameters) as a DataFrame."""
    import pandas as pd
    import zarr

    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    group = zarr.open_group(zarr_store(as_path(path) / split, read_only=True), mode="r")
    table = {
        "label": group["label"][:],
        **{name: group[name][:].astype(object) for name in TEXT_COLUMNS},
    }
    params = group["params"]
    for name in params.attrs["columns"]:
        table[name] = params[name][:]
    return pd.DataFrame(table)


def read_hosts(path: str | Path, split: str):
    """The ``hosts/`` quantities of every example of a split as a DataFrame (no columns
    for a training set made before they were recorded)."""
    import pandas as pd
    import zarr

    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    group = zarr.open_group(zarr_store(as_path(path) / split, read_only=True), mode="r")
    if "hosts" not in group:
        return pd.DataFrame(index=pd.RangeIndex(group["label"].shape[0]))
    hosts = group["hosts"]
    return pd.DataFrame({name: hosts[name][:] for name in hosts.attrs["columns"]})


class ChunkReader:
    """Reads examples of one split by index, one Zarr chunk at a time (two kept)."""

    def __init__(self, trainset: str | Path, split: str, *, cache: int = 2) -> None:
        import zarr

        group = zarr.open_group(zarr_store(as_path(trainset) / split, read_only=True), mode="r")
        # a damaged chunk names itself; the batch's marker has its SHA-256, so the next
        # simulation remakes it
        self.images = CheckedArray(group["images"], f"{as_path(trainset) / split / 'images'}")
        self.labels = group["label"][:].astype(np.float32)
        self.chunk = int(group["images"].chunks[0])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._size = cache

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _chunk(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
        else:
            self._cache[k] = self.images[k * self.chunk : (k + 1) * self.chunk]
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return self._cache[k]

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(n, H, W)`` (``(n, H, W, B)`` of several bands) and labels ``(n,)`` of
        examples ``index`` (in that order)."""
        images = np.empty((index.size, *self.images.shape[1:]), dtype=np.float32)
        chunks = index // self.chunk
        for k in np.unique(chunks):
            sel = chunks == k
            images[sel] = self._chunk(int(k))[index[sel] - k * self.chunk]
        return images, self.labels[index]
