"""The PSF of each band of a tile, recorded by the cutout stage in the tile's attributes.

The FWHM comes from a header keyword of the image where the job names one
(``cutouts.psf_keyword``), else it is measured on the tile's stars
(:func:`lensdask.images.psf.measure_tile_psf`, Moffat fits of the bright, isolated ones).
The stars are the catalog's: the cutout stage's targets are galaxies only, so the task of
a tile reads the tile's rows of the catalog (``RAJ2000``, ``DECJ2000``, ``SG2DPHOT``) from
the catalog files :func:`tile_catalog_files` picks. Reading the catalog in the tile's task
needs no new artifact and no change to the select stage, and costs one small read of
three columns.

Recorded per band (:func:`psf_attrs`): ``psf: {band: {fwhm_arcsec, fwhm_err_arcsec,
n_stars, beta, method, reason}}`` (null for NaN: Zarr attributes are JSON) and
``seeing: {band: fwhm_arcsec}``, which the training set reads as its hosts' seeing and
PSFs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.images.psf import PsfEstimate, measure_tile_psf
from lensdask.storage import as_path

STAR_COLUMN = "SG2DPHOT"
"""Catalog column telling stars (non-zero) from galaxies (0), KiDS DR4's."""
CATALOG_COLUMNS = ("RAJ2000", "DECJ2000", STAR_COLUMN)
"""Columns of the catalog the measurement reads."""
PSF_FLAG_BITS = 2 | 64 | 128
"""Flag-map bits whose pixels spoil a star's stamp: saturation cores (2), bad pixels (64)
and manual masks (128). Halos (8, 16, 32) and spikes (1, 4) are left out: every bright
star's own stamp lies in its halo, so they would remove the stars the PSF is measured on."""
MAX_STARS = 25
"""Stars fitted per image, those of highest signal-to-noise ratio (about 0.3 s)."""


def tile_catalog_files(files: list[Path], tile: str) -> list[Path]:
    """The catalog files that hold ``tile``'s sources: ``<tile>.parquet`` where the catalog
    has one file per tile (the layout of the mock survey and of ``lensdask ingest``), else
    every file (the rows of the tile are then picked by ``THELI_NAME``)."""
    own = [file for file in files if as_path(file).stem == tile]
    return own or list(files)


def read_tile_sources(files: list[Path], tile: str):
    """Positions of every catalog source of ``tile`` and which are stars.

    Returns
    -------
    pandas.DataFrame
        ``RAJ2000``, ``DECJ2000`` (deg) and ``star`` (bool, ``SG2DPHOT != 0``).

    Raises
    ------
    KeyError
        A catalog file lacks a column the measurement needs (named, with the file).
    """
    import pyarrow.dataset as ds

    from lensdask.formats.parquet import open_dataset

    dataset = open_dataset(list(files))
    names = set(dataset.schema.names)
    missing = [name for name in (*CATALOG_COLUMNS, "THELI_NAME") if name not in names]
    if missing:
        raise KeyError(
            f"catalog {files[0]}{' ...' if len(files) > 1 else ''}: no column(s) {missing} "
            "to measure the PSF on its stars (or set cutouts.measure_psf: false)"
        )
    table = dataset.to_table(
        columns=list(CATALOG_COLUMNS), filter=ds.field("THELI_NAME") == tile
    ).to_pandas()
    table["star"] = table[STAR_COLUMN].fillna(0).to_numpy() != 0
    return table[["RAJ2000", "DECJ2000", "star"]]


def band_psf(
    read_rows,
    shape: tuple[int, int],
    *,
    x: np.ndarray,
    y: np.ndarray,
    star: np.ndarray,
    pixel_scale: float,
    read_flag_rows=None,
    flag_bits: int = PSF_FLAG_BITS,
) -> PsfEstimate:
    """The PSF of one image measured on its stars (pure, given readers of its rows).

    Parameters
    ----------
    read_rows : callable
        ``read_rows(start, stop)``: image rows (the cutout stage's row reader).
    shape : (int, int)
        Shape (ny, nx) of the image.
    x, y : ndarray, shape (n,), pixels
        0-based positions of every catalog source of the tile on the image (NaN allowed).
    star : ndarray of bool, shape (n,)
        Which sources are stars.
    pixel_scale : float, arcsec / pixel
    read_flag_rows : callable, optional
        The same for the image's flag map: pixels with one of ``flag_bits`` are bad.
    flag_bits : int
        Flag bits that spoil a star's stamp.

    Returns
    -------
    PsfEstimate
    """
    on = np.isfinite(x) & np.isfinite(y)
    on &= (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (y < shape[0] - 0.5)
    read_bad = None
    if read_flag_rows is not None and flag_bits:

        def read_bad(start: int, stop: int) -> np.ndarray:
            return (np.asarray(read_flag_rows(start, stop)).astype(np.int64) & flag_bits) != 0

    return measure_tile_psf(
        read_rows,
        shape,
        stars_xy=np.column_stack([x[on & star], y[on & star]]),
        neighbours_xy=np.column_stack([x[on], y[on]]),
        pixel_scale=pixel_scale,
        read_bad_rows=read_bad,
        max_stars=MAX_STARS,
    )


def psf_attrs(estimates: Mapping[str, PsfEstimate]) -> dict[str, Any]:
    """The tile attributes recording each band's PSF: ``psf`` and ``seeing`` (see the
    module docstring)."""
    psf = {
        band: {
            key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in dataclasses.asdict(estimate).items()
        }
        for band, estimate in estimates.items()
    }
    return {"psf": psf, "seeing": {band: entry["fwhm_arcsec"] for band, entry in psf.items()}}
