"""The faults the chaos tests inject: a worker that kills itself, a client killed from
outside, a file system that is full, bytes changed in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

MARKERS = "_units"


class KillWorker(WorkerPlugin):
    """Kill the worker process (``os._exit``) once per stage of ``stages``: when a task of
    that stage starts executing (``at="start"``), or when a unit of that stage has moved
    its files into place and is about to write its completion marker (``at="marker"``).

    A flag file per stage in ``flags`` (created with ``O_EXCL``) makes it happen once in
    the whole cluster; the nanny then starts a new worker and the scheduler runs the task
    again there. Task keys are ``(stage, unit, run)`` (:func:`lensdask.runner.run_units`).
    """

    name = "chaos-kill-worker"

    def __init__(self, flags: Path, stages: tuple[str, ...], *, at: str = "start") -> None:
        self.flags = str(flags)
        self.stages = tuple(stages)
        self.at = at

    def setup(self, worker) -> None:
        if self.at != "marker":
            return
        import lensdask.units as units

        write = units.write_json_atomic
        if getattr(write, "chaos", False):
            write = write.chaos
        plugin = self

        def write_json_atomic(path, value, **kwargs):
            path = Path(path)
            if path.parent.name == MARKERS:
                out = path.parent.parent
                folder = out.parent.name if out.parent.name == "scores.parquet" else out.name
                stage = {output_folder(s): s for s in plugin.stages if s != "candidates"}
                if folder in stage:
                    plugin.kill(stage[folder], f"before the marker {path}")
            return write(path, value, **kwargs)

        write_json_atomic.chaos = write
        units.write_json_atomic = write_json_atomic

    def transition(self, key, start, finish, **kwargs) -> None:
        if self.at == "start" and finish == "executing" and isinstance(key, tuple):
            self.kill(str(key[0]), f"at the start of task {key}")

    def kill(self, stage: str, why: str) -> None:
        if stage not in self.stages:
            return
        try:
            fd = os.open(Path(self.flags) / stage, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, why.encode())
        os.close(fd)
        os._exit(1)


def output_folder(stage: str) -> str:
    """The folder name :class:`KillWorker` knows a stage's markers by (``at="marker"``)."""
    return {
        "select": "targets.parquet",
        "cutouts": "cutouts.zarr",
        "simulate": "trainset.zarr",
        "score": "scores.parquet",
        "stamps": "stamps",
    }[stage]


# --- the client killed ------------------------------------------------------------------


def lensdask_command(*args: object) -> list[str]:
    """The ``lensdask`` command line of this interpreter's environment."""
    return [str(Path(sys.executable).parent / "lensdask"), *map(str, args)]


@contextmanager
def process_group(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """Start ``command`` in a process group of its own (its Dask workers too), output to
    ``log``; on exit, SIGKILL whatever of the group is left and reap the leader."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=30)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` and wait until none is left running (an
    orphan may stay a zombie until init reaps it)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {group_members(pgid)} of group {pgid} outlived SIGKILL")


def group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, *, timeout: float) -> bool:
    """Poll ``condition`` every 10 ms while ``proc`` runs; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    return False


# --- a full disk -------------------------------------------------------------------------


def can_mount() -> str | None:
    """Why tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@contextmanager
def tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``folder`` (made if needed), unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        import pytest

        pytest.skip(f"cannot mount a tmpfs on {folder}: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        for _ in range(50):  # a worker may still hold a file open for a moment
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def resize(folder: Path, size: int) -> None:
    """Give the tmpfs on ``folder`` another size (bytes)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def fill(folder: Path, *, leave: int) -> Path:
    """Write a ballast file in ``folder`` so that ``leave`` bytes stay free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    ballast = folder / "ballast.bin"
    with ballast.open("wb") as handle:
        remaining = max(free - leave, 0)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            remaining -= handle.write(block[: min(len(block), remaining)])
    return ballast


# --- damage ------------------------------------------------------------------------------


def overwrite_middle(path: Path, nbytes: int = 64) -> None:
    """Change ``nbytes`` in the middle of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    nbytes = min(nbytes, len(data) // 2)
    start = len(data) // 2 - nbytes // 2
    data[start : start + nbytes] = bytes((b + 1) % 256 for b in data[start : start + nbytes])
    path.write_bytes(bytes(data))
