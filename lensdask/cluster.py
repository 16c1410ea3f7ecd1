"""One way to get a Dask client, on every command.

``--cluster`` picks the cluster: ``local`` (a :class:`distributed.LocalCluster`, the
default), ``cuda`` (dask-cuda's ``LocalCUDACluster``, one worker per GPU), ``slurm`` or
``pbs`` (dask-jobqueue, configured from ``deploy/jobqueue.yaml`` or the user's Dask
config), or the address of a running scheduler (``tcp://host:8786``). Cluster sizing lives
here and in Dask's configuration, never in lensdask's job files.

Schedulers and dashboards bind to loopback unless told otherwise (``--interface``,
``--dashboard-address``). With TLS files (:attr:`ClusterSpec.tls_ca_file`, ...) every
connection between client, scheduler and workers is mutually authenticated TLS and a plain
TCP client is refused.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger(__name__)

CLUSTER_KINDS = ("local", "cuda", "slurm", "pbs")
JOBQUEUE_KINDS = ("slurm", "pbs")
DEFAULT_JOBQUEUE_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "jobqueue.yaml"
KEEP_JOBS_INTERVAL = 10.0
"""Seconds between checks that replace batch jobs that ended (walltime ``--lifetime``)."""


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """Which cluster to start or join, and how big (command-line options, not job config)."""

    kind: str = "local"
    """``local``, ``cuda``, ``slurm``, ``pbs`` or a scheduler address (``tcp://...``)."""
    n_workers: int | None = None
    """Workers (local: processes; slurm/pbs: jobs to keep running). None: the machine's
    cores (local) or one job (slurm/pbs)."""
    threads_per_worker: int = 1
    """Threads per local worker process."""
    memory_limit: str = "auto"
    """Memory limit per local worker (Dask syntax, e.g. ``"4GiB"``)."""
    dashboard_address: str = "127.0.0.1:8787"
    """Where the dashboard listens; loopback unless told otherwise."""
    jobqueue_config: Path | None = None
    """YAML in dask-jobqueue's format for ``slurm``/``pbs`` (default ``deploy/jobqueue.yaml``)."""
    interface: str | None = None
    """slurm/pbs: network interface of the scheduler and the workers (``lo``, ``ib0``,
    ``eth0``). None: the jobqueue YAML's, else ``lo`` (loopback: one node)."""
    gpus_per_job: int = 0
    """slurm/pbs: GPUs per batch job. More than 0 takes the ``<kind>-gpu`` section of the
    jobqueue YAML, asks for the GPUs (SLURM ``--gres=gpu:N``, PBS ``ngpus=N``) and starts
    one dask-cuda worker per GPU, each with the resource ``GPU=1``."""
    tls_ca_file: Path | None = None
    """PEM file of the certificate authority that signed every TLS certificate (TLS on)."""
    tls_cert: Path | None = None
    """PEM certificate of this user's scheduler, workers and client (signed by the CA)."""
    tls_key: Path | None = None
    """PEM private key of :attr:`tls_cert`."""
    preload: tuple[str, ...] = ()
    """local: modules every worker has imported when it starts (a stage's modules and the
    libraries its units import), so that its first task imports nothing. They are imported
    once, in a fork server that the workers are forked from (:func:`fork_server`); empty:
    each worker is a new Python process that imports what its tasks need."""

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
        if self.gpus_per_job < 0:
            raise ValueError(f"gpus_per_job: must be at least 0, got {self.gpus_per_job}")
        if self.gpus_per_job and self.kind not in JOBQUEUE_KINDS:
            raise ValueError(
                f"gpus_per_job: only for slurm or pbs (cluster {self.kind!r}); "
                "--cluster cuda uses every local GPU"
            )
        tls = {"tls_ca_file": self.tls_ca_file, "tls_cert": self.tls_cert, "tls_key": self.tls_key}
        given = [name for name, value in tls.items() if value is not None]
        if given and len(given) != len(tls):
            missing = sorted(set(tls) - set(given))
            raise ValueError(f"TLS needs tls_ca_file, tls_cert and tls_key; missing {missing}")
        for name in given:
            object.__setattr__(self, name, Path(tls[name]).expanduser().resolve())

    @property
    def tls(self) -> bool:
        """Whether the cluster uses TLS."""
        return self.tls_ca_file is not None

    def security(self) -> Any:
        """The :class:`distributed.Security` of the TLS files, or None without TLS.

        One certificate and key serve the client, the scheduler and the workers; encryption
        is required, so neither side talks to a plain ``tcp://`` peer.
        """
        if not self.tls:
            return None
        from distributed import Security

        for path in (self.tls_ca_file, self.tls_cert, self.tls_key):
            if not Path(path).is_file():
                raise FileNotFoundError(f"TLS file {path} does not exist")
        files = {"ca_file": str(self.tls_ca_file)}
        for role in ("client", "scheduler", "worker"):
            files[f"{role}_cert"] = str(self.tls_cert)
            files[f"{role}_key"] = str(self.tls_key)
        return Security(require_encryption=True, **{f"tls_{k}": v for k, v in files.items()})


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
    """Start the cluster that ``spec`` names (not for scheduler addresses).

    Parameters
    ----------
    spec : ClusterSpec
        The cluster; ``kind`` is ``local``, ``cuda``, ``slurm`` or ``pbs``.

    Returns
    -------
    distributed.deploy.Cluster
        The running cluster (slurm/pbs: its batch jobs are submitted, maybe still queued).
    """
    security = spec.security()
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    if spec.kind == "local":
        import dask.config
        from distributed import LocalCluster

        forked = fork_server(spec.preload) if spec.preload else None
        with dask.config.set(forked.config if forked else {}):
            return LocalCluster(
                n_workers=spec.n_workers or os.cpu_count() or 1,
                threads_per_worker=spec.threads_per_worker,
                memory_limit=spec.memory_limit,
                host="127.0.0.1",
                dashboard_address=spec.dashboard_address,
                **({"env": forked.env} if forked else {}),
                **tls,
            )
    if spec.kind == "cuda":
        dask_cuda = require("dask_cuda", "cuda")
        # One worker per GPU, each declaring the resource the training task asks for.
        # Several threads per worker read and normalise while the GPU works.
        return dask_cuda.LocalCUDACluster(
            host="127.0.0.1",
            threads_per_worker=spec.threads_per_worker,
            dashboard_address=spec.dashboard_address,
            resources={"GPU": 1},
            **tls,
        )
    jobqueue = require("dask_jobqueue", "hpc")
    load_jobqueue_config(spec.jobqueue_config or DEFAULT_JOBQUEUE_CONFIG)
    cls = jobqueue.SLURMCluster if spec.kind == "slurm" else jobqueue.PBSCluster
    cluster = cls(**jobqueue_options(spec))
    keep_jobs(cluster, spec.n_workers or 1)
    return cluster


@dataclass(frozen=True)
class ForkServer:
    """How a LocalCluster forks its workers from the fork server (:func:`fork_server`)."""

    config: dict[str, Any]
    """Dask configuration while the workers start."""
    env: dict[str, str]
    """Environment of the workers: this process's now (a fork server started earlier in a
    long-lived process has the environment of then)."""


def fork_server(modules: tuple[str, ...]) -> ForkServer:
    """Have the workers of the next LocalCluster forked from a fork server that has imported
    ``distributed`` and ``modules``.

    Spawning each worker makes each import Dask (~0.5 s) and, at its first task, the stage's
    libraries (~0.7 s for the cutouts), on every worker, all sharing the same cores; a fork
    server imports them once and forks ready workers, which also end at once when the
    cluster closes (tests/benchmarks/bench_startup.py). The fork server is Python's own
    (:mod:`multiprocessing.forkserver`): one per process, started by the first cluster that
    uses it, with the modules named then; this sets its module list, for the process.

    Parameters
    ----------
    modules : tuple of str
        Modules to import in the fork server.

    Returns
    -------
    ForkServer
        The Dask configuration and worker environment for ``LocalCluster``.
    """
    import multiprocessing

    import dask.config
    import distributed.utils

    multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", *modules])
    # distributed would otherwise set its own list, and import pandas here to check it
    distributed.utils._forkserver_preload_set = True
    # left out: the variables each nanny sets itself before starting its worker
    nanny = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    return ForkServer(
        config={"distributed.worker.multiprocessing-method": "forkserver"},
        env={key: value for key, value in os.environ.items() if key not in nanny},
    )


def jobqueue_options(spec: ClusterSpec) -> dict[str, Any]:
    """Keyword arguments of dask-jobqueue's ``SLURMCluster``/``PBSCluster`` for ``spec``.

    Everything not given here comes from the loaded jobqueue configuration (section
    ``slurm``/``pbs``, or ``slurm-gpu``/``pbs-gpu`` with GPUs).

    Parameters
    ----------
    spec : ClusterSpec
        A ``slurm`` or ``pbs`` cluster.

    Returns
    -------
    dict
        ``config_name``, ``scheduler_options`` and, where ``spec`` says so, ``interface``,
        ``security``, ``processes``, ``job_extra_directives`` or ``resource_spec``.
    """
    import dask.config

    if spec.kind not in JOBQUEUE_KINDS:
        raise ValueError(f"jobqueue_options: {spec.kind!r} is not one of {JOBQUEUE_KINDS}")
    name = f"{spec.kind}-gpu" if spec.gpus_per_job else spec.kind
    section = dask.config.get(f"jobqueue.{name}", None)
    if section is None:
        raise ValueError(
            f"the jobqueue configuration has no jobqueue.{name} section "
            f"(see {DEFAULT_JOBQUEUE_CONFIG})"
        )
    scheduler_options = dict(dask.config.get(f"jobqueue.{name}.scheduler-options", {}) or {})
    scheduler_options["dashboard_address"] = spec.dashboard_address
    options: dict[str, Any] = {"config_name": name, "scheduler_options": scheduler_options}
    if spec.interface is not None:
        options["interface"] = spec.interface
    elif not (
        dask.config.get(f"jobqueue.{name}.interface", None)
        or {"host", "interface"} & set(scheduler_options)
    ):
        # Nothing says where to listen: loopback, not every interface of the machine.
        options["interface"] = "lo"
    if spec.tls:
        options["security"] = spec.security()
    if spec.gpus_per_job:
        gpus = spec.gpus_per_job
        # dask-cuda starts one worker per GPU it sees; dask-jobqueue counts them as processes.
        options["processes"] = gpus
        if spec.kind == "slurm":
            directives = dask.config.get(f"jobqueue.{name}.job-extra-directives", []) or []
            kept = [d for d in directives if not re.match(r"--(gres=gpu|gpus)\b", d)]
            options["job_extra_directives"] = [*kept, f"--gres=gpu:{gpus}"]
        else:
            options["resource_spec"] = pbs_gpu_resource_spec(name, gpus)
    return options


def job_script(spec: ClusterSpec, *, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script of one worker job of a ``slurm``/``pbs`` ``spec``, starting nothing.

    Parameters
    ----------
    spec : ClusterSpec
        A ``slurm`` or ``pbs`` cluster; its jobqueue YAML is loaded.
    scheduler : str
        The scheduler address to write into the worker command.

    Returns
    -------
    str
        What dask-jobqueue would submit (``#SBATCH``/``#PBS`` lines and the worker command).
        Like dask-jobqueue, it makes the log directory if it is missing.
    """
    jobqueue = require("dask_jobqueue", "hpc")
    load_jobqueue_config(spec.jobqueue_config or DEFAULT_JOBQUEUE_CONFIG)
    options = jobqueue_options(spec)
    options.pop("scheduler_options")
    if "security" in options:
        options["protocol"] = "tls://"
    cls = jobqueue.slurm.SLURMJob if spec.kind == "slurm" else jobqueue.pbs.PBSJob
    return cls(scheduler=scheduler, name="lensdask-worker", **options).job_script()


def pbs_gpu_resource_spec(name: str, gpus: int) -> str:
    """The PBS ``-l`` resource request of section ``name`` with ``ngpus`` set to ``gpus``."""
    import dask.config
    from dask.utils import parse_bytes
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    spec = dask.config.get(f"jobqueue.{name}.resource-spec", None)
    if spec is None:
        cores = dask.config.get(f"jobqueue.{name}.cores")
        memory = pbs_format_bytes_ceil(parse_bytes(dask.config.get(f"jobqueue.{name}.memory")))
        return f"select=1:ncpus={cores}:ngpus={gpus}:mem={memory}"
    if re.search(r"ngpus=\d+", spec):
        return re.sub(r"ngpus=\d+", f"ngpus={gpus}", spec)
    return f"{spec}:ngpus={gpus}"


def load_jobqueue_config(path: Path) -> None:
    """Add the dask-jobqueue settings of the YAML file ``path`` to Dask's configuration.

    They take the place of dask-jobqueue's defaults: values the user set in their own Dask
    configuration (``~/.config/dask/``, ``DASK_JOBQUEUE__...``) still win. A section named
    ``<system>-<variant>`` (``slurm-gpu``) starts from dask-jobqueue's defaults for
    ``<system>``, so it can be used as ``SLURMCluster(config_name="slurm-gpu")``.

    Parameters
    ----------
    path : Path
        YAML with a top-level ``jobqueue`` mapping, in dask-jobqueue's format.
    """
    import dask.config
    import yaml

    require("dask_jobqueue", "hpc")  # registers dask-jobqueue's own defaults first
    if not Path(path).exists():
        raise FileNotFoundError(f"jobqueue config {path} does not exist")
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    sections = data.get("jobqueue") if isinstance(data, dict) else None
    if not isinstance(sections, dict):
        raise ValueError(f"jobqueue config {path}: expected a top-level 'jobqueue' mapping")
    defaults = dask.config.merge(*dask.config.defaults).get("jobqueue", {})
    filled = {}
    for name, values in sections.items():
        base = str(name).split("-")[0]
        section = copy.deepcopy(defaults.get(name) or defaults.get(base) or {})
        dask.config.update(section, values or {})
        filled[name] = section
    dask.config.update_defaults({"jobqueue": filled})


def keep_jobs(cluster: Any, jobs: int, *, interval: float | None = None) -> None:
    """Scale a dask-jobqueue cluster to ``jobs`` batch jobs and keep it there.

    Workers end themselves before the walltime (``--lifetime`` with a stagger), handing
    their data to the others; their jobs end with them. Every ``interval`` seconds the jobs
    that ended are replaced by new ones, so a run outlives the walltime of one job.

    Parameters
    ----------
    cluster : dask_jobqueue.JobQueueCluster
        The cluster.
    jobs : int
        Batch jobs to keep submitted.
    interval : float, s
        Time between checks (default :data:`KEEP_JOBS_INTERVAL`).
    """
    from distributed.core import Status
    from tornado.ioloop import PeriodicCallback

    interval = KEEP_JOBS_INTERVAL if interval is None else interval

    cluster.scale(jobs=jobs)

    def top_up() -> None:
        if cluster.status == Status.running:
            cluster.scale(jobs=jobs)  # resubmits jobs whose workers left for good

    def install() -> None:
        callback = PeriodicCallback(top_up, interval * 1000)
        cluster.periodic_callbacks["lensdask-keep-jobs"] = callback  # stopped at close
        callback.start()

    cluster.loop.add_callback(install)


def _is_loopback(address: str) -> bool:
    host = urlparse(address).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextlib.contextmanager
def _dashboard_link_on(dashboard_address: str) -> Iterator[None]:
    """Make dashboard links name the dashboard's own host (it may listen on 127.0.0.1 while
    the scheduler listens on a network interface), unless the link template is custom."""
    import dask.config

    host = dashboard_address.rsplit(":", 1)[0].strip("[]")
    template = dask.config.get("distributed.dashboard.link")
    if host in ("", "0.0.0.0", "::") or "{host}" not in template:
        yield
        return
    with dask.config.set({"distributed.dashboard.link": template.replace("{host}", host)}):
        yield


QUIET_LOGGERS = {"distributed.sizeof": logging.ERROR}
"""distributed's loggers whose warnings are noise for users: the performance report's
profiles are too deeply nested for ``sizeof``, which warns on every worker."""


QUIET_MESSAGES = {
    "distributed.shuffle._scheduler_plugin": (
        "Shuffle %s initialized by task",
        "Shuffle %s deactivated due to stimulus",
    ),
}
"""Messages that distributed logs as warnings while all is well: the start and end of every
shuffle (the scheduler's). Its other warnings (a shuffle restarted, a failed broadcast)
stay."""


class _DropMessages(logging.Filter):
    """Drops the records whose message (the format, before its arguments) starts with one
    of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefixes))


def quiet_worker_logs() -> None:
    """Set :data:`QUIET_LOGGERS` and :data:`QUIET_MESSAGES` in this process."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, prefixes in QUIET_MESSAGES.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(prefixes))


class QuietLogs(WorkerPlugin):
    """Worker plugin of :func:`connect`: :func:`quiet_worker_logs` on every worker, and
    TensorFlow's start-up lines kept to its log level
    (:func:`lensdask.devices.quiet_tensorflow_start`)."""

    name = "lensdask-quiet-logs"

    def setup(self, worker: Any) -> None:
        from lensdask.devices import quiet_tensorflow_start

        quiet_worker_logs()
        quiet_tensorflow_start()


class QuickExit(WorkerPlugin):
    """Worker plugin of :func:`connect`: a worker process that closes skips the final
    garbage collection of the objects it holds.

    Python collects every object at exit; with TensorFlow loaded (training, scoring) that
    takes seconds, longer than the nanny waits for the process to end (4 s) before it kills
    it with a warning. Freezing the objects (:func:`gc.freeze`) leaves them to the operating
    system, which frees the memory of the process as it ends. Only in a worker process a
    nanny started, and only when the worker closes.
    """

    name = "lensdask-quick-exit"

    def teardown(self, worker: Any) -> None:
        import gc

        from distributed.core import Status

        if worker.status == Status.closing and getattr(worker, "nanny", None):
            gc.freeze()


def _quiet_distributed() -> None:
    """Keep distributed's start-up chatter out of the log unless logging is at DEBUG."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    quiet_worker_logs()


@contextlib.contextmanager
def connect(spec: ClusterSpec) -> Iterator[Any]:
    """Start (or join) the cluster of ``spec`` and yield a client; close both at the end.

    The dashboard link is logged at DEBUG level; the command line prints it. A scheduler
    started here that other machines can reach without TLS gets a warning: whoever reaches
    it can run code as this user.

    Parameters
    ----------
    spec : ClusterSpec
        The cluster to start, or the address of a running scheduler to join.

    Yields
    ------
    distributed.Client
        A client of the cluster (with the TLS credentials of ``spec``, if any).
    """
    from distributed import Client

    _quiet_distributed()
    security = spec.security()
    if "://" in spec.kind:
        client = Client(spec.kind, security=security)
        cluster = None
    else:
        cluster = make_cluster(spec)
        client = Client(cluster, security=security)
    try:
        client.register_plugin(QuietLogs())
        client.register_plugin(QuickExit())
        address = client.scheduler.address
        if cluster is not None and security is None and not _is_loopback(address):
            logger.warning(
                "the scheduler at %s is reachable from other machines without TLS: anyone "
                "who can connect to it can run code as you (see --tls-ca-file)",
                address,
            )
        with _dashboard_link_on(spec.dashboard_address if cluster is not None else ""):
            logger.debug("Dask dashboard: %s", client.dashboard_link)
            yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
