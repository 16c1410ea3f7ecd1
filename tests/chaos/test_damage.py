"""Chaos: bytes of a committed unit changed in place (same size), then the job rerun, or
``lensdask verify --invalidate`` then rerun: the damage is found and remade, and the outputs
equal a clean run's (issue 16, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from compare import assert_same
from faults import overwrite_middle
from suite import STAGES, check_ok, copy_outputs, invoke

from lensdask.runner import EXIT_PARTIAL
from lensdask.units import planned_units

ARTIFACTS = {
    "select": "targets",
    "cutouts": "cutouts",
    "simulate": "trainset",
    "score": "scores/{model_id}",
    "candidates": "candidates",
    "stamps": "stamps",
}
"""The name ``lensdask verify`` gives each stage's output."""


def damage_target(work: Path, stage: str, model_id: str) -> tuple[str, Path]:
    """The unit of ``stage`` to damage (its first) and the file: the largest of the unit
    (a cutout shard, a training batch's images, a Parquet file), for stamps a colour PNG,
    for the candidates (one table, no units) the table."""
    if stage == "candidates":
        return "candidates", work / "candidates.parquet"
    out = {
        "select": work / "targets.parquet",
        "cutouts": work / "cutouts.zarr",
        "simulate": work / "trainset.zarr",
        "score": work / "scores.parquet" / model_id,
        "stamps": work / "stamps",
    }[stage]
    unit, marker = sorted(planned_units(out).items())[0]
    files = sorted(marker.files, key=lambda rel: (-marker.files[rel], rel))
    if stage == "stamps":
        files = [rel for rel in files if rel.endswith(".png")]
    return unit, out / files[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_same_size_damage_is_remade_by_a_rerun(stage, tmp_path, work, client, survey, clean):
    base = clean("base")
    copy_outputs(base.work, work, STAGES)
    unit, path = damage_target(work, stage, survey.model_id("one"))
    good = path.read_bytes()
    overwrite_middle(path)
    assert path.read_bytes() != good and path.stat().st_size == len(good)
    job = survey.write_job(tmp_path / "job.yaml", work)
    check_ok(invoke(client, "run", job))
    assert path.read_bytes() == good, f"{stage} unit {unit}: {path} was not remade"
    assert_same(base.rows, work)


@pytest.mark.slow
def test_verify_finds_damage_in_every_stage_and_a_rerun_remakes_it(
    tmp_path, work, client, survey, clean
):
    base = clean("base")
    copy_outputs(base.work, work, STAGES)
    damaged = {}
    for stage in STAGES:
        unit, path = damage_target(work, stage, survey.model_id("one"))
        damaged[stage] = (unit, path, path.read_bytes())
        overwrite_middle(path)
    found = invoke(client, "verify", work)
    assert found.exit_code == EXIT_PARTIAL, found.output
    for stage, (unit, _, _) in damaged.items():
        artifact = ARTIFACTS[stage].format(model_id=survey.model_id("one"))
        shown = f"DAMAGED {artifact} {unit if stage != 'candidates' else '-'}:"
        assert shown in found.output, found.output
    check_ok(invoke(client, "run", survey.write_job(tmp_path / "job.yaml", work)))
    for stage, (unit, path, good) in damaged.items():
        assert path.read_bytes() == good, f"{stage} unit {unit}: {path} was not remade"
    assert_same(base.rows, work)
    check_ok(invoke(client, "verify", work))


@pytest.mark.slow
def test_verify_invalidate_then_rerun(tmp_path, work, client, survey, clean):
    base = clean("base")
    copy_outputs(base.work, work, STAGES)
    for stage in ("cutouts", "simulate", "score"):
        overwrite_middle(damage_target(work, stage, survey.model_id("one"))[1])
    result = invoke(client, "verify", work, "--invalidate")
    assert result.exit_code == EXIT_PARTIAL, result.output
    check_ok(invoke(client, "run", survey.write_job(tmp_path / "job.yaml", work)))
    assert_same(base.rows, work)
    check_ok(invoke(client, "verify", work))
