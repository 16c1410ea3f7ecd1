"""Make the cutouts of all targets: one Dask task per tile, committed tile by tile.

Each task reads its tile's targets, opens the tile's FITS images lazily, converts the
targets' RA/Dec to pixels with each image's WCS, slices all stamps in bulk, reading each
image block of rows by block (:mod:`lensdask.cutouts.extract`): each block is memory-mapped
on its own and dropped when done, so the image is never in memory as a whole and the
worker's resident memory does not grow with it (the pages of one memory map of the whole
image would all count in the RSS that Dask's nanny limits). Then it commits the tile's group
of the Zarr store (:mod:`lensdask.formats.cutout_store`) with its completion marker. A target
whose centre falls outside its tile's image is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask import __version__
from lensdask.config import CutoutConfig
from lensdask.cutouts.extract import centre_inside, extract_stamps_by_rows, sky_to_pixel
from lensdask.formats.cutout_store import open_root, write_tile_group
from lensdask.formats.targets import load_tile_targets, tile_sources
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import (
    Marker,
    clear_marker,
    commit_folder,
    config_hash,
    file_identity,
    folder_files,
    ids_hash,
    staging_path,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "cutouts"


def open_image(path: Path, *, hdu: int):
    """A tile image opened lazily (header only) with its WCS; errors name the file.

    Returns
    -------
    hdul : astropy.io.fits.HDUList
        To close when done.
    image : astropy.io.fits.ImageHDU or PrimaryHDU
        Its ``section`` reads rows on demand.
    wcs : astropy.wcs.WCS
        The celestial WCS.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    if not path.exists():
        raise FileNotFoundError(f"{path}: tile image missing")
    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
        image = hdul[hdu]
        shape = image.shape
        wcs = WCS(image.header).celestial
    except (OSError, ValueError, IndexError, TypeError, KeyError) as err:
        raise OSError(f"{path}: cannot read FITS image: {err}") from None
    if len(shape) != 2:
        hdul.close()
        raise OSError(f"{path}: HDU {hdu} is not a 2-D image")
    if not wcs.has_celestial:
        hdul.close()
        raise OSError(f"{path}: no celestial WCS in HDU {hdu}")
    return hdul, image, wcs


RAW_BITPIX = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4"}
"""FITS pixel types that can be mapped as they are (when not scaled by BSCALE/BZERO)."""


