"""``lensdask run JOB``: every stage a job file configures, or ``--dry-run`` its plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lensdask.cli.cluster import cluster_client, cluster_options, cluster_spec
from lensdask.cli.logs import RUN_LOG, log_file
from lensdask.cli.stages import finish, handle_errors, refuse


@click.command("run")
@click.argument("job", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--stages",
    help="Run only these stages (comma-separated, e.g. score,candidates); their inputs must "
    "exist from an earlier run.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (stages, tasks, rows, output sizes), its capacity (bytes read and "
    "written, core-hours, GPU-hours, wall time) and the cluster's job script; run nothing.",
)
@click.option(
    "--cores",
    type=click.IntRange(min=1),
    default=None,
    help="With --dry-run: cores of the cluster for the wall times [this machine's].",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --dry-run: GPUs of the cluster; training and scoring run on them (0: on the cores).",
)
@click.option(
    "--read-bandwidth",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --dry-run: GB/s the storage delivers to the cluster, to count reading in the "
    "wall times [not counted].",
)
@cluster_options
@handle_errors
def run_cmd(
    job: Path,
    stages: str | None,
    dry_run: bool,
    cores: int | None,
    gpus: int,
    read_bandwidth: float | None,
    no_progress: bool,
    **opts: Any,
) -> None:
    """Run the job file JOB: every stage it configures, skipping what is complete.

    Each stage runs when the job has its section (the stage name with underscores:
    mock_survey, select, ...), in the order of `lensdask --help`; select always runs.
    Outputs go under the job's workdir, with the Dask performance report of the run
    (performance-report.html) and its log (lensdask.log); the end of the output says where
    everything is. The inputs are checked first, before any cluster starts.
    """
    from lensdask.job import load_job
    from lensdask.pipeline import REPORT_FILE, chosen_stages, run_job
    from lensdask.preflight import check_job

    config = load_job(job)
    chosen = chosen_stages(config, stages.split(",") if stages else None)
    problems = check_job(config, chosen)
    if problems:
        refuse(problems)
    if dry_run:
        import os

        from lensdask.capacity import capacity_lines, job_costs, load_calibration
        from lensdask.plan import plan_job, plan_lines

        click.echo(f"job {job}: stages {', '.join(chosen)} -> {config.workdir}")
        plans = plan_job(config, chosen)
        for line in plan_lines(plans):
            click.echo(line)
        cores = cores or os.cpu_count() or 1
        calibration = load_calibration()
        devices = {"cores": cores, "gpus": gpus, "read_bandwidth": read_bandwidth}
        if read_bandwidth:
            devices["read_bandwidth"] = read_bandwidth * 1e9
        click.echo()
        for line in capacity_lines(
            job_costs(plans, calibration, **devices), calibration=calibration, **devices
        ):
            click.echo(line)
        spec = cluster_spec(opts)
        if spec.kind in ("slurm", "pbs"):
            from lensdask.cluster import job_script

            click.echo(f"\n{spec.n_workers or 1} worker job(s), each submitted as:")
            click.echo(job_script(spec))
        else:
            click.echo(f"\ncluster: {spec.kind} (no batch jobs)")
        return
    from lensdask.storage import is_url

    # the log and the performance report are local files: beside a remote workdir's job
    local = job.parent if is_url(config.workdir) else config.workdir
    report = local / REPORT_FILE
    with (
        log_file(local / RUN_LOG) as log,
        cluster_client(opts, report=report) as client,
    ):
        result = run_job(config, client=client, stages=chosen, progress=not no_progress)
    if report.is_file():
        result.outputs["performance report"] = report
    if log is not None:
        result.outputs["log"] = log
    for line in result.summary_lines():
        click.echo(line)
    finish(result.reports, result.problems, log=log)
