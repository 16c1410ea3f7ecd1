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
    help="Print the plan (stages, tasks, rows, output sizes) and the cluster's job script; "
    "run nothing.",
)
@cluster_options
@handle_errors
def run_cmd(job: Path, stages: str | None, dry_run: bool, no_progress: bool, **opts: Any) -> None:
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
        from lensdask.plan import plan_job, plan_lines

        click.echo(f"job {job}: stages {', '.join(chosen)} -> {config.workdir}")
        for line in plan_lines(plan_job(config, chosen)):
            click.echo(line)
        spec = cluster_spec(opts)
        if spec.kind in ("slurm", "pbs"):
            from lensdask.cluster import job_script

            click.echo(f"\n{spec.n_workers or 1} worker job(s), each submitted as:")
            click.echo(job_script(spec))
        else:
            click.echo(f"\ncluster: {spec.kind} (no batch jobs)")
        return
    report = config.workdir / REPORT_FILE
    with (
        log_file(config.workdir / RUN_LOG) as log,
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
