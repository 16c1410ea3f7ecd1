"""The cluster options every computing command takes, and the client they start.

``--cluster`` picks a LocalCluster, a LocalCUDACluster, dask-jobqueue (SLURM, PBS) or a
running scheduler (:mod:`lensdask.cluster`); the command prints the dashboard link and
saves the Dask performance report of what it ran.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from lensdask.cluster import ClusterSpec

logger = logging.getLogger(__name__)


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the cluster options shared by every subcommand."""
    options = [
        click.option(
            "--cluster",
            default="local",
            show_default=True,
            help="local (LocalCluster), cuda (LocalCUDACluster, one worker per GPU), slurm or "
            "pbs (dask-jobqueue, deploy/jobqueue.yaml), or a scheduler address tcp://host:port.",
        ),
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Workers (local; default: the cores) or batch jobs kept running (slurm/pbs; "
            "default 1).",
        ),
        click.option(
            "--threads-per-worker", type=int, default=1, show_default=True, help="Local only."
        ),
        click.option("--memory-limit", default="auto", show_default=True, help="Per local worker."),
        click.option(
            "--dashboard-address",
            default="127.0.0.1:8787",
            show_default=True,
            help="Where the Dask dashboard listens (loopback by default).",
        ),
        click.option(
            "--jobqueue-config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="dask-jobqueue YAML for slurm/pbs (default deploy/jobqueue.yaml).",
        ),
        click.option(
            "--interface",
            default=None,
            help="slurm/pbs: network interface of scheduler and workers, e.g. ib0 for workers "
            "on other nodes [the jobqueue YAML's: lo, one node].",
        ),
        click.option(
            "--gpus-per-job",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="slurm/pbs: GPUs per batch job (the *-gpu section of the jobqueue YAML; one "
            "dask-cuda worker per GPU).",
        ),
        click.option(
            "--tls-ca-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="TLS for a shared cluster: the CA certificate (PEM). With --tls-cert and "
            "--tls-key, every Dask connection is mutual TLS and plain TCP is refused.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="TLS certificate (PEM) of scheduler, workers and client, signed by the CA.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Private key (PEM) of --tls-cert.",
        ),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextlib.contextmanager
def cluster_client(
    opts: dict[str, Any], *, report: Path, preload: tuple[str, ...] = ()
) -> Iterator[Any]:
    """Start the cluster the command-line options name, print the dashboard link, and save
    the Dask performance report of what runs on it at ``report``. Local workers start with
    the modules ``preload`` imported (:attr:`lensdask.cluster.ClusterSpec.preload`: a
    stage's, :attr:`lensdask.stages.Stage.preload`)."""
    from lensdask.cluster import connect

    with connect(cluster_spec(opts, preload=preload)) as client, performance_report(report):
        click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def report_path(out: Path) -> Path:
    """Where a stage command saves its performance report: next to its output ``out``,
    as ``<out stem>_performance.html``."""
    from lensdask.storage import is_url

    name = f"{out.stem}_performance.html"
    return Path(name) if is_url(out) else out.with_name(name)


def cluster_spec(opts: dict[str, Any], *, preload: tuple[str, ...] = ()) -> ClusterSpec:
    """The cluster of the command-line options (taken out of ``opts``), its local workers
    starting with the modules ``preload`` imported."""
    from lensdask.cluster import ClusterSpec

    return ClusterSpec(
        kind=opts.pop("cluster"),
        n_workers=opts.pop("workers"),
        threads_per_worker=opts.pop("threads_per_worker"),
        memory_limit=opts.pop("memory_limit"),
        dashboard_address=opts.pop("dashboard_address"),
        jobqueue_config=opts.pop("jobqueue_config"),
        interface=opts.pop("interface"),
        gpus_per_job=opts.pop("gpus_per_job"),
        tls_ca_file=opts.pop("tls_ca_file"),
        tls_cert=opts.pop("tls_cert"),
        tls_key=opts.pop("tls_key"),
        preload=tuple(preload),
    )


@contextlib.contextmanager
def performance_report(path: Path) -> Iterator[None]:
    """Dask's performance report of what runs inside, saved as HTML at ``path``.

    The report is a by-product: where it cannot be made (bokeh, which draws it, is not
    installed) or written (any :class:`OSError`: a full disk, a folder in its way), a
    warning names the path and the error, and what ran inside is unaffected.
    """
    try:
        import bokeh  # noqa: F401
    except ImportError:
        logger.warning("no performance report: bokeh is not installed")
        yield
        return
    from distributed import performance_report as dask_report

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logger.warning("no performance report: cannot write %s: %s", path, err)
        yield
        return
    report = dask_report(filename=str(path))
    report.__enter__()
    try:
        yield
    except BaseException as exc:
        _save_report(report, path, (type(exc), exc, exc.__traceback__))
        raise
    _save_report(report, path, (None, None, None))


def _save_report(report: Any, path: Path, exc_info: tuple[Any, Any, Any]) -> None:
    try:
        report.__exit__(*exc_info)
    except OSError as err:
        if path.is_file():  # a part of it (a full disk)
            with contextlib.suppress(OSError):
                path.unlink()
        logger.warning("no performance report: cannot write %s: %s", path, err)
