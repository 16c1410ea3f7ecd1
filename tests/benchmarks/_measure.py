"""Shared by the benchmark scripts: run a command and sample its process tree's memory."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """``--update-calibration`` and ``--calibration``: write the benchmark's figure into the
    capacity model's calibration file (``lensdask/capacity.json``)."""
    parser.add_argument(
        "--update-calibration",
        action="store_true",
        help="write this run's figure into its entry of the calibration file",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration file to update [lensdask/capacity.json]",
    )


def record_calibration(
    args: argparse.Namespace,
    *,
    stage: str,
    mode: str,
    quantity: str,
    rate: float,
    figure: str,
    per: str = "core",
    cores: int | None = None,
) -> None:
    """With ``--update-calibration``: replace the entry ``stage.mode.quantity`` of the
    calibration file with ``rate`` (units/s per ``per``), its source this script, its
    command line, today and this machine."""
    if not args.update_calibration:
        return
    from lensdask.capacity import DEFAULT_PATH, update_entry

    path = args.calibration or DEFAULT_PATH
    if not math.isfinite(rate) or rate <= 0:
        # e.g. a steady-state rate where every worker ran a single task
        print(f"calibration: no {stage}.{mode}.{quantity} figure from this run; {path} unchanged")
        return
    script = Path(sys.argv[0]).name
    source = {
        "script": f"tests/benchmarks/{script}",
        "command": " ".join([script, *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "machine": describe_machine(),
        "figure": figure,
    }
    update_entry(
        path,
        stage=stage,
        mode=mode,
        quantity=quantity,
        rate=rate,
        source=source,
        per=per,
        cores=cores,
    )
    print(f"calibration: {stage}.{mode}.{quantity} = {rate:,.1f}/s per {per} -> {path}")


def describe_machine() -> str:
    """Cores, memory, CPU model and GPU (where nvidia-smi names one) of this machine."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    text = f"{os.cpu_count()} cores, {memory:.0f} GiB" + (f", {cpu}" if cpu else "")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split("\n")
        if gpus[0].strip():
            text += f", GPU {gpus[0].strip()}"
    return text
