"""The image index (``images.parquet``): one row per image file of a survey, saying where
each tile's (or patch's) image of each band is, how to open it, and what part of the sky it
covers.

Written by ``lensdask index-images`` as a Parquet dataset folder (one file per batch of
image files, completion markers under ``_units/`` and the manifest), or by hand or by
:func:`write_image_index` as one Parquet file. Read with :func:`read_image_index` in
either case (a stage's folder through its manifest,
:func:`lensdask.formats.parquet.dataset_parts`).

Columns (:data:`INDEX_COLUMNS`):

``tile`` (str)
    Key of the image's group: the catalog's tile key where the survey has one (KiDS
    ``THELI_NAME``, e.g. ``KIDS_129.0_-0.5``), else the image's own key (its file name
    without the FITS suffixes). All bands of one tile share it.
``band`` (str)
    Photometric band (``r``).
``path`` (str)
    Absolute path of the FITS file.
``hdu`` (int32)
    Index of the HDU holding the 2-D image, in astropy's view of the file (for a
    tile-compressed ``.fits.fz`` file usually 1).
``weight_path``, ``flag_path`` (str, nullable)
    The weight and flag (mask) maps of the image, where there are.
``weight_hdu``, ``flag_hdu`` (int32, nullable)
    Their HDUs; set exactly where the path is.
``compression`` (str)
    ``none``, or the FITS tile compression of the image (``RICE_1``, ``GZIP_1``,
    ``GZIP_2``, ``PLIO_1``, ``HCOMPRESS_1``, ``NOCOMPRESS``; the ``ZCMPTYPE`` of the
    compressed HDU).
``width``, ``height`` (int32, px)
    Image size (``NAXIS1``, ``NAXIS2``).
``pixel_scale`` (float64, arcsec/px)
    Square root of the pixel area at the reference pixel.
``ra_corners``, ``dec_corners`` (list of 4 float64, deg)
    Sky position of the outer corners of the image, in the pixel order (0, 0), (w, 0),
    (w, h), (0, h) (corners of the pixel grid: pixel centres are at 0 .. w-1 in astropy's
    0-based convention, so the corners are at -0.5 and w - 0.5).
``wcs`` (str)
    The celestial WCS as FITS header text (:func:`image_wcs` rebuilds it).
``seeing`` (float64, arcsec, nullable)
    PSF FWHM from a header keyword where the header has one.

``(tile, band)`` is unique: a group has one image per band.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensdask.formats.files import atomic_path
from lensdask.formats.parquet import WRITE_OPTIONS, commit_parquet, dataset_parts, read_file
from lensdask.storage import as_path

INDEX_COLUMNS = (
    "tile",
    "band",
    "path",
    "hdu",
    "weight_path",
    "weight_hdu",
    "flag_path",
    "flag_hdu",
    "compression",
    "width",
    "height",
    "pixel_scale",
    "ra_corners",
    "dec_corners",
    "wcs",
    "seeing",
)
"""Columns of the image index, in order (the module docstring describes each)."""
NULLABLE = frozenset({"weight_path", "weight_hdu", "flag_path", "flag_hdu", "seeing"})
"""Columns that may be null."""
COMPRESSIONS = (
    "none",
    "RICE_1",
    "RICE_ONE",
    "GZIP_1",
    "GZIP_2",
    "PLIO_1",
    "HCOMPRESS_1",
    "NOCOMPRESS",
)
"""Values of ``compression``: ``none`` or a FITS tile-compression algorithm (``ZCMPTYPE``)."""


class ImageIndexError(ValueError):
    """An image index, or what it is built from, is malformed: the message names the file
    and the column (or the template, the image)."""


def index_schema():
    """The pyarrow schema of the image index."""
    import pyarrow as pa

    text, i32, f64 = pa.string(), pa.int32(), pa.float64()
    kinds = {
        "tile": text,
        "band": text,
        "path": text,
        "hdu": i32,
        "weight_path": text,
        "weight_hdu": i32,
        "flag_path": text,
        "flag_hdu": i32,
        "compression": text,
        "width": i32,
        "height": i32,
        "pixel_scale": f64,
        "ra_corners": pa.list_(f64),
        "dec_corners": pa.list_(f64),
        "wcs": text,
        "seeing": f64,
    }
    return pa.schema(
        [pa.field(name, kinds[name], nullable=name in NULLABLE) for name in INDEX_COLUMNS]
    )


def index_table(rows: Iterable[Mapping[str, Any]]):
    """The rows (mappings with the :data:`INDEX_COLUMNS`) as a pyarrow Table of the index's
    schema, sorted by ``tile``, then ``band``, then ``path``."""
    import pyarrow as pa

    rows = sorted(rows, key=lambda row: (row["tile"], row["band"], row["path"]))
    schema = index_schema()
    columns = {name: [row.get(name) for row in rows] for name in INDEX_COLUMNS}
    return pa.table(
        {name: pa.array(columns[name], schema.field(name).type) for name in INDEX_COLUMNS},
        schema=schema,
    )


def validate_index(table: Any, *, source: str | Path, unique: bool = True) -> list[str]:
    """The problems of an image index (empty when there are none).

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame
        The index.
    source : path
        Where it came from, for the messages.
    unique : bool
        Check that ``(tile, band)`` is unique (a part of a dataset is checked without).

    Returns
    -------
    list of str
        One message per problem, each naming ``source``, the column and the rows (by
        their ``path``).
    """
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    missing = [name for name in INDEX_COLUMNS if name not in table.column_names]
    if missing:
        return [f"{source}: missing column(s) {', '.join(missing)}"]
    frame = table.select(list(INDEX_COLUMNS)).to_pandas()
    problems: list[str] = []
    paths = frame["path"].astype(object).where(frame["path"].notna(), "<row without path>")

    def named(mask, *, shown: int = 3) -> str:
        rows = paths[mask].tolist()
        more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
        return ", ".join(map(str, rows[:shown])) + more

    for name in INDEX_COLUMNS:
        if name not in NULLABLE:
            null = frame[name].isna().to_numpy()
            if null.any():
                problems.append(f"{source}: column {name} is empty for {named(null)}")
    for name in ("width", "height"):
        bad = ~(frame[name].fillna(0) > 0).to_numpy()
        if bad.any():
            problems.append(f"{source}: column {name} must be > 0 px for {named(bad)}")
    bad = ~(frame["pixel_scale"].fillna(0) > 0).to_numpy()
    if bad.any():
        problems.append(f"{source}: column pixel_scale must be > 0 arcsec/px for {named(bad)}")
    for name in ("hdu", "weight_hdu", "flag_hdu"):
        bad = (frame[name].fillna(0) < 0).to_numpy()
        if bad.any():
            problems.append(f"{source}: column {name} must be >= 0 for {named(bad)}")
    for kind in ("weight", "flag"):
        path, hdu = frame[f"{kind}_path"].isna(), frame[f"{kind}_hdu"].isna()
        bad = (path != hdu).to_numpy()
        if bad.any():
            problems.append(
                f"{source}: columns {kind}_path and {kind}_hdu must be both set or both "
                f"empty for {named(bad)}"
            )
    bad = ~frame["compression"].isin(COMPRESSIONS).to_numpy()
    if bad.any():
        problems.append(
            f"{source}: column compression must be one of {', '.join(COMPRESSIONS)} for "
            f"{named(bad)}"
        )
    for name in ("ra_corners", "dec_corners"):
        bad = frame[name].map(_not_four_numbers).to_numpy(dtype=bool)
        if bad.any():
            problems.append(
                f"{source}: column {name} must hold 4 finite numbers (deg) for {named(bad)}"
            )
    bad = frame["seeing"].notna().to_numpy() & ~(frame["seeing"].fillna(1) > 0).to_numpy()
    if bad.any():
        problems.append(f"{source}: column seeing must be > 0 arcsec or empty for {named(bad)}")
    repeated = frame.duplicated(["tile", "band"], keep=False).to_numpy()
    if unique and repeated.any():
        groups = frame[repeated].groupby(["tile", "band"], sort=True)["path"].apply(list)
        shown = "; ".join(
            f"tile {tile} band {band}: {', '.join(files)}"
            for (tile, band), files in groups.head(3).items()
        )
        more = f" (and {len(groups) - 3} more)" if len(groups) > 3 else ""
        problems.append(f"{source}: columns tile and band: more than one image of {shown}{more}")
    return problems


def _not_four_numbers(value: Any) -> bool:
    try:
        numbers = [float(item) for item in value]
    except TypeError:
        return True
    return len(numbers) != 4 or not all(math.isfinite(item) for item in numbers)


def check_index(table: Any, *, source: str | Path, unique: bool = True) -> None:
    """Raise :class:`ImageIndexError` listing the problems of an index (:func:`validate_index`)."""
    problems = validate_index(table, source=source, unique=unique)
    if problems:
        raise ImageIndexError("\n".join(problems))


def write_image_index(table: Any, path: str | Path) -> Path:
    """Write a whole index to one Parquet file, atomically, after checking it.

    Parameters
    ----------
    table : pyarrow.Table, pandas.DataFrame or iterable of mappings
        The index rows (:data:`INDEX_COLUMNS`).
    path : path
        The Parquet file to write.

    Raises
    ------
    ImageIndexError
        The index is malformed (the message names the column and the images).
    """
    import pyarrow.parquet as pq

    table = _as_table(table)
    check_index(table, source=path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **WRITE_OPTIONS)
    return Path(path)


def commit_index_part(rows: Iterable[Mapping[str, Any]], out: Path, rel: str) -> tuple[Any, int]:
    """Commit one part of an index dataset, ``out/rel``, through the staging folder (a batch
    of ``lensdask index-images``). The part is checked on its own (a repeated tile and band
    across parts is found by :func:`read_image_index`).

    Returns
    -------
    table : pyarrow.Table
        The part as written.
    size : int, bytes
        The committed file's size.
    """
    table = index_table(rows)
    check_index(table, source=as_path(out) / rel, unique=False)
    return table, commit_parquet(table, as_path(out), rel)


def _as_table(table: Any):
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table.select(list(INDEX_COLUMNS)).cast(index_schema())
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # a DataFrame
        return index_table(table.to_dict("records"))
    return index_table(table)


def read_image_index(path: str | Path):
    """The image index at ``path`` (a Parquet file, or the dataset folder of
    ``lensdask index-images``, read through its manifest), checked, as a pandas DataFrame
    of :data:`INDEX_COLUMNS` sorted by tile and band.

    Raises
    ------
    ImageIndexError
        The index is malformed (the message names the file, the column and the images).
    lensdask.units.StaleOutputError
        ``lensdask index-images`` did not finish its last run into ``path``.
    """
    import pyarrow as pa

    parts = dataset_parts(path, what="image index")
    tables = []
    for part in parts:
        table = read_file(part)
        missing = [name for name in INDEX_COLUMNS if name not in table.column_names]
        if missing:
            raise ImageIndexError(f"{part}: missing column(s) {', '.join(missing)}")
        try:
            tables.append(table.select(list(INDEX_COLUMNS)).cast(index_schema()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ImageIndexError(f"{part}: a column has the wrong type: {err}") from None
    table = pa.concat_tables(tables) if tables else index_schema().empty_table()
    check_index(table, source=path)
    frame = table.to_pandas()
    for name in ("weight_hdu", "flag_hdu"):
        frame[name] = frame[name].astype("Int32")
    return frame.sort_values(["tile", "band"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ImageRef:
    """Where one image of the index is and how to open it (a row of the index)."""

    tile: str
    band: str
    path: Path
    hdu: int
    weight_path: Path | None
    weight_hdu: int | None
    flag_path: Path | None
    flag_hdu: int | None
    compression: str
    width: int
    """px"""
    height: int
    """px"""
    wcs: str
    """The celestial WCS as header text (:func:`image_wcs`)."""


def image_refs(index: Any, tile: str, bands: Iterable[str]) -> dict[str, ImageRef]:
    """The images of one tile (group) in ``bands``, by band; bands without an image are left
    out (the caller decides whether that is an error).

    Parameters
    ----------
    index : pandas.DataFrame
        The index (:func:`read_image_index`).
    tile : str
        The group's key.
    bands : iterable of str
        The bands wanted.
    """
    rows = index[(index["tile"] == tile) & index["band"].isin(list(bands))]
    refs = {}
    for row in rows.itertuples(index=False):
        refs[row.band] = ImageRef(
            tile=row.tile,
            band=row.band,
            path=as_path(row.path),
            hdu=int(row.hdu),
            weight_path=None if _null(row.weight_path) else as_path(row.weight_path),
            weight_hdu=None if _null(row.weight_hdu) else int(row.weight_hdu),
            flag_path=None if _null(row.flag_path) else as_path(row.flag_path),
            flag_hdu=None if _null(row.flag_hdu) else int(row.flag_hdu),
            compression=row.compression,
            width=int(row.width),
            height=int(row.height),
            wcs=row.wcs,
        )
    return refs


def _null(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def image_wcs(text: str, *, width: int | None = None, height: int | None = None):
    """The celestial :class:`astropy.wcs.WCS` of an index row's ``wcs`` header text, with
    its pixel shape where ``width`` and ``height`` (px) are given."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(fits.Header.fromstring(text, sep="\n")).celestial
    if width is not None and height is not None:
        wcs.pixel_shape = (int(width), int(height))
    return wcs


__all__ = [
    "COMPRESSIONS",
    "INDEX_COLUMNS",
    "ImageIndexError",
    "ImageRef",
    "check_index",
    "commit_index_part",
    "image_refs",
    "image_wcs",
    "index_schema",
    "index_table",
    "read_image_index",
    "validate_index",
    "write_image_index",
]
