"""``lensdask verify WORKDIR``: what of a job's outputs is damaged or stale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lensdask.cli.cluster import cluster_client, cluster_options
from lensdask.cli.stages import handle_errors
from lensdask.runner import EXIT_PARTIAL


@click.command("verify")
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--invalidate",
    is_flag=True,
    help="Take back the completion of damaged units, so that the next run of their stage "
    "remakes them.",
)
@cluster_options
@handle_errors
def verify_cmd(workdir: Path, invalidate: bool, no_progress: bool, **opts: Any) -> None:
    """Audit every output of the job in WORKDIR, one task per work unit.

    Damaged: a file missing or changed since its unit was committed, or a Parquet page or
    Zarr chunk that fails its checksum (every file is read whole). Stale: an output whose
    stage did not finish its last run, a unit outside that run, or a unit made from other
    upstream units than WORKDIR holds now. Exits with 3 when it finds any, naming each.
    """
    from lensdask.verify import verify_workdir

    with cluster_client(opts, report=workdir / "verify_performance.html") as client:
        report = verify_workdir(
            workdir, client=client, invalidate_damaged=invalidate, progress=not no_progress
        )
    for finding in report.findings:
        click.echo(
            f"{finding.kind.upper()} {finding.output} {finding.unit}: {finding.reason}", err=True
        )
    kinds = {kind: sum(f.kind == kind for f in report.findings) for kind in ("damaged", "stale")}
    click.echo(
        f"verify: {report.units} units in {len(report.outputs)} outputs "
        f"({', '.join(report.outputs)}): {kinds['damaged']} damaged, {kinds['stale']} stale"
        + (
            " (damaged units taken back: rerun their stages)"
            if invalidate and kinds["damaged"]
            else ""
        )
    )
    if report.findings:
        sys.exit(EXIT_PARTIAL)
