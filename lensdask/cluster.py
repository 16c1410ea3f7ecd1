"""One way to get a Dask client, on every command.

``--cluster`` picks the cluster: ``local`` (a :class:`distributed.LocalCluster`, the
default), ``cuda`` (dask-cuda's ``LocalCUDACluster``, one worker per GPU), ``slurm`` or
``pbs`` (dask-jobqueue, configured from ``deploy/jobqueue.yaml`` or the user's Dask
config), or the address of a running scheduler (``tcp://host:8786``). Cluster sizing lives
here and in Dask's configuration, never in lensdask's job files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CLUSTER_KINDS = ("local", "cuda", "slurm", "pbs")
DEFAULT_JOBQUEUE_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "jobqueue.yaml"


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """Which cluster to start or join, and how big (command-line options, not job config)."""

    kind: str = "local"
    """``local``, ``cuda``, ``slurm``, ``pbs`` or a scheduler address (``tcp://...``)."""
    n_workers: int | None = None
    """Workers (local: processes; slurm/pbs: jobs to scale to). None: the machine's cores."""
    threads_per_worker: int = 1
    """Threads per local worker process."""
    memory_limit: str = "auto"
    """Memory limit per local worker (Dask syntax, e.g. ``"4GiB"``)."""
    dashboard_address: str = "127.0.0.1:8787"
    """Where the dashboard listens; loopback unless told otherwise."""
    jobqueue_config: Path | None = None
    """YAML in dask-jobqueue's format for ``slurm``/``pbs`` (default ``deploy/jobqueue.yaml``)."""

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS and "://" not in self.kind:
            raise ValueError(
                f"cluster: {self.kind!r} is neither one of {', '.join(CLUSTER_KINDS)} "
                "nor a scheduler address like tcp://host:8786"
            )
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"n_workers: must be at least 1, got {self.n_workers}")
        if self.threads_per_worker < 1:
            raise ValueError(
                f"threads_per_worker: must be at least 1, got {self.threads_per_worker}"
            )


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or fail with a message naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this and is not installed: pip install 'lensdask[{extra}]'"
        ) from err


def make_cluster(spec: ClusterSpec) -> Any:
    """Start the cluster that ``spec`` names (not for scheduler addresses)."""
    n_workers = spec.n_workers or os.cpu_count() or 1
    if spec.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=spec.threads_per_worker,
            memory_limit=spec.memory_limit,
            host="127.0.0.1",
            dashboard_address=spec.dashboard_address,
        )
    if spec.kind == "cuda":
        dask_cuda = require("dask_cuda", "cuda")
        # One worker per GPU, each declaring the resource the training task asks for.
        return dask_cuda.LocalCUDACluster(
            ip="127.0.0.1", dashboard_address=spec.dashboard_address, resources={"GPU": 1}
        )
    jobqueue = require("dask_jobqueue", "hpc")
    _load_jobqueue_config(spec.jobqueue_config or DEFAULT_JOBQUEUE_CONFIG)
    cls = jobqueue.SLURMCluster if spec.kind == "slurm" else jobqueue.PBSCluster
    cluster = cls(scheduler_options={"dashboard_address": spec.dashboard_address})
    cluster.scale(jobs=n_workers)
    return cluster


def _load_jobqueue_config(path: Path) -> None:
    import dask.config
    import yaml

    if not Path(path).exists():
        raise FileNotFoundError(f"jobqueue config {path} does not exist")
    with open(path) as handle:
        dask.config.update(dask.config.config, yaml.safe_load(handle), priority="old")


def _quiet_distributed() -> None:
    """Keep distributed's start-up chatter out of the log unless lensdask logs at DEBUG."""
    if not logging.getLogger("lensdask").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)


@contextlib.contextmanager
def connect(spec: ClusterSpec) -> Iterator[Any]:
    """Start (or join) the cluster of ``spec`` and yield a client; close both at the end.

    The dashboard link is logged at INFO level; the command line prints it.
    """
    from distributed import Client

    _quiet_distributed()
    if "://" in spec.kind:
        client = Client(spec.kind)
        cluster = None
    else:
        cluster = make_cluster(spec)
        client = Client(cluster)
    try:
        logger.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
