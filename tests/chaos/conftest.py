"""Fixtures of the chaos suite: one small mock survey, two untrained models, the workdir
of a case, and the clean runs every case is compared with (each made once, in a fresh
workdir)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from compare import snapshot
from suite import CleanRun, Survey, check_ok, invoke


@pytest.fixture(scope="session")
def survey(tmp_path_factory, client) -> Survey:
    """The mock survey of the suite, its two catalogs and two untrained models."""
    from lensdask.testing import write_untrained_model

    root = tmp_path_factory.mktemp("chaos-survey")
    job = root / "survey.yaml"
    job.write_text(
        "mock_survey: {tiles: 3, tile_size: 0.035, seed: 21, images: true, bands: [r, g],\n"
        "              lrg_density: 20000}\n"
    )
    check_ok(invoke(client, "mock-survey", root / "survey", "--job", job))
    tiles = tuple(sorted(path.stem for path in (root / "survey" / "catalog").glob("*.parquet")))
    assert len(tiles) == 3
    write_untrained_model(root / "model-one", seed=1)
    write_untrained_model(root / "model-two", seed=2)
    return Survey(root, tiles)


@pytest.fixture(scope="session")
def place(tmp_path_factory) -> Path:
    """Where every job of the suite runs: ``<place>/work``. A cutout tile's attributes
    record the absolute paths of its inputs (the targets file in the workdir), so a unit
    remade in another workdir would differ from the clean run's by that path: the clean runs
    and the cases all run at the same path, one after the other."""
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture
def work(request, place, clean) -> Path:
    """The workdir of a case (the clean runs' path), empty."""
    path = place / "work"
    if path.exists():
        shutil.rmtree(path)
    yield path
    report = getattr(request.node, "rep_call", None)
    if path.exists() and not path.is_mount():
        if report is not None and report.failed:  # kept for a look
            path.rename(place / f"failed-{request.node.name}".replace("/", "_"))
        else:
            shutil.rmtree(path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


@pytest.fixture(scope="session")
def clean(place, client, survey) -> Callable[[str], CleanRun]:
    """``clean(name)``: the clean run of config ``name`` in a fresh workdir at the suite's
    path (:func:`place`), made the first time it is asked for and kept as a copy."""
    runs: dict[str, CleanRun] = {}

    def get(name: str) -> CleanRun:
        if name not in runs:
            path = place / "work"
            aside = place / "work-aside"
            if path.exists():
                assert not path.is_mount(), "ask for the clean runs before mounting on work"
                path.rename(aside)
            job = survey.write_job(place / f"clean-{name}.yaml", path, name)
            check_ok(invoke(client, "run", job))
            rows = snapshot(path)
            path.rename(place / f"clean-{name}")
            if aside.exists():
                aside.rename(path)
            runs[name] = CleanRun(place / f"clean-{name}", rows)
        return runs[name]

    return get
