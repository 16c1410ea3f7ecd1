"""File layouts of the mock survey: how a tile's catalog and images are named and written.

``simple`` (the default)::

    OUT/catalog/<tile>.parquet        the catalog: KiDS DR4 contract columns + truth columns
    OUT/images/<tile>_<band>.fits     the image, in the primary HDU

``kids-dr4``, the files as ESO distributes KiDS DR4 (tile ``KIDS_129.0_-0.5`` gives the
stem ``KiDS_DR4.0_129.0_-0.5``: RA and Dec exactly as in the tile name)::

    OUT/catalogs/<stem>_ugriZYJHKs_cat.fits   multi-band catalog, a binary table in HDU 1
    OUT/images/<stem>_<band>_sci.fits         coadd image (the same pixels as ``simple``)
    OUT/images/<stem>_<band>_wei.fits         weight map
    OUT/images/<stem>_<band>_msk.fits         flag map

There is no Parquet catalog in ``kids-dr4``: ``lensdask ingest`` turns the FITS catalogs
into one (its default ``tile_regex`` reads these names). The FITS catalog holds every
column of the simple layout's catalog, with the same values, among DR4 columns derived
from the mock population (:func:`dr4_columns`; NaN where the mock knows nothing, e.g. the
VIKING bands Z to Ks).

Weight maps are the inverse variance of the sky noise (counts^-2), zero where there is no
data: a strip along one edge of the tile and a few bad columns, drawn per band
(:func:`draw_defects`). Flag maps are int16 with the bits of the KiDS masks (the
Pulecenella flag values of the KiDS data releases): 1 readout spike, 2 saturation core,
4 diffraction spike, 8 primary halo, 16 secondary halo, 32 tertiary halo, 64 bad pixel,
128 manually masked region. The mock sets 8 on a disc around each star brighter than
:data:`STAR_MASK_MAG` in the band, 2 on the inner part of it for stars brighter than
:data:`SATURATION_MAG`, 64 on the bad columns and 128 on the strip without data
(:func:`flag_map`); the weight is zero exactly where 64 or 128 is set. The image pixels
there are left as drawn, so that both layouts hold the same pixels: a reader of the
kids-dr4 layout finds the missing data in the weights, as in KiDS.

With ``compress``, images are tile-compressed as fpack writes them: an empty primary HDU,
the image in HDU 1 (an astropy ``CompImageHDU``; ``fits.open(path)[1].data`` decompresses
it), names ending ``.fits.fz``. ``RICE_1`` and ``HCOMPRESS_1`` quantise the pixels to
:data:`QUANTIZE_LEVEL` levels per noise sigma with subtractive dithering seeded by the
tile (deterministic); ``GZIP_1`` and ``GZIP_2`` keep them exactly. Weight and flag maps are
always compressed with ``GZIP_2``, losslessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.config import KIDS_BANDS, BandSpec, MockSurveyConfig
from lensdask.mock.population import mag_error
from lensdask.mock.render import mag_to_flux, sky_sigma
from lensdask.mock.seeing import tile_seeing
from lensdask.mock.tiles import Tile, tile_wcs
from lensdask.storage import as_path
from lensdask.units import commit_file, staging_path

CATALOG_DIR = "catalog"
"""Folder of the Parquet catalogs (``simple``)."""
FITS_CATALOG_DIR = "catalogs"
"""Folder of the FITS catalogs (``kids-dr4``)."""
IMAGES_DIR = "images"
IMAGE_PATTERN = "{tile}_{band}.fits"
"""File name of a tile image in the ``simple`` layout (the default of the cutout stage too)."""
KIDS_RELEASE = "KiDS_DR4.0"
CATALOG_BANDS = "ugriZYJHKs"
"""Bands in the name of a DR4 multi-band catalog (KiDS ugri + VIKING ZYJHKs)."""
GAAP_BANDS = ("u", "g", "r", "i", "Z", "Y", "J", "H", "Ks")
"""Bands of the catalog's ``MAG_GAAP_*`` columns; the mock fills u, g, r, i."""

