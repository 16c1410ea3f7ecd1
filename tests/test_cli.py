"""The ``lensdask`` command: help, the run command on a job file, errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.mock.population import TYPES
from lensdask.runner import EXIT_PARTIAL

STAGES = ("mock-survey", "ingest", "select", "run")


@pytest.fixture
def address(client) -> str:
    """The scheduler address of the session's LocalCluster, for --cluster."""
    return client.scheduler.address


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_every_stage_with_an_explanation():
    result = invoke("--help")
    assert result.exit_code == 0
    for stage in STAGES:
        assert stage in result.output
        sub = invoke(stage, "--help")
        assert sub.exit_code == 0
        assert "--cluster" in sub.output and len(sub.output.splitlines()) > 10


def test_run_a_job_file_on_a_running_scheduler(tmp_path, address):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\n"
        "mock_survey: {tiles: 2, tile_size: 0.05, seed: 3}\n"
        "select: {extra_columns: [TRUE_TYPE]}\n"
    )
    result = invoke("run", str(job), "--cluster", address, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "Dask dashboard: http" in result.output
    targets = pd.read_parquet(tmp_path / "work" / "targets.parquet")
    assert f"targets selected: {len(targets)}" in result.output
    assert f"LRG: {(targets['sample'] == 'LRG').sum()}" in result.output
    assert f"targets -> {tmp_path / 'work' / 'targets.parquet'}" in result.output
    assert set(targets["TRUE_TYPE"]) <= set(TYPES) - {"star"}  # stars are never targets
    again = invoke("run", str(job), "--cluster", address, "--no-progress")
    assert again.exit_code == 0
    assert f"targets selected: {len(targets)}" in again.output


def test_bad_parameter_is_named_and_exits_1(tmp_path, address):
    result = CliRunner().invoke(
        main, ["mock-survey", str(tmp_path), "--tile-size", "3", "--cluster", address]
    )
    assert result.exit_code == 1
    assert "tile_size" in result.output


def test_unknown_cluster_kind_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["mock-survey", str(tmp_path), "--cluster", "yarn"])
    assert result.exit_code == 1
    assert "'yarn' is neither one of local, cuda, slurm, pbs" in result.output


def test_failed_tiles_give_the_partial_exit_code(tmp_path, address):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    from lensdask.testing import catalog_frame, damage_parquet_pages, write_parquet_catalog

    write_parquet_catalog(catalog_frame(200, seed=1), catalog / "KIDS_1.0_0.5.parquet")
    write_parquet_catalog(catalog_frame(200, seed=2), catalog / "KIDS_2.0_0.5.parquet")
    damage_parquet_pages(catalog / "KIDS_2.0_0.5.parquet")
    result = invoke("select", str(catalog), "--out", str(tmp_path / "t"), "--cluster", address)
    assert result.exit_code == EXIT_PARTIAL
    assert "FAILED select KIDS_2.0_0.5" in result.output
    assert str(catalog / "KIDS_2.0_0.5.parquet") in result.output
    assert "1 unit(s) failed; the others completed" in result.output
    assert Path(tmp_path / "t" / "KIDS_1.0_0.5.parquet").exists()
