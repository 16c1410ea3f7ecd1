"""Factories of tiny synthetic data for tests and examples (no Dask, small and fast).

These make catalog frames with chosen values (boundary cases included), write them as
Parquet catalog files or KiDS-like FITS catalogs, and build a small mock survey config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lensdask.config import MockSurveyConfig
from lensdask.mock.tiles import ids_to_arrow, kids_ids


def c_perp_colours(c_perp: float, *, g_r: float = 1.0) -> tuple[float, float]:
    """Colours ``(g-r, r-i)`` whose ``c_perp = (r-i) - (g-r)/4.0 - 0.18``, computed in float64
    in that order, is exactly ``c_perp`` (found by stepping ``r-i`` ulp by ulp)."""
    r_i = c_perp + g_r / 4.0 + 0.18
    for _ in range(64):
        value = r_i - g_r / 4.0 - 0.18
        if value == c_perp:
            return g_r, r_i
        r_i = np.nextafter(r_i, np.inf if value < c_perp else -np.inf)
    raise ValueError(f"no float64 colours give c_perp == {c_perp}")


def boundary_rows() -> list[dict[str, float]]:
    """Rows exactly on the edges of the cuts: MAG_AUTO = 21.0 and 20.0 (and the next float32
    above), c_perp = +-0.2 exactly, NaN colours, stars."""
    above = float(np.nextafter(np.float32(21.0), np.float32(22.0)))
    above_lrg = float(np.nextafter(np.float32(20.0), np.float32(21.0)))
    red = {"COLOUR_GAAP_g_r": 1.8, "COLOUR_GAAP_r_i": 0.63}  # c_par = 1.71: MAG_AUTO < 19.7
    plus = dict(zip(("COLOUR_GAAP_g_r", "COLOUR_GAAP_r_i"), c_perp_colours(0.2), strict=True))
    minus = dict(zip(("COLOUR_GAAP_g_r", "COLOUR_GAAP_r_i"), c_perp_colours(-0.2), strict=True))
    redder = {"COLOUR_GAAP_g_r": 2.0, "COLOUR_GAAP_r_i": 0.85}  # c_par = 2.2: MAG_AUTO < 21.3
    return [
        {"SG2DPHOT": 0, "MAG_AUTO": 21.0, **red},
        {"SG2DPHOT": 0, "MAG_AUTO": above, **red},
        {"SG2DPHOT": 0, "MAG_AUTO": 20.0, **redder},
        {"SG2DPHOT": 0, "MAG_AUTO": above_lrg, **redder},
        {"SG2DPHOT": 0, "MAG_AUTO": 16.0, **plus},
        {"SG2DPHOT": 0, "MAG_AUTO": 16.0, **minus},
        {"SG2DPHOT": 0, "MAG_AUTO": 17.0, "COLOUR_GAAP_g_r": np.nan, "COLOUR_GAAP_r_i": 0.4},
        {"SG2DPHOT": 0, "MAG_AUTO": 17.0, "COLOUR_GAAP_g_r": 1.0, "COLOUR_GAAP_r_i": np.nan},
        {"SG2DPHOT": 1, "MAG_AUTO": 17.0, "COLOUR_GAAP_g_r": 1.0, "COLOUR_GAAP_r_i": 0.43},
        {"SG2DPHOT": 4, "MAG_AUTO": 16.0, "COLOUR_GAAP_g_r": 1.2, "COLOUR_GAAP_r_i": 0.5},
    ]


def catalog_frame(
    n: int = 1000,
    *,
    seed: int = 0,
    tile: str = "KIDS_10.0_0.5",
    ra0: float = 10.0,
    dec0: float = 0.5,
    boundary: bool = True,
) -> pd.DataFrame:
    """A synthetic catalog frame with the KiDS DR4 columns.

    ``MAG_AUTO`` is float32 as in KiDS; the colours are float64 so that the boundary rows
    can sit exactly on ``|c_perp| = 0.2``. Values are spread around the cut edges so both
    outcomes of every cut occur; with ``boundary`` the :func:`boundary_rows` are appended.
    IDs are KiDS names made from the positions (unique).
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "SG2DPHOT": rng.choice([0, 0, 0, 1, 2], n).astype(np.int32),
            "MAG_AUTO": rng.uniform(15.0, 22.5, n),
            "COLOUR_GAAP_g_r": rng.uniform(0.0, 2.2, n),
            "COLOUR_GAAP_r_i": rng.uniform(0.0, 1.0, n),
        }
    )
    nan = rng.random(n) < 0.05
    frame.loc[nan, "COLOUR_GAAP_g_r"] = np.nan
    if boundary:
        frame = pd.concat([frame, pd.DataFrame(boundary_rows())], ignore_index=True)
    m = len(frame)
    ra = ra0 + (np.arange(m) + 0.5) / m * 0.5  # distinct ID cells
    dec = np.full(m, dec0) + rng.uniform(-0.4, 0.4, m)
    frame.insert(0, "ID", np.asarray(ids_to_arrow(kids_ids(ra, dec)).to_pylist(), dtype=object))
    frame.insert(1, "RAJ2000", ra)
    frame.insert(2, "DECJ2000", dec)
    frame.insert(3, "THELI_NAME", tile)
    frame["Z_B"] = rng.uniform(0.0, 1.2, m).astype(np.float32)
    frame["MAG_AUTO"] = frame["MAG_AUTO"].astype(np.float32)
    frame["SG2DPHOT"] = frame["SG2DPHOT"].astype(np.int32)
    return frame


