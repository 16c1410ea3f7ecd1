"""Tiles of the mock survey: their grid, names, WCS, source positions and KiDS IDs.

Tiles sit on a 1-degree grid like KiDS (``KIDS_<ra>_<dec>`` names the centre); tile ``k``
is centred at RA = k mod 360, Dec = k div 360 - 0.5 (deg). A tile covers a square of
``tile_size`` degrees on its tangent plane, and owns the sources within half a degree of its
centre in RA and Dec, so no source is in two tiles. Positions are put on the grid of the
KiDS ID (RA to 1 ms of time, Dec to 0.01 arcsec, truncated as in IAU names), which makes
IDs unique across the whole survey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensdask.config import MockSurveyConfig

ROW_LENGTH = 360
"""Tiles per row of constant Dec."""
RA_QUANTUM = 15.0 / 3600 / 1000
"""RA resolution of a KiDS ID (1 ms of time), deg."""
DEC_QUANTUM = 1.0 / 3600 / 100
"""Dec resolution of a KiDS ID (0.01 arcsec), deg."""
ID_LENGTH = 26
"""Characters in ``KiDS JHHMMSS.sss+DDMMSS.ss``."""


@dataclass(frozen=True)
class Tile:
    """One tile of the mock survey."""

    index: int
    """Position in the survey (0-based); also the second entry of the tile's seed."""
    ra: float
    """RA of the centre, deg."""
    dec: float
    """Dec of the centre, deg."""

    @property
    def name(self) -> str:
        """KiDS tile name ``KIDS_<ra>_<dec>`` (the ``THELI_NAME`` of its sources)."""
        return f"KIDS_{self.ra:.1f}_{self.dec:.1f}"


def survey_tiles(n_tiles: int) -> list[Tile]:
    """The first ``n_tiles`` tiles of the mock survey grid."""
    if n_tiles > ROW_LENGTH * 80:
        raise ValueError(f"tiles: at most {ROW_LENGTH * 80} tiles, got {n_tiles}")
    return [
        Tile(index=k, ra=float(k % ROW_LENGTH), dec=float(k // ROW_LENGTH) - 0.5)
        for k in range(n_tiles)
    ]


def tile_seeds(config: MockSurveyConfig, tile: Tile) -> tuple[np.random.SeedSequence, ...]:
    """Independent seeds of a tile: (catalog, image noise, lenses, image defects, seeing).

    Spawned children are numbered: a stream added at the end leaves the others, and so
    the sources and pixels of a survey, as they were."""
    return tuple(np.random.SeedSequence([config.seed, tile.index]).spawn(5))


def tile_wcs(tile: Tile, *, size: int, pixel_scale: float):
    """The TAN WCS of a ``size`` x ``size`` image centred on ``tile``.

    Parameters
    ----------
    tile : Tile
        The tile.
    size : int, pixels
        Side of the image.
    pixel_scale : float, arcsec/pixel
        Pixel scale; RA grows to the left (east), as on the sky.

    Returns
    -------
    astropy.wcs.WCS
    """
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [tile.ra, tile.dec]
    wcs.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    wcs.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    wcs.pixel_shape = (size, size)
    return wcs


def draw_positions(
    tile: Tile, n: int, rng: np.random.Generator, *, tile_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions on the tile's tangent plane, on the ID grid, owned by the tile.

    Parameters
    ----------
    tile : Tile
        The tile.
    n : int
        Number of positions drawn; fewer come back (outside the tile's own area, or
        on the same ID as an earlier one).
    rng : numpy.random.Generator
        The tile's generator.
    tile_size : float, deg
        Side of the covered square on the tangent plane.

    Returns
    -------
    ra, dec : ndarray, deg
        Unique positions, each the centre of its ID cell.
    """
    half = np.deg2rad(tile_size / 2.0)
    xi = rng.uniform(-half, half, n)
    eta = rng.uniform(-half, half, n)
    ra, dec = _deproject(xi, eta, np.deg2rad(tile.ra), np.deg2rad(tile.dec))
    ra_cell = np.floor(ra / RA_QUANTUM).astype(np.int64)
    dec_sign = np.where(dec < 0, -1, 1)
    dec_cell = np.floor(np.abs(dec) / DEC_QUANTUM).astype(np.int64)
    ra = (ra_cell + 0.5) * RA_QUANTUM
    dec = dec_sign * (dec_cell + 0.5) * DEC_QUANTUM
    owned = (np.abs((ra - tile.ra + 180.0) % 360.0 - 180.0) < 0.5) & (np.abs(dec - tile.dec) < 0.5)
    key = (ra_cell * 2 + (dec_sign > 0)) * 10_000_000 + dec_cell
    _, first = np.unique(np.where(owned, key, -1), return_index=True)
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    keep &= owned
    return ra[keep], dec[keep]


def _deproject(xi, eta, ra0, dec0):
    """Inverse gnomonic projection about (ra0, dec0); all angles in radians, out in deg."""
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    sin_c, cos_c = np.sin(c), np.cos(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rho > 0, eta * sin_c / rho, 0.0)
    dec = np.arcsin(cos_c * np.sin(dec0) + ratio * np.cos(dec0))
    ra = ra0 + np.arctan2(xi * sin_c, rho * np.cos(dec0) * cos_c - eta * np.sin(dec0) * sin_c)
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def kids_ids(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """KiDS source names ``KiDS JHHMMSS.sss+DDMMSS.ss`` (truncated), vectorised.

    Parameters
    ----------
    ra, dec : ndarray, deg

    Returns
    -------
    ndarray of uint8, shape (n, 26)
        The ASCII bytes of each name (see :func:`ids_to_arrow`).
    """
    ra_ms = np.floor(np.asarray(ra) / RA_QUANTUM).astype(np.int64)
    dec_cs = np.floor(np.abs(np.asarray(dec)) / DEC_QUANTUM).astype(np.int64)
    out = np.empty((ra_ms.size, ID_LENGTH), dtype=np.uint8)
    out[:, :6] = np.frombuffer(b"KiDS J", dtype=np.uint8)
    _digits(out, 6, ra_ms // 3_600_000, 2)
    _digits(out, 8, ra_ms // 60_000 % 60, 2)
    _digits(out, 10, ra_ms // 1000 % 60, 2)
    out[:, 12] = ord(".")
    _digits(out, 13, ra_ms % 1000, 3)
    out[:, 16] = np.where(np.asarray(dec) < 0, ord("-"), ord("+"))
    _digits(out, 17, dec_cs // 360_000, 2)
    _digits(out, 19, dec_cs // 6000 % 60, 2)
    _digits(out, 21, dec_cs // 100 % 60, 2)
    out[:, 23] = ord(".")
    _digits(out, 24, dec_cs % 100, 2)
    return out


def _digits(out: np.ndarray, start: int, value: np.ndarray, width: int) -> None:
    for pos in range(width - 1, -1, -1):
        out[:, start + pos] = ord("0") + value % 10
        value = value // 10


def ids_to_arrow(ids: np.ndarray):
    """Turn the (n, 26) bytes of :func:`kids_ids` into a pyarrow string array, no copy loop."""
    import pyarrow as pa

    n = ids.shape[0]
    offsets = np.arange(0, (n + 1) * ID_LENGTH, ID_LENGTH, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(ids))
    )
