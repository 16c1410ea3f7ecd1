"""The review commands: blind grading in a web page (``inspect``), citizen science
(``zooniverse``), simulated graders (``simulate-graders``) and the ranking of the graded
candidates (``rank``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lensdask.cli.stages import handle_errors


class DefaultCommandGroup(click.Group):
    """A command group that runs its default command when the first argument is not one
    of its commands (``lensdask inspect CANDIDATES`` is ``lensdask inspect serve
    CANDIDATES``)."""

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--db`` option: the grades database."""
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("grades.sqlite"),
        show_default=True,
        help="The grades database (SQLite file, created if needed).",
    )(func)


@click.group("inspect", cls=DefaultCommandGroup, default_command="serve")
def inspect_group() -> None:
    """Blind visual inspection of the candidates by several graders, in a web page.

    \b
      lensdask inspect add-grader alice --db grades.sqlite   # prints alice's personal link
      lensdask inspect CANDIDATES --stamps stamps --db grades.sqlite   # serve the page
      lensdask inspect export --db grades.sqlite --out grades.csv

    Graders see the stamps only (never p_CNN nor others' grades), in their own fixed random
    order, and grade with the keys A/B/C/D (10/7/3/0); every grade is stored at once.
    """


@inspect_group.command("serve")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("stamps"),
    show_default=True,
    help="The stamps folder of `lensdask stamps`.",
)
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every interface "
    "(graders on other machines; prefer an SSH tunnel).",
)
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port (0: any).")
@click.option("--mono-band", default="r", show_default=True, help="Band of the single-band stamps.")
@handle_errors
def inspect_serve_cmd(
    candidates: Path, stamps: Path, db: Path, host: str, port: int, mono_band: str
) -> None:
    """Serve the grading page for the CANDIDATES (Parquet or CSV with ID) until Ctrl-C.

    Each grader opens their personal link (from `lensdask inspect add-grader`); a request
    without a valid token is refused. Grades go into the SQLite database at once, so the
    server can be stopped and started again without losing any.
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.review.server import make_server

    ids = read_candidates(candidates, require=(), keep_nan=True)["candidate_id"].tolist()
    server = make_server(db, stamps, ids, host=host, port=port, mono_band=mono_band)
    progress = server.app.store.progress()
    click.echo(f"grading {len(ids)} candidates at {server.url} (grades in {db})")
    if not progress:
        click.echo("no graders yet: add them with `lensdask inspect add-grader NAME`", err=True)
    for name, count in progress.items():
        click.echo(f"  {name}: {count} graded")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped; every grade is saved", err=True)
    finally:
        server.server_close()


@inspect_group.command("add-grader")
@click.argument("name")
@db_option
@click.option(
    "--url",
    default="http://127.0.0.1:8765",
    show_default=True,
    help="Address graders reach the server at, for the printed link.",
)
@click.option(
    "--reset", is_flag=True, help="Give an existing grader a new link (the old one dies)."
)
@handle_errors
def inspect_add_grader_cmd(name: str, db: Path, url: str, reset: bool) -> None:
    """Add grader NAME and print their personal link (shown once; keep it private)."""
    from lensdask.review.grades import GradeStore
    from lensdask.review.server import grader_link

    token = GradeStore(db).add_grader(name, reset=reset)
    click.echo(grader_link(url, token))


@inspect_group.command("graders")
@db_option
@handle_errors
def inspect_graders_cmd(db: Path) -> None:
    """List the graders and how many candidates each has graded."""
    from lensdask.review.grades import GradeStore

    store = GradeStore(db)
    total = len(store.candidates())
    for name, count in store.progress().items():
        click.echo(f"{name}: {count} of {total} graded")


@inspect_group.command("export")
@db_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("grades.csv"),
    show_default=True,
    help="The grades CSV (candidate_id,grader,grade,source,time).",
)
@handle_errors
def inspect_export_cmd(db: Path, out: Path) -> None:
    """Export every grade of the database as CSV candidate_id,grader,grade,source,time.

    All grades, whatever their source: web (the grading page), zooniverse (imported
    classifications, graders zooniverse:<user>) or simulated (graders sim:<k>).
    """
    from lensdask.review.grades import GradeStore

    if not db.exists():
        raise click.ClickException(f"grades database {db} does not exist")
    rows = GradeStore(db).export_csv(out)
    click.echo(f"{rows} grades -> {out}")


@click.command("rank")
@click.option(
    "--scores",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Candidates or scores (Parquet file or folder, or CSV) with ID or candidate_id and "
    "p_cnn; RAJ2000, DECJ2000, MAG_AUTO, Z_B fill the LaTeX table.",
)
@click.option(
    "--grades",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    multiple=True,
    help="Grades CSV (candidate_id,grader,grade); repeat for several files.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The ranking table: .csv, .ecsv (units, descriptions) or .parquet.",
)
@click.option(
    "--latex",
    type=click.Path(dir_okay=False, path_type=Path),
    help="LaTeX table of the high-quality candidates [OUT with .tex].",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="p_CNN against p_hum plot [OUT_pcnn_phum.png].",
)
@handle_errors
def rank_cmd(
    scores: Path, grades: tuple[Path, ...], out: Path, latex: Path | None, plot: Path | None
) -> None:
    """Rank the graded candidates by P = p_CNN * p_hum (Li et al. 2020, Table 1).

    s_ave is the mean grade (A/B/C/D = 10/7/3/0), s_rms its population standard
    deviation, p_hum = s_ave/10, n_zero the number of D grades; quality is golden for
    P >= 0.7, high for P >= 0.5, else low. Exploration targets (explore in the candidates
    table) are ranked apart, in OUT_exploration (same format). Unknown grade letters or
    candidates, a grader's
    second grade of a candidate and graded candidates without p_cnn are errors naming the
    rows. Also writes the LaTeX table of the high-quality candidates and the plot of p_CNN
    against p_hum marking candidates graded both A and D (Figure 5).
    """
    from lensdask.review.rank import exploration_path, rank_files, read_ranking

    latex = latex or out.with_suffix(".tex")
    plot = plot or out.with_name(f"{out.stem}_pcnn_phum.png")
    table = rank_files(scores, list(grades), out, latex=latex, plot=plot)
    counts = table["quality"].value_counts()
    click.echo(
        f"rank: {len(table)} graded candidates: {counts.get('golden', 0)} golden "
        f"(P >= 0.7), {counts.get('high', 0)} more high-quality (P >= 0.5), "
        f"{counts.get('low', 0)} low -> {out}"
    )
    apart = exploration_path(out)
    if apart.exists():  # rank_files writes it for exploration targets, else removes it
        explored = read_ranking(apart)["quality"].value_counts()
        click.echo(
            f"exploration: {explored.sum()} graded targets below the thresholds, kept apart: "
            f"{explored.get('golden', 0)} golden, {explored.get('high', 0)} more "
            f"high-quality -> {apart}"
        )
    click.echo(f"LaTeX table -> {latex}; plot -> {plot}")


@click.group("zooniverse")
def zooniverse_group() -> None:
    """Citizen science: a Zooniverse subject manifest of the candidates, and its
    classifications back as grades (for samples too large for a few graders)."""


@zooniverse_group.command("export")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("stamps"),
    show_default=True,
    help="The stamps folder of `lensdask stamps`.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for manifest.csv and images/.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subject order.")
@handle_errors
def zooniverse_export_cmd(candidates: Path, stamps: Path, out: Path, seed: int) -> None:
    """Write a subject manifest (manifest.csv) and images of the CANDIDATES into OUT.

    Upload with the Panoptes CLI (panoptes subject-set upload-subjects SET_ID
    OUT/manifest.csv). Images are named by an opaque key and the rows shuffled; the
    candidate ID is hidden metadata (#candidate_id); p_CNN is not included.
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.review.zooniverse import export_subjects

    ids = read_candidates(candidates, require=(), keep_nan=True)["candidate_id"].tolist()
    manifest = export_subjects(ids, stamps, out, seed=seed)
    click.echo(f"zooniverse: {len(ids)} subjects -> {manifest}")


def gradable(
    candidates: Path | None, stamps: Path | None, store: Any | None
) -> tuple[list[str] | None, list[str]]:
    """The candidate IDs grades may refer to, and those of them without stamps.

    The IDs are those of the CANDIDATES file where one is given, else those of the grades
    database (the candidates its grading page served), else any (None); without a stamps
    folder, no candidate is known to lack stamps.
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.review.stamps import without_stamps

    if candidates is not None:
        ids = read_candidates(candidates, require=(), keep_nan=True)["candidate_id"].tolist()
    elif store is not None:
        ids = store.candidates()
        if not ids:
            raise click.ClickException(
                f"grades database {store.path} has no candidates yet; give the candidates "
                "table (--scores)"
            )
    else:
        ids = None
    missing = without_stamps(ids, stamps) if stamps is not None and ids is not None else []
    return ids, missing


@zooniverse_group.command("import")
@click.argument("classifications", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The grades database (SQLite) to store the grades in, beside the grading page's "
    "(source zooniverse).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A grades CSV to write (candidate_id,grader,grade).",
)
@click.option(
    "--scores",
    type=click.Path(exists=True, path_type=Path),
    help="Candidates or scores file: classifications of other IDs are errors [with --db: "
    "the candidates of the database].",
)
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The stamps folder: classifications of candidates without stamps (no cutout) are errors.",
)
@click.option("--task", default="T0", show_default=True, help="The task whose answer is the grade.")
@click.option("--workflow-id", help="Take only this workflow's classifications.")
@click.option(
    "--keep-last",
    is_flag=True,
    help="Keep a volunteer's last classification of a subject they classified more than "
    "once (default: an error).",
)
@handle_errors
def zooniverse_import_cmd(
    classifications: Path,
    db: Path | None,
    out: Path | None,
    scores: Path | None,
    stamps: Path | None,
    task: str,
    workflow_id: str | None,
    keep_last: bool,
) -> None:
    """Turn a Zooniverse CLASSIFICATIONS export (CSV) into grades: into the grades
    database (--db), beside the grading page's, and/or a grades CSV (--out).

    Each classification is the grade of grader zooniverse:<user_name>; the answer to
    TASK is a label starting with A/B/C/D or the answer's index 0-3. Classifications of
    unknown candidates or of candidates without stamps, answers that are not grades and
    repeats are listed with their line, and then nothing is stored.
    """
    from lensdask.formats.grades import write_grades_csv
    from lensdask.review.grades import GradeStore
    from lensdask.review.zooniverse import import_classifications

    if db is None and out is None:
        raise click.UsageError("give --db (the grades database) and/or --out (a grades CSV)")
    store = GradeStore(db) if db is not None else None
    known, no_cutout = gradable(scores, stamps, store)
    grades = import_classifications(
        classifications,
        task=task,
        workflow_id=workflow_id,
        known=known,
        no_cutout=no_cutout,
        keep_last=keep_last,
    )
    volunteers = grades["grader"].nunique()
    if store is not None:
        store.add_candidates(grades["candidate_id"].unique())
        store.import_grades(grades, source="zooniverse")
        click.echo(f"zooniverse: {len(grades)} grades by {volunteers} volunteers -> {db}")
    if out is not None:
        write_grades_csv(grades, out)
        click.echo(f"zooniverse: {len(grades)} grades by {volunteers} volunteers -> {out}")


@click.command("simulate-graders")
@click.argument("candidates", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--truth",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The mock survey's catalog or targets (Parquet), with ID and TRUE_LENS.",
)
@db_option
@click.option(
    "--stamps",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The stamps folder: candidates without stamps (no cutout) are errors, as on the "
    "grading page.",
)
@click.option(
    "--graders", type=int, default=3, show_default=True, help="Number of simulated graders."
)
@click.option(
    "--p-lens",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="Probability that a grader grades a lens A or B (1 - p: missed lenses).",
)
@click.option(
    "--q-non-lens",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="Probability that a grader grades a non-lens C or D (1 - q: false alarms).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the grades.")
@handle_errors
def simulate_graders_cmd(
    candidates: Path,
    truth: Path,
    db: Path,
    stamps: Path | None,
    graders: int,
    p_lens: float,
    q_non_lens: float,
    seed: int,
) -> None:
    """Grade the CANDIDATES (Parquet or CSV with ID) by simulated graders sim:1..sim:N
    from the truth of a mock survey, into the grades database (source simulated).

    A lens (TRUE_LENS) is graded A or B with probability P-LENS (else C or D), a non-lens C or
    D with probability Q-NON-LENS (else A or B); the letter within a verdict is A or B (C or D)
    with equal chances. Seeded: the same grades on every run. Then `lensdask inspect
    export` and `lensdask rank` as for people's grades, so the whole review loop runs
    without people.
    """
    from lensdask.review.grades import GradeStore
    from lensdask.review.simulated import SOURCE, simulate_graders

    ids, no_cutout = gradable(candidates, stamps, None)
    result = simulate_graders(
        ids,
        truth,
        graders=graders,
        p=p_lens,
        q=q_non_lens,
        seed=seed,
        no_cutout=no_cutout,
    )
    store = GradeStore(db)
    store.add_candidates(ids)
    store.import_grades(result.grades, source=SOURCE)
    click.echo(f"simulate-graders: {len(result.grades)} grades by {graders} graders -> {db}")
    for name, row in result.rates.iterrows():
        click.echo(
            f"  {name}: {row['lenses_ab']} of {row['lenses']} lenses graded A/B, "
            f"{row['non_lenses_cd']} of {row['non_lenses']} non-lenses graded C/D"
        )
