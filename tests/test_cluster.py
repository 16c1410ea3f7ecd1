"""Getting a client: the local cluster binds to loopback; missing extras are named."""

from __future__ import annotations

import importlib.util
from urllib.parse import urlparse

import pytest

from lensdask.cluster import ClusterSpec, connect


def test_local_cluster_binds_to_loopback_and_has_a_dashboard():
    spec = ClusterSpec(n_workers=1, dashboard_address="127.0.0.1:0")
    with connect(spec) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        link = urlparse(client.dashboard_link)
        assert link.hostname == "127.0.0.1" and link.path == "/status"
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1
        assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
        assert client.submit(sum, [1, 2, 3]).result() == 6


def test_connect_to_a_running_scheduler(client):
    with connect(ClusterSpec(kind=client.scheduler.address)) as other:
        assert other.scheduler.address == client.scheduler.address
        assert other.submit(len, "abc").result() == 3


@pytest.mark.parametrize(
    ("kind", "module", "extra"), [("cuda", "dask_cuda", "cuda"), ("slurm", "dask_jobqueue", "hpc")]
)
def test_missing_extra_is_named(kind, module, extra):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with (
        pytest.raises(ImportError, match=rf"pip install 'lensdask\[{extra}\]'"),
        connect(ClusterSpec(kind=kind)),
    ):
        pass


def test_spec_validation():
    with pytest.raises(ValueError, match="'yarn' is neither one of"):
        ClusterSpec(kind="yarn")
    with pytest.raises(ValueError, match="n_workers: must be at least 1"):
        ClusterSpec(n_workers=0)


def test_gpus_per_job_is_for_batch_clusters_only():
    with pytest.raises(ValueError, match="gpus_per_job: only for slurm or pbs"):
        ClusterSpec(kind="local", gpus_per_job=1)
    with pytest.raises(ValueError, match="gpus_per_job: must be at least 0"):
        ClusterSpec(kind="slurm", gpus_per_job=-1)
    assert ClusterSpec(kind="pbs", gpus_per_job=4).gpus_per_job == 4


def test_without_tls_files_there_is_no_security():
    spec = ClusterSpec()
    assert not spec.tls and spec.security() is None


def test_tls_files_must_exist(tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("tls_ca_file", "tls_cert", "tls_key")}
    spec = ClusterSpec(**files)
    assert spec.tls and spec.tls_ca_file == (tmp_path / "tls_ca_file.pem").resolve()
    with pytest.raises(FileNotFoundError, match=r"TLS file .*tls_ca_file\.pem does not exist"):
        spec.security()


def test_jobqueue_options_are_for_slurm_and_pbs_only():
    from lensdask.cluster import jobqueue_options

    with pytest.raises(ValueError, match="'local' is not one of"):
        jobqueue_options(ClusterSpec(kind="local"))