def write_parquet_catalog(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a catalog frame as one Parquet file (the layout the selection reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def damage_parquet_pages(path: str | Path) -> Path:
    """Overwrite the data pages of a Parquet file and keep its footer: the file's schema
    and row counts read, its rows do not (a pre-flight check passes, the unit fails)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[4 : len(data) - 8 - footer] = b"\x55" * (len(data) - 12 - footer)
    path.write_bytes(bytes(data))
    return path


def write_fits_catalog(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    rename: Mapping[str, str] | None = None,
    extra_columns: int = 3,
) -> Path:
    """Write a catalog frame as a KiDS-like FITS binary table (HDU 1).

    Parameters
    ----------
    frame : pandas.DataFrame
        Catalog rows.
    path : path
        Output FITS file.
    rename : mapping, optional
        Canonical name -> name in the file (to mimic another survey).
    extra_columns : int
        Unrelated float columns added (KiDS catalogs have hundreds).
    """
    from astropy.table import Table

    table = Table.from_pandas(frame.rename(columns=dict(rename or {})))
    for k in range(extra_columns):
        table[f"EXTRA_{k}"] = np.arange(len(frame), dtype=np.float32) * (k + 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write(path, format="fits", overwrite=True)
    return path


def small_survey_config(**overrides: object) -> MockSurveyConfig:
    """A mock survey small enough for tests: 2 tiles of 0.02 deg (360 px), low density."""
    values: dict[str, object] = {"tiles": 2, "tile_size": 0.02, "seed": 7, "images": False}
    values.update(overrides)
    return MockSurveyConfig(**values)  # type: ignore[arg-type]


def cutout2d_stamps(
    data: np.ndarray, positions: object, *, size: int = 101, wcs: object = None
) -> np.ndarray:
    """The reference cutouts of the cutout contract (docs/architecture.md, Contracts):
    astropy's ``Cutout2D(data, position, (size, size),
    wcs=wcs, mode="partial", fill_value=nan)`` at each position, one call per position.

    Parameters
    ----------
    data : ndarray, shape (ny, nx)
        The image.
    positions : SkyCoord (with ``wcs``) or sequence of (x, y), pixels
        Stamp centres, 0-based pixel positions or sky positions.
    size : int, pixels
        Side of the stamps.
    wcs : astropy.wcs.WCS, optional
        The image's WCS, needed for sky positions.

    Returns
    -------
    ndarray, shape (N, size, size)
        The stamps, in the image's dtype (NaN outside the image). A position whose stamp
        does not overlap the image raises astropy's ``NoOverlapError``, as Cutout2D does.
    """
    from astropy.nddata import Cutout2D

    stamps = [
        Cutout2D(data, position, (size, size), wcs=wcs, mode="partial", fill_value=np.nan).data
        for position in positions  # type: ignore[attr-defined]
    ]
    return np.stack(stamps) if stamps else np.empty((0, size, size), dtype=data.dtype)


def write_cutout_store(
    path: str | Path,
    counts: Mapping[str, Mapping[str, int]],
    *,
    size: int = 101,
    bands: tuple[str, ...] = ("r",),
    pixel_scale: float = 0.2,
    edge: int = 0,
    blank: Sequence[tuple[float, str]] = (),
    seed: int = 0,
    bad: int = 0,
) -> Path:
    """A small cutout store of synthetic galaxies, written with the store's own writers.

    Each cutout holds a round Gaussian galaxy at its centre (peak 50-500 counts, sigma
    1-3 px) on unit Gaussian noise.

    Parameters
    ----------
    path : path
        The store to create.
    counts : mapping
        Tile name -> sample (``LRG`` / ``BG``) -> number of cutouts.
    size : int, pixels
        Cutout side.
    bands : tuple of str
        Bands (the same galaxy in each).
    pixel_scale : float, arcsec / pixel
    edge : int
        In each tile, this many extra cutouts (sample ``LRG``) that cross the image border:
        NaN in their left half and flagged ``edge``.
    blank : sequence of (float, str)
        In each tile, after those, a cutout per item without any finite pixel: every pixel
        of every band is the value (NaN, +inf or -inf), of the sample given.
    seed : int
        Seed of the pixel noise and galaxy shapes.
    bad : int
        In each tile, the first ``bad`` cutouts get a ``bad_fraction`` of 0.5 in every band
        (as if half their pixels had zero weight; the pixels stay finite). Every other
        cutout's ``bad_fraction`` is its ``nonfinite_fraction``.

    Returns
    -------
    Path
        ``path``.
    """
    from lensdask.formats.cutout_store import open_root, write_tile_group
    from lensdask.normalise import nonfinite_fraction
    from lensdask.units import (
        MANIFEST_FILE,
        Manifest,
        Marker,
        commit_folder,
        folder_files,
        ids_hash,
        marker_digest,
        read_manifest,
        read_marker,
        staging_path,
        write_manifest,
        write_marker,
    )

    path = Path(path)
    rng = np.random.default_rng(seed)
    open_root(path, attrs={"bands": list(bands), "size": size})
    digests = dict(read_manifest(path).units) if (path / MANIFEST_FILE).exists() else {}
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    for tile, samples in counts.items():
        sample = [name for name, n in samples.items() for _ in range(n)] + ["LRG"] * edge
        sample += [kind for _, kind in blank]
        n = len(sample)
        first_blank = n - len(blank)
        peak = rng.uniform(50, 500, n)[:, None, None]
        width = rng.uniform(1, 3, n)[:, None, None]
        galaxy = peak * np.exp(-(xx**2 + yy**2) / (2 * width**2))
        images = {}
        for band in bands:
            image = (galaxy + rng.standard_normal((n, size, size))).astype(np.float32)
            image[first_blank - edge : first_blank, :, : size // 2] = np.nan
            for k, (value, _) in enumerate(blank):
                image[first_blank + k] = value
            images[band] = image
        is_edge = (np.arange(n) >= first_blank - edge) & (np.arange(n) < first_blank)
        ids = np.array([f"KiDS J{tile} {k:05d}" for k in range(n)])
        columns = {
            "ID": ids,
            "sample": np.array(sample),
            "RAJ2000": rng.uniform(0, 1, n),
            "DECJ2000": rng.uniform(-1, 0, n),
            "x": rng.uniform(0, 1000, n),
            "y": rng.uniform(0, 1000, n),
            "edge": is_edge,
            "nonfinite_fraction": np.stack(
                [nonfinite_fraction(images[band]) for band in bands], axis=1
            ),
        }
        columns["bad_fraction"] = columns["nonfinite_fraction"].copy()
        columns["bad_fraction"][:bad] = np.maximum(columns["bad_fraction"][:bad], 0.5)
        attrs = {
            "tile": tile,
            "bands": list(bands),
            "size": size,
            "pixel_scale": {band: pixel_scale for band in bands},
        }
        staged = staging_path(path, tile)
        write_tile_group(staged, images, columns, attrs=attrs, chunk=64, compression_level=0)
        commit_folder(staged, path / tile)
        marker = Marker(
            unit=tile,
            rows=n,
            ids_hash=ids_hash(ids),
            config_hash="testing",
            files=folder_files(path, path / tile),
        )
        write_marker(path, marker)
        digests[tile] = marker_digest(read_marker(path, tile))
    write_manifest(path, Manifest(stage="cutouts", units=digests))
    return path


def write_candidates(
    path: str | Path,
    store: str | Path,
    *,
    per_tile: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A candidates file (the ``lensdask candidates`` contract) for the cutouts of ``store``.

    Takes the first ``per_tile`` cutouts (all by default) of every complete tile, gives
    them distinct float32 ``p_cnn`` in (0.75, 1) and writes one Parquet file sorted by
    decreasing ``p_cnn``, with ``ID``, ``THELI_NAME``, ``sample``, ``p_cnn``, ``model_id``,
    ``RAJ2000``, ``DECJ2000`` (deg), ``MAG_AUTO`` and ``Z_B`` (one NaN).

    Returns
    -------
    pandas.DataFrame
        The rows written, in file order.
    """
    from lensdask.formats.cutout_store import complete_tiles, read_tile_columns

    rng = np.random.default_rng(seed)
    parts = []
    for tile in complete_tiles(store):
        columns = read_tile_columns(store, tile, ["ID", "sample", "RAJ2000", "DECJ2000"])
        n = columns["ID"].shape[0] if per_tile is None else min(per_tile, columns["ID"].shape[0])
        parts.append(
            pd.DataFrame(
                {
                    "ID": columns["ID"][:n].tolist(),
                    "THELI_NAME": tile,
                    "sample": columns["sample"][:n].tolist(),
                    "RAJ2000": columns["RAJ2000"][:n],
                    "DECJ2000": columns["DECJ2000"][:n],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    m = len(frame)
    frame["p_cnn"] = np.linspace(0.999, 0.751, m).astype(np.float32)
    frame["model_id"] = "test-model"
    frame["MAG_AUTO"] = rng.uniform(17.0, 21.0, m).astype(np.float32)
    frame["Z_B"] = rng.uniform(0.1, 0.8, m)
    if m:
        frame.loc[m - 1, "Z_B"] = np.nan
    columns = ["ID", "THELI_NAME", "sample", "p_cnn", "model_id", "RAJ2000", "DECJ2000"]
    frame = frame[[*columns, "MAG_AUTO", "Z_B"]]
    write_parquet_catalog(frame, path)
    return frame


def write_untrained_model(
    path: str | Path, *, width: float = 1 / 16, size: int = 101, band: str = "r", seed: int = 0
) -> Path:
    """A model directory holding an untrained ResNet-18 (seeded weights) and its card, as
    :func:`lensdask.nn.train.train_model` writes them: for tests of the stages that use a
    model without training one.

    Parameters
    ----------
    path : path
        The model directory to create.
    width : float
        Width multiplier of the network.
    size : int, pixels
        Input stamp side.
    band : str
        The band the card says the model takes.
    seed : int
        Seed of the weights.
    """
    from lensdask.formats.model_dir import library_versions, write_model_dir
    from lensdask.nn.model import architecture, build_resnet18
    from lensdask.normalise import NORMALISATION

    model = build_resnet18(input_shape=(size, size, 1), width=width, seed=seed)
    card = {
        "architecture": architecture(model),
        "input_shape": [size, size, 1],
        "normalisation": NORMALISATION,
        "band": band,
        "seed": seed,
        "training": None,
        "libraries": library_versions(),
    }
    write_model_dir(model, path, card=card)
    return Path(path)


def global_state() -> dict[str, object]:
    """The process-wide state that library code must leave as it found it: matplotlib's
    backend, Keras' dtype policy (this thread's), and the states of NumPy's global random
    generator and of Python's :mod:`random`. Compare two snapshots with ``==``.

    Imports Keras (so its backend) and matplotlib.
    """
    import random

    import keras
    import matplotlib

    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "matplotlib backend": matplotlib.get_backend(),
        "keras dtype policy": keras.config.dtype_policy().name,
        "numpy random": (name, keys.tobytes(), position, has_gauss, gauss),
        "python random": random.getstate(),
    }
