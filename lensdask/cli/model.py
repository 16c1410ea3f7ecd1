"""``lensdask evaluate``: a trained model's test metrics and plots, recomputed; ``lensdask
compare-models``: how a new model changes the candidate list."""

from __future__ import annotations

from pathlib import Path

import click

from lensdask.cli.stages import handle_errors


def parse_survey(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    """``NAME=TARGETS`` pairs as a dict (None when none is given: the default sizes)."""
    if not values:
        return None
    sizes = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            sizes[name.strip()] = int(number.replace(",", "").replace("_", ""))
        except ValueError:
            sep = ""
        if not sep or not name.strip() or sizes.get(name.strip(), 0) <= 0:
            raise click.BadParameter(
                f"{value!r}: expected NAME=TARGETS with a positive whole number of targets, "
                "e.g. 'LSST LRG=2300000'",
                ctx=ctx,
                param=param,
            )
    return sizes


@click.command("evaluate")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("trainset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for roc.png, p_cnn_test.png, completeness_test.png and metrics.json [MODEL_DIR].",
)
@click.option(
    "--false-positives-per-100k",
    type=click.FloatRange(0, 100_000, min_open=True),
    help="False positives per 100,000 targets allowed at the working threshold "
    "[100: an FPR of 1e-3].",
)
@click.option(
    "--survey",
    multiple=True,
    callback=parse_survey,
    metavar="NAME=TARGETS",
    help="A survey sample to give the expected candidates for (repeatable; default: the "
    "KiDS DR4 LRGs and BGs).",
)
@handle_errors
def evaluate_cmd(
    model_dir: Path,
    trainset: Path,
    out: Path | None,
    false_positives_per_100k: float | None,
    survey: dict[str, int] | None,
) -> None:
    """Recompute the test-split ROC curve, AUC, rates (down to FPR 1e-4), completeness
    and plots of MODEL_DIR on TRAINSET."""
    from lensdask.formats.model_dir import read_card
    from lensdask.nn.evaluate import evaluate_model, metrics_lines

    budget = (
        {}
        if false_positives_per_100k is None
        else {"false_positives_per_100k": false_positives_per_100k}
    )
    metrics = evaluate_model(model_dir, trainset, out=out, survey_sizes=survey, **budget)
    for line in metrics_lines(
        metrics.as_dict(), read_card(model_dir)["model_id"], out or model_dir
    ):
        click.echo(line)


@click.command("compare-models")
@click.argument("old", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--scores",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The scores folder holding both models' scores (lensdask score with each model).",
)
@click.option(
    "--grades",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Grades CSV (lensdask inspect export): how the graded candidates moved.",
)
@click.option("--lrg-threshold", type=float, help="p_cnn above which an LRG is a candidate [0.75].")
@click.option("--bg-threshold", type=float, help="p_cnn above which a BG is a candidate [0.98].")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV of every target's scores under both models and its change (kept, dropped, new).",
)
@handle_errors
def compare_models_cmd(
    old: Path,
    new: Path,
    scores: Path,
    grades: Path | None,
    lrg_threshold: float | None,
    bg_threshold: float | None,
    out: Path | None,
) -> None:
    """How the candidate list changes from model OLD to model NEW (a fine-tune of it): the
    candidates kept, dropped and new, and the rate of candidates per 1000 targets, per
    sample; with --grades, how the graded candidates' p_cnn moved (accepted ones should
    rise, rejected ones fall)."""
    from lensdask.config import DEFAULT_THRESHOLDS
    from lensdask.formats.files import atomic_path
    from lensdask.formats.grades import read_grades
    from lensdask.formats.model_dir import read_card
    from lensdask.score.compare import compare_scores, read_model_scores

    thresholds = dict(DEFAULT_THRESHOLDS)
    for sample, value in (("LRG", lrg_threshold), ("BG", bg_threshold)):
        if value is not None:
            thresholds[sample] = value
    ids = [read_card(model)["model_id"] for model in (old, new)]
    comparison = compare_scores(
        *(read_model_scores(scores, model_id) for model_id in ids),
        thresholds=thresholds,
        grades=read_grades(grades) if grades is not None else None,
    )
    click.echo(f"model {ids[0]} -> {ids[1]}")
    for line in comparison.lines():
        click.echo(line)
    if out is not None:
        with atomic_path(out) as tmp:
            comparison.targets.to_csv(tmp, index=False)
        click.echo(f"every target's change -> {out}")
