"""``lensdask evaluate``: a trained model's test metrics and plots, recomputed."""

from __future__ import annotations

from pathlib import Path

import click

from lensdask.cli.stages import handle_errors


@click.command("evaluate")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("trainset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for roc.png, p_cnn_test.png and metrics.json [MODEL_DIR].",
)
@handle_errors
def evaluate_cmd(model_dir: Path, trainset: Path, out: Path | None) -> None:
    """Recompute the test-split ROC curve, AUC, rates and plots of MODEL_DIR on TRAINSET."""
    from lensdask.formats.model_dir import read_card
    from lensdask.nn.evaluate import evaluate_model, metrics_lines

    metrics = evaluate_model(model_dir, trainset, out=out)
    for line in metrics_lines(
        metrics.as_dict(), read_card(model_dir)["model_id"], out or model_dir
    ):
        click.echo(line)
