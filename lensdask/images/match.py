"""Targets placed on images by their position: the kernel that tells which image group
(all bands of one tile or patch) each target's cutout comes from.

A target goes to the group in whose detection-band image it lies furthest from the edge,
in pixels through that image's WCS, so that a target in the overlap of two tiles (KiDS
tiles overlap by a few arcmin; Euclid's MER tiles and LSST's patches overlap by design)
is cut from the image where its stamp is most complete. Where the catalog gives a tile key
(KiDS ``THELI_NAME``) the key wins, and the position only checks it: targets that are not
on their keyed tile's image, and keys the index does not have, are counted and listed.
Targets on no image are counted and listed, never dropped silently.

Vectorised: the footprints are prefiltered with a k-d tree of the targets' unit vectors
(the circle through an image's corners holds the whole image, on any part of the sky, with
no RA wrap-around at 0/360 to handle), then each image converts its candidates at once
with ``world_to_pixel_values``. Pure: no I/O, no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FOOTPRINT_PAD = 1.02
"""Factor on the radius of the circle through an image's corners, for WCS distortions that
bend its edges outwards."""


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) of sky positions ``ra``, ``dec`` (deg)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def edge_distance(x: np.ndarray, y: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Distance in px of pixel positions (0-based, pixel centres at integers) from the
    nearest edge of a ``width`` x ``height`` image: > 0 inside, <= 0 outside, -inf where
    the position is not finite."""
    distance = np.minimum.reduce([x + 0.5, width - 0.5 - x, y + 0.5, height - 0.5 - y])
    return np.where(np.isfinite(distance), distance, -np.inf)


def footprint_circles(ra_corners: Any, dec_corners: Any) -> tuple[np.ndarray, np.ndarray]:
    """Centre (unit vector, (M, 3)) and chord radius (M,) of a circle holding each image:
    through its farthest corner from the corners' mean, padded by :data:`FOOTPRINT_PAD`.

    An image whose edges are great circles (any zenithal projection without distortion)
    lies inside that circle: on a convex spherical polygon, the point farthest from a point
    inside it is a corner.
    """
    ra = np.array([list(item) for item in ra_corners], float)
    dec = np.array([list(item) for item in dec_corners], float)
    corners = unit_vectors(ra, dec)  # (M, 4, 3)
    centre = corners.mean(axis=1)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    cos_angle = np.clip(np.einsum("mkc,mc->mk", corners, centre), -1.0, 1.0)
    angle = np.minimum(np.arccos(cos_angle).max(axis=1) * FOOTPRINT_PAD + 1e-6, np.pi)
    return centre, 2.0 * np.sin(angle / 2.0)