READOUT_SPIKE = 1
SATURATION_CORE = 2
DIFFRACTION_SPIKE = 4
PRIMARY_HALO = 8
SECONDARY_HALO = 16
TERTIARY_HALO = 32
BAD_PIXEL = 64
MANUAL_MASK = 128
"""Flag-map bits of the KiDS masks; the mock sets 2, 8, 64 and 128 (see the module docstring)."""
NO_DATA = BAD_PIXEL | MANUAL_MASK
"""Flags of pixels without data (zero weight)."""
STAR_MASK_MAG = 18.0
"""Stars brighter than this in a band get a primary-halo disc in its flag map, mag."""
HALO_RADIUS = 3.0
"""Radius of the halo disc of a star at :data:`STAR_MASK_MAG`, arcsec; it grows by
10^(0.2 dm) for a star dm magnitudes brighter (30 arcsec at 5 mag brighter)."""
SATURATION_MAG = 17.0
"""Stars brighter than this are saturated: a saturation-core disc in the flag map and
SExtractor flag 4 in the catalog, mag."""
CORE_FRACTION = 0.3
"""Radius of the saturation core as a fraction of the halo radius."""
EDGE_FRACTION = (0.02, 0.05)
"""Width of the strip without data along one edge of a tile, as a fraction of its side
(uniform in this range, at least one pixel)."""
BAD_COLUMNS = (1, 3)
"""Number of bad columns per tile and band (uniform in this range, inclusive)."""
EDGES = ("left", "right", "bottom", "top")
QUANTIZE_LEVEL = 16.0
"""Quantisation of lossy compression: levels per noise sigma (fpack's ``-q``)."""
LOSSLESS = "GZIP_2"
"""Compression of weight and flag maps (and of nothing else unless asked)."""
SUBTRACTIVE_DITHER_1 = 1


@dataclass(frozen=True)
class Stars:
    """The stars of a tile in one band: pixel positions (0-based) and magnitudes."""

    x: np.ndarray
    y: np.ndarray
    mag: np.ndarray


@dataclass(frozen=True)
class Defects:
    """Pixels without data in one band of a tile."""

    edge: str
    """Side of the image with the strip: ``left``/``right`` (x, columns) or
    ``bottom``/``top`` (y, rows)."""
    edge_width: int
    """Width of the strip, pixels."""
    bad_columns: tuple[int, ...]
    """x (0-based) of the bad columns, which run the full height of the image."""

    def edge_slice(self) -> tuple[slice, slice]:
        """The strip as a numpy index of the image (rows, columns)."""
        width = self.edge_width
        return {
            "left": (slice(None), slice(0, width)),
            "right": (slice(None), slice(-width, None)),
            "bottom": (slice(0, width), slice(None)),
            "top": (slice(-width, None), slice(None)),
        }[self.edge]


def kids_stem(tile: Tile) -> str:
    """``KiDS_DR4.0_<ra>_<dec>``: the start of every DR4 file name of ``tile``."""
    return f"{KIDS_RELEASE}_{tile.name.removeprefix('KIDS_')}"


def catalog_path(tile: Tile, *, config: MockSurveyConfig) -> str:
    """Path of the tile's catalog, relative to the survey folder."""
    if config.layout == "simple":
        return f"{CATALOG_DIR}/{tile.name}.parquet"
    return f"{FITS_CATALOG_DIR}/{kids_stem(tile)}_{CATALOG_BANDS}_cat.fits"


def image_path(tile: Tile, band: str, *, config: MockSurveyConfig, product: str = "sci") -> str:
    """Path of one image of the tile, relative to the survey folder.

    Parameters
    ----------
    tile : Tile
    band : str
    config : MockSurveyConfig
        Layout and compression.
    product : str
        ``sci`` (the image), ``wei`` (weight map) or ``msk`` (flag map); ``simple`` has only
        ``sci``.
    """
    suffix = "" if config.compress is None else ".fz"
    if config.layout == "simple":
        if product != "sci":
            raise ValueError(f"the simple layout has no {product!r} images")
        return f"{IMAGES_DIR}/{IMAGE_PATTERN.format(tile=tile.name, band=band)}{suffix}"
    return f"{IMAGES_DIR}/{kids_stem(tile)}_{band}_{product}.fits{suffix}"


def image_pattern(config: MockSurveyConfig) -> str:
    """File-name pattern of the images (``{tile}``, ``{ra}``, ``{dec}``, ``{band}``)."""
    suffix = "" if config.compress is None else ".fz"
    if config.layout == "simple":
        return IMAGE_PATTERN + suffix
    return f"{KIDS_RELEASE}_{{ra}}_{{dec}}_{{band}}_sci.fits{suffix}"


