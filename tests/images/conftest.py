"""Fixtures of the image index tests."""

from __future__ import annotations

import pytest
from image_files import write_kids_tiles


@pytest.fixture
def kids_folder(tmp_path):
    """Two KiDS DR4 tiles in r and g with weight and flag maps; one tile tile-compressed."""
    folder = tmp_path / "images"
    files = write_kids_tiles(folder, compressed=("KIDS_130.0_0.5",))
    return folder, files
