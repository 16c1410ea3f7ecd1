"""Fixtures of the review tests: a real cutout store, candidates and their stamps (made once
on the session's LocalCluster), and a grading server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from review_inputs import COLOUR_TILES, R_ONLY_TILE


@dataclass(frozen=True)
class ReviewData:
    """Inputs and stamps shared by the review tests (read only)."""

    cutouts: Path
    candidates_path: Path
    candidates: pd.DataFrame
    stamps: Path


@pytest.fixture(scope="session")
def review_data(tmp_path_factory, client) -> ReviewData:
    from lensdask.review.stamps import make_stamps
    from lensdask.testing import write_candidates, write_cutout_store

    root = tmp_path_factory.mktemp("review")
    cutouts = root / "cutouts.zarr"
    write_cutout_store(cutouts, COLOUR_TILES, bands=("r", "g", "i"), seed=3)
    write_cutout_store(cutouts, R_ONLY_TILE, bands=("r",), seed=4)
    candidates = write_candidates(root / "candidates.parquet", cutouts)
    report = make_stamps(
        root / "candidates.parquet", cutouts, root / "stamps", client=client, progress=False
    )
    assert report.units.ok and report.stamps == len(candidates)
    return ReviewData(cutouts, root / "candidates.parquet", candidates, root / "stamps")


@pytest.fixture
def grading(review_data, tmp_path) -> Iterator:
    """A grading server (own database, any free port on 127.0.0.1), serving in a thread."""
    from lensdask.review.server import make_server

    server = make_server(
        tmp_path / "grades.sqlite",
        review_data.stamps,
        review_data.candidates["ID"].tolist(),
        port=0,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
