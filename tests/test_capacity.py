"""The capacity model of `lensdask run --dry-run`: the kernel against hand computations,
the shipped calibration file, the benchmarks' --update-calibration and the printed table."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lensdask.capacity import (
    DEFAULT_PATH,
    CalibrationError,
    job_costs,
    load_calibration,
    stage_cost,
)
from lensdask.cli import main
from lensdask.job import load_job
from lensdask.pipeline import chosen_stages
from lensdask.plan import CATALOG_ROW_BYTES, StagePlan, plan_job
from lensdask.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "tests" / "benchmarks"


def source(script: str = "bench_x.py") -> dict[str, str]:
    return {"script": script, "date": "2026-12-02", "machine": "test", "figure": "test"}


def write_calibration(path: Path, stages: dict) -> Path:
    path.write_text(json.dumps({"stages": stages}))
    return path


@pytest.fixture
def calibration(tmp_path):
    """Round rates, so that the expected costs can be worked out by hand."""
    stages = {
        "select": {"cpu": {"catalog rows": {"rate": 1000, "per": "core", "source": source()}}},
        "score": {
            "cpu": {
                "images": {"rate": 100, "per": "core", "source": source()},
                "model images": {"rate": 10, "per": "core", "source": source()},
            },
            "gpu": {
                "images": {"rate": 400, "per": "GPU worker", "cores": 4, "source": source()},
                "model images": {
                    "rate": 400,
                    "per": "GPU worker",
                    "cores": 4,
                    "source": {"script": "none", "date": "2026-12-02"},
                    "estimate": "a guess",
                },
            },
        },
    }
    return load_calibration(write_calibration(tmp_path / "capacity.json", stages))


def test_a_cpu_stage_costs_its_units_over_the_rate(calibration):
    plan = StagePlan(
        "select", 10, "file", 0, 5.0, read_bytes=7.0, work={"catalog rows": 36_000_000}
    )
    cost = stage_cost(plan, calibration, cores=4, gpus=2)  # no gpu mode: runs on cores
    assert cost.mode == "cpu"
    assert cost.core_hours == pytest.approx(36_000_000 / 1000 / 3600)  # 10 core-h
    assert cost.gpu_hours == 0
    assert cost.wall_hours == pytest.approx(10 / 4)
    assert cost.limit == "cores"
    assert (cost.read_bytes, cost.written_bytes) == (7.0, 5.0)
    assert not cost.estimated and cost.missing == ()
    # 10 tasks cannot use 40 cores: one core a task
    assert stage_cost(plan, calibration, cores=40).wall_hours == pytest.approx(10 / 10)
    assert stage_cost(plan, calibration, cores=40).limit == "10 tasks"
    # 7 bytes at 7 bytes per 10 hours: reading takes longer than the 2.5 h of work
    slow = stage_cost(plan, calibration, cores=4, read_bandwidth=7 / 36_000)
    assert slow.wall_hours == pytest.approx(10) and slow.limit == "reading"
    assert slow.core_hours == cost.core_hours


def test_a_gpu_stage_holds_its_workers_cores(calibration):
    plan = StagePlan(
        "score", 100, "tile", 0, 0.0, work={"images": 1_440_000, "model images": 1_440_000}
    )
    on_cores = stage_cost(plan, calibration, cores=8, gpus=0)
    assert on_cores.mode == "cpu"
    # 1.44M / 100 + 1.44M / 10 core-seconds = 4 + 40 core-hours
    assert on_cores.core_hours == pytest.approx(44)
    assert on_cores.wall_hours == pytest.approx(44 / 8)
    on_gpus = stage_cost(plan, calibration, cores=64, gpus=2)
    assert on_gpus.mode == "gpu"
    # 1.44M / 400 twice = 7200 GPU-seconds = 2 GPU-h, each GPU worker holding 4 cores
    assert on_gpus.gpu_hours == pytest.approx(2)
    assert on_gpus.core_hours == pytest.approx(8)
    assert on_gpus.wall_hours == pytest.approx(1)
    assert on_gpus.limit == "GPUs"
    assert on_gpus.estimated  # its model images rate is an estimate
    # GPU workers need their cores: 2 GPUs with 4 cores each on 4 cores wait for the cores
    starved = stage_cost(plan, calibration, cores=4, gpus=2)
    assert starved.wall_hours == pytest.approx(8 / 4)
    assert starved.limit == "cores"


def test_unknown_work_or_a_missing_rate_leaves_the_cost_unknown(calibration):
    unknown = StagePlan("select", None, "file", None, None, work={"catalog rows": None})
    assert stage_cost(unknown, calibration, cores=2).core_hours is None
    missing = StagePlan("select", 1, "file", 1, 1.0, work={"catalog rows": 5, "pixels": 3})
    cost = stage_cost(missing, calibration, cores=2)
    assert cost.missing == ("pixels",) and cost.core_hours is None and cost.wall_hours is None
    # a quantity of zero needs no rate
    zero = StagePlan("select", 1, "file", 1, 1.0, work={"catalog rows": 3600, "pixels": 0})
    assert stage_cost(zero, calibration, cores=2).core_hours == pytest.approx(0.001)


def test_the_lsst_plan_is_priced_with_the_shipped_rates():
    config = load_job(ROOT / "jobs" / "lsst.yaml")
    plans = {p.stage: p for p in plan_job(config, chosen_stages(config, None))}
    rates = json.loads(DEFAULT_PATH.read_text())["stages"]
    costs = {c.stage: c for c in job_costs(list(plans.values()), load_calibration(), cores=1000)}
    sources = plans["mock-survey"].rows
    assert plans["select"].work == {"catalog rows": sources}
    assert plans["select"].read_bytes == sources * CATALOG_ROW_BYTES
    select_rate = rates["select"]["cpu"]["catalog rows"]["rate"]
    assert costs["select"].core_hours == pytest.approx(sources / select_rate / 3600)
    targets = plans["cutouts"].rows
    assert plans["cutouts"].work == {"cutouts": targets * 3}  # 3 bands of 101 x 101 px
    score = rates["score"]["cpu"]
    assert costs["score"].core_hours == pytest.approx(
        (targets / score["images"]["rate"] + targets / score["model images"]["rate"]) / 3600
    )
    sim = config.simulate
    examples = sim.positives + sim.negatives
    assert plans["train"].work == {"example-epochs": examples * config.train.epochs}
    on_gpus = stage_cost(plans["score"], load_calibration(), cores=1000, gpus=8)
    gpu = rates["score"]["gpu"]
    per_image = 1 / gpu["images"]["rate"] + 1 / gpu["model images"]["rate"]
    assert on_gpus.gpu_hours == pytest.approx(targets * per_image / 3600)
    assert on_gpus.wall_hours == pytest.approx(targets * per_image / 3600 / 8)


def test_the_shipped_calibration_has_a_sourced_entry_for_every_stage():
    calibration = load_calibration()
    assert set(calibration.stages) == {stage.name for stage in STAGES}
    data = json.loads(DEFAULT_PATH.read_text())["stages"]
    for stage, modes in data.items():
        for mode, quantities in modes.items():
            for quantity, entry in quantities.items():
                where = f"{stage}.{mode}.{quantity}"
                assert entry["source"]["script"] and entry["source"]["date"], where
                if not entry.get("estimate"):
                    script = entry["source"]["script"]
                    # a measurement names a benchmark, a job or a function of lensdask
                    assert script.startswith(("tests/benchmarks/bench_", "lensdask")), where
                    if script.startswith("tests/"):
                        assert (ROOT / script).is_file(), where
    # every quantity a shipped job's plan counts has a rate on cores
    for job in sorted((ROOT / "jobs").glob("*.yaml")):
        config = load_job(job)
        for plan in plan_job(config, chosen_stages(config, None)):
            assert set(plan.work) <= set(calibration.modes(plan.stage)["cpu"]), (job, plan)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"rate": 0, "per": "core", "source": source()}, "rate must be a number > 0"),
        ({"rate": 1, "per": "node", "source": source()}, "per must be one of"),
        ({"rate": 1, "per": "core"}, "source must give script, date, machine, figure"),
        ({"rate": 1, "per": "GPU worker", "cores": 0, "source": source()}, "cores must be"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_and_the_entry(tmp_path, entry, message):
    path = write_calibration(tmp_path / "cal.json", {"select": {"cpu": {"catalog rows": entry}}})
    with pytest.raises(CalibrationError, match=message) as err:
        load_calibration(path)
    assert f"{path}: select.cpu.catalog rows" in str(err.value)


def measure_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _measure
    finally:
        sys.path.remove(str(BENCHMARKS))
    return _measure


def test_update_calibration_rewrites_exactly_its_entry(tmp_path):
    _measure = measure_module()
    path = tmp_path / "capacity.json"
    shutil.copy(DEFAULT_PATH, path)
    before = json.loads(path.read_text())
    parser = argparse.ArgumentParser()
    _measure.add_calibration_options(parser)
    args = parser.parse_args(["--update-calibration", "--calibration", str(path)])
    _measure.record_calibration(
        args, stage="cutouts", mode="cpu", quantity="cutouts", rate=1234.5, figure="a test"
    )
    after = json.loads(path.read_text())
    entry = after["stages"]["cutouts"]["cpu"]["cutouts"]
    assert entry["rate"] == 1234.5 and entry["source"]["figure"] == "a test"
    assert entry["source"]["script"].startswith("tests/benchmarks/")
    assert "estimate" not in entry
    expected = copy.deepcopy(before)
    expected["stages"]["cutouts"]["cpu"]["cutouts"] = entry
    assert after == expected
    assert load_calibration(path).stages["cutouts"]["cpu"]["cutouts"].rate == 1234.5
    # without the flag nothing is written
    args = parser.parse_args(["--calibration", str(path)])
    _measure.record_calibration(
        args, stage="cutouts", mode="cpu", quantity="cutouts", rate=1.0, figure="no"
    )
    assert json.loads(path.read_text()) == after


@pytest.mark.slow
def test_bench_select_updates_its_entry_of_a_copy(tmp_path):
    path = tmp_path / "capacity.json"
    shutil.copy(DEFAULT_PATH, path)
    before = json.loads(path.read_text())
    cmd = [sys.executable, str(BENCHMARKS / "bench_select.py"), "--tiles", "1", "--repeat"]
    cmd += ["1", "--workers", "1", "--workdir", str(tmp_path / "work")]
    cmd += ["--update-calibration", "--calibration", str(path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    after = json.loads(path.read_text())
    entry = after["stages"]["select"]["cpu"]["catalog rows"]
    assert entry["source"]["script"] == "tests/benchmarks/bench_select.py"
    assert "--tiles 1" in entry["source"]["command"] and entry["rate"] > 0
    before["stages"]["select"]["cpu"]["catalog rows"] = entry
    assert after == before
    assert DEFAULT_PATH.read_text() != path.read_text()  # the shipped file is untouched


def dry_run(job: str, *options: str) -> str:
    result = CliRunner().invoke(
        main, ["run", str(ROOT / "jobs" / job), "--dry-run", *options], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("job", ["lsst.yaml", "euclid-wide.yaml"])
def test_dry_run_prints_the_capacity_of_survey_sized_jobs(job, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = dry_run(job, "--cores", "1000", "--gpus", "8")
    table = output.split("\n\n")[1].splitlines()
    assert table[0] == "capacity on 1,000 cores and 8 GPUs (per-unit costs: lensdask/capacity.json)"
    assert table[1].split() == ["stage", "read", "written", "core-h", "GPU-h", "wall", "limit"]
    rows = {line.split()[0]: line for line in table[2:]}
    stages = ["mock-survey", "select", "cutouts", "simulate", "train", "score"]
    assert set(stages) <= set(rows) and "total" in rows
    assert "?" not in rows["total"]  # every stage is priced
    assert rows["score"].endswith("GPUs")
    assert "longest stage:" in output
    assert all(len(line) < 100 for line in table)
    assert not (tmp_path / "lensdask-lsst").exists()
    # without GPUs, training and scoring run on the cores
    capacity = dry_run(job, "--cores", "1000").split("\n\n")[1].splitlines()
    on_cores = {line.split()[0]: line.split() for line in capacity[2:]}
    assert on_cores["score"][6] == "-" and on_cores["train"][6] == "-"  # GPU-h
    # with the storage's bandwidth, reading the tile images bounds the cutouts
    reading = dry_run(job, "--cores", "1000", "--read-bandwidth", "10").split("\n\n")[1]
    assert ", reading 10 GB/s (" in reading
    assert {line.split()[0]: line for line in reading.splitlines()[2:]}["cutouts"].endswith(
        "reading"
    )


def test_euclid_wide_is_the_euclid_wide_survey():
    config = load_job(ROOT / "jobs" / "euclid-wide.yaml")
    plans = {p.stage: p for p in plan_job(config, chosen_stages(config, None))}
    assert plans["mock-survey"].tasks == 14_000
    assert 1.45e9 < plans["mock-survey"].rows < 1.55e9
    assert config.mock_survey.pixel_scale == 0.1 and config.cutouts.size == 201
    # 201 x 201 px cutouts count as 201^2 / 101^2 of the calibrated 101 x 101 px ones
    assert plans["cutouts"].work["cutouts"] == pytest.approx(
        plans["cutouts"].rows * 201**2 / 101**2
    )
