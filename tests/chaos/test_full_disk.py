"""Chaos: the file system of the workdir fills up in the middle of a stage, then is given
more room and the job rerun: the run that ran out of space fails with a message (no bare
traceback), the rerun completes and the outputs equal a clean run's (issue 16, item 8).

The workdir is a tmpfs mounted for the test (root only), holding the clean run's outputs of
the stages before; a ballast file leaves free half of what the stage writes."""

from __future__ import annotations

import os

import pytest
from compare import assert_same
from faults import can_mount, fill, resize, tmpfs
from suite import OUTPUTS, STAGES, check_ok, copy_outputs, invoke, upstream

SIZE = 64 << 20
"""Size of the tmpfs, bytes (the largest upstream is ~15 MB)."""

pytestmark = pytest.mark.skipif(can_mount() is not None, reason=str(can_mount()))


def written(work, stage: str) -> int:
    """Bytes ``stage`` wrote in workdir ``work``."""
    total = 0
    for name in OUTPUTS[stage]:
        path = work / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return total


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_then_room_and_a_rerun(stage, tmp_path, work, client, survey, clean):
    base = clean("base")
    need = written(base.work, stage)
    job = survey.write_job(tmp_path / "job.yaml", work)
    with tmpfs(work, SIZE):
        copy_outputs(base.work, work, upstream(stage))
        fill(work, leave=need // 2)
        full = invoke(client, "run", job)
        assert full.exit_code != 0, full.output
        assert full.exception is None or isinstance(full.exception, SystemExit), (
            f"{stage}: the full disk ended the run with a traceback:\n{full.output}"
        )
        resize(work, 2 * SIZE)
        check_ok(invoke(client, "run", job))
        assert_same(base.rows, work)
        os.unlink(work / "ballast.bin")
    # the run that failed said why
    assert "No space left on device" in full.output, full.output
