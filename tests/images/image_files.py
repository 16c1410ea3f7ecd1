"""Real FITS images with real TAN WCS, written by astropy, for the image index tests (a
module of its own, not conftest: helpers imported by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_header(
    *,
    ra: float,
    dec: float,
    width: int,
    height: int,
    scale: float,
    rotation: float = 0.0,
):
    """A TAN WCS header centred on (ra, dec) deg, ``scale`` arcsec/px, rotated by
    ``rotation`` deg."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    angle = np.radians(rotation)
    step = scale / 3600.0
    wcs.wcs.cd = step * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return wcs.to_header()


def write_image(
    path: Path,
    *,
    ra: float,
    dec: float,
    width: int = 40,
    height: int = 30,
    scale: float = 0.2,
    rotation: float = 0.0,
    keywords: dict | None = None,
    compression: str | None = None,
    layout: str = "primary",
) -> Path:
    """Write one FITS image.

    layout: ``primary`` (image in HDU 0), ``extension`` (empty primary, a table, then the
    image: HDU 2); ``compression`` (``RICE_1``, ``GZIP_2``...) writes a tile-compressed
    image in HDU 1 whatever the layout.
    """
    from astropy.io import fits

    header = image_header(
        ra=ra, dec=dec, width=width, height=height, scale=scale, rotation=rotation
    )
    for key, value in (keywords or {}).items():
        header[key] = value
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    data = rng.normal(size=(height, width)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compression is not None:
        hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type=compression)]
    elif layout == "extension":
        table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
        hdus = [fits.PrimaryHDU(), table, fits.ImageHDU(data, header)]
    else:
        hdus = [fits.PrimaryHDU(data, header)]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


KIDS_TILES = {"KIDS_129.0_-0.5": (129.0, -0.5), "KIDS_130.0_0.5": (130.0, 0.5)}
OMEGACAM = {"r": "r_SDSS", "g": "g_SDSS"}
ANCILLARY = {"wei": "ANCILLARY.WEIGHTMAP", "msk": "ANCILLARY.MASKMAP"}


def write_kids_tiles(
    folder: Path,
    *,
    maps: bool = True,
    compressed: tuple[str, ...] = (),
    name: str = "kids",
) -> dict[tuple[str, str], Path]:
    """KiDS DR4 coadds of two tiles in r and g (``KiDS_DR4.0_<ra>_<dec>_<band>_sci.fits``),
    with ``_wei`` and ``_msk`` maps when ``maps``; the tiles in ``compressed`` are written
    as ``.fits.fz`` (RICE_1). Headers carry FILTER (OmegaCAM names), OBJECT (the tile key)
    and PSF_FWHM. Returns the science files by (tile, band)."""
    files = {}
    for tile, (ra, dec) in KIDS_TILES.items():
        stem = f"KiDS_DR4.0_{tile.removeprefix('KIDS_')}"
        fz = tile in compressed
        suffix = ".fits.fz" if fz else ".fits"
        for band, filt in OMEGACAM.items():
            keywords = {"FILTER": filt, "OBJECT": tile, "PSF_FWHM": 0.7}
            sci = write_image(
                folder / f"{stem}_{band}_sci{suffix}",
                ra=ra,
                dec=dec,
                keywords=keywords,
                compression="RICE_1" if fz else None,
            )
            files[(tile, band)] = sci
            if maps:
                for kind in ("wei", "msk"):
                    write_image(
                        folder / f"{stem}_{band}_{kind}{suffix}",
                        ra=ra,
                        dec=dec,
                        keywords={**keywords, "PRODCATG": ANCILLARY[kind]},
                        compression="GZIP_2" if fz else None,
                    )
    return files
