"""Fixtures of the deployment tests: a real one-node SLURM on localhost, TLS certificates.

The SLURM is Debian's munge, slurmctld and slurmd (``deploy/system-packages.sh slurm``),
started by ``deploy/slurm/local-cluster.sh`` in a temporary folder and stopped by the PIDs
it recorded, whatever the tests did. Without the binaries or without root the tests that
need it are skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from deploy_support import (
    DAEMONS,
    LOCAL_SLURM,
    LocalSlurm,
    TLSFiles,
    make_tls_files,
    processes_of,
    why_no_slurm,
)


def alive(pid: int) -> bool:
    """Whether the process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """A real one-node SLURM on 127.0.0.1 for the session; SLURM_CONF points at it."""
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("slurm")
    cluster = LocalSlurm(directory, directory / "slurm.conf")
    previous = os.environ.get("SLURM_CONF")
    pids: dict[str, int] = {}
    try:
        started = subprocess.run(
            [str(LOCAL_SLURM), "start", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for name in DAEMONS:
            pid_file = directory / f"{name}.pid"
            if pid_file.exists():
                pids[name] = int(pid_file.read_text())
        if started.returncode != 0:
            pytest.fail(f"local SLURM did not start: {started.stderr}\n{cluster.log()}")
        # dask-jobqueue calls sbatch/scancel from this process: they read SLURM_CONF.
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(directory)], capture_output=True, timeout=180)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        strays = [pid for pid in processes_of(cluster.conf) if pid not in left.values()]
        for pid in [*left.values(), *strays]:
            os.kill(pid, 9)
        assert not left, f"SLURM daemons still running after stop: {left}"
        assert not strays, f"processes of the local SLURM still running after stop: {strays}"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Real TLS certificates of this user's cluster (a CA and a certificate it signed)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls"), "lensdask")


@pytest.fixture(scope="session")
def other_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Certificates of someone else: another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_tls_files(tmp_path_factory.mktemp("tls-other"), "other")
