"""Benchmark: the demo job locally and through a real one-node SLURM (issue 8).

Starts the one-node SLURM of deploy/slurm/local-cluster.sh (root; stopped by PID at the
end), then runs, alternately and ``--repeat`` times each, the demo job (jobs/demo.yaml,
fresh workdir each time; ``--stages``: its first three stages by default, ``all`` for the
whole job):

- locally: ``lensdask run JOB --workers N`` for each N of ``--local-workers`` (1 and 2);
- through SLURM: ``sbatch deploy/slurm/lensdask-run.sbatch JOB --workers 1``: the batch job
  holds lensdask and the scheduler, one worker job of 1 core (``--worker-memory``) works.

Prints, as medians: time from the command (or ``sbatch``) to the scheduler starting, to the
first task on a worker, to the first result, and the wall time to the end (for SLURM: until
``scontrol`` reports the batch job COMPLETED, polled every 0.1 s). The times come from a
scheduler preload (this file's ``dask_setup``, through Dask's config) in the process that
holds the scheduler.

    .venv/bin/python tests/benchmarks/bench_slurm.py --repeat 3
    .venv/bin/python tests/benchmarks/bench_slurm.py --stages all --repeat 1 \
        --local-workers 1 --worker-memory 6GiB
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from distributed.diagnostics.plugin import SchedulerPlugin

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SLURM = ROOT / "deploy" / "slurm" / "local-cluster.sh"
SBATCH_SCRIPT = ROOT / "deploy" / "slurm" / "lensdask-run.sbatch"
PROBE = Path(__file__).resolve()
LENSDASK = Path(sys.executable).with_name("lensdask")
EVENTS = ("scheduler", "first_task", "first_result")


def _note(event: str) -> None:
    with open(os.environ["LENSDASK_BENCH_PROBE"], "a") as handle:
        handle.write(json.dumps({"event": event, "time": time.time()}) + "\n")


class FirstTask(SchedulerPlugin):
    """Notes the first task sent to a worker and the first task done."""

    name = "lensdask-bench-first-task"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        for state, event in (("processing", "first_task"), ("memory", "first_result")):
            if finish == state and event not in self.seen:
                self.seen.add(event)
                _note(event)


def dask_setup(scheduler: Any) -> None:
    """Scheduler preload: note its start, watch for the first task (JSON lines in
    $LENSDASK_BENCH_PROBE)."""
    _note("scheduler")
    scheduler.add_plugin(FirstTask())


def probe_env(probe: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LENSDASK_BENCH_PROBE": str(probe),
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps([str(PROBE)]),
        **extra,
    }


def read_probe(probe: Path, start: float) -> dict[str, float]:
    times = {}
    for line in probe.read_text().splitlines():
        record = json.loads(line)
        times.setdefault(record["event"], record["time"] - start)
    missing = [event for event in EVENTS if event not in times]
    if missing:
        raise RuntimeError(f"the probe saw no {missing}: {probe.read_text()}")
    return times


def run_local(job: Path, workdir: Path, workers: int, stages: list[str]) -> dict[str, float]:
    workdir.mkdir(parents=True)
    probe = workdir / "probe.jsonl"
    start = time.time()
    done = subprocess.run(
        [str(LENSDASK), "-q", "run", str(job), *stages, "--workers", str(workers),
         "--dashboard-address", "127.0.0.1:0", "--no-progress"],
        cwd=workdir, env=probe_env(probe), capture_output=True, text=True,
    )  # fmt: skip
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"local run failed:\n{done.stderr[-3000:]}")
    return {**read_probe(probe, start), "end": wall}


def write_jobqueue(path: Path, logs: Path, memory: str) -> Path:
    config = yaml.safe_load((ROOT / "deploy" / "jobqueue.yaml").read_text())
    config["jobqueue"]["slurm"].update(
        {"cores": 1, "memory": memory, "walltime": "01:00:00", "log-directory": str(logs),
         "local-directory": str(logs.parent / "worker-space")}
    )  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def slurm_state(job_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = dict(field.split("=", 1) for field in out.split() if "=" in field)
    return fields["JobState"]


def run_slurm(
    job: Path, workdir: Path, conf: Path, stages: list[str], memory: str
) -> dict[str, float]:
    workdir.mkdir(parents=True)
    probe = workdir / "probe.jsonl"
    jobqueue = write_jobqueue(workdir / "jobqueue.yaml", workdir / "logs", memory)
    env = probe_env(probe, SLURM_CONF=str(conf), LENSDASK=str(LENSDASK))
    start = time.time()
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={workdir}", "--mem=2G", str(SBATCH_SCRIPT),
         str(job), *stages, "--workers", "1", "--jobqueue-config", str(jobqueue),
         "--dashboard-address", "127.0.0.1:0"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    while (state := slurm_state(job_id, env)) not in {"COMPLETED", "FAILED", "CANCELLED"}:
        time.sleep(0.1)
    wall = time.time() - start
    if state != "COMPLETED":
        out = (workdir / f"lensdask-run-{job_id}.out").read_text()
        raise RuntimeError(f"batch job {job_id} {state}:\n{out[-3000:]}")
    return {**read_probe(probe, start), "end": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "demo.yaml")
    parser.add_argument("--stages", default="mock-survey,select,cutouts", help="or all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--local-workers", default="1,2", help="Local runs: workers each.")
    parser.add_argument("--worker-memory", default="2GiB", help="Of the SLURM worker job.")
    parser.add_argument("--workdir", type=Path, default=None, help="Default: a temporary one.")
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="lensdask-bench-slurm-"))
    slurm_dir = base / "slurm"
    started = subprocess.run(
        [str(LOCAL_SLURM), "start", str(slurm_dir)], capture_output=True, text=True
    )
    try:
        if started.returncode != 0:
            raise SystemExit(f"local SLURM did not start: {started.stderr}")
        conf = slurm_dir / "slurm.conf"
        stages = [] if args.stages == "all" else ["--stages", args.stages]
        local = [int(n) for n in args.local_workers.split(",") if n]
        results: dict[str, list[dict[str, float]]] = {}
        for i in range(args.repeat):
            for n in local:
                run = run_local(args.job, base / f"local{n}-{i}", n, stages)
                results.setdefault(f"local, {n} worker{'s' * (n > 1)}", []).append(run)
            run = run_slurm(args.job, base / f"slurm-{i}", conf, stages, args.worker_memory)
            results.setdefault("SLURM, 1 worker job", []).append(run)
            print(f"round {i + 1}/{args.repeat} done", file=sys.stderr)
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(slurm_dir)], capture_output=True)
    print(f"job: {args.job}, stages: {args.stages} ({args.repeat} runs each, medians, s)")
    print(f"{'how':<22}{'scheduler':>11}{'first task':>12}{'first result':>14}{'wall':>8}")
    for how, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in (*EVENTS, "end")}
        print(
            f"{how:<22}{med['scheduler']:>11.2f}{med['first_task']:>12.2f}"
            f"{med['first_result']:>14.2f}{med['end']:>8.2f}"
        )
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
