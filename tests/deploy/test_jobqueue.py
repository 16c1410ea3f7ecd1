"""deploy/jobqueue.yaml and the batch scripts: the worker job scripts dask-jobqueue renders
from them for SLURM and PBS (CPU and GPU), checked line by line and by the real parsers
(bash, dask's worker command line). PBS itself cannot run here; its run script is run
through bash with the local cluster instead."""

from __future__ import annotations

import copy
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dask.utils import parse_timedelta
from deploy_support import ROOT, TLSFiles

from lensdask.cluster import (
    DEFAULT_JOBQUEUE_CONFIG,
    ClusterSpec,
    jobqueue_options,
    load_jobqueue_config,
)

# Imported first: it registers dask-jobqueue's defaults, which the tests then build on.
dask_jobqueue = pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (hpc extra) missing")

PBS_SCRIPT = ROOT / "deploy" / "pbs" / "lensdask-run.pbs"
SBATCH_SCRIPT = ROOT / "deploy" / "slurm" / "lensdask-run.sbatch"


def render(kind: str, **spec_options) -> str:
    """The worker job script of a ``kind`` cluster made from deploy/jobqueue.yaml."""
    spec = ClusterSpec(kind=kind, dashboard_address="127.0.0.1:0", **spec_options)
    load_jobqueue_config(spec.jobqueue_config or DEFAULT_JOBQUEUE_CONFIG)
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    with cls(**jobqueue_options(spec)) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler.address.startswith(("tcp://127.0.0.1:", "tls://127.0.0.1:"))
    return script


def directives(script: str, prefix: str) -> list[str]:
    return [line[len(prefix) :].strip() for line in script.splitlines() if line.startswith(prefix)]


def worker_command(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if " -m " in line]
    return shlex.split(line)


def bash_parses(script: str) -> None:
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def walltime_seconds(text: str) -> float:
    parts = [int(part) for part in text.split(":")]
    return sum(part * 60**i for i, part in enumerate(reversed(parts)))


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """dask-jobqueue makes the log directory (relative) when it renders a script."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def dask_config_restored():
    """Each test starts from the same Dask configuration (loading jobqueue files adds to it)."""
    import dask.config

    config = copy.deepcopy(dask.config.config)
    defaults = list(dask.config.defaults)
    yield
    dask.config.config.clear()
    dask.config.config.update(config)
    dask.config.defaults[:] = defaults


def test_slurm_worker_job_script():
    script = render("slurm")
    bash_parses(script)
    header = directives(script, "#SBATCH")
    assert "--cpus-per-task=8" in header and "--mem=32G" in header and "-t 04:00:00" in header
    assert not any("gres" in line for line in header)
    command = worker_command(script)
    assert command[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]
    assert command[3].startswith("tcp://127.0.0.1:")
    # The real dask-worker parser accepts every option dask-jobqueue put there.
    from distributed.cli.dask_worker import main as dask_worker

    params = dask_worker.make_context("dask-worker", command[3:]).params
    assert params["nthreads"] == 8 and params["interface"] == "lo"
    assert params["lifetime"] == "230m" and params["lifetime_stagger"] == "5m"
    assert params["local_directory"] == "${TMPDIR:-/tmp}"  # expanded by bash on the node


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_workers_retire_before_the_walltime(kind):
    """--lifetime plus its stagger ends every worker before its job's walltime."""
    for section in (kind, f"{kind}-gpu"):
        settings = yaml.safe_load(DEFAULT_JOBQUEUE_CONFIG.read_text())["jobqueue"][section]
        args = settings["worker-extra-args"]
        env = dict(
            line.removeprefix("export ").split("=", 1) for line in settings["job-script-prologue"]
        )
        if "--lifetime" in args:
            lifetime = args[args.index("--lifetime") + 1]
            stagger = args[args.index("--lifetime-stagger") + 1]
        else:  # dask-cuda workers take them from Dask's config
            lifetime = env["DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION"]
            stagger = env["DASK_DISTRIBUTED__WORKER__LIFETIME__STAGGER"]
        latest = parse_timedelta(lifetime) + parse_timedelta(stagger)
        margin = walltime_seconds(settings["walltime"]) - latest
        assert margin >= 5 * 60, f"{section}: workers may still run at the walltime"


def test_slurm_gpu_job_script_asks_for_gpus_and_starts_dask_cuda_workers():
    script = render("slurm", gpus_per_job=2)
    bash_parses(script)
    header = directives(script, "#SBATCH")
    assert [line for line in header if re.match("--(gres|gpus)", line)] == ["--gres=gpu:2"]
    command = worker_command(script)
    assert command[1:3] == ["-m", "dask_cuda.cli"]
    assert command[command.index("--nthreads") + 1] == "4"  # 8 cores for 2 GPU workers
    assert command[command.index("--resources") + 1] == "GPU=1"
    assert "--nanny" not in command and "--lifetime" not in command
    assert "export DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION=230m" in script


def test_gpu_worker_command_parses_with_dask_cuda():
    cli = pytest.importorskip("dask_cuda.cli", reason="dask-cuda is not installed (cuda extra)")
    command = worker_command(render("slurm", gpus_per_job=1))
    params = cli.worker.make_context("dask-cuda-worker", command[3:]).params
    assert params["resources"] == "GPU=1" and params["interface"] == "lo"


