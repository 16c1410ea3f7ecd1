"""Fixtures of the scoring tests: a real cutout store and a real (untrained) model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from score_data import TILES


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A cutout store of synthetic galaxies: r and g bands, 2 border cutouts per tile."""
    from lensdask.testing import write_cutout_store

    root = tmp_path_factory.mktemp("score-data")
    return write_cutout_store(root / "cutouts.zarr", TILES, bands=("r", "g"), edge=2, seed=5)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """An untrained width-1/16 ResNet-18 with its card (r band)."""
    from lensdask.testing import write_untrained_model

    return write_untrained_model(tmp_path_factory.mktemp("score-model") / "model", seed=7)
