"""Helpers of the deployment tests: a one-node SLURM's commands, jobqueue files, TLS files."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SLURM = ROOT / "deploy" / "slurm" / "local-cluster.sh"
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
DAEMONS = ("munged", "slurmctld", "slurmd")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@dataclass(frozen=True)
class LocalSlurm:
    """A running one-node SLURM: its folder and configuration file."""

    directory: Path
    conf: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for SLURM commands (and the batch jobs they submit)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def run(self, *args: str, timeout: float = 30, env: dict[str, str] | None = None) -> str:
        """Run a SLURM command against this cluster (``env``: more variables); its stdout."""
        done = subprocess.run(
            args,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of ``job_id`` as a mapping (JobState, ExitCode, ...)."""
        text = self.run("scontrol", "show", "job", "--oneliner", job_id)
        return dict(field.split("=", 1) for field in text.split() if "=" in field)

    def wait(self, job_id: str, *, timeout: float) -> dict[str, str]:
        """Wait until the job ``job_id`` has ended; its final ``scontrol`` record."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                self.run("scancel", job_id)
                raise TimeoutError(f"job {job_id} still {info['JobState']} after {timeout} s")
            time.sleep(0.5)

    def cpus(self) -> int:
        """CPUs of the node (from ``slurmd -C``)."""
        text = self.run("scontrol", "show", "node", "--oneliner")
        return int(dict(f.split("=", 1) for f in text.split() if "=" in f)["CPUTot"])

    def queue(self) -> list[dict[str, str]]:
        """The jobs pending or running: id, name and state of each."""
        out = self.run("squeue", "--noheader", "--format=%i|%j|%T")
        return [
            dict(zip(("id", "name", "state"), line.split("|"), strict=True))
            for line in out.splitlines()
            if line.strip()
        ]

    def drained(self, *, timeout: float = 30) -> list[dict[str, str]]:
        """Wait until no job is pending, running or completing; what is left after
        ``timeout`` seconds (empty when drained)."""
        deadline = time.monotonic() + timeout
        while (left := self.queue()) and time.monotonic() < deadline:
            time.sleep(0.25)
        return left

    def log(self) -> str:
        """The daemons' logs, for failure messages."""
        parts = []
        for name in ("slurmctld", "slurmd", "munged"):
            path = self.directory / "log" / f"{name}.log"
            if path.exists():
                parts.append(f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(parts)


def why_no_slurm() -> str | None:
    """Why a local SLURM cannot run here, or None."""
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)}): deploy/system-packages.sh slurm"
    if os.geteuid() != 0:
        return "the local SLURM's daemons run as root; these tests need root"
    return None


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = _parent(pid)
    return False


def processes_of(conf: Path) -> list[int]:
    """PIDs of the processes this SLURM started: the daemons, the job steps and the jobs'
    processes (their environment names its conf), not this test process's own children."""
    marker = f"SLURM_CONF={conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _descends_from(int(entry.name), os.getpid()):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def slurm_jobqueue_config(path: Path, logs: Path, **settings: object) -> Path:
    """Write deploy/jobqueue.yaml with its slurm section sized for the one-node SLURM.

    One core and 2 GiB per worker job, a 10 minute walltime and the logs in ``logs``;
    ``settings`` override more keys of the slurm section. The rest (loopback interface,
    dashboard on 127.0.0.1, --lifetime) stays as deployed.
    """
    config = yaml.safe_load((ROOT / "deploy" / "jobqueue.yaml").read_text())
    section = config["jobqueue"]["slurm"]
    section.update(
        {
            "cores": 1,
            "memory": "2GiB",
            "walltime": "00:10:00",
            "death-timeout": 60,
            "log-directory": str(logs),
            "local-directory": str(logs.parent / "worker-space"),
            "worker-extra-args": ["--lifetime", "9m", "--lifetime-stagger", "10s"],
        }
    )
    section.update(settings)
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class TLSFiles:
    """A certificate authority and a certificate + key it signed (PEM files)."""

    ca_file: Path
    cert: Path
    key: Path

    def options(self) -> list[str]:
        """The command-line options that turn TLS on."""
        return [
            "--tls-ca-file",
            str(self.ca_file),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]


def make_tls_files(directory: Path, name: str) -> TLSFiles:
    """A new CA and a certificate it signed, made with the openssl command."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, request, cert = (
        directory / f"{name}-{part}"
        for part in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem")
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", f"/CN={name} test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
            "-subj", f"/CN={name} dask")  # fmt: skip
    openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2")  # fmt: skip
    return TLSFiles(ca_file=ca, cert=cert, key=key)