def draw_defects(shape: tuple[int, int], rng: np.random.Generator) -> Defects:
    """Draw the strip without data and the bad columns of one image (pure).

    Parameters
    ----------
    shape : (ny, nx), pixels
    rng : numpy.random.Generator
        The tile's defect generator (bands drawn in order from it).
    """
    ny, nx = shape
    edge = EDGES[int(rng.integers(len(EDGES)))]
    side = nx if edge in ("left", "right") else ny
    width = max(1, round(side * rng.uniform(*EDGE_FRACTION)))
    n_columns = min(int(rng.integers(BAD_COLUMNS[0], BAD_COLUMNS[1] + 1)), nx)
    columns = np.sort(rng.choice(nx, size=n_columns, replace=False))
    return Defects(edge=edge, edge_width=int(width), bad_columns=tuple(int(c) for c in columns))


def flag_map(
    shape: tuple[int, int], *, defects: Defects, stars: Stars, pixel_scale: float
) -> np.ndarray:
    """The flag map of one image (pure): KiDS mask bits, see the module docstring.

    Parameters
    ----------
    shape : (ny, nx), pixels
    defects : Defects
        Strip without data (:data:`MANUAL_MASK`) and bad columns (:data:`BAD_PIXEL`).
    stars : Stars
        The tile's stars in the band; those brighter than :data:`STAR_MASK_MAG` get a
        :data:`PRIMARY_HALO` disc, those brighter than :data:`SATURATION_MAG` a
        :data:`SATURATION_CORE` disc inside it.
    pixel_scale : float, arcsec/pixel

    Returns
    -------
    ndarray of int16, shape ``shape``
    """
    flags = np.zeros(shape, dtype=np.int16)
    bright = np.flatnonzero(np.asarray(stars.mag) < STAR_MASK_MAG)
    for k in bright:
        mag = float(stars.mag[k])
        radius = HALO_RADIUS * 10 ** (0.2 * (STAR_MASK_MAG - mag)) / pixel_scale
        _paint_disc(flags, float(stars.x[k]), float(stars.y[k]), radius, PRIMARY_HALO)
        if mag < SATURATION_MAG:
            core = CORE_FRACTION * radius
            _paint_disc(flags, float(stars.x[k]), float(stars.y[k]), core, SATURATION_CORE)
    flags[:, list(defects.bad_columns)] |= BAD_PIXEL
    flags[defects.edge_slice()] |= MANUAL_MASK
    return flags


