"""lensdask on a real one-node SLURM: a whole run as one batch job (deploy/slurm/), and
``--cluster slurm`` with the scheduler on loopback, TLS and worker jobs replaced when their
workers retire before the walltime."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from click.testing import CliRunner
from deploy_support import ROOT, LocalSlurm, TLSFiles, slurm_jobqueue_config

from lensdask.job import load_job

SBATCH_SCRIPT = ROOT / "deploy" / "slurm" / "lensdask-run.sbatch"
DEMO_JOB = ROOT / "jobs" / "demo.yaml"
DEMO_STAGES = "mock-survey,select,cutouts"  # the demo's first stages: under a minute
LENSDASK = Path(sys.executable).with_name("lensdask")


def small_job(tmp_path: Path) -> Path:
    """Two 0.05 deg tiles with r-band images, then selection and r-band cutouts."""
    job = tmp_path / "small.yaml"
    job.write_text(
        f"workdir: {tmp_path / 'work'}\n"
        "mock_survey: {tiles: 2, tile_size: 0.05, seed: 3, images: true, bands: [r]}\n"
        "cutouts: {bands: [r]}\n"
    )
    return job


def check_outputs(workdir: Path, tiles: int) -> int:
    """The outputs of mock-survey -> select -> cutouts are complete; the number of targets."""
    targets = pd.read_parquet(workdir / "targets.parquet")
    assert len(targets) > 0
    assert set(targets["sample"]) <= {"LRG", "BG"}
    markers = sorted((workdir / "cutouts.zarr" / "_units").glob("*.json"))
    assert len(markers) == tiles
    assert not (workdir / "cutouts.zarr" / "_failures.csv").exists()
    return len(targets)


def test_local_slurm_runs_a_batch_job(slurm: LocalSlurm, tmp_path):
    job_id = slurm.run(
        "sbatch", "--parsable", f"--chdir={tmp_path}", "--output=out-%j.txt",
        "--wrap", "echo ran on $(hostname) as job $SLURM_JOB_ID",
    ).strip()  # fmt: skip
    info = slurm.wait(job_id, timeout=60)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"
    assert f"as job {job_id}" in (tmp_path / f"out-{job_id}.txt").read_text()


@pytest.mark.slow
def test_sbatch_runs_the_demo_job_as_one_batch_job(slurm: LocalSlurm, tmp_path):
    """deploy/slurm/lensdask-run.sbatch: the scheduler in the batch job, the workers as
    further jobs, the demo's outputs under the submit directory."""
    if slurm.cpus() < 2:
        pytest.skip("the batch job and its worker job need a CPU each; this node has one")
    jobqueue = slurm_jobqueue_config(tmp_path / "jobqueue.yaml", tmp_path / "logs")
    job_id = slurm.run(
        "sbatch", "--parsable", f"--chdir={tmp_path}", "--mem=2G",
        str(SBATCH_SCRIPT), str(DEMO_JOB), "--stages", DEMO_STAGES,
        "--jobqueue-config", str(jobqueue), "--workers", "1",
        "--dashboard-address", "127.0.0.1:0",
        env={"LENSDASK": str(LENSDASK)},  # sbatch passes the environment on to the job
    ).strip()  # fmt: skip
    info = slurm.wait(job_id, timeout=240)
    out = (tmp_path / f"lensdask-run-{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED", f"{info['JobState']}:\n{out}\n{slurm.log()}"
    assert info["ExitCode"] == "0:0"
    config = load_job(DEMO_JOB)
    assert not config.workdir.is_absolute()  # so it lands in the submit directory
    n_targets = check_outputs(tmp_path / config.workdir, config.mock_survey.tiles)
    assert f"targets selected: {n_targets}" in out
    dashboard = re.search(r"Dask dashboard: (\S+)", out)
    assert dashboard and urlparse(dashboard.group(1)).hostname == "127.0.0.1"
    # The work ran in a separate worker job, which joined the scheduler on loopback.
    worker_logs = list((tmp_path / "logs").glob("lensdask-worker-*.err"))
    assert len(worker_logs) >= 1
    worker_log = worker_logs[0].read_text()
    assert re.search(r"Registered to:\s+tcp://127\.0\.0\.1:\d+", worker_log), worker_log
    worker_job = re.match(r"lensdask-worker-(\d+)", worker_logs[0].name).group(1)
    assert worker_job != job_id
    assert slurm.job(worker_job)["JobName"] == "lensdask-worker"
    # lensdask cancelled its worker job at the end: nothing is left in the queue.
    assert slurm.drained() == []


@pytest.mark.slow
def test_cluster_slurm_runs_a_job(slurm: LocalSlurm, tmp_path):
    from lensdask.cli import main

    job = small_job(tmp_path)
    jobqueue = slurm_jobqueue_config(tmp_path / "jobqueue.yaml", tmp_path / "logs")
    result = CliRunner().invoke(
        main,
        ["run", str(job), "--cluster", "slurm", "--jobqueue-config", str(jobqueue),
         "--workers", "1", "--dashboard-address", "127.0.0.1:0", "--no-progress"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    n_targets = check_outputs(tmp_path / "work", 2)
    assert f"targets selected: {n_targets}" in result.output
    assert len(list((tmp_path / "logs").glob("lensdask-worker-*.out"))) == 1
    assert slurm.drained() == []  # the worker job was cancelled at the end


@pytest.mark.slow
def test_slurm_workers_use_tls_on_loopback(slurm: LocalSlurm, tmp_path, tls_files: TLSFiles):
    """With TLS files, the worker jobs join over TLS; a plain TCP client is refused."""
    from distributed import Client

    from lensdask.cluster import ClusterSpec, connect

    jobqueue = slurm_jobqueue_config(tmp_path / "jobqueue.yaml", tmp_path / "logs")
    spec = ClusterSpec(
        kind="slurm",
        n_workers=1,
        jobqueue_config=jobqueue,
        dashboard_address="127.0.0.1:0",
        tls_ca_file=tls_files.ca_file,
        tls_cert=tls_files.cert,
        tls_key=tls_files.key,
    )
    with connect(spec) as client:
        client.wait_for_workers(1, timeout=120)
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"
        workers = client.scheduler_info()["workers"]
        assert all(worker.startswith("tls://127.0.0.1:") for worker in workers)
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        (job,) = slurm.queue()
        assert job["name"] == "lensdask-worker" and job["state"] == "RUNNING"
        with pytest.raises(OSError):
            Client(address.replace("tls://", "tcp://"), timeout="5s")
    assert slurm.drained() == []  # closing the cluster cancelled its job


@pytest.mark.slow
def test_worker_jobs_that_retire_are_replaced(slurm: LocalSlurm, tmp_path, monkeypatch):
    """Workers leave before the walltime (--lifetime); lensdask submits new jobs for them."""
    import dask

    import lensdask.cluster
    from lensdask.cluster import ClusterSpec, connect

    monkeypatch.setattr(lensdask.cluster, "KEEP_JOBS_INTERVAL", 1.0)
    jobqueue = slurm_jobqueue_config(
        tmp_path / "jobqueue.yaml",
        tmp_path / "logs",
        **{"worker-extra-args": ["--lifetime", "6s", "--lifetime-stagger", "0s"]},
    )
    spec = ClusterSpec(
        kind="slurm", n_workers=1, jobqueue_config=jobqueue, dashboard_address="127.0.0.1:0"
    )
    seen: set[str] = set()
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}),
        connect(spec) as client,
    ):
        deadline = time.monotonic() + 120
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.update(client.scheduler_info()["workers"])
            time.sleep(0.25)
        assert len(seen) >= 2, f"no replacement worker within 120 s; saw {seen}"
        client.wait_for_workers(1, timeout=60)
        assert client.submit(len, "abcd").result(timeout=60) == 4
    submitted = list((tmp_path / "logs").glob("lensdask-worker-*.out"))
    assert len(submitted) >= 2  # one log per batch job


def network_interface() -> tuple[str, str]:
    """A network interface that is not loopback, and its IPv4 address."""
    import ipaddress
    import socket

    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return name, address.address
    pytest.skip("no network interface besides loopback")


@pytest.mark.slow
def test_interface_option_moves_scheduler_and_workers_and_warns_without_tls(
    slurm: LocalSlurm, tmp_path, caplog
):
    from lensdask.cluster import ClusterSpec, connect

    name, ip = network_interface()
    jobqueue = slurm_jobqueue_config(tmp_path / "jobqueue.yaml", tmp_path / "logs")
    spec = ClusterSpec(
        kind="slurm",
        n_workers=1,
        jobqueue_config=jobqueue,
        interface=name,
        dashboard_address="127.0.0.1:0",
    )
    with caplog.at_level("WARNING", logger="lensdask"), connect(spec) as client:
        assert client.scheduler.address.startswith(f"tcp://{ip}:")
        client.wait_for_workers(1, timeout=120)
        assert all(w.startswith(f"tcp://{ip}:") for w in client.scheduler_info()["workers"])
        assert urlparse(client.dashboard_link).hostname == "127.0.0.1"  # still loopback
    assert "reachable from other machines without TLS" in caplog.text
    assert slurm.drained() == []
