"""Units on a real cluster: one task per unit, failures reported by name, others complete."""

from __future__ import annotations

import csv
from pathlib import Path

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


def commit_square(value: int, out, *, unit: str, chash: str, lineage: dict) -> int:
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


def fail_counting(value: int, attempts, *, error: str) -> int:
    """A unit that notes each attempt in the file ``attempts`` and fails."""
    import errno

    with open(attempts, "a") as handle:
        handle.write(f"{value}\n")
    if error == "missing":
        raise FileNotFoundError(f"/data/tile_{value}_r.fits: tile image missing")
    if error == "corrupt":
        raise OSError(f"/data/tile_{value}_r.fits: cannot read FITS image: truncated")
    raise OSError(errno.EIO, "Input/output error", f"/data/tile_{value}_r.fits")


def test_deterministic_errors_are_attempted_once_and_transient_ones_retried(client, tmp_path):
    from lensdask.runner import is_deterministic

    counts = {}
    for error in ("missing", "corrupt", "transient"):
        attempts = tmp_path / f"{error}.txt"
        report = run_units(
            client,
            fail_counting,
            ["t1"],
            attempts,
            stage="demo",
            unit_args=[1],
            retries=1,
            progress=False,
            error=error,
        )
        (failure,) = report.failures
        counts[error] = (len(attempts.read_text().splitlines()), failure.attempts)
        assert "/data/tile_1_r.fits" in failure.error and "\n" not in failure.error
    assert counts == {"missing": (1, 1), "corrupt": (1, 1), "transient": (2, 2)}
    assert is_deterministic(ValueError("bad value")) and is_deterministic(KeyError("r"))
    assert not is_deterministic(ConnectionResetError()) and not is_deterministic(MemoryError())


def test_a_failure_is_logged_once_with_its_traceback(client, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="lensdask"):
        report = run_units(
            client, square_or_fail, ["u3"], 0, stage="demo", unit_args=[3], progress=False
        )
    assert [f.attempts for f in report.failures] == [1]
    records = [r for r in caplog.records if "u3" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    assert "Traceback" in records[0].getMessage() and "square_or_fail" in records[0].getMessage()


def fail_some(value: int, attempts, *, transient_until: int) -> int:
    """A unit that fails for good on 3, fails on 5 until its ``transient_until``-th attempt
    (a lost connection), and notes every attempt of every unit in ``attempts``."""
    with open(attempts, "a") as handle:
        handle.write(f"{value}\n")
    if value == 3:
        raise ValueError("unit 3 is corrupt")
    if value == 5:
        tried = Path(attempts).read_text().split().count("5")
        if tried < transient_until:
            raise ConnectionResetError("lost the object store")
    return value * value


def test_units_batched_in_a_task_succeed_and_fail_one_by_one(client, tmp_path):
    from lensdask.runner import units_per_task

    for transient_until, five in ((2, "ok"), (9, "failed")):
        attempts = tmp_path / f"attempts-{transient_until}.txt"
        report = run_units(
            client,
            fail_some,
            [f"u{k}" for k in range(8)],
            attempts,
            stage="batched",
            unit_args=list(range(8)),
            retries=1,
            progress=False,
            batch=3,
            transient_until=transient_until,
        )
        ok = {f"u{k}": k * k for k in range(8) if k != 3 and (k != 5 or five == "ok")}
        assert report.results == ok
        failed = {failure.unit: failure for failure in report.failures}
        assert sorted(failed) == (["u3"] if five == "ok" else ["u3", "u5"])
        assert failed["u3"].attempts == 1 and "unit 3 is corrupt" in failed["u3"].error
        if five == "failed":
            assert failed["u5"].attempts == 2 and "lost the object store" in failed["u5"].error
        tries = attempts.read_text().split()
        # each unit ran once, but for the retried one: no unit was redone for another's sake
        assert sorted(tries) == sorted([str(k) for k in range(8)] + ["5"])
    assert units_per_task(1006, 2) == 16 and units_per_task(40, 2) == 2
    assert units_per_task(5, 8) == 1
