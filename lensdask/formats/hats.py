"""HATS catalogs (HEALPix-partitioned Parquet, as LSDB reads them): found, opened and
written.

A HATS catalog is a folder with ``hats.properties`` (or ``properties``), a pixel list
(``partition_info.csv``, ``_metadata``), the schema (``dataset/_common_metadata``) and one
Parquet file per HEALPix pixel: ``dataset/Norder=<o>/Dir=<d>/Npix=<p>.parquet``. LSST (Rubin
DP1) and Euclid Q1 publish their catalogs so, often as a collection (``collection.properties``
beside the main catalog and its margin cache), which is read as its main catalog.

lensdask writes tables as HATS catalogs with hats-import on the injected Dask client
(:func:`write_hats`), made in a staging folder and moved into place whole. The ``hats``
extra brings hats, hats-import and LSDB.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lensdask import __version__
from lensdask.formats.parquet import WRITE_OPTIONS, CatalogError
from lensdask.storage import as_path, is_url
from lensdask.units import config_hash

logger = logging.getLogger(__name__)

PROPERTIES_FILES = ("hats.properties", "properties", "collection.properties")
"""A folder holding one of these is a HATS catalog (or collection)."""
SOURCE_FILE = "_lensdask.json"
"""Written into a HATS catalog lensdask made: the identity of the tables it was made from,
so that it is made again only when they change."""
PIXEL_ROWS = 1_000_000
"""Rows per HATS partition at most, when lensdask writes one (hats-import's default)."""
HIGHEST_ORDER = 7
"""Finest HEALPix order of the partitions lensdask writes (0.21 deg^2 per pixel: ~25,000
KiDS sources, ~800 targets). hats-import's default, 10, makes it align a histogram of 12.6M
pixels, which takes minutes, for partitions no catalog of lensdask needs."""


def is_hats(path: Any) -> bool:
    """Whether ``path`` (a local path or an fsspec URL) is a HATS catalog or collection: a
    folder with its properties file."""
    path = as_path(path)
    return any((path / name).is_file() for name in PROPERTIES_FILES)


def read_hats_catalog(path: Any):
    """Open the HATS catalog at ``path`` (a local path or an fsspec URL; a collection: its
    main catalog) with hats.

    Raises
    ------
    CatalogError
        hats cannot read ``path``, or it is not a partitioned catalog (the message names it).
    ImportError
        hats is not installed (the message names the extra).
    """
    from lensdask.cluster import require

    hats = require("hats", "hats")
    from hats.catalog.catalog_collection import CatalogCollection

    try:
        catalog = hats.read_hats(as_path(path))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CatalogError(f"HATS catalog {path}: cannot read it: {err}") from None
    if isinstance(catalog, CatalogCollection):
        catalog = catalog.main_catalog
    if not hasattr(catalog, "get_healpix_pixels"):
        raise CatalogError(f"HATS catalog {path}: not a partitioned catalog ({type(catalog)})")
    return catalog


def pixel_name(order: int, pixel: int) -> str:
    """A name for HEALPix pixel ``pixel`` at order ``order``: ``Norder<o>_Npix<p>``, unique
    in a catalog (no ``=``, which Hive-partitioning readers would parse)."""
    return f"Norder{order}_Npix{pixel}"


def pixel_files(path: Any) -> tuple[dict[str, Any], Any]:
    """The partition files of the HATS catalog at ``path``, and its schema.

    Returns
    -------
    files : dict
        :func:`pixel_name` -> the pixel's Parquet file (a :class:`pathlib.Path`, or a
        :class:`upath.UPath` for a URL), by increasing order and pixel.
    schema : pyarrow.Schema
        From ``_common_metadata``, or the first partition's footer where it has none.

    Raises
    ------
    CatalogError
        The catalog cannot be read, has no pixel, or keeps a pixel in several files.
    """
    from hats.io.paths import pixel_catalog_file

    catalog = read_hats_catalog(path)
    suffix = catalog.catalog_info.npix_suffix
    if suffix != ".parquet":
        raise CatalogError(
            f"HATS catalog {path}: pixels stored as {suffix!r} (a folder of files per pixel); "
            "lensdask reads one .parquet file per pixel"
        )
    pixels = sorted(catalog.get_healpix_pixels(), key=lambda pixel: (pixel.order, pixel.pixel))
    if not pixels:
        raise CatalogError(f"HATS catalog {path}: has no partitions")
    files = {}
    for pixel in pixels:
        file = pixel_catalog_file(catalog.catalog_base_dir, pixel)
        files[pixel_name(pixel.order, pixel.pixel)] = file if is_url(file) else Path(file.path)
    schema = catalog.schema
    if schema is None:
        import pyarrow.parquet as pq

        schema = pq.read_schema(next(iter(files.values())))
    return files, schema


def write_hats(
    files: dict[Path, str],
    out: str | Path,
    *,
    client: Any,
    ra_column: str = "RAJ2000",
    dec_column: str = "DECJ2000",
    pixel_rows: int = PIXEL_ROWS,
    progress: bool = True,
) -> bool:
    """Write Parquet ``files`` as one HATS catalog ``out``, with hats-import on ``client``.

    The catalog is made under ``<parent>/.<name>.partial`` and moved into place whole, with
    :data:`SOURCE_FILE` recording the identity of ``files``; a catalog already made from the
    same files with the same options is kept as it is. Rows of a partition are sorted by
    their HEALPix index (``_healpix_29``), then by ``ID``, so a remade catalog is the same.

    Parameters
    ----------
    files : dict
        Parquet file -> identity of its content (as :func:`lensdask.formats.parquet.
        dataset_parts` gives them).
    out : path
        The HATS catalog folder to write (local).
    client : distributed.Client
        The injected Dask client hats-import runs on.
    ra_column, dec_column : str
        Right ascension and declination columns, deg.
    pixel_rows : int
        Rows per partition at most: pixels with more are split into their children, down
        to order :data:`HIGHEST_ORDER`.
    progress : bool
        Show hats-import's progress bars.

    Returns
    -------
    bool
        True when the catalog was written, False when it was complete already.

    Raises
    ------
    CatalogError
        ``out`` exists and is not a HATS catalog lensdask made.
    ValueError
        A pixel at order :data:`HIGHEST_ORDER` holds more than ``pixel_rows`` rows
        (hats-import's message).
    """
    from lensdask.cluster import require

    require("hats_import", "hats")
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    if pixel_rows < 1:
        raise ValueError(f"pixel_rows: must be >= 1, got {pixel_rows}")
    out = Path(out)
    source = {
        "files": {str(path): identity for path, identity in files.items()},
        "ra_column": ra_column,
        "dec_column": dec_column,
        "pixel_rows": pixel_rows,
    }
    identity = config_hash(source)
    stamp = out / SOURCE_FILE
    if out.exists():
        if not stamp.is_file():
            raise CatalogError(
                f"{out} exists and is not a HATS catalog lensdask wrote: refusing to write there"
            )
        if json.loads(stamp.read_text()).get("identity") == identity:
            logger.info("hats: %s is complete (made from the same files)", out)
            return False
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # a run killed half-way
    args = ImportArguments(
        input_file_list=[str(path) for path in files],
        file_reader="parquet",
        ra_column=ra_column,
        dec_column=dec_column,
        sort_columns="ID",
        pixel_threshold=pixel_rows,
        highest_healpix_order=HIGHEST_ORDER,
        output_path=str(staging),
        output_artifact_name=out.name,
        tmp_dir=str(staging / "_tmp"),
        resume=False,
        progress_bar=progress,
        simple_progress_bar=True,
        write_table_kwargs=dict(WRITE_OPTIONS),
    )
    pipeline_with_client(args, client)
    made = staging / out.name
    (made / SOURCE_FILE).write_text(
        json.dumps({"identity": identity, "lensdask_version": __version__, **source}, indent=1)
    )
    if out.exists():  # an older catalog of other files: set aside, replaced, then removed
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(made, out)
        shutil.rmtree(old)
    else:
        os.replace(made, out)
    shutil.rmtree(staging)
    logger.info("hats: wrote %s from %d files", out, len(files))
    return True