def _pixels(wcs: Any, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions of sky positions through ``wcs``; NaN where it cannot place them
    (a distortion's inverse that does not converge far from the image)."""
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        try:
            x, y = wcs.world_to_pixel_values(ra, dec)
        except Exception:  # astropy's NoConvergence and wcslib's invalid coordinates
            x, y = wcs.wcs_world2pix(ra, dec, 0)
    return np.asarray(x, float), np.asarray(y, float)


@dataclass(frozen=True)
class TargetMatch:
    """Which image group each target goes to (arrays parallel to the targets)."""

    tile: np.ndarray
    """The group the target goes to (object array of str; None: on no image)."""
    position_tile: np.ndarray
    """The group in whose detection-band image the target lies furthest from the edge
    (None: on no image)."""
    edge_distance: np.ndarray
    """Distance from the edge of that image, px (NaN: on no image)."""
    key: np.ndarray
    """The catalog's tile key (None: none given)."""
    key_distance: np.ndarray
    """Distance from the edge of the keyed group's detection-band image, px, negative
    outside it (NaN: no key, or a key the index does not have)."""
    how: np.ndarray
    """``key`` (the catalog's key, in the index), ``position`` or ``none``."""
    ids: np.ndarray
    """The targets' IDs (their positions 0..N-1 where none were given)."""

    @property
    def unmatched(self) -> np.ndarray:
        """Indices of the targets on no image (and without a key the index has)."""
        return np.flatnonzero(self.how == "none")

    @property
    def disagreements(self) -> np.ndarray:
        """Indices of the targets whose keyed group's detection-band image does not hold
        them (the key still wins)."""
        return np.flatnonzero((self.how == "key") & ~(self.key_distance > 0))

    @property
    def unknown_keys(self) -> np.ndarray:
        """Indices of the targets whose key the index does not have (placed by position)."""
        has_key = np.array([key is not None for key in self.key], dtype=bool)
        return np.flatnonzero(has_key & np.isnan(self.key_distance))

    @property
    def counts(self) -> dict[str, int]:
        """Targets by outcome: ``by_key``, ``by_position``, ``on_no_image``,
        ``off_their_key`` (disagreements) and ``unknown_key``."""
        return {
            "by_key": int((self.how == "key").sum()),
            "by_position": int((self.how == "position").sum()),
            "on_no_image": len(self.unmatched),
            "off_their_key": len(self.disagreements),
            "unknown_key": len(self.unknown_keys),
        }

    def listing(self, which: np.ndarray | None = None):
        """A DataFrame of the targets ``which`` (indices; default all): ``ID``, ``tile``,
        ``how``, ``position_tile``, ``edge_distance`` (px), ``key``, ``key_distance`` (px)."""
        import pandas as pd

        rows = slice(None) if which is None else np.asarray(which, dtype=np.int64)
        return pd.DataFrame(
            {
                "ID": self.ids[rows],
                "tile": self.tile[rows],
                "how": self.how[rows],
                "position_tile": self.position_tile[rows],
                "edge_distance": self.edge_distance[rows],
                "key": self.key[rows],
                "key_distance": self.key_distance[rows],
            }
        )

    def groups(self) -> dict[str, np.ndarray]:
        """Indices of the targets of each group, by group key (sorted), targets on no image
        left out (see :attr:`unmatched`)."""
        placed = np.flatnonzero(self.how != "none")
        keys = self.tile[placed].astype(str)
        order = np.argsort(keys, kind="stable")
        keys, placed = keys[order], placed[order]
        unique, starts = np.unique(keys, return_index=True)
        return {
            str(key): placed[start:stop]
            for key, start, stop in zip(unique, starts, [*starts[1:], len(keys)], strict=True)
        }


def _keys(keys: Any, n: int) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    if keys is None:
        return out
    values = np.asarray(keys, dtype=object)
    if len(values) != n:
        raise ValueError(f"keys: {len(values)} keys for {n} targets")
    for i, value in enumerate(values):
        if isinstance(value, str) and value.strip():
            out[i] = value.strip()
    return out


def match_targets(
    ra: Any,
    dec: Any,
    index: Any,
    *,
    band: str,
    keys: Any = None,
    ids: Any = None,
) -> TargetMatch:
    """Place targets on the image groups of an image index.

    Parameters
    ----------
    ra, dec : array_like, deg
        The targets' positions.
    index : pandas.DataFrame
        The image index (:func:`lensdask.formats.image_index.read_image_index`).
    band : str
        The detection band: its images decide (every group must have one to be chosen).
    keys : array_like of str, optional
        The catalog's tile key of each target (KiDS ``THELI_NAME``; None or empty: none):
        where the index has the key, it wins, and the position only checks it.
    ids : array_like, optional
        The targets' IDs, for the listings.

    Returns
    -------
    TargetMatch
        The group of each target, how it was chosen, and the distances from the edges.

    Raises
    ------
    ValueError
        The index has no image in ``band`` (the message lists the bands it has), or the
        arrays differ in length.
    """
    from scipy.spatial import cKDTree

    from lensdask.formats.image_index import image_wcs

    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    n = len(ra)
    if len(dec) != n:
        raise ValueError(f"ra and dec differ in length ({n} and {len(dec)})")
    images = index[index["band"] == band].reset_index(drop=True)
    if images.empty:
        bands = ", ".join(sorted(map(str, index["band"].unique()))) or "none"
        raise ValueError(f"the image index has no image in band {band} (it has: {bands})")
    key = _keys(keys, n)
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=object)
    if len(ids) != n:
        raise ValueError(f"ids: {len(ids)} IDs for {n} targets")
    tiles = images["tile"].astype(str).to_numpy()
    sizes = images[["width", "height"]].to_numpy(dtype=np.int64)
    wcs_cache: dict[int, Any] = {}

    def wcs_of(j: int):
        if j not in wcs_cache:
            wcs_cache[j] = image_wcs(images["wcs"].iat[j])
        return wcs_cache[j]

    best = np.full(n, -1, dtype=np.int64)
    best_distance = np.full(n, -np.inf)
    finite = np.isfinite(ra) & np.isfinite(dec)
    if n and finite.any():
        valid = np.flatnonzero(finite)
        tree = cKDTree(unit_vectors(ra[valid], dec[valid]))
        centres, radii = footprint_circles(images["ra_corners"], images["dec_corners"])
        candidates = tree.query_ball_point(centres, r=radii)
        for j, near in enumerate(candidates):  # index order: the first image wins a tie
            if not near:
                continue
            rows = valid[np.asarray(near, dtype=np.int64)]
            x, y = _pixels(wcs_of(j), ra[rows], dec[rows])
            distance = edge_distance(x, y, width=sizes[j, 0], height=sizes[j, 1])
            better = (distance > 0) & (distance > best_distance[rows])
            best[rows[better]] = j
            best_distance[rows[better]] = distance[better]
    placed = best >= 0
    position_tile = np.full(n, None, dtype=object)
    position_tile[placed] = tiles[best[placed]]
    distance = np.where(placed, best_distance, np.nan)

    key_distance = np.full(n, np.nan)
    row_of = {tile: j for j, tile in enumerate(tiles)}
    keyed = np.array([k is not None and k in row_of for k in key], dtype=bool)
    if keyed.any():
        for tile in np.unique(key[keyed].astype(str)):
            rows = np.flatnonzero(keyed & (key == tile))
            j = row_of[tile]
            x, y = _pixels(wcs_of(j), ra[rows], dec[rows])
            key_distance[rows] = edge_distance(x, y, width=sizes[j, 0], height=sizes[j, 1])
    tile = np.where(keyed, key, position_tile)
    how = np.where(keyed, "key", np.where(placed, "position", "none")).astype(object)
    return TargetMatch(
        tile=tile.astype(object),
        position_tile=position_tile,
        edge_distance=distance,
        key=key,
        key_distance=key_distance,
        how=how,
        ids=ids,
    )


__all__ = ["TargetMatch", "edge_distance", "footprint_circles", "match_targets", "unit_vectors"]
