"""Shared fixtures: one small real LocalCluster for the whole session."""

from __future__ import annotations

import pytest

pytest_plugins = ("s3",)  # tests/s3.py: a local S3 server and its buckets


@pytest.fixture(scope="session")
def client():
    """A real Dask cluster: 2 worker processes with 1 thread each, on loopback."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="4GiB",
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` where no CUDA GPU is visible."""
    import shutil
    import subprocess

    has_gpu = False
    if shutil.which("nvidia-smi"):
        has_gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
