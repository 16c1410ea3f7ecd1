"""Targets matched to image groups by position, against a brute-force loop over images and
targets; the catalog's tile key wins and disagreements are listed."""

from __future__ import annotations

import numpy as np
import pytest
from image_files import write_image

from lensdask.formats.image_index import image_wcs, index_table, read_image_index, write_image_index
from lensdask.images.headers import image_row, read_image_header
from lensdask.images.match import match_targets

SCALE = 72.0  # arcsec/px: 60 x 50 px images of 1.2 x 1.0 deg
GROUPS = {  # tile: (ra, dec, rotation) of its r image
    "A": (10.0, 0.0, 0.0),
    "B": (11.0, 0.0, 0.0),  # overlaps A by 0.2 deg
    "C": (10.5, 0.9, 0.0),  # overlaps A and B
    "D": (359.6, 0.0, 0.0),  # D and E overlap across RA 0/360
    "E": (0.4, 0.0, 0.0),
    "F": (12.6, 0.3, 30.0),  # rotated
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("match")
    rows = []
    for tile, (ra, dec, rotation) in GROUPS.items():
        for band, shift in (("r", 0.0), ("g", 0.3)):  # g images elsewhere: never decide
            path = write_image(
                folder / f"{tile}_{band}.fits",
                ra=(ra + shift) % 360,
                dec=dec,
                width=60,
                height=50,
                scale=SCALE,
                rotation=rotation,
            )
            rows.append(image_row(read_image_header(path), path=str(path), band=band, tile=tile))
    only_g = write_image(folder / "G_g.fits", ra=5.0, dec=0.0, width=60, height=50, scale=SCALE)
    rows.append(image_row(read_image_header(only_g), path=str(only_g), band="g", tile="G"))
    return read_image_index(write_image_index(index_table(rows), folder / "index.parquet"))


def brute_force(ra, dec, index, band):
    """Best group of each target by a plain loop over targets and images."""
    images = index[index["band"] == band].reset_index(drop=True)
    rows = [images.iloc[j] for j in range(len(images))]
    wcses = [image_wcs(row["wcs"]) for row in rows]
    tiles, distances = [], []
    for i in range(len(ra)):
        best, best_distance = None, -np.inf
        for row, wcs in zip(rows, wcses, strict=True):
            x, y = wcs.world_to_pixel_values(ra[i], dec[i])
            w, h = row["width"], row["height"]
            d = min(x + 0.5, w - 0.5 - x, y + 0.5, h - 0.5 - y)
            if np.isfinite(d) and d > 0 and d > best_distance:
                best, best_distance = row["tile"], d
        tiles.append(best)
        distances.append(best_distance if best is not None else np.nan)
    return np.array(tiles, dtype=object), np.array(distances)


def targets(index):
    rng = np.random.default_rng(7)
    ra = rng.uniform(-1.5, 14.0, 1500) % 360
    dec = rng.uniform(-1.2, 1.8, 1500)
    edge_x, edge_y = [], []
    for x in (-0.51, -0.49, 0.0, 59.49, 59.51):  # on both sides of A's edges
        for y in (-0.51, -0.49, 25.0, 49.49, 49.51):
            edge_x.append(x)
            edge_y.append(y)
    wcs = image_wcs(index[(index["tile"] == "A") & (index["band"] == "r")]["wcs"].iloc[0])
    era, edec = wcs.pixel_to_world_values(np.array(edge_x), np.array(edge_y))
    ra = np.concatenate([ra, era % 360, [359.95, 0.05, 180.0, 10.0]])
    dec = np.concatenate([dec, edec, [0.0, 0.0, 45.0, -80.0]])
    return ra, dec


def test_position_matching_equals_a_brute_force_loop(index):
    ra, dec = targets(index)
    match = match_targets(ra, dec, index, band="r")
    tiles, distances = brute_force(ra, dec, index, "r")
    assert list(match.position_tile) == list(tiles)
    assert list(match.tile) == list(tiles)
    np.testing.assert_allclose(match.edge_distance, distances, rtol=0, atol=1e-9)
    # every outcome is there: overlaps, RA wrap-around, off every image
    assert {"A", "B", "C", "D", "E", "F"} <= set(tiles[tiles != None])  # noqa: E711
    assert "G" not in set(match.tile)  # no r image
    assert match.position_tile[-4] == "D" and match.position_tile[-3] == "E"
    unmatched = match.unmatched
    assert len(unmatched) == match.counts["on_no_image"] == int((tiles == None).sum())  # noqa: E711
    assert {len(ra) - 2, len(ra) - 1} <= set(unmatched)
    listing = match.listing(unmatched)
    assert (listing["how"] == "none").all() and listing["tile"].isna().all()
    groups = match.groups()
    assert sum(len(rows) for rows in groups.values()) == len(ra) - len(unmatched)
    assert all((match.tile[rows] == tile).all() for tile, rows in groups.items())


def test_targets_near_the_edge_go_to_the_image_where_they_are_furthest_inside(index):
    wcs = image_wcs(index[(index["tile"] == "A") & (index["band"] == "r")]["wcs"].iloc[0])
    # x grows towards lower RA: A's first column is inside B too, and deeper there
    ra, dec = wcs.pixel_to_world_values(
        np.array([59.0, 0.0, -0.6, 30.0]), np.array([25.0, 25.0, 25.0, -0.6])
    )
    match = match_targets(ra, dec, index, band="r")
    assert list(match.tile) == ["A", "B", "B", None]
    assert match.edge_distance[0] == pytest.approx(0.5)
    assert match.edge_distance[1] > 5
    assert list(match.unmatched) == [3]


def test_catalog_keys_win_and_disagreements_are_listed(index):
    wcs = image_wcs(index[(index["tile"] == "A") & (index["band"] == "r")]["wcs"].iloc[0])
    ra, dec = wcs.pixel_to_world_values(
        np.array([30.0, 0.0, 30.0, 30.0, 30.0, 55.0]),
        np.array([25.0, 25.0, 25.0, 25.0, 25.0, 25.0]),
    )
    ids = np.array([f"T{k}" for k in range(6)], dtype=object)
    keys = ["A", "A", "B", "KIDS_nope", "", "A"]
    match = match_targets(ra, dec, index, band="r", keys=keys, ids=ids)
    # T1 is deeper in B but on A: the key wins, no disagreement; T2 is not on B at all
    assert list(match.tile) == ["A", "A", "B", "A", "A", "A"]
    assert list(match.how) == ["key", "key", "key", "position", "position", "key"]
    assert list(match.position_tile) == ["A", "B", "A", "A", "A", "A"]
    disagreements = match.listing(match.disagreements)
    assert list(disagreements["ID"]) == ["T2"]
    assert disagreements["key_distance"].iloc[0] < 0
    assert disagreements["position_tile"].iloc[0] == "A"
    assert list(match.listing(match.unknown_keys)["ID"]) == ["T3"]
    assert match.counts == {
        "by_key": 4,
        "by_position": 2,
        "on_no_image": 0,
        "off_their_key": 1,
        "unknown_key": 1,
    }


def test_a_band_without_images_is_named(index):
    with pytest.raises(ValueError, match=r"no image in band i \(it has: g, r\)"):
        match_targets([10.0], [0.0], index, band="i")
