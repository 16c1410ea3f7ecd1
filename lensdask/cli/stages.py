"""A command per stage of :data:`lensdask.stages.STAGES`, made from its table entry.

The command's positional argument is the input the entry marks as ``argument`` (or its
output, for a stage that reads nothing); other inputs are ``--<artifact>`` options, the
output is ``--out`` (default: the stage's file name in the current folder), every field of
the stage's configuration is an option (:mod:`lensdask.cli.fields`), ``--job`` takes the
section from a job file, and the cluster options start the cluster it runs on.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lensdask.cli.cluster import cluster_client, cluster_options, report_path
from lensdask.cli.fields import apply_options, configurable, field_options
from lensdask.cli.logs import log_file, log_path
from lensdask.runner import EXIT_PARTIAL
from lensdask.stages import Stage, StageIO, describe

logger = logging.getLogger(__name__)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn lensdask's input errors into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lensdask.catalog.schema import SchemaError
        from lensdask.config import ConfigError

        try:
            return func(*args, **kwargs)
        except (ConfigError, SchemaError, OSError, ValueError, ImportError) as err:
            raise click.ClickException(str(err)) from err

    return wrapper


ERROR_CHARS = 400
"""Characters of a failed unit's error on its terminal line (the log file has it all)."""


def refuse(problems: list[str]) -> None:
    """Print each pre-flight problem on a line of its own and exit with status 1."""
    for problem in problems:
        click.echo(f"Error: {problem}", err=True)
    sys.exit(1)


def finish(reports: list[Any], problems: list[str] = (), *, log: Path | None = None) -> None:
    """Exit with :data:`EXIT_PARTIAL` when units failed or rows are missing, with one line
    per failed unit and a summary that says whether the others completed (the tracebacks
    are in the log file ``log``)."""
    failures = [failure for report in reports for failure in report.failures]
    for failure in failures:
        error = failure.error
        if len(error) > ERROR_CHARS:
            error = error[: ERROR_CHARS - 3] + "..."
        click.echo(f"FAILED {failure.stage} {failure.unit}: {error}", err=True)
    for problem in problems:
        click.echo(f"MISSING {problem}", err=True)
    if failures:
        units = sum(len(r.results) + len(r.failures) + len(r.skipped) for r in reports)
        where = f" (tracebacks in {log})" if log is not None else ""
        if len(failures) == units:
            click.echo(f"all {units} unit(s) failed{where}", err=True)
        else:
            click.echo(f"{len(failures)} unit(s) failed; the others completed{where}", err=True)
    if failures or problems:
        sys.exit(EXIT_PARTIAL)


def job_section(stage: Stage, job: Path | None) -> Any:
    """The configuration of ``stage`` in job file ``job`` (or the default one)."""
    if job is None:
        return stage.config()
    from lensdask.job import load_job

    return getattr(load_job(job), stage.section) or stage.config()


class Location(click.ParamType):
    """A local path or an fsspec URL (``s3://bucket/key``), as :func:`lensdask.storage.as_path`
    makes it: credentials and endpoint from the environment or fsspec's configuration."""

    name = "PATH|URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from lensdask.storage import as_path

        return as_path(value)


LOCATION = Location()


def stage_command(stage: Stage) -> click.Command:
    """The ``lensdask <stage>`` command of ``stage``."""
    params: list[click.Parameter] = []
    arguments = [i for i in stage.inputs if i.argument]
    for item in arguments:
        params.append(click.Argument([item.artifact], type=LOCATION))
    for name in stage.arguments:  # a configuration field: converted to its type with the rest
        params.append(click.Argument([name], type=click.Path()))
    if arguments or stage.arguments:
        params.append(
            click.Option(
                ["--out"],
                type=LOCATION,
                default=Path(stage.outputs[stage.out]).name,
                show_default=True,
                help=f"Where {describe(stage.out)} go.",
            )
        )
    else:
        params.append(click.Argument(["out"], type=LOCATION))
    for item in stage.inputs:
        if not item.argument:
            params.append(
                click.Option(
                    [f"--{item.artifact}"],
                    type=LOCATION,
                    required=item.required,
                    help=item.help or f"{describe(item.artifact).capitalize()}.",
                )
            )
    params.append(
        click.Option(
            ["--job"],
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Take the {stage.section} section from this job file (options given here "
            "replace its values).",
        )
    )
    params += field_options(stage.config, skip=stage.arguments)
    for option in stage.options:
        flag = "--" + option.name.replace("_", "-")
        if option.kind == "flag":
            params.append(click.Option([flag], is_flag=True, help=option.help))
        else:
            kind = click.FLOAT if option.kind == "float" else LOCATION
            params.append(click.Option([flag], type=kind, help=option.help))
    callback = cluster_options(handle_errors(functools.partial(run_stage_command, stage)))
    command = click.command(stage.name, help=stage.doc)(callback)
    command.params = params + command.params
    return command


def run_stage_command(stage: Stage, *, job: Path | None, out: Path, **params: Any) -> None:
    """Run ``stage`` from its command-line parameters and print what it reports."""
    progress = not params.pop("no_progress")
    inputs = {item.artifact: params.pop(item.artifact) for item in stage.inputs}
    extras = {option.name: params.pop(option.name) for option in stage.options}
    fields = {f.name: params.pop(f.name) for f in configurable(stage.config) if f.name in params}
    config = apply_options(job_section(stage, job), fields, section=stage.section)
    for option in stage.options:
        value = extras[option.name]
        if option.into is not None and value is not None:
            name, key = option.into
            config = dataclasses.replace(config, **{name: {**getattr(config, name), key: value}})
    kwargs = {o.name: extras[o.name] for o in stage.options if o.into is None}
    io = StageIO(stage.name, {**inputs, stage.out: out})
    from lensdask.preflight import check_stage

    problems = check_stage(stage, config, io)
    if problems:  # before any cluster starts
        refuse(problems)
    run = stage.run_function()
    with log_file(log_path(out)) as log:
        if any(option.local and extras[option.name] for option in stage.options):
            outcome = run(config, io, client=None, progress=progress, **kwargs)
        else:
            with cluster_client(params, report=report_path(out), preload=stage.preload) as client:
                outcome = run(config, io, client=client, progress=progress, **kwargs)
    for line in outcome.lines:
        click.echo(line)
    finish(outcome.reports, outcome.problems, log=log)
