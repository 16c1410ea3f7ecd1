"""Reading what the image index needs from FITS headers, never the pixels.

:func:`read_image_header` is the only I/O: it opens a file lazily (astropy reads a header
when its HDU is asked for, and no data until it is touched) and returns the image HDU's
header, the primary header and the compression. :func:`image_row` is the kernel that turns
them into a row of the index (:mod:`lensdask.formats.image_index`): size, WCS footprint,
pixel scale, band, tile and seeing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".gz")
"""Suffixes of FITS files (plain, tile-compressed, gzipped), dropped from an image's own key."""


class HeaderError(OSError):
    """A FITS file cannot give what the index needs (no 2-D image, no celestial WCS, no
    band): the message names the file and the HDU or keyword. Another attempt would fail the
    same way (an :class:`OSError` without ``errno``)."""


def is_fits_name(name: str) -> bool:
    """Whether a file name looks like a FITS file (``.fits``, ``.fit``, ``.fts``, ``.fz``,
    ``.fits.gz``)."""
    lower = name.lower()
    return lower.endswith((".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz"))


def own_key(path: str | Path) -> str:
    """An image's own key: its file name without the FITS suffixes
    (``ADP.2019-02-11T13:02:25.123.fits.fz`` -> ``ADP.2019-02-11T13:02:25.123``)."""
    name = Path(path).name
    while name.lower().endswith(FITS_SUFFIXES):
        name = name[: name.rfind(".")]
    return name


@dataclass(frozen=True)
class ImageHeader:
    """The headers of one image file."""

    hdu: int
    """Index of the image HDU (astropy's view: a tile-compressed image is one HDU)."""
    header: Any
    """The image's header (:class:`astropy.io.fits.Header`; of a compressed HDU, the
    header of the image it holds)."""
    primary: Any
    """The primary header (keywords such as ``FILTER`` and ``OBJECT`` may be there)."""
    compression: str
    """``none`` or the tile compression (``ZCMPTYPE``: ``RICE_1``, ``GZIP_2``, ...)."""

    @property
    def shape(self) -> tuple[int, int]:
        """(width, height) in px."""
        return int(self.header["NAXIS1"]), int(self.header["NAXIS2"])


def _is_2d(hdu: Any) -> bool:
    header = hdu.header
    return (
        bool(getattr(hdu, "is_image", False))
        and header.get("NAXIS") == 2
        and int(header.get("NAXIS1", 0)) > 0
        and int(header.get("NAXIS2", 0)) > 0
    )