def row_reader(hdul, index: int):
    """``read_rows(start, stop)`` of a FITS image HDU: only those rows are read.

    Plain images are memory-mapped one block of rows at a time (the map is dropped with the
    block, so the worker's resident memory stays bounded); scaled or compressed images go
    through astropy's ``section``.
    """
    image = hdul[index]
    header = image.header
    dtype = RAW_BITPIX.get(header.get("BITPIX"))
    plain = (
        dtype is not None
        and not header.get("ZIMAGE", False)
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


def image_states(images: Path, tile: str, config: CutoutConfig) -> dict[str, str]:
    """The identity of each of a tile's images (a hash of its path, size and modification
    time; ``missing`` where there is none yet), for the tile's lineage."""
    states = {}
    for band in config.bands:
        path = images / config.image_pattern.format(tile=tile, band=band)
        states[f"images/{band}"] = file_identity(path) if path.exists() else "missing"
    return states


def cutout_tile(
    sources: list[Path],
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    images: Path,
    config: CutoutConfig,
) -> dict[str, int]:
    """Cut the targets of tile ``unit`` (read from ``sources``) from its images and commit
    its group of the store.

    Returns
    -------
    dict
        ``cutouts`` written, ``outside`` (targets whose centre is off the image) and
        ``edge`` (cutouts crossing the image border).
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    tile = unit
    clear_marker(out, tile)
    targets = load_tile_targets(tile, sources)
    opened = {
        band: open_image(images / config.image_pattern.format(tile=tile, band=band), hdu=config.hdu)
        for band in config.bands
    }
    try:
        ra = targets["RAJ2000"].to_numpy()
        dec = targets["DECJ2000"].to_numpy()
        _, first_image, first_wcs = opened[config.bands[0]]
        x, y = sky_to_pixel(ra, dec, first_wcs)
        inside = centre_inside(x, y, first_image.shape, size=config.size)
        keep = np.flatnonzero(inside)
        stamps = {}
        for band, (hdul, image, wcs) in opened.items():
            bx, by = (x, y) if band == config.bands[0] else sky_to_pixel(ra, dec, wcs)
            stamps[band] = extract_stamps_by_rows(
                row_reader(hdul, config.hdu), image.shape, bx[keep], by[keep], size=config.size
            )
        attrs = {
            "tile": tile,
            "bands": list(config.bands),
            "size": config.size,
            "pixel_scale": {
                band: float(np.mean(proj_plane_pixel_scales(wcs)) * 3600)
                for band, (_, _, wcs) in opened.items()
            },
            "wcs": {band: dict(wcs.to_header()) for band, (_, _, wcs) in opened.items()},
            "images": {band: str(hdul.filename()) for band, (hdul, _, _) in opened.items()},
            "targets": [str(path) for path in sources],
            "n_outside": int((~inside).sum()),
            "lensdask_version": __version__,
            "config_hash": chash,
        }
    finally:
        for hdul, _, _ in opened.values():
            hdul.close()
    ids = targets["ID"].to_numpy(zero_copy_only=False)[keep]
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
        "nan_fraction": np.stack([s.nan_fraction for s in stamps.values()], axis=1)
        if keep.size
        else np.zeros((0, len(stamps)), dtype=np.float32),
    }
    staged = staging_path(out, tile)
    write_tile_group(
        staged,
        {band: s.data for band, s in stamps.items()},
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
            extra=counts,
        ),
    )
    return counts


@dataclass(frozen=True)
class CutoutReport(UnitCounts):
    """Outcome of :func:`make_cutouts`."""

    out: Path
    tiles: int
    counts: dict[str, int]
    """Totals over the tiles written now: cutouts, outside, edge."""
    units: UnitReport


def make_cutouts(
    targets: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    config: CutoutConfig | None = None,
    client: Any,
    progress: bool = True,
) -> CutoutReport:
    """Cut every target out of its tile's images into the Zarr store ``out``.

    Parameters
    ----------
    targets : path
        Targets (Parquet file or dataset) with ``ID``, ``RAJ2000``, ``DECJ2000``,
        ``THELI_NAME`` and ``sample``.
    images : path
        Folder of tile images named by ``config.image_pattern``.
    out : path
        The cutout store (``cutouts.zarr``), created if needed.
    config : CutoutConfig, optional
        Bands, size, chunking.
    client : distributed.Client
        The injected Dask client: one task per tile.
    progress : bool
        Show a progress bar over tiles.
    """
    config = config or CutoutConfig()
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"images folder {images} does not exist")
    out = Path(out)
    parts = tile_sources(targets)
    sources = {tile: list(files) for tile, files in parts.items()}
    chash = config_hash({"cutouts": dataclasses.asdict(config), "images": str(images.resolve())})
    # a tile is redone when a unit of the targets holding it, or one of its images, changed
    lineage = {
        tile: {
            **{f"targets/{path.name}": identity for path, identity in files.items()},
            **image_states(images, tile, config),
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
        sources,
        chash=chash,
        lineage=lineage,
        stage=STAGE,
        progress=progress,
        images=images,
        config=config,
    )
    counts = {
        key: sum(result[key] for result in report.results.values())
        for key in ("cutouts", "outside", "edge")
    }
    logger.info(
        "cutouts: %d tiles written, %d skipped (complete), %d failed; %d cutouts written "
        "(%d crossing an image border); %d targets outside their tile",
        len(report.results),
        len(report.skipped),
        len(report.failures),
        counts["cutouts"],
        counts["edge"],
        counts["outside"],
    )
    return CutoutReport(
        out=out,
        tiles=len(sources),
        counts=counts,
        units=report,
    )


def run(config: CutoutConfig, io: StageIO, *, client: Any, progress: bool = True) -> StageOutcome:
    """The ``cutouts`` stage: :func:`make_cutouts` of the ``targets`` from the ``images``."""
    report = make_cutouts(
        io.need("targets"),
        io.need("images"),
        io.out("cutouts"),
        config=config,
        client=client,
        progress=progress,
    )
    counts = report.counts
    return StageOutcome(
        reports=[report.units],
        outputs={"cutouts": report.out},
        counts={"cutouts written now": counts["cutouts"]},
        lines=[
            f"cutouts: {report.written} tiles written, {report.skipped} already complete, "
            f"{len(report.units.failures)} failed; {counts['cutouts']} cutouts "
            f"({counts['edge']} at an image border), {counts['outside']} targets "
            f"outside their tile -> {report.out}"
        ],
    )
