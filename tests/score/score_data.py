"""The layout of the scoring tests' cutout store."""

TILES = {
    "KIDS_1.0_0.5": {"LRG": 70, "BG": 40},
    "KIDS_2.0_0.5": {"LRG": 20, "BG": 300},
    "KIDS_3.0_0.5": {"LRG": 5, "BG": 0},
    "KIDS_4.0_0.5": {"LRG": 0, "BG": 33},
    "KIDS_5.0_0.5": {"LRG": 12, "BG": 12},
}
"""Five tiles (more than the session's two workers), one with no LRG, one with no BG."""
