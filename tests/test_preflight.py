"""Exit statuses and messages that tell the truth: inputs checked before any cluster starts,
one line per failed unit with the traceback in the log file, a performance report that
cannot be written is only a warning, and a quiet terminal on a machine without a GPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.runner import EXIT_PARTIAL
from lensdask.testing import (
    catalog_frame,
    damage_parquet_pages,
    write_cutout_store,
    write_parquet_catalog,
    write_untrained_model,
)

ROOT = Path(__file__).resolve().parents[1]
LENSDASK = Path(sys.executable).with_name("lensdask")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI sets the levels of the root and lensdask loggers: undo it afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("lensdask")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    ours.setLevel(our_level)


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if a command starts (or joins) a cluster."""

    def connect(spec):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("lensdask.cluster.connect", connect)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error: ")]


def three_channel_model(path: Path, *, size: int) -> Path:
    """A model directory whose network and card take 3 channels."""
    from lensdask.formats.model_dir import library_versions, write_model_dir
    from lensdask.nn.model import architecture, build_resnet18
    from lensdask.normalise import NORMALISATION

    model = build_resnet18(input_shape=(size, size, 3), width=1 / 16, seed=0)
    card = {
        "architecture": architecture(model),
        "input_shape": [size, size, 3],
        "normalisation": NORMALISATION,
        "band": "r",
        "training": None,
        "libraries": library_versions(),
    }
    write_model_dir(model, path, card=card)
    return path


def test_a_three_channel_model_is_refused_before_a_cluster_starts(tmp_path, no_cluster):
    store = write_cutout_store(tmp_path / "cutouts.zarr", {"KIDS_1.0_0.5": {"LRG": 3}}, size=33)
    model = three_channel_model(tmp_path / "model", size=33)
    result = invoke("score", str(store), "--model", str(model), "--out", str(tmp_path / "s"))
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    assert f"score: model {model}: takes 3 channels" in line
    assert not (tmp_path / "s").exists()


def test_a_model_for_another_band_and_size_is_refused(tmp_path, no_cluster):
    store = write_cutout_store(tmp_path / "cutouts.zarr", {"KIDS_1.0_0.5": {"LRG": 3}}, size=33)
    model = write_untrained_model(tmp_path / "model", size=35, band="i")
    result = invoke("score", str(store), "--model", str(model), "--out", str(tmp_path / "s"))
    assert result.exit_code == 1
    lines = error_lines(result.output)
    assert len(lines) == 2
    assert "trained on the i band; the cutout store" in lines[0]
    assert "takes 35x35 px stamps" in lines[1] and "holds 33x33" in lines[1]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_bad_catalog_file_anywhere_exits_1_naming_it(tmp_path, no_cluster, position):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    names = [f"KIDS_{k}.0_0.5.parquet" for k in range(3)]
    for k, name in enumerate(names):
        write_parquet_catalog(catalog_frame(50, seed=k), catalog / name)
    bad = catalog / names[position]
    bad.write_bytes(b"PAR1 not really parquet")
    result = invoke("select", str(catalog), "--out", str(tmp_path / "t"))
    assert result.exit_code == 1, result.output
    (line,) = error_lines(result.output)
    assert line.startswith(f"Error: select: {bad}: cannot read Parquet")


def test_a_missing_column_is_named_with_the_column_map(tmp_path, no_cluster):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    frame = catalog_frame(50, seed=0).rename(columns={"MAG_AUTO": "MAG_R"})
    write_parquet_catalog(frame, catalog / "KIDS_0.0_0.5.parquet")
    result = invoke("select", str(catalog), "--out", str(tmp_path / "t"))
    assert result.exit_code == 1
    (line,) = error_lines(result.output)
    assert "missing column(s) MAG_AUTO" in line and "select.column_map" in line


def test_missing_tile_images_are_listed(tmp_path, no_cluster):
    from lensdask.config import CutoutConfig
    from lensdask.preflight import check_stage
    from lensdask.stages import StageIO, stage_named

    targets = tmp_path / "targets.parquet"
    frame = catalog_frame(20, seed=0)
    frame["sample"] = "LRG"
    tiles = sorted(set(frame["THELI_NAME"]))
    write_parquet_catalog(frame, targets)
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{tiles[0]}_r.fits").write_bytes(b"")
    io = StageIO("cutouts", {"targets": targets, "images": images, "cutouts": tmp_path / "c"})
    (problem,) = check_stage(stage_named("cutouts"), CutoutConfig(bands=("r", "g")), io)
    missing = 2 * len(tiles) - 1
    assert problem.startswith(f"cutouts: {missing} tile image(s) missing in {images}")
    assert f"{tiles[0]}_g.fits" in problem and f"{tiles[0]}_r.fits" not in problem
    # made by an earlier stage of the same run: not checked
    made = StageIO("cutouts", io.paths, made=frozenset({"images"}))
    assert check_stage(stage_named("cutouts"), CutoutConfig(bands=("r", "g")), made) == []


