"""Shared by the benchmark scripts: run a command and sample its process tree's memory."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Run:
    """Wall time and peak resident memory of one command (its whole process tree)."""

    wall: float
    """Seconds."""
    peak_rss: float
    """Bytes: the largest sum of RSS over the process and all its children, sampled."""
    output: str


def run_measured(cmd: list[str], *, interval: float = 0.1, env: dict | None = None) -> Run:
    """Run ``cmd`` to completion; raise with its output if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, total)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    text = output.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return Run(wall=wall, peak_rss=peak, output=text)