def test_pbs_worker_job_scripts():
    script = render("pbs")
    bash_parses(script)
    header = directives(script, "#PBS")
    assert "-l select=1:ncpus=8:mem=32GB" in header and "-l walltime=04:00:00" in header
    assert worker_command(script)[2] == "distributed.cli.dask_worker"
    gpu = render("pbs", gpus_per_job=3)
    bash_parses(gpu)
    assert "-l select=1:ncpus=8:ngpus=3:mem=64GB" in directives(gpu, "#PBS")
    assert worker_command(gpu)[2] == "dask_cuda.cli"


def test_tls_reaches_the_worker_command(tls_files: TLSFiles):
    command = worker_command(
        render(
            "slurm",
            tls_ca_file=tls_files.ca_file,
            tls_cert=tls_files.cert,
            tls_key=tls_files.key,
        )
    )
    assert command[3].startswith("tls://127.0.0.1:")
    options = dict(itertools.pairwise(command))
    assert options["--tls-ca-file"] == str(tls_files.ca_file)
    assert options["--tls-cert"] == str(tls_files.cert)
    assert options["--tls-key"] == str(tls_files.key)


def test_users_own_dask_config_wins_over_the_deployed_file():
    import dask

    with dask.config.set({"jobqueue.slurm.queue": "long", "jobqueue.slurm.cores": 4}):
        header = directives(render("slurm"), "#SBATCH")
    assert "-p long" in header and "--cpus-per-task=4" in header
    assert "--mem=32G" in header  # not set by the user: the deployed value


def test_another_jobqueue_file_binds_to_loopback_unless_it_says_otherwise(tmp_path):
    other = tmp_path / "site.yaml"
    other.write_text(
        "jobqueue:\n  slurm:\n    cores: 2\n    memory: 3GiB\n    queue: short\n"
        "    account: survey\n    walltime: '00:20:00'\n"
    )
    script = render("slurm", jobqueue_config=other)  # asserts the scheduler is on loopback
    header = directives(script, "#SBATCH")
    assert {"-p short", "-A survey", "--cpus-per-task=2", "--mem=3G", "-t 00:20:00"} <= set(header)
    assert worker_command(script)[-2:] == ["--interface", "lo"]


def test_missing_gpu_section_is_named(tmp_path):
    only_cpu = tmp_path / "cpu.yaml"
    only_cpu.write_text("jobqueue:\n  pbs:\n    cores: 2\n    memory: 1GiB\n")
    spec = ClusterSpec(kind="pbs", gpus_per_job=1, jobqueue_config=only_cpu)
    import dask.config

    dask.config.config.get("jobqueue", {}).pop("pbs-gpu", None)  # restored after the test
    load_jobqueue_config(only_cpu)
    with pytest.raises(ValueError, match=r"no jobqueue\.pbs-gpu section"):
        jobqueue_options(spec)


def test_batch_scripts_parse_and_ask_for_one_cpu():
    for script in (SBATCH_SCRIPT, PBS_SCRIPT):
        bash_parses(script.read_text())
    sbatch = directives(SBATCH_SCRIPT.read_text(), "#SBATCH")
    assert "--cpus-per-task=1" in sbatch and "--ntasks=1" in sbatch
    pbs = directives(PBS_SCRIPT.read_text(), "#PBS")
    assert "-l select=1:ncpus=1:mem=4gb" in pbs
    assert all(re.fullmatch(r"-[A-Za-z] \S+", line) for line in pbs), pbs


@pytest.mark.slow
def test_pbs_run_script_runs_lensdask(tmp_path):
    """Without PBS: the script itself, run by bash as PBS would, on a local cluster."""
    job = tmp_path / "job.yaml"
    job.write_text("workdir: work\nmock_survey: {tiles: 1, tile_size: 0.05, seed: 1}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PBS_O_WORKDIR": str(tmp_path),
        "PBS_JOBID": "1.pbs",
        "LENSDASK": str(Path(sys.executable).with_name("lensdask")),
        "LENSDASK_JOB": "job.yaml",
        "LENSDASK_ARGS": "--cluster local --workers 1 --dashboard-address 127.0.0.1:0",
    }
    done = subprocess.run(
        ["bash", str(PBS_SCRIPT)], env=env, cwd="/", capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "lensdask-run: job 1.pbs" in done.stdout
    assert (tmp_path / "work" / "targets.parquet").exists()
    assert "targets selected:" in done.stdout
    missing = subprocess.run(["bash", str(PBS_SCRIPT)], env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 2


@pytest.mark.parametrize(("kind", "gpus"), [("slurm", 0), ("slurm", 2), ("pbs", 0), ("pbs", 1)])
def test_job_script_without_a_cluster_matches_the_clusters(kind, gpus, tls_files: TLSFiles):
    from lensdask.cluster import job_script

    tls = {"tls_ca_file": tls_files.ca_file, "tls_cert": tls_files.cert, "tls_key": tls_files.key}
    for options in ({"gpus_per_job": gpus}, {"gpus_per_job": gpus, **tls}):
        spec = ClusterSpec(kind=kind, dashboard_address="127.0.0.1:0", **options)
        alone = job_script(spec, scheduler="tls://node:8786" if spec.tls else "tcp://node:8786")
        from_cluster = render(kind, **options)
        address = worker_command(from_cluster)[3]
        expected = from_cluster.replace(address, worker_command(alone)[3])
        assert alone.replace("lensdask-worker", "dummy-name") == expected.replace(
            "lensdask-worker", "dummy-name"
        )