def test_run_checks_every_stage_before_the_cluster(tmp_path, no_cluster):
    catalog = tmp_path / "catalog.parquet"
    catalog.write_bytes(b"PAR1 not really parquet")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\ncatalog: {catalog}\n"
        f"cutouts: {{bands: [r]}}\nimages: {tmp_path / 'no-images'}\n"
    )
    for extra in ((), ("--dry-run",)):
        result = invoke("run", str(job), *extra)
        assert result.exit_code == 1, result.output
        select, cutouts = error_lines(result.output)
        assert select.startswith(f"Error: select: {catalog}: cannot read Parquet: ")
        assert cutouts == (
            f"Error: cutouts: needs the tile images (<tile>_<band>.fits) at "
            f"{tmp_path / 'no-images'}; run the stage that makes it first"
        )
    assert not (tmp_path / "work").exists()


def test_the_terminal_has_one_line_per_failure_and_the_log_its_traceback(client, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for k in range(3):
        write_parquet_catalog(catalog_frame(100, seed=k), catalog / f"KIDS_{k}.0_0.5.parquet")
    damage_parquet_pages(catalog / "KIDS_1.0_0.5.parquet")
    out = tmp_path / "t"
    address = client.scheduler.address
    result = invoke("select", str(catalog), "--out", str(out), "--cluster", address)
    assert result.exit_code == EXIT_PARTIAL
    lines = [line for line in result.output.splitlines() if "KIDS_1.0_0.5" in line]
    assert len(lines) == 1 and lines[0].startswith("FAILED select KIDS_1.0_0.5: ")
    assert "Traceback" not in result.output
    log = (tmp_path / "t_lensdask.log").read_text()
    assert "select: unit KIDS_1.0_0.5 failed after 1 attempt(s)" in log
    assert "Traceback (most recent call last)" in log and "read_tile_targets" in log
    summary = [line for line in result.output.splitlines() if "failed" in line][-1]
    assert summary.startswith("1 unit(s) failed; the others completed")


def test_when_every_unit_fails_the_summary_says_so(client, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for k in range(2):
        write_parquet_catalog(catalog_frame(100, seed=k), catalog / f"KIDS_{k}.0_0.5.parquet")
        damage_parquet_pages(catalog / f"KIDS_{k}.0_0.5.parquet")
    address = client.scheduler.address
    result = invoke("select", str(catalog), "--out", str(tmp_path / "t"), "--cluster", address)
    assert result.exit_code == EXIT_PARTIAL
    assert "all 2 unit(s) failed" in result.output
    assert "the others completed" not in result.output


def test_a_performance_report_that_cannot_be_written_is_a_warning(client, tmp_path, caplog):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    write_parquet_catalog(catalog_frame(100, seed=0), catalog / "KIDS_0.0_0.5.parquet")
    report = tmp_path / "t_performance.html"
    report.mkdir()  # in the way of the report, as a full disk would be
    address = client.scheduler.address
    with caplog.at_level(logging.WARNING, logger="lensdask"):
        result = invoke("select", str(catalog), "--out", str(tmp_path / "t"), "--cluster", address)
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if "performance report" in r.getMessage()]
    assert len(warnings) == 1 and f"cannot write {report}" in warnings[0]
    assert (tmp_path / "t" / "KIDS_0.0_0.5.parquet").exists()


LOCAL = ("--dashboard-address", "127.0.0.1:0")
NOISE = (
    "cuInit",
    "Could not find cuda",
    "still alive after",
    "absl::InitializeLog",
    "initialized by task",
)


@pytest.mark.skipif(
    bool(os.path.exists("/dev/nvidia0")), reason="the quiet terminal of a machine without a GPU"
)
def test_a_run_on_a_cpu_machine_prints_no_alarming_lines(tmp_path):
    model = write_untrained_model(tmp_path / "model", size=33)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\nmodel: {model}\n"
        "mock_survey: {tiles: 1, tile_size: 0.05, seed: 5, images: true, bands: [r], "
        "lrg_density: 20000}\ncutouts: {bands: [r], size: 33}\nscore: {}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    done = subprocess.run(
        [str(LENSDASK), "run", str(job), "--workers", "2", "--no-progress", *LOCAL],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "cutouts scored now: " in done.stdout
    noisy = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], done.stderr
    log = (tmp_path / "work" / "lensdask.log").read_text()
    assert "run: stage score" in log