def _paint_disc(flags: np.ndarray, x: float, y: float, radius: float, bit: int) -> None:
    """OR ``bit`` into the pixels whose centre is within ``radius`` of (x, y) (0-based)."""
    ny, nx = flags.shape
    x0, x1 = max(0, int(np.floor(x - radius))), min(nx, int(np.ceil(x + radius)) + 1)
    y0, y1 = max(0, int(np.floor(y - radius))), min(ny, int(np.ceil(y + radius)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    flags[y0:y1, x0:x1][inside] |= np.int16(bit)


def weight_map(flags: np.ndarray, *, sigma: float) -> np.ndarray:
    """Inverse variance of the sky noise ``sigma`` (counts), 0 where ``flags`` has no data.

    Returns
    -------
    ndarray of float32, counts^-2
    """
    weight = np.float32(1.0 / sigma**2)
    return np.where(flags & NO_DATA, np.float32(0.0), weight).astype(np.float32)


def image_hdus(
    data: np.ndarray, header: Any, *, compress: str | None, dither_seed: int
) -> list[Any]:
    """The HDUs of an image file: the image in the primary HDU, or, compressed, an empty
    primary HDU and a ``CompImageHDU`` (lossless for the ``GZIP`` types and for integers).

    Parameters
    ----------
    data : ndarray
    header : astropy.io.fits.Header
    compress : str or None
        Compression type (``RICE_1``, ``HCOMPRESS_1``, ``GZIP_1``, ``GZIP_2``) or None.
    dither_seed : int, 1-10000
        Seed of the subtractive dither of lossy compression (fixed: the same bytes on
        every run).
    """
    from astropy.io import fits

    if compress is None:
        return [fits.PrimaryHDU(data, header=header)]
    quantize = 0.0 if compress.startswith("GZIP") else QUANTIZE_LEVEL
    return [
        fits.PrimaryHDU(),
        fits.CompImageHDU(
            data,
            header=header,
            compression_type=compress,
            quantize_level=quantize,
            quantize_method=SUBTRACTIVE_DITHER_1,
            dither_seed=dither_seed,
        ),
    ]


def write_images(
    image: np.ndarray,
    tile: Tile,
    band: BandSpec,
    out: Path,
    *,
    config: MockSurveyConfig,
    header: Any,
    stars: Stars,
    rng: np.random.Generator,
) -> dict[str, int]:
    """Commit one band of a tile in the configured layout: the image, and in ``kids-dr4``
    its weight and flag maps (the defects drawn from ``rng``).

    Returns
    -------
    dict of str to int
        Path (relative to ``out``) and size of each file written, for the unit's marker.
    """
    seed = 1 + tile.index % 10_000
    rel = image_path(tile, band.name, config=config)
    files = commit_fits(
        image_hdus(image, header, compress=config.compress, dither_seed=seed), out, rel
    )
    if config.layout == "simple":
        return files
    defects = draw_defects(image.shape, rng)
    flags = flag_map(image.shape, defects=defects, stars=stars, pixel_scale=config.pixel_scale)
    sigma = sky_sigma(band.depth, zeropoint=config.zeropoint, pixel_scale=config.pixel_scale)
    lossless = None if config.compress is None else LOSSLESS
    for product, data, category, unit in (
        ("wei", weight_map(flags, sigma=sigma), "ANCILLARY.WEIGHTMAP", "count-2"),
        ("msk", flags, "ANCILLARY.MASK", ""),
    ):
        aux = header.copy()
        aux["PRODCATG"] = category
        aux["BUNIT"] = unit
        rel = image_path(tile, band.name, config=config, product=product)
        files |= commit_fits(image_hdus(data, aux, compress=lossless, dither_seed=seed), out, rel)
    return files


def write_catalog(
    catalog: Any, tile: Tile, out: Path, *, config: MockSurveyConfig
) -> dict[str, int]:
    """Commit the tile's catalog in the configured layout: Parquet (``simple``) or a DR4
    multi-band FITS catalog (``kids-dr4``, :func:`catalog_hdus`).

    Returns
    -------
    dict of str to int
        Path (relative to ``out``) and size of the file written.
    """
    from lensdask.formats.parquet import commit_parquet

    rel = catalog_path(tile, config=config)
    if config.layout == "simple":
        return {rel: commit_parquet(catalog, out, rel)}
    return commit_fits(catalog_hdus(catalog, tile, config=config), out, rel)


def commit_fits(hdus: list[Any], out: Path, rel: str) -> dict[str, int]:
    """Write ``hdus`` to ``out/rel`` through the staging folder, atomically (compressed
    images with their gzip time stamps cleared, :func:`clear_gzip_times`).

    Returns
    -------
    dict of str to int
        ``{rel: size}`` of the committed file, for the unit's marker.
    """
    from astropy.io import fits

    staged = staging_path(out, rel.replace("/", "__"))
    fits.HDUList(hdus).writeto(staged)
    if any(isinstance(hdu, fits.CompImageHDU) for hdu in hdus):
        clear_gzip_times(staged)
    final = as_path(out) / rel
    commit_file(staged, final)
    return {rel: final.stat().st_size}


def clear_gzip_times(path: Path) -> None:
    """Zero the time stamp of every gzip-compressed tile of the compressed image in HDU 1
    of ``path``, in place.

    astropy's GZIP codec (also the fallback for tiles that cannot be quantised) writes the
    time of compression into each tile's gzip header, so the same image would give other
    bytes on every run. The MTIME field is bytes 4-7 of a gzip member (RFC 1952; 0 means no
    time stamp); the tiles are found through the descriptors of the binary table that holds
    them, so no other byte changes.
    """
    from astropy.io import fits

    with fits.open(path, disable_image_compression=True) as hdul:
        table = hdul[1]
        header = table.header
        names = [
            name
            for name in ("COMPRESSED_DATA", "GZIP_COMPRESSED_DATA")
            if name in table.columns.names
        ]
        dtype = table.columns.dtype.newbyteorder(">")
        rows = header["NAXIS2"]
        start = table.fileinfo()["datLoc"]
        heap = start + header.get("THEAP", header["NAXIS1"] * rows)
    descriptors = np.fromfile(path, dtype=dtype, count=rows, offset=start)
    with open(path, "r+b") as stream:
        for name in names:
            for count, offset in descriptors[name]:
                if count < 10:
                    continue
                stream.seek(heap + int(offset))
                if stream.read(3) == b"\x1f\x8b\x08":
                    stream.seek(heap + int(offset) + 4)
                    stream.write(b"\x00\x00\x00\x00")


def dr4_columns(
    catalog: Any, tile: Tile, *, config: MockSurveyConfig
) -> dict[str, tuple[np.ndarray, str]]:
    """The columns of a KiDS DR4 multi-band catalog of the tile (pure: no I/O).

    Every column of ``catalog`` is kept with its values (``TRUE_TYPE`` as its name), after
    DR4 columns made from it: ``SeqNr``; ``Xpos``, ``Ypos`` (1-based pixels of the r image);
    ``FLUX_AUTO``, ``FLUXERR_AUTO`` (counts at the survey's zero point), ``MAGERR_AUTO``;
    ``KRON_RADIUS``; ``FLUX_RADIUS`` and ``FWHM_IMAGE`` (pixels) and ``FWHM_WORLD``,
    ``A_WORLD``, ``B_WORLD`` (deg), from the half-light radius and the tile's r-band
    seeing (:func:`lensdask.mock.seeing.tile_seeing`);
    ``THETA_J2000`` (deg, east of north, in (-90, 90]); ``CLASS_STAR``; the SExtractor
    ``Flag`` (4: saturated, stars brighter than :data:`SATURATION_MAG`);
    ``MAG_GAAP_<band>`` and ``MAGERR_GAAP_<band>`` of :data:`GAAP_BANDS` (r is
    ``MAG_AUTO``, g and i follow from the catalog's GAaP colours, u from the true colours;
    NaN for Z to Ks and where the colours are NaN); ``COLOUR_GAAP_u_g`` and
    ``COLOUR_GAAP_i_Z``; ``Z_B_MIN``, ``Z_B_MAX``.

    Returns
    -------
    dict of str to (ndarray, unit)
        Columns in file order; units as FITS ``TUNIT`` strings (``""`` for none).
    """

    def col(name: str) -> np.ndarray:
        return catalog[name].to_numpy(zero_copy_only=False)

    nan = np.float32(np.nan)
    star = col("TRUE_TYPE").astype(str) == "star"
    seeing = tile_seeing(tile, config=config)["r"]
    depths = {name: depth for name, (_, depth) in KIDS_BANDS.items()}
    depths |= {band.name: band.depth for band in config.bands}
    ra, dec = col("RAJ2000"), col("DECJ2000")
    wcs = tile_wcs(tile, size=config.image_size, pixel_scale=config.pixel_scale)
    x, y = wcs.world_to_pixel_values(ra, dec)
    mag_auto = col("MAG_AUTO").astype(np.float32)
    err_auto = mag_error(mag_auto.astype(np.float64), depths["r"]).astype(np.float32)
    flux = mag_to_flux(mag_auto, zeropoint=config.zeropoint).astype(np.float32)
    r_eff = col("R_EFF").astype(np.float64)
    q = col("AXIS_RATIO").astype(np.float64)
    psf_sigma = seeing / 2.3548
    radius = np.hypot(r_eff, seeing / 2.0)
    fwhm = np.hypot(seeing, 2.0 * r_eff)
    resolved = r_eff / (seeing / 2.0)
    class_star = np.where(
        star,
        0.5 + 0.48 / (1.0 + np.exp(col("TRUE_MAG_r").astype(np.float64) - 23.5)),
        0.02 + 0.96 * np.exp(-(resolved**2)),
    )
    true_mag = col("TRUE_MAG_r").astype(np.float64)
    g_r, r_i = col("COLOUR_GAAP_g_r"), col("COLOUR_GAAP_r_i")
    gaap = {band: np.full(mag_auto.size, nan) for band in GAAP_BANDS}
    gaap["r"] = mag_auto
    gaap["g"] = (mag_auto + g_r).astype(np.float32)
    gaap["i"] = (mag_auto - r_i).astype(np.float32)
    gaap["u"] = np.where(np.isfinite(g_r), gaap["g"] + 0.5 * col("TRUE_g_r"), nan).astype(
        np.float32
    )
    z_b = col("Z_B").astype(np.float32)
    columns: dict[str, tuple[np.ndarray, str]] = {
        "ID": (col("ID"), ""),
        "SeqNr": (np.arange(1, mag_auto.size + 1, dtype=np.int32), ""),
        "THELI_NAME": (col("THELI_NAME"), ""),
        "RAJ2000": (ra, "deg"),
        "DECJ2000": (dec, "deg"),
        "Xpos": ((x + 1.0).astype(np.float32), "pix"),
        "Ypos": ((y + 1.0).astype(np.float32), "pix"),
        "FLUX_AUTO": (flux, "count"),
        "FLUXERR_AUTO": ((flux * err_auto / 1.0857).astype(np.float32), "count"),
        "MAG_AUTO": (mag_auto, "mag"),
        "MAGERR_AUTO": (err_auto, "mag"),
        "KRON_RADIUS": (np.full(mag_auto.size, 3.5, dtype=np.float32), ""),
        "FLUX_RADIUS": ((radius / config.pixel_scale).astype(np.float32), "pix"),
        "FWHM_IMAGE": ((fwhm / config.pixel_scale).astype(np.float32), "pix"),
        "FWHM_WORLD": ((fwhm / 3600.0).astype(np.float32), "deg"),
        "A_WORLD": ((np.hypot(r_eff, psf_sigma) / 3600.0).astype(np.float32), "deg"),
        "B_WORLD": ((np.hypot(q * r_eff, psf_sigma) / 3600.0).astype(np.float32), "deg"),
        "THETA_J2000": (
            ((col("POS_ANGLE").astype(np.float64) + 90.0) % 180.0 - 90.0).astype(np.float32),
            "deg",
        ),
        "CLASS_STAR": (class_star.astype(np.float32), ""),
        "Flag": (np.where(star & (true_mag < SATURATION_MAG), 4, 0).astype(np.int16), ""),
        "SG2DPHOT": (col("SG2DPHOT"), ""),
    }
    for band in GAAP_BANDS:
        columns[f"MAG_GAAP_{band}"] = (gaap[band], "mag")
    for band in GAAP_BANDS:
        known = np.isfinite(gaap[band])
        err = np.full(mag_auto.size, nan)
        if band in depths:
            err[known] = mag_error(gaap[band][known].astype(np.float64), depths[band])
        columns[f"MAGERR_GAAP_{band}"] = (err, "mag")
    columns |= {
        "COLOUR_GAAP_u_g": ((gaap["u"] - gaap["g"]).astype(np.float32), "mag"),
        "COLOUR_GAAP_g_r": (g_r, "mag"),
        "COLOUR_GAAP_r_i": (r_i, "mag"),
        "COLOUR_GAAP_i_Z": (np.full(mag_auto.size, nan), "mag"),
        "MASK": (col("MASK"), ""),
        "Z_B": (z_b, ""),
        "Z_B_MIN": (np.clip(z_b - 0.1 * (1 + z_b), 0.0, None).astype(np.float32), ""),
        "Z_B_MAX": ((z_b + 0.1 * (1 + z_b)).astype(np.float32), ""),
    }
    for name in catalog.column_names:
        if name not in columns:
            values = col(name)
            columns[name] = (values.astype(str) if name == "TRUE_TYPE" else values, "")
    return columns


def catalog_hdus(catalog: Any, tile: Tile, *, config: MockSurveyConfig) -> list[Any]:
    """The HDUs of the tile's DR4 catalog file: a primary header naming the tile and the
    table of :func:`dr4_columns` in HDU 1."""
    from astropy.io import fits

    columns = [
        fits.Column(
            name=name, format=_fits_format(values), array=_fits_array(values), unit=unit or None
        )
        for name, (values, unit) in dr4_columns(catalog, tile, config=config).items()
    ]
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = (tile.name, "tile")
    primary.header["PRODCATG"] = "SCIENCE.CATALOGTILE"
    table = fits.BinTableHDU.from_columns(columns)
    if table.header["NAXIS2"] != catalog.num_rows:
        raise ValueError(f"{tile.name}: catalog HDU has {table.header['NAXIS2']} rows")
    return [primary, table]


def _fits_array(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "OUS":
        return np.asarray(values, dtype=str).astype(np.bytes_)
    if values.dtype == np.int8:
        return values.astype(np.int16)
    return values


def _fits_format(values: np.ndarray) -> str:
    """FITS ``TFORM`` of a column (strings as wide as the widest, at least one)."""
    if values.dtype.kind in "OUS":
        width = int(np.char.str_len(np.asarray(values, dtype=str)).max(initial=1))
        return f"{max(width, 1)}A"
    formats = {"f8": "D", "f4": "E", "i8": "K", "i4": "J", "i2": "I", "i1": "I", "b1": "L"}
    key = f"{values.dtype.kind}{values.dtype.itemsize}"
    if key not in formats:
        raise TypeError(f"no FITS format for a column of {values.dtype}")
    return formats[key]
