"""Make the cutouts of all targets: one Dask task per tile, committed tile by tile.

Each task reads its tile's targets, opens the tile's FITS images lazily, converts the
targets' RA/Dec to pixels with each image's WCS, slices all stamps in bulk, reading each
image block of rows by block (:mod:`lensdask.cutouts.extract`): each block is memory-mapped
on its own and dropped when done, so the image is never in memory as a whole and the
worker's resident memory does not grow with it (the pages of one memory map of the whole
image would all count in the RSS that Dask's nanny limits). Then it commits the tile's group
of the Zarr store (:mod:`lensdask.formats.cutout_store`) with its completion marker. A target
whose centre falls outside its tile's image is skipped, counted and named (its ID in the
tile's marker, ``extra["outside_ids"]``). An image that cannot be opened or read fails its
tile with an error naming the file, the band and the HDU.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lensdask import __version__
from lensdask.config import CutoutConfig, SimulateConfig
from lensdask.cutouts.extract import (
    centre_inside,
    extract_stamps_by_rows,
    pixel_quality,
    sky_to_pixel,
)
from lensdask.cutouts.placement import PlacementReport
from lensdask.formats.cutout_store import LAYOUT, open_root, write_tile_group
from lensdask.formats.fits_images import ROWS_BLOCK_SIZE
from lensdask.formats.targets import load_tile_targets, tile_sources
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.storage import as_path, is_url, options_of, url_or_path
from lensdask.units import (
    Marker,
    clear_marker,
    commit_folder,
    config_hash,
    file_identity,
    folder_files,
    ids_hash,
    read_marker,
    staging_path,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "cutouts"


def open_image(
    path: str | Path,
    *,
    hdu: int | None,
    band: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    block_size: int = ROWS_BLOCK_SIZE,
):
    """A tile image opened lazily (header only) with its WCS; errors name the file or URL,
    the band (where given) and the HDU. ``hdu`` None takes the first HDU with 2-D data (HDU 1
    of a tile-compressed ``.fz`` file, whose primary HDU is empty).

    ``path`` may be an fsspec URL (``s3://bucket/key.fits``, with ``storage_options``: its
    credentials and endpoint): then only the headers are read now, and :func:`row_reader`
    fetches the byte ranges of the rows it reads, at least ``block_size`` bytes a request
    (:func:`lensdask.formats.fits_images.open_fits`).

    Returns
    -------
    hdul : astropy.io.fits.HDUList
        To close when done.
    image : astropy.io.fits.ImageHDU or PrimaryHDU
        Its ``section`` reads rows on demand.
    wcs : astropy.wcs.WCS
        The celestial WCS.
    hdu : int
        The HDU's index.

    Raises
    ------
    FileNotFoundError
        No image at ``path``.
    ConnectionError
        The store of a URL cannot be reached (another attempt may pass).
    OSError
        Not a readable 2-D FITS image with a celestial WCS.
    """
    from astropy.wcs import WCS

    from lensdask.formats.fits_images import is_network_error, open_fits

    remote = is_url(path)
    if remote and not isinstance(path, str):  # a UPath: its URL and credentials
        storage_options = storage_options or dict(path.storage_options)
        path = url_or_path(path)
    if not remote:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{image_place(path, hdu=hdu, band=band)}: tile image missing")
    where = image_place(path, hdu=hdu, band=band)
    try:
        hdul = open_fits(path, storage_options=storage_options, block_size=block_size)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{where}: tile image missing ({err.strerror})") from None
    except ConnectionError as err:  # it names the URL: say it once, with the band and HDU
        raise ConnectionError(f"{where}: {str(err).removeprefix(f'{path}: ')}") from None
    except (OSError, ValueError, TypeError, EOFError) as err:
        raise OSError(f"{where}: cannot read FITS image: {err}") from None
    try:
        if hdu is None:
            hdu = first_image_hdu(hdul)
            where = image_place(path, hdu=hdu, band=band)
        image = hdul[hdu]
        shape = image.shape
        wcs = WCS(image.header).celestial
    except Exception as err:
        hdul.close()
        if remote and is_network_error(err):
            raise ConnectionError(
                f"{where}: cannot read FITS headers: {type(err).__name__}: {err}"
            ) from None
        if isinstance(err, OSError | ValueError | IndexError | TypeError | KeyError | EOFError):
            raise OSError(f"{where}: cannot read FITS image: {err}") from None
        raise
    if shape is None or len(shape) != 2:
        hdul.close()
        raise OSError(f"{where}: not a 2-D image")
    if not wcs.has_celestial:
        hdul.close()
        raise OSError(f"{where}: no celestial WCS")
    return hdul, image, wcs, hdu


def image_place(path: str | Path, *, hdu: int | None, band: str | None = None) -> str:
    """How errors name an image: ``<path or URL> (band r, HDU 0)``."""
    return f"{path} ({f'band {band}, ' if band else ''}HDU {'auto' if hdu is None else hdu})"


def first_image_hdu(hdul) -> int:
    """The index of the first HDU of ``hdul`` with 2-D data.

    Raises
    ------
    IndexError
        When there is none.
    """
    for index, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS") == 2:
            return index
    raise IndexError("no HDU with 2-D image data")


RAW_BITPIX = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4"}
"""FITS pixel types that can be mapped as they are (when not scaled by BSCALE/BZERO)."""


def row_reader(hdul, index: int, *, band: str | None = None):
    """``read_rows(start, stop)`` of a FITS image HDU: only those rows are read.

    Plain local images are memory-mapped one block of rows at a time (the map is dropped
    with the block, so the worker's resident memory stays bounded); scaled or compressed
    images go through astropy's ``section``, and so do images opened from a URL
    (:func:`open_image`), whose reads fetch the byte ranges of their rows (of a compressed
    image, of their tiles). A read that fails (a file cut short: "mmap length is greater
    than file size") raises an :class:`OSError` naming the file or URL, the band and the
    HDU, and the rows; one whose store cannot be reached, a :class:`ConnectionError`.
    """
    from lensdask.formats.fits_images import is_network_error

    name = hdul.filename()
    remote = is_url(name)
    read = _row_reader(hdul, index, remote=remote)
    where = image_place(name if remote else Path(name), hdu=index, band=band)

    def read_rows(start: int, stop: int) -> np.ndarray:
        try:
            return read(start, stop)
        except Exception as err:
            if remote and is_network_error(err):
                raise ConnectionError(
                    f"{where}: cannot read image rows {start}:{stop}: {type(err).__name__}: {err}"
                ) from None
            if isinstance(err, OSError | ValueError | EOFError | TypeError):
                raise OSError(f"{where}: cannot read image rows {start}:{stop}: {err}") from None
            raise

    return read_rows


KEPT_ROWS = 256
"""Rows of its last read that a URL image's reader keeps (:func:`_keeping_last_rows`): more
than the overlap of two blocks of stamps up to 257 px high."""


def _keeping_last_rows(read, *, keep: int = KEPT_ROWS):
    """``read(start, stop)`` keeping the last ``keep`` rows it returned, so that a read
    starting among them reads only the rows after them. The blocks of rows that
    :func:`lensdask.cutouts.extract.extract_stamps_by_rows` reads overlap by up to a
    stamp's height less one, and from a URL a row read again is fetched again: with this a
    dense tile's bytes are fetched once."""
    kept: np.ndarray | None = None
    kept_start = 0

    def read_rows(start: int, stop: int) -> np.ndarray:
        nonlocal kept, kept_start
        kept_stop = kept_start + (0 if kept is None else len(kept))
        if kept is not None and kept_start <= start < kept_stop < stop:
            rows = np.concatenate([kept[start - kept_start :], read(kept_stop, stop)])
        else:
            rows = read(start, stop)
        kept = rows[-keep:].copy()
        kept_start = stop - len(kept)
        return rows

    return read_rows


def _row_reader(hdul, index: int, *, remote: bool = False):
    from astropy.io import fits

    image = hdul[index]
    if remote:
        return _keeping_last_rows(lambda start, stop: image.section[start:stop, :])
    header = image.header
    dtype = RAW_BITPIX.get(header.get("BITPIX"))
    # astropy's header of a tile-compressed HDU is the decompressed image's: no ZIMAGE in it,
    # and its file bytes are the compressed table, never pixels to map
    plain = (
        dtype is not None
        and not isinstance(image, fits.CompImageHDU)
        and header.get("BSCALE", 1) == 1
        and header.get("BZERO", 0) == 0
    )
    if not plain:
        return lambda start, stop: image.section[start:stop, :]
    path = hdul.filename()
    offset = hdul.fileinfo(index)["datLoc"]
    nx = image.shape[1]
    row_bytes = nx * np.dtype(dtype).itemsize
    return lambda start, stop: np.memmap(
        path, dtype=dtype, mode="r", offset=offset + start * row_bytes, shape=(stop - start, nx)
    )


class ImagePlace(NamedTuple):
    """Where one band's image of a tile is, with its weight and flag maps where it has
    them."""

    path: str
    hdu: int | None
    """None: the first HDU with 2-D data."""
    weight: tuple[str, int | None] | None = None
    """The weight map's path and HDU."""
    flag: tuple[str, int | None] | None = None
    """The flag map's path and HDU."""


ImagePlaces = dict[str, ImagePlace]
"""A tile's image of each band (:class:`ImagePlace`)."""


def tile_images(
    tile: str,
    config: CutoutConfig,
    *,
    images: Path | None,
    index: Any | None,
    storage_options: Mapping[str, Any] | None = None,
) -> ImagePlaces:
    """Where each band's image of ``tile`` is: from the image index where there is one
    (:mod:`lensdask.formats.image_index`), else ``config.image_pattern`` in the ``images``
    folder. A band the index lacks gets the path it would have in the folder (or a name
    saying it is not indexed), which then fails as a missing image, naming it. The weight
    and flag maps come from the index only. Images on URLs carry ``storage_options``
    (their paths are :class:`upath.UPath`, :mod:`lensdask.storage`)."""

    def located(path: Any) -> Any:
        return as_path(str(path), storage_options=storage_options) if is_url(path) else str(path)

    places: ImagePlaces = {}
    refs = {}
    if index is not None:
        from lensdask.formats.image_index import image_refs

        refs = image_refs(index, tile, config.bands)
    for band in config.bands:
        if band in refs:
            ref = refs[band]
            places[band] = ImagePlace(
                located(ref.path),
                ref.hdu,
                weight=None
                if ref.weight_path is None
                else (located(ref.weight_path), ref.weight_hdu),
                flag=None if ref.flag_path is None else (located(ref.flag_path), ref.flag_hdu),
            )
        elif images is not None and index is None:
            places[band] = ImagePlace(
                located(images / config.image_pattern.format(tile=tile, band=band)), config.hdu
            )
        else:
            places[band] = ImagePlace(f"<no {band} image of {tile} in the image index>", config.hdu)
    return places


def source_key(path: Path, root: Path) -> str:
    """How a tile's lineage names one of its targets files: by its path under the targets
    folder (or the placement folder, whose units each hold a file per group), else by
    name."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def image_states(places: ImagePlaces) -> dict[str, str]:
    """The identity of each of a tile's images and of their weight and flag maps (a hash of
    its path, size and modification time; ``missing`` where there is none yet), for the
    tile's lineage."""
    states = {}
    for band, place in places.items():
        files = {"": place.path, "_weight": place.weight and place.weight[0]}
        files["_flag"] = place.flag and place.flag[0]
        for suffix, path in files.items():
            if path is not None:
                states[f"images/{band}{suffix}"] = (
                    file_identity(as_path(path)) if as_path(path).exists() else "missing"
                )
    return states


def map_stamps(
    place: tuple[str, int | None] | None,
    image: Any,
    wcs: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int,
    image_where: str,
    what: str,
) -> np.ndarray | None:
    """The stamps of a weight or flag map at the image's stamp positions, read by rows
    like the image; None without a map.

    Raises
    ------
    OSError
        The map cannot be read, or its shape or pixel grid (WCS) differs from the image's
        (the message names both files).
    """
    if place is None:
        return None
    path, hdu = place
    hdul, grid, map_wcs, hdu = open_image(path, hdu=hdu, band=what)
    try:
        where = image_place(path, hdu=hdu, band=what)
        if tuple(grid.shape) != tuple(image.shape):
            raise OSError(
                f"{where}: shape {tuple(grid.shape)} differs from its image "
                f"{image_where}, shape {tuple(image.shape)}"
            )
        if not same_pixel_grid(wcs, map_wcs, image.shape):
            raise OSError(f"{where}: its WCS puts pixels elsewhere than its image {image_where}")
        return extract_stamps_by_rows(
            row_reader(hdul, hdu, band=what), grid.shape, x, y, size=size
        ).data
    finally:
        hdul.close()


def same_pixel_grid(wcs, other, shape: tuple[int, int], *, tolerance: float = 0.01) -> bool:
    """Whether two WCSs put the corners and the centre of an image of ``shape`` (ny, nx)
    at the same sky positions, to ``tolerance`` pixels."""
    ny, nx = shape
    px = np.array([0.0, nx - 1.0, 0.0, nx - 1.0, (nx - 1) / 2.0])
    py = np.array([0.0, 0.0, ny - 1.0, ny - 1.0, (ny - 1) / 2.0])
    try:
        lon, lat = wcs.all_pix2world(px, py, 0)
        qx, qy = other.all_world2pix(lon, lat, 0)
    except Exception:  # a WCS that cannot map the other's positions
        return False
    return bool(np.all(np.hypot(qx - px, qy - py) <= tolerance))


def cutout_tile(
    work: tuple[list[Path], ImagePlaces] | tuple[list[Path], ImagePlaces, list[Path]],
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    config: CutoutConfig,
) -> dict[str, int]:
    """Cut the targets of tile ``unit`` (read from the targets files of ``work``) from its
    images (the places of ``work``, :func:`tile_images`) and commit its group of the store.

    The tile's PSF in each band is recorded in the group's attributes
    (:mod:`lensdask.cutouts.psf`): from ``config.psf_keyword`` of each image, else measured
    on the stars of the catalog files that ``work`` lists third (none: not recorded).

    Returns
    -------
    dict
        ``cutouts`` written, ``outside`` (targets whose centre is off the image) and
        ``edge`` (cutouts crossing the image border).
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    tile = unit
    sources, places = work[0], work[1]
    catalog_files = work[2] if len(work) > 2 else []
    clear_marker(out, tile)
    targets = load_tile_targets(tile, sources)
    opened = {}
    try:
        for band in config.bands:
            opened[band] = open_image(places[band].path, hdu=places[band].hdu, band=band)
    except BaseException:
        for hdul, _, _, _ in opened.values():
            hdul.close()
        raise
    try:
        ra = targets["RAJ2000"].to_numpy()
        dec = targets["DECJ2000"].to_numpy()
        _, first_image, first_wcs, _ = opened[config.bands[0]]
        x, y = sky_to_pixel(ra, dec, first_wcs)
        inside = centre_inside(x, y, first_image.shape, size=config.size)
        keep = np.flatnonzero(inside)
        stamps, quality, maps = {}, {}, {}
        for band, (hdul, image, wcs, hdu) in opened.items():
            bx, by = (x, y) if band == config.bands[0] else sky_to_pixel(ra, dec, wcs)
            stamps[band] = extract_stamps_by_rows(
                row_reader(hdul, hdu, band=band),
                image.shape,
                bx[keep],
                by[keep],
                size=config.size,
            )
            where = image_place(hdul.filename(), hdu=hdu, band=band)
            weight, flag = (
                map_stamps(
                    places[band].weight,
                    image,
                    wcs,
                    bx[keep],
                    by[keep],
                    size=config.size,
                    image_where=where,
                    what=f"{band} weight map",
                ),
                map_stamps(
                    places[band].flag,
                    image,
                    wcs,
                    bx[keep],
                    by[keep],
                    size=config.size,
                    image_where=where,
                    what=f"{band} flag map",
                )
                if config.flag_bits
                else None,
            )
            quality[band] = pixel_quality(
                stamps[band].data, weight=weight, flag=flag, flag_bits=config.flag_bits
            )
            if config.keep_maps:
                if weight is not None:
                    maps[f"{band}_weight"] = weight
                if flag is not None:
                    maps[f"{band}_flag"] = flag
        attrs = {
            "tile": tile,
            "bands": list(config.bands),
            "size": config.size,
            "pixel_scale": {
                band: float(np.mean(proj_plane_pixel_scales(wcs)) * 3600)
                for band, (_, _, wcs, _) in opened.items()
            },
            "wcs": {band: dict(wcs.to_header()) for band, (_, _, wcs, _) in opened.items()},
            "images": {band: str(hdul.filename()) for band, (hdul, _, _, _) in opened.items()},
            "weight_maps": {band: places[band].weight[0] for band in opened if places[band].weight},
            "flag_maps": {band: places[band].flag[0] for band in opened if places[band].flag},
            "flag_bits": config.flag_bits,
            "targets": [str(path) for path in sources],
            "n_outside": int((~inside).sum()),
            **tile_psf_attrs(opened, places, catalog_files, tile=tile, config=config),
            "lensdask_version": __version__,
            "config_hash": chash,
        }
    finally:
        for hdul, _, _, _ in opened.values():
            hdul.close()
    all_ids = targets["ID"].to_numpy(zero_copy_only=False)
    ids = all_ids[keep]
    outside_ids = [str(name) for name in all_ids[~inside]]
    if outside_ids:
        logger.warning(
            "cutouts: %s: %d target(s) outside the tile's image, skipped: %s%s",
            tile,
            len(outside_ids),
            ", ".join(outside_ids[:5]),
            f" and {len(outside_ids) - 5} more" if len(outside_ids) > 5 else "",
        )
    columns = {
        "ID": ids.astype(str),
        "sample": targets["sample"].to_numpy(zero_copy_only=False)[keep].astype(str),
        "RAJ2000": ra[keep],
        "DECJ2000": dec[keep],
        "x": x[keep],
        "y": y[keep],
        "edge": np.any([s.edge for s in stamps.values()], axis=0)
        if keep.size
        else np.zeros(0, dtype=bool),
        "nonfinite_fraction": np.stack([s.nonfinite_fraction for s in stamps.values()], axis=1)
        if keep.size
        else np.zeros((0, len(stamps)), dtype=np.float32),
        **{
            name: np.stack([getattr(q, name) for q in quality.values()], axis=1)
            if keep.size
            else np.zeros((0, len(quality)), dtype=np.float32)
            for name in ("zero_weight_fraction", "flagged_fraction", "bad_fraction")
        },
    }
    staged = staging_path(out, tile)
    write_tile_group(
        staged,
        {**{band: s.data for band, s in stamps.items()}, **maps},
        columns,
        attrs=attrs,
        chunk=config.chunk,
        compression_level=config.compression_level,
        shard=config.shard,
    )
    final = out / tile
    commit_folder(staged, final)
    files = folder_files(out, final)
    counts = {
        "cutouts": int(keep.size),
        "outside": attrs["n_outside"],
        "edge": int(columns["edge"].sum()),
        **bad_counts(columns["bad_fraction"]),
    }
    write_marker(
        out,
        Marker(
            unit=tile,
            rows=int(keep.size),
            ids_hash=ids_hash(ids.tolist()),
            config_hash=chash,
            inputs=lineage,
            files=files,
            extra={**counts, "outside_ids": outside_ids},
        ),
    )
    return counts


def tile_psf_attrs(
    opened: dict[str, Any],
    places: ImagePlaces,
    catalog_files: list[Path],
    *,
    tile: str,
    config: CutoutConfig,
) -> dict[str, Any]:
    """The ``psf`` and ``seeing`` attributes of a tile (:mod:`lensdask.cutouts.psf`) from
    its open images (:func:`open_image` by band): each image's ``config.psf_keyword``, else
    measured on the stars of ``catalog_files``; empty when neither applies."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    from lensdask.cutouts.psf import PSF_FLAG_BITS, band_psf, psf_attrs, read_tile_sources
    from lensdask.images.psf import psf_from_header

    if config.psf_keyword is not None:
        estimates = {
            band: psf_from_header(
                image.header,
                config.psf_keyword,
                where=image_place(hdul.filename(), hdu=hdu, band=band),
            )
            for band, (hdul, image, _, hdu) in opened.items()
        }
        return psf_attrs(estimates)
    if not (config.measure_psf and catalog_files):
        return {}
    sources = read_tile_sources(catalog_files, tile)
    ra, dec = sources["RAJ2000"].to_numpy(), sources["DECJ2000"].to_numpy()
    star = sources["star"].to_numpy()
    estimates = {}
    for band, (hdul, image, wcs, hdu) in opened.items():
        x, y = sky_to_pixel(ra, dec, wcs)
        flag = places[band].flag if config.flag_bits & PSF_FLAG_BITS else None
        flag_hdul = None
        try:
            read_flag = None
            if flag is not None:
                flag_hdul, _, _, flag_hdu = open_image(flag[0], hdu=flag[1], band=f"{band} flag")
                read_flag = row_reader(flag_hdul, flag_hdu, band=f"{band} flag")
            estimates[band] = band_psf(
                row_reader(hdul, hdu, band=band),
                image.shape,
                x=x,
                y=y,
                star=star,
                pixel_scale=float(np.mean(proj_plane_pixel_scales(wcs)) * 3600),
                read_flag_rows=read_flag,
                flag_bits=config.flag_bits & PSF_FLAG_BITS,
            )
        finally:
            if flag_hdul is not None:
                flag_hdul.close()
        if estimates[band].reason:
            logger.warning(
                "cutouts: %s %s: no PSF measured: %s", tile, band, estimates[band].reason
            )
    return psf_attrs(estimates)


COUNTS = ("cutouts", "outside", "edge", "bad", "mostly_bad")
"""What each tile's unit counts (:func:`cutout_tile`, :func:`bad_counts`)."""


def bad_counts(bad_fraction: np.ndarray) -> dict[str, int]:
    """Cutouts with a bad pixel (non-finite, zero-weight or flagged) in any band (``bad``),
    and with more than :attr:`lensdask.config.SimulateConfig.max_bad_fraction` of them by
    default (``mostly_bad``: left out of the training set).

    Parameters
    ----------
    bad_fraction : ndarray, shape (N, bands)
        The store's ``bad_fraction`` of each cutout and band.
    """
    worst = bad_fraction.max(axis=1) if bad_fraction.size else np.zeros(0)
    return {
        "bad": int((worst > 0).sum()),
        "mostly_bad": int((worst > SimulateConfig.max_bad_fraction).sum()),
    }


@dataclass(frozen=True)
class CutoutReport(UnitCounts):
    """Outcome of :func:`make_cutouts`."""

    out: Path
    tiles: int
    counts: dict[str, int]
    """Totals of :data:`COUNTS` over the tiles written now."""
    units: UnitReport
    placement: PlacementReport | None = None
    """Where the targets were placed by position or their tile key checked (with an image
    index)."""
    outside_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """IDs of the targets outside their tile's image, by tile, of the tiles written now."""


def make_cutouts(
    targets: str | Path,
    images: str | Path | None,
    out: str | Path,
    *,
    config: CutoutConfig | None = None,
    client: Any,
    index: str | Path | None = None,
    catalog: str | Path | None = None,
    progress: bool = True,
) -> CutoutReport:
    """Cut every target out of its tile's images into the Zarr store ``out``.

    Parameters
    ----------
    targets : path
        Targets (Parquet file or dataset) with ``ID``, ``RAJ2000``, ``DECJ2000``,
        ``THELI_NAME`` and ``sample``.
    images : path or None
        Folder of tile images named by ``config.image_pattern`` (None with ``index``).
    out : path
        The cutout store (``cutouts.zarr``), created if needed.
    config : CutoutConfig, optional
        Bands, size, chunking.
    client : distributed.Client
        The injected Dask client: one task per tile.
    index : path, optional
        An image index (``lensdask index-images``): each tile's images (paths, HDUs) come
        from it instead of ``images`` and ``config.image_pattern``.
    catalog : path, optional
        The catalog the targets were selected from (Parquet file or folder): each tile's
        PSF is measured on its stars (``config.measure_psf``). Without it and without
        ``config.psf_keyword`` no PSF is recorded.
    progress : bool
        Show a progress bar over tiles.
    """
    config = config or CutoutConfig()
    index_path = index
    if index is not None:
        from lensdask.formats.image_index import read_image_index

        index = read_image_index(index)
        images = None
    elif images is None or not as_path(images).is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    else:
        images = as_path(images)
    out = as_path(out)
    placement = None
    source_root = as_path(targets)
    options = options_of(images, index_path, out, source_root)
    if index is not None:
        from lensdask.cutouts.placement import place_targets

        placement = place_targets(
            targets, index_path, out, band=config.bands[0], client=client, progress=progress
        )
        if not placement.keyed:
            source_root = placement.folder
    parts = tile_sources(source_root)
    stars = {}  # the catalog files each tile's PSF is measured from, with their identity
    if catalog is not None and config.psf_keyword is None and config.measure_psf:
        from lensdask.cutouts.psf import tile_catalog_files
        from lensdask.formats.parquet import dataset_parts

        catalog_parts = dataset_parts(catalog)
        stars = {
            tile: {
                file: catalog_parts[file] for file in tile_catalog_files(list(catalog_parts), tile)
            }
            for tile in parts
        }
    work = {
        tile: (
            list(files),
            tile_images(tile, config, images=images, index=index, storage_options=options),
            list(stars.get(tile, {})),
        )
        for tile, files in parts.items()
    }
    chash = config_hash({"cutouts": dataclasses.asdict(config), "layout": LAYOUT})
    # a tile is redone when a unit of the targets holding it, or one of its images, changed
    lineage = {
        tile: {
            **{
                f"targets/{source_key(path, source_root)}": identity
                for path, identity in files.items()
            },
            **image_states(work[tile][1]),
            **{f"catalog/{file.name}": identity for file, identity in stars.get(tile, {}).items()},
        }
        for tile, files in parts.items()
    }
    open_root(
        out,
        attrs={"lensdask_version": __version__, "bands": list(config.bands), "size": config.size},
    )
    report = run_stage(
        client,
        cutout_tile,
        out,
        work,
        chash=chash,
        lineage=lineage,
        stage=STAGE,
        progress=progress,
        config=config,
    )
    counts = {key: sum(result[key] for result in report.results.values()) for key in COUNTS}
    outside_ids = {}
    for tile in sorted(report.results):
        marker = read_marker(out, tile)
        named = list(marker.extra.get("outside_ids", [])) if marker is not None else []
        if named:
            outside_ids[tile] = named
    logger.info(
        "cutouts: %d tiles written, %d skipped (complete), %d failed; %d cutouts written "
        "(%d crossing an image border, %d with bad pixels); %d targets outside their tile",
        len(report.results),
        len(report.skipped),
        len(report.failures),
        counts["cutouts"],
        counts["edge"],
        counts["bad"],
        counts["outside"],
    )
    return CutoutReport(
        out=out,
        tiles=len(work),
        counts=counts,
        units=report,
        outside_ids=outside_ids,
        placement=placement,
    )


def run(config: CutoutConfig, io: StageIO, *, client: Any, progress: bool = True) -> StageOutcome:
    """The ``cutouts`` stage: :func:`make_cutouts` of the ``targets`` from the images the
    ``image_index`` names where there is one, else from the ``images`` folder; each tile's
    PSF measured on the stars of the ``catalog`` where there is one."""
    index = io.optional("image_index")
    report = make_cutouts(
        io.need("targets"),
        None if index is not None else io.need("images"),
        io.out("cutouts"),
        config=config,
        client=client,
        index=index,
        catalog=io.optional("catalog"),
        progress=progress,
    )
    counts = report.counts
    lines = [
        f"cutouts: {report.written} tiles written, {report.skipped} already complete, "
        f"{len(report.units.failures)} failed; {counts['cutouts']} cutouts "
        f"({counts['edge']} at an image border; {counts['bad']} with bad pixels, "
        f"{counts['mostly_bad']} of them over {SimulateConfig.max_bad_fraction:.0%}), "
        f"{counts['outside']} targets outside their tile -> {report.out}"
    ]
    if report.placement is not None:
        lines.insert(0, f"cutouts: {report.placement.line()}")
    if report.outside_ids:
        lines.append(f"cutouts: {outside_line(report.outside_ids)}")
    return StageOutcome(
        reports=[r.units for r in (report.placement, report) if r is not None],
        outputs={"cutouts": report.out},
        counts={"cutouts written now": counts["cutouts"]},
        lines=lines,
    )


def outside_line(outside_ids: dict[str, list[str]], *, shown: int = 5) -> str:
    """``7 targets outside their tile: ID1 (tile), ID2 (tile) ... and 2 more, ...``: the
    first targets outside their tile's image, by name, and where all are listed."""
    named = [(tile, name) for tile, names in outside_ids.items() for name in names]
    first = ", ".join(f"{name} ({tile})" for tile, name in named[:shown])
    more = f" and {len(named) - shown} more" if len(named) > shown else ""
    return (
        f"{len(named)} targets outside their tile: {first}{more}; all are listed in "
        "<cutouts>/_units/<tile>.json (extra.outside_ids)"
    )
