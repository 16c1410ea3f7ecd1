"""The mock survey's catalog as a HATS catalog (``catalog_format: hats``).

The tiles stay the mock survey's work units: each commits ``catalog/<tile>.parquet`` with
its marker, as for ``catalog_format: parquet``. A HEALPix partition gathers the sources of
several tiles (or part of one), so the HATS catalog cannot be written tile by tile; once
every tile is written, hats-import re-partitions the tile files into ``catalog_hats/``
beside them (:func:`lensdask.formats.hats.write_hats`). It is remade only when a tile file
changed, and moved into place whole, so a killed run leaves the previous catalog or none.
Both catalogs hold the same rows: the selection gives the same targets from either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensdask.formats.hats import PIXEL_ROWS, write_hats
from lensdask.formats.parquet import dataset_parts

CATALOG_DIR = "catalog"
HATS_DIR = "catalog_hats"


def write_catalog_hats(
    survey: str | Path, *, client: Any, pixel_rows: int = PIXEL_ROWS, progress: bool = True
) -> Path:
    """Write the per-tile catalog of the mock survey ``survey`` as ``survey/catalog_hats``.

    Parameters
    ----------
    survey : path
        A mock survey folder with ``catalog/<tile>.parquet``.
    client : distributed.Client
        The injected Dask client (hats-import's tasks).
    pixel_rows : int
        Rows per HATS partition at most.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The HATS catalog folder.
    """
    survey = Path(survey)
    out = survey / HATS_DIR
    files = dataset_parts(survey / CATALOG_DIR, what="mock survey catalog")
    write_hats(files, out, client=client, pixel_rows=pixel_rows, progress=progress)
    return out