def read_image_header(
    path: str | Path,
    *,
    hdu: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ImageHeader:
    """The headers of the 2-D image in a FITS file, without reading any pixel.

    Parameters
    ----------
    path : path or str
        A FITS file, plain, tile-compressed (``.fits.fz``) or gzipped; or its fsspec URL
        (``s3://bucket/key.fits``), of which only the header bytes are fetched (from the
        start of the file to the image's header, in requests of
        :data:`~lensdask.formats.fits_images.HEADER_BLOCK_SIZE` bytes).
    hdu : int, optional
        The image's HDU; default: the first HDU with 2-D data.
    storage_options : mapping, optional
        fsspec options of a URL (credentials, endpoint).

    Raises
    ------
    FileNotFoundError
        The file is missing.
    ConnectionError
        The store of a URL cannot be reached (the message names the URL).
    HeaderError
        It is not FITS, ``hdu`` is not a 2-D image, or no HDU is (the message names the file
        and the HDU).
    """
    from lensdask.formats.fits_images import HEADER_BLOCK_SIZE, is_network_error, open_fits
    from lensdask.storage import is_url

    remote = is_url(path)
    if not remote:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
    try:
        with open_fits(path, storage_options=storage_options, block_size=HEADER_BLOCK_SIZE) as hdul:
            primary = hdul[0].header.copy()
            if hdu is None:
                index = 0
                while True:
                    try:
                        candidate = hdul[index]
                    except IndexError:
                        raise HeaderError(f"{path}: no HDU holds a 2-D image") from None
                    if _is_2d(candidate):
                        break
                    index += 1
            else:
                index = hdu
                try:
                    candidate = hdul[index]
                except IndexError:
                    raise HeaderError(f"{path}: has no HDU {hdu}") from None
                if not _is_2d(candidate):
                    raise HeaderError(f"{path} (HDU {hdu}): not a 2-D image")
            compression = getattr(candidate, "compression_type", None) or "none"
            return ImageHeader(
                hdu=index,
                header=candidate.header.copy(),
                primary=primary,
                compression=str(compression),
            )
    except (HeaderError, FileNotFoundError, ConnectionError):
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        raise HeaderError(f"{path}: cannot read FITS headers: {err}") from None
    except Exception as err:
        if remote and is_network_error(err):
            raise ConnectionError(
                f"{path}: cannot read FITS headers: {type(err).__name__}: {err}"
            ) from None
        raise


def header_value(image: ImageHeader, keyword: str) -> Any:
    """A keyword's value from the image header, else from the primary header (None: in
    neither, or empty)."""
    for header in (image.header, image.primary):
        value = header.get(keyword)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value.strip() if isinstance(value, str) else value
    return None


def is_ancillary(image: ImageHeader) -> bool:
    """Whether the header calls the file an ancillary product (ESO's ``PRODCATG =
    'ANCILLARY.WEIGHTMAP'`` and the like): a weight or flag map, not an image to index."""
    category = header_value(image, "PRODCATG")
    return isinstance(category, str) and category.upper().startswith("ANCILLARY")


def image_row(
    image: ImageHeader,
    *,
    path: str,
    band: str | None,
    tile: str | None,
    band_keyword: str = "FILTER",
    band_map: Mapping[str, str] | None = None,
    tile_keyword: str = "OBJECT",
    seeing_keywords: tuple[str, ...] = ("PSF_FWHM", "SEEING"),
) -> dict[str, Any]:
    """One row of the image index from an image's headers (no I/O).

    Parameters
    ----------
    image : ImageHeader
        The image's headers (:func:`read_image_header`).
    path : str
        The file's absolute path.
    band, tile : str or None
        Band and tile key where the name or the manifest gives them; None: from the
        headers (``band_keyword`` mapped through ``band_map``; ``tile_keyword``, else the
        image's own key, :func:`own_key`).
    seeing_keywords : tuple of str
        Keywords of the PSF FWHM (arcsec); the first present with a value > 0 wins.

    Returns
    -------
    dict
        The :data:`lensdask.formats.image_index.INDEX_COLUMNS` but the weight and flag
        maps' (set to None).

    Raises
    ------
    HeaderError
        No celestial WCS, or no band (the message names the file and the keyword).
    """
    from astropy.wcs import WCS, FITSFixedWarning

    where = f"{path} (HDU {image.hdu})"
    width, height = image.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(image.header)
            if not wcs.is_celestial:  # more axes than the sky's (a cube's third)
                wcs = wcs.celestial
        except (ValueError, KeyError, MemoryError) as err:
            raise HeaderError(f"{where}: cannot read its WCS: {err}") from None
        if not wcs.has_celestial or wcs.naxis != 2:
            raise HeaderError(f"{where}: no celestial WCS in the header")
        xs = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
        ys = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
        ra, dec = wcs.pixel_to_world_values(xs, ys)
        text = wcs.to_header(relax=True).tostring(sep="\n")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise HeaderError(f"{where}: its WCS does not place the image's corners on the sky")
    scale = math.sqrt(abs(float(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    if band is None:
        value = header_value(image, band_keyword)
        if value is None:
            raise HeaderError(
                f"{where}: no band: the header has no {band_keyword} (set band_keyword, or "
                "give the band in the template or the manifest)"
            )
        band = (band_map or {}).get(str(value), str(value))
    if tile is None:
        value = header_value(image, tile_keyword) if tile_keyword else None
        tile = str(value) if value is not None else own_key(path)
    seeing = None
    for keyword in seeing_keywords:
        value = header_value(image, keyword)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            seeing = float(value)
            break
    return {
        "tile": tile,
        "band": band,
        "path": path,
        "hdu": image.hdu,
        "weight_path": None,
        "weight_hdu": None,
        "flag_path": None,
        "flag_hdu": None,
        "compression": image.compression,
        "width": width,
        "height": height,
        "pixel_scale": scale,
        "ra_corners": [float(v) % 360.0 for v in ra],
        "dec_corners": [float(v) for v in dec],
        "wcs": text,
        "seeing": seeing,
    }


__all__ = [
    "FITS_SUFFIXES",
    "HeaderError",
    "ImageHeader",
    "header_value",
    "image_row",
    "is_ancillary",
    "is_fits_name",
    "own_key",
    "read_image_header",
]
