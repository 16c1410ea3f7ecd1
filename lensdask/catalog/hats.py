"""The selection's units of a HATS catalog, and the targets written as one.

The catalog's pixel list defines the selection's units (one unit per HEALPix pixel, named
``Norder<o>_Npix<p>``), rather than LSDB's partition mapping committing each partition. The
pixel list is what LSDB itself maps its partitions from, so both give the same partitions;
as units of lensdask's runner every pixel gets lensdask's own completion marker, lineage
(the identity of its partition file) and manifest unchanged, resumes on its own, fails on
its own with its name in the failures table, and is read by the same reader as a per-tile
catalog file, with the column projection and the row-group pruning by the BG cuts that
LSDB would push down to the same Parquet files. LSDB's mapping would put a second task
graph between lensdask and the files, whose partitions lensdask could not skip one by one
on a rerun. The file format is :mod:`lensdask.formats.hats`.

The targets, written as a HATS catalog (:func:`write_targets_hats`, ``lensdask
targets-to-hats``), are opened by ``lsdb.open_catalog`` and cross-matched with other HATS
catalogs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensdask.catalog.schema import check_columns
from lensdask.formats.hats import PIXEL_ROWS, pixel_files, write_hats
from lensdask.formats.parquet import dataset_parts
from lensdask.units import file_identity


def hats_units(path: Any, *, columns: list[str]) -> dict[str, tuple[Any, str]]:
    """The selection's units of a HATS catalog: one per pixel of its pixel list.

    The catalog's schema is checked once, before any unit starts.

    Parameters
    ----------
    path : path or URL
        A HATS catalog (or collection), local or an fsspec URL.
    columns : list of str
        Columns the selection reads (names in the catalog).

    Returns
    -------
    dict
        Unit name (:func:`lensdask.formats.hats.pixel_name`) -> (the pixel's Parquet file,
        the identity of its content: :func:`lensdask.units.file_identity`), by increasing
        order and pixel.

    Raises
    ------
    SchemaError
        The catalog lacks one of ``columns`` (the message names it and the catalog).
    CatalogError
        The catalog cannot be read or has no pixel.
    """
    files, schema = pixel_files(path)
    check_columns(schema.names, columns, source=f"HATS catalog {path}")
    return {unit: (file, file_identity(file)) for unit, file in files.items()}


def write_targets_hats(
    targets: str | Path,
    out: str | Path,
    *,
    client: Any,
    pixel_rows: int = PIXEL_ROWS,
    progress: bool = True,
) -> bool:
    """Write the targets dataset ``targets`` (the selection's output) as a HATS catalog.

    LSDB opens it (``lsdb.open_catalog(out)``) and cross-matches it with other HATS
    catalogs; positions are ``RAJ2000``/``DECJ2000``. The targets are read from their
    manifest (the units of the selection's last finished run).

    Parameters
    ----------
    targets : path
        A targets dataset (``targets.parquet``).
    out : path
        The HATS catalog folder to write.
    client : distributed.Client
        The injected Dask client.
    pixel_rows : int
        Rows per partition at most.
    progress : bool
        Show progress bars.

    Returns
    -------
    bool
        True when written, False when complete already (see :func:`write_hats`).
    """
    return write_hats(
        dataset_parts(targets, what="targets"),
        out,
        client=client,
        pixel_rows=pixel_rows,
        progress=progress,
    )
