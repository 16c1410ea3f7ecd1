"""Units on a real cluster: one task per unit, failures reported by name, others complete."""

from __future__ import annotations

import csv

from lensdask.runner import run_units


def square_or_fail(value: int, offset: int) -> int:
    if value == 3:
        raise ValueError(f"unit {value} is corrupt")
    return value * value + offset


def test_failed_unit_is_reported_and_the_others_complete(client, tmp_path):
    units = [f"u{k}" for k in range(6)]
    report = run_units(
        client,
        square_or_fail,
        units,
        10,
        stage="demo",
        unit_args=list(range(6)),
        retries=0,
        progress=False,
    )
    assert report.results == {f"u{k}": k * k + 10 for k in range(6) if k != 3}
    assert [failure.unit for failure in report.failures] == ["u3"]
    assert "unit 3 is corrupt" in report.failures[0].error
    assert report.failures[0].attempts == 1
    path = report.write_failures(tmp_path)
    rows = list(csv.DictReader(path.open()))
    assert rows == [
        {"unit": "u3", "stage": "demo", "error": report.failures[0].error, "attempts": "1"}
    ]


def test_no_failures_removes_an_old_failures_table(client, tmp_path):
    (tmp_path / "_failures.csv").write_text("unit,stage,error,attempts\nold,demo,x,1\n")
    report = run_units(client, square_or_fail, ["a"], 0, stage="demo", unit_args=[2])
    assert report.ok and report.results == {"a": 4}
    assert report.write_failures(tmp_path) is None
    assert not (tmp_path / "_failures.csv").exists()


def test_tasks_are_one_per_unit_and_named_after_them(client):
    report = run_units(client, square_or_fail, ["x", "y"], 1, stage="named", unit_args=[1, 2])
    assert report.results == {"x": 2, "y": 5}
    prefixes = client.run_on_scheduler(
        lambda dask_scheduler: sorted(
            str(key) for key in dask_scheduler.task_prefixes if "named" in str(key)
        )
    )
    assert prefixes == ["named"]


def commit_square(value: int, out, *, unit: str, chash: str) -> int:
    """A unit of run_stage: writes its marker, so a rerun finds it complete."""
    from lensdask.units import Marker, write_marker

    write_marker(out, Marker(unit=unit, rows=1, ids_hash="-", config_hash=chash, files={}))
    return value * value


def test_run_stage_prepares_only_when_units_are_left(client, tmp_path):
    from lensdask.runner import run_stage

    calls = []

    def run():
        return run_stage(
            client,
            commit_square,
            tmp_path,
            {"u1": 1, "u2": 2},
            chash="h",
            stage="sq",
            progress=False,
            prepare=lambda: calls.append("prepare"),
        )

    first = run()
    assert first.results == {"u1": 1, "u2": 4} and calls == ["prepare"]
    again = run()
    assert sorted(again.skipped) == ["u1", "u2"] and again.results == {}
    assert calls == ["prepare"]  # nothing left to run: not prepared again
