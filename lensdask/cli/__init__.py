"""The ``lensdask`` command: one subcommand per stage, ``run`` for a whole job, and the
review commands.

The stage commands are made from the stage table (:mod:`lensdask.stages`) when they are
looked up, so a stage added to the table is a command too. Every computing command takes
the same cluster options (:mod:`lensdask.cli.cluster`), prints the Dask dashboard link,
shows a progress bar per stage, checks its inputs before any cluster starts
(:mod:`lensdask.preflight`), writes its log file (:mod:`lensdask.cli.logs`), and exits
with 0 when everything completed, 3 when units (tiles) failed while the others, if any,
completed (the failed ones are listed and in ``_failures.csv``), 2 on bad usage and 1 on
bad input or any other error. Building the commands imports neither Dask nor NumPy nor
TensorFlow: ``lensdask --help`` stays fast.
"""

from __future__ import annotations

import logging

import click

from lensdask import __version__
from lensdask import stages as table
from lensdask.cli.hats import targets_to_hats_cmd
from lensdask.cli.logs import configure_logging
from lensdask.cli.model import compare_models_cmd, evaluate_cmd
from lensdask.cli.review import inspect_group, rank_cmd, simulate_graders_cmd, zooniverse_group
from lensdask.cli.run import run_cmd
from lensdask.cli.stages import stage_command
from lensdask.cli.verify import verify_cmd
from lensdask.devices import quiet_tensorflow_start, set_backend_env

logger = logging.getLogger("lensdask")

COMMANDS = (
    evaluate_cmd,
    compare_models_cmd,
    inspect_group,
    simulate_graders_cmd,
    rank_cmd,
    zooniverse_group,
    run_cmd,
    verify_cmd,
    targets_to_hats_cmd,
)
"""The commands that are not stages, listed after the stages."""


class StageGroup(click.Group):
    """The ``lensdask`` group: a command per stage of the table, then :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*table.stage_names(), *(command.name for command in COMMANDS)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in table.stage_names():
            return stage_command(table.stage_named(name))
        return next((command for command in COMMANDS if command.name == name), None)


@click.group(cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lensdask")
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(verbose: int, quiet: bool) -> None:
    """lensdask: find strong gravitational lenses in wide imaging surveys with Dask.

    Stages, each a command: mock-survey (or ingest) -> select -> cutouts -> simulate ->
    train (evaluate recomputes the test metrics) -> score -> candidates -> stamps; then
    human grading (inspect, or zooniverse for citizen science; simulate-graders on a mock
    survey) -> rank.
    `lensdask run JOB.yaml` chains the stages from one job file. Every command that
    computes starts or joins a Dask cluster (--cluster) and prints its dashboard link.
    """
    # before any Keras backend is imported here or in the workers this process starts
    set_backend_env()
    quiet_tensorflow_start()
    configure_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


__all__ = ["main", "run_cmd"]
