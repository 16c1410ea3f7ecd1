"""Tile grid, KiDS IDs and positions: unique IDs that decode back to the positions."""

from __future__ import annotations

import re

import numpy as np
from astropy.coordinates import SkyCoord
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.mock.tiles import (
    DEC_QUANTUM,
    RA_QUANTUM,
    draw_positions,
    ids_to_arrow,
    kids_ids,
    survey_tiles,
    tile_wcs,
)

ID_PATTERN = re.compile(r"^KiDS J(\d\d)(\d\d)(\d\d\.\d{3})([+-])(\d\d)(\d\d)(\d\d\.\d\d)$")


def decode(kids_id: str) -> tuple[float, float]:
    hh, mm, ss, sign, dd, dm, ds = ID_PATTERN.match(kids_id).groups()
    ra = 15.0 * (int(hh) + int(mm) / 60 + float(ss) / 3600)
    dec = int(dd) + int(dm) / 60 + float(ds) / 3600
    return ra, -dec if sign == "-" else dec


def test_tile_names_follow_kids():
    tiles = survey_tiles(1006)
    assert tiles[0].name == "KIDS_0.0_-0.5"
    assert tiles[186 + 360].name == "KIDS_186.0_0.5"
    assert len({tile.name for tile in tiles}) == 1006


@settings(max_examples=200, deadline=None)
@given(
    ra=st.floats(0.0, 359.9999, allow_nan=False),
    dec=st.floats(-89.9, 89.9, allow_nan=False),
)
def test_ids_truncate_like_iau_names(ra, dec):
    (name,) = ids_to_arrow(kids_ids(np.array([ra]), np.array([dec]))).to_pylist()
    assert ID_PATTERN.match(name), name
    ra_id, dec_id = decode(name)
    assert -1e-9 <= ra - ra_id < RA_QUANTUM * (1 + 1e-6) + 1e-9  # decoding rounds too
    assert -1e-9 <= abs(dec) - abs(dec_id) < DEC_QUANTUM * (1 + 1e-6) + 1e-9
    assert (dec < 0) == name[16:17].startswith("-")


def test_ids_agree_with_astropy_sexagesimal():
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 50), rng.uniform(-60, 60, 50)
    names = ids_to_arrow(kids_ids(ra, dec)).to_pylist()
    coords = SkyCoord(ra, dec, unit="deg")
    for name, coord in zip(names, coords, strict=True):
        hms = coord.ra.hms
        assert name[6:8] == f"{int(hms.h):02d}" and name[8:10] == f"{int(hms.m):02d}"


def test_positions_are_unique_owned_and_on_the_id_grid():
    rng = np.random.default_rng(5)
    tiles = survey_tiles(362)
    names = []
    for tile in (tiles[0], tiles[1], tiles[359], tiles[360]):  # neighbours, RA wrap, next row
        ra, dec = draw_positions(tile, 40_000, rng, tile_size=1.0)
        assert ra.size > 39_000
        assert np.all(np.abs((ra - tile.ra + 180) % 360 - 180) < 0.5)
        assert np.all(np.abs(dec - tile.dec) < 0.5)
        names += ids_to_arrow(kids_ids(ra, dec)).to_pylist()
        decoded = np.array([decode(n) for n in names[-100:]])
        assert np.allclose(decoded[:, 0], ra[-100:] - RA_QUANTUM / 2, atol=1e-9)
    assert len(set(names)) == len(names)


def test_tile_wcs_round_trips_and_centres_the_tile():
    tile = survey_tiles(400)[370]
    wcs = tile_wcs(tile, size=1000, pixel_scale=0.2)
    x, y = wcs.world_to_pixel_values(tile.ra, tile.dec)
    assert np.allclose([x, y], [499.5, 499.5])
    rng = np.random.default_rng(1)
    px, py = rng.uniform(0, 999, 100), rng.uniform(0, 999, 100)
    ra, dec = wcs.pixel_to_world_values(px, py)
    back = wcs.world_to_pixel_values(ra, dec)
    assert np.allclose(back, (px, py), atol=1e-8)
    scales = np.abs(np.diag(wcs.pixel_scale_matrix)) * 3600
    assert np.allclose(scales, 0.2)
    # east is left: RA decreases with x
    assert wcs.pixel_to_world_values(600, 500)[0] < wcs.pixel_to_world_values(400, 500)[0]
