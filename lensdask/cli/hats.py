"""``lensdask targets-to-hats TARGETS --out DIR``: the targets as a HATS catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lensdask.cli.cluster import cluster_client, cluster_options, report_path
from lensdask.cli.stages import handle_errors


@click.command("targets-to-hats")
@click.argument("targets", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The HATS catalog folder to write.",
)
@click.option(
    "--pixel-rows",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Rows per HEALPix partition at most.",
)
@cluster_options
@handle_errors
def targets_to_hats_cmd(
    targets: Path, out: Path, pixel_rows: int, no_progress: bool, **opts: Any
) -> None:
    """Write the TARGETS dataset (the output of select) as a HATS catalog, to cross-match
    it with other HATS catalogs in LSDB (lsdb.open_catalog(OUT)). Needs the hats extra.
    A catalog already made from the same targets is kept as it is."""
    from lensdask.catalog.hats import write_targets_hats

    with cluster_client(opts, report=report_path(out)) as client:
        written = write_targets_hats(
            targets, out, client=client, pixel_rows=pixel_rows, progress=not no_progress
        )
    click.echo(f"targets-to-hats: {out} {'written' if written else 'already complete'}")
