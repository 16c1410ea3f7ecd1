"""Shapes of the review tests' synthetic inputs (shared by the fixtures and the tests)."""

from __future__ import annotations

COLOUR_TILES = {"KIDS_10.0_0.5": {"LRG": 4, "BG": 2}, "KIDS_11.0_0.5": {"LRG": 3, "BG": 0}}
"""Tiles with g, r and i cutouts."""
R_ONLY_TILE = {"KIDS_12.0_0.5": {"LRG": 2, "BG": 0}}
"""A tile with r cutouts only: its colour stamps fall back to grey."""
N_CANDIDATES = sum(
    n for tiles in (COLOUR_TILES, R_ONLY_TILE) for s in tiles.values() for n in s.values()
)
"""Every cutout is a candidate."""
