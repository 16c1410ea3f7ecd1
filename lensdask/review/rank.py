"""The ranking of graded candidates (Li et al. 2020, section 5 and Table 1).

For every candidate with grades: ``s_ave`` (mean of the numeric grades A/B/C/D =
10/7/3/0), ``s_rms`` (their population standard deviation), ``p_hum = s_ave / 10``,
``p_value = P = p_cnn * p_hum``, ``n_zero`` (graders who gave D) and ``quality``:
``golden`` for P >= 0.7, ``high`` for P >= 0.5, else ``low``. Rows are sorted by decreasing
P, ties by decreasing p_cnn, then by ID.

P is compared with the thresholds (and sorted) after rounding to 6 decimals: p_cnn is a
float32 (about 7 significant digits) and products like 0.875 x 0.8 are not exact in
binary, so P = 0.7 means golden, as on paper.

Exploration targets (``explore`` True in the candidates table: drawn below the thresholds,
graded blind with the others) are ranked the same way but written apart, in
``<out>_exploration<ext>`` (:func:`exploration_path`), with the same columns. A table of
their own rather than a flag column: the ranking table keeps its contract, and whatever
reads it (the golden and high counts, the LaTeX table, the plot, ``lensdask stamps
--ranking``) sees the search's candidates only without having to know about exploration;
the exploration table, read by the same code, says how many lenses the search missed.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lensdask.formats.files import TableError, problem_message, save_figure
from lensdask.formats.grades import GRADE_VALUES, GradeError, grade_problems
from lensdask.formats.ids import require_unique_ids
from lensdask.formats.parquet import WRITE_OPTIONS, read_file
from lensdask.storage import as_path

logger = logging.getLogger(__name__)

GOLDEN = 0.7
"""P of a golden candidate (at least)."""
HIGH = 0.5
"""P of a high-quality candidate (at least)."""
P_DECIMALS = 6
"""P is rounded to this many decimals to compare with the thresholds and to sort."""
RANKING_COLUMNS = (
    "candidate_id",
    "p_cnn",
    "s_ave",
    "s_rms",
    "p_hum",
    "p_value",
    "n_zero",
    "quality",
)
"""Columns of the ranking table, in order (docs/architecture.md, Contracts)."""
COLUMN_INFO: Mapping[str, tuple[str | None, str]] = types.MappingProxyType(
    {
        "candidate_id": (None, "Candidate ID (KiDS catalog name)"),
        "p_cnn": ("", "Classifier probability p_CNN that the candidate is a lens"),
        "s_ave": ("", "Mean grade of the graders, A/B/C/D = 10/7/3/0"),
        "s_rms": ("", "Population standard deviation of the graders' numeric grades"),
        "p_hum": ("", "Human probability p_hum = s_ave / 10"),
        "p_value": ("", "Final probability P = p_CNN * p_hum"),
        "n_zero": (None, "Number of graders who gave grade D (0)"),
        "quality": (None, "golden if P >= 0.7, high if P >= 0.5, else low"),
    }
)
"""Unit ('' dimensionless, None for text and counts) and description of each column."""
FORMATS = {".csv": "csv", ".ecsv": "ecsv", ".parquet": "parquet", ".pq": "parquet"}


def quality_of(p_value: np.ndarray) -> np.ndarray:
    """``golden``, ``high`` or ``low`` for each P (rounded to :data:`P_DECIMALS` first)."""
    rounded = np.round(np.asarray(p_value, dtype=np.float64), P_DECIMALS)
    return np.where(rounded >= GOLDEN, "golden", np.where(rounded >= HIGH, "high", "low"))


def grade_summary(grades: pd.DataFrame) -> pd.DataFrame:
    """Per candidate: ``s_ave``, ``s_rms`` (population), ``n_grades``, ``n_zero`` (D grades)
    and ``n_a`` (A grades), from checked grades (``candidate_id``, ``grade``)."""
    values = grades["grade"].map(GRADE_VALUES).astype(np.float64)
    frame = pd.DataFrame({"candidate_id": grades["candidate_id"].to_numpy(), "value": values})
    grouped = frame.groupby("candidate_id", sort=True)["value"]
    summary = pd.DataFrame(
        {
            "s_ave": grouped.mean(),
            "s_rms": grouped.std(ddof=0),
            "n_grades": grouped.size(),
            "n_zero": grouped.agg(lambda v: int((v == GRADE_VALUES["D"]).sum())),
            "n_a": grouped.agg(lambda v: int((v == GRADE_VALUES["A"]).sum())),
        }
    )
    summary.index.name = "candidate_id"
    return summary.reset_index()


def rank_candidates(scores: pd.DataFrame, grades: pd.DataFrame) -> pd.DataFrame:
    """The ranking table of the graded candidates: the pure kernel.

    Parameters
    ----------
    scores : pandas.DataFrame
        ``candidate_id`` (unique) and ``p_cnn`` (float; NaN only for ungraded candidates).
    grades : pandas.DataFrame
        ``candidate_id``, ``grader``, ``grade`` (A/B/C/D), one row per grader and candidate.

    Returns
    -------
    pandas.DataFrame
        :data:`RANKING_COLUMNS`, one row per graded candidate, by decreasing ``p_value``
        (ties: decreasing ``p_cnn``, then ``candidate_id``).

    Raises
    ------
    GradeError
        Unknown grade letters or candidates, repeated grades, graded candidates without
        a ``p_cnn``: every bad row named.
    """
    problems = grade_problems(grades, known=scores["candidate_id"])
    if problems:
        raise GradeError(problem_message("grades", problems))
    repeated = scores["candidate_id"][scores["candidate_id"].duplicated()]
    if len(repeated):
        raise TableError(f"scores: candidate(s) listed twice: {repeated.tolist()[:5]}")
    summary = grade_summary(grades)
    table = summary.merge(scores[["candidate_id", "p_cnn"]], on="candidate_id", how="left")
    no_p = table["candidate_id"][table["p_cnn"].isna()]
    if len(no_p):
        raise TableError(
            problem_message(
                "scores", [f"graded candidate {cid!r} has no p_cnn" for cid in no_p.tolist()]
            )
        )
    table["p_hum"] = table["s_ave"] / 10.0
    table["p_value"] = table["p_cnn"].astype(np.float64) * table["p_hum"]
    table["quality"] = quality_of(table["p_value"].to_numpy())
    table["_p"] = np.round(table["p_value"].to_numpy(), P_DECIMALS)
    table = table.sort_values(
        ["_p", "p_cnn", "candidate_id"], ascending=[False, False, True], kind="stable"
    )
    table["n_zero"] = table["n_zero"].astype(np.int64)
    return table[list(RANKING_COLUMNS)].reset_index(drop=True)


def ranking_format(path: str | Path) -> str:
    """``csv``, ``ecsv`` or ``parquet`` from a ranking table's file extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unknown table format {suffix or '(no extension)'}; use {', '.join(FORMATS)}"
        )
    return FORMATS[suffix]


def write_ranking(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the ranking table as CSV, ECSV (units and descriptions) or Parquet (field
    descriptions in the schema), by the extension of ``path``."""
    path = Path(path)
    kind = ranking_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table[list(RANKING_COLUMNS)]
    if kind == "csv":
        table.to_csv(path, index=False)
    elif kind == "ecsv":
        from astropy.table import Table

        out = Table.from_pandas(table)
        for name, (unit, description) in COLUMN_INFO.items():
            out[name].description = description
            if unit is not None:
                out[name].unit = unit
        out.meta["description"] = (
            "lensdask ranking of graded lens candidates by decreasing P = p_CNN * p_hum "
            "(Li et al. 2020)"
        )
        out.meta["grade_values"] = dict(GRADE_VALUES)
        out.meta["thresholds"] = {"golden": GOLDEN, "high": HIGH}
        out.write(path, format="ascii.ecsv", overwrite=True)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table, preserve_index=False)
        fields = [
            field.with_metadata({"description": COLUMN_INFO[field.name][1]})
            for field in arrow.schema
        ]
        pq.write_table(arrow.cast(pa.schema(fields)), path, **WRITE_OPTIONS)
    return path


def read_ranking(path: str | Path) -> pd.DataFrame:
    """Read a ranking table written by :func:`write_ranking` (any of its formats)."""
    path = Path(path)
    kind = ranking_format(path)
    if not path.exists():
        raise FileNotFoundError(f"ranking table {path} does not exist")
    if kind == "csv":
        table = pd.read_csv(path, dtype={"candidate_id": str, "quality": str})
    elif kind == "ecsv":
        from astropy.table import Table

        table = Table.read(path, format="ascii.ecsv").to_pandas()
    else:
        table = read_file(path).to_pandas()
    missing = [name for name in RANKING_COLUMNS if name not in table.columns]
    if missing:
        raise TableError(f"{path}: not a ranking table, missing {', '.join(missing)}")
    return table


LATEX_COLUMNS = (
    ("ID", "", "candidate_id", None),
    ("RA", "(deg)", "RAJ2000", "{:.5f}"),
    ("Dec", "(deg)", "DECJ2000", "{:.5f}"),
    ("$r$", "(mag)", "MAG_AUTO", "{:.2f}"),
    ("$z_{\\rm phot}$", "", "Z_B", "{:.2f}"),
    ("$s_{\\rm ave}$", "", "s_ave", "{:.1f}"),
    ("rms", "", "s_rms", "{:.2f}"),
    ("$p_{\\rm CNN}$", "", "p_cnn", "{:.3f}"),
    ("$P$", "", "p_value", "{:.3f}"),
    ("zeros", "", "n_zero", "{:d}"),
)
"""Heading, unit line, source column and format of each column of the LaTeX table."""


def latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#"}
    special |= {"_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}"}
    special |= {"^": r"\textasciicircum{}"}
    return "".join(special.get(char, char) for char in text)


def latex_table(table: pd.DataFrame, candidates: pd.DataFrame | None = None) -> str:
    """The high-quality candidates (P >= 0.5) as a LaTeX table like Li et al.'s Table 1.

    Parameters
    ----------
    table : pandas.DataFrame
        The ranking table.
    candidates : pandas.DataFrame, optional
        ``candidate_id`` with ``RAJ2000``, ``DECJ2000`` (deg), ``MAG_AUTO`` (r, mag) and
        ``Z_B``; a missing column or value is shown as ``--``.

    Returns
    -------
    str
        A ``table*`` environment, rows by decreasing P.
    """
    good = table[table["quality"].isin(["golden", "high"])]
    if candidates is not None:
        extra = [name for _, _, name, _ in LATEX_COLUMNS if name in candidates.columns]
        extra = [name for name in extra if name not in good.columns]
        require_unique_ids(candidates, column="candidate_id", what="candidates")
        good = good.merge(candidates[["candidate_id", *extra]], on="candidate_id", how="left")
    lines = [
        r"\begin{table*}",
        r"\centering",
        rf"\caption{{High-quality lens candidates ($P \geq {HIGH}$; golden: $P \geq {GOLDEN}$) "
        r"by decreasing $P = p_{\rm CNN} \times s_{\rm ave}/10$.}",
        r"\label{tab:candidates}",
        r"\begin{tabular}{l" + "r" * (len(LATEX_COLUMNS) - 1) + "}",
        r"\hline",
        " & ".join(head for head, _, _, _ in LATEX_COLUMNS) + r" \\",
        " & ".join(unit for _, unit, _, _ in LATEX_COLUMNS) + r" \\",
        r"\hline",
    ]
    for row in good.to_dict("records"):
        cells = []
        for _, _, name, fmt in LATEX_COLUMNS:
            value = row.get(name)
            if fmt is None:
                cells.append(latex_escape(str(value)))
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("--")
            else:
                cells.append(fmt.format(int(value) if fmt == "{:d}" else float(value)))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table*}", ""]
    return "\n".join(lines)


def split_verdicts(grades: pd.DataFrame) -> set[str]:
    """Candidates graded A by at least one grader and D by at least one other."""
    summary = grade_summary(grades)
    return set(summary["candidate_id"][(summary["n_a"] >= 1) & (summary["n_zero"] >= 1)])


def plot_pcnn_phum(table: pd.DataFrame, grades: pd.DataFrame, path: str | Path) -> Path:
    """p_CNN against p_hum of the graded candidates, marking those with at least one A and
    at least one D grade (Li et al. 2020, Figure 5), with the curves P = 0.5 and 0.7."""
    from matplotlib.figure import Figure

    marked = table["candidate_id"].isin(split_verdicts(grades)).to_numpy()
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.scatter(table["p_cnn"][~marked], table["p_hum"][~marked], s=12, c="0.3", label="graded")
    ax.scatter(
        table["p_cnn"][marked],
        table["p_hum"][marked],
        s=40,
        facecolors="none",
        edgecolors="tab:red",
        label=f"at least one A and one D ({int(marked.sum())})",
    )
    p_cnn = np.linspace(0.01, 1.0, 400)
    for level, style in ((HIGH, "--"), (GOLDEN, ":")):
        ax.plot(p_cnn, level / p_cnn, style, color="tab:blue", lw=1, label=f"P = {level}")
    ax.set_xlim(min(0.7, float(table["p_cnn"].min()) - 0.02) if len(table) else 0.7, 1.005)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(r"$p_{\rm CNN}$")
    ax.set_ylabel(r"$p_{\rm hum} = s_{\rm ave}/10$")
    ax.set_title(f"{len(table)} graded candidates")
    ax.legend(loc="lower left", fontsize=8)
    path = save_figure(fig, as_path(path), dpi=130)
    return path


def exploration_path(out: str | Path) -> Path:
    """Where the ranking of the exploration targets goes, beside the ranking table ``out``
    (``ranking.ecsv`` -> ``ranking_exploration.ecsv``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_exploration{out.suffix}")


def explore_flags(candidates: pd.DataFrame) -> pd.Series:
    """The ``explore`` flag of each candidate: a bool column, or ``True``/``False``/1/0
    as text (a CSV file); False for all where the table has none.

    Raises
    ------
    TableError
        Other values, each named by its row.
    """
    if "explore" not in candidates:
        return pd.Series(False, index=candidates.index)
    flags = candidates["explore"]
    if flags.dtype == bool:
        return flags
    text = flags.astype(str).str.strip().str.lower()
    bad = ~text.isin(["true", "false", "1", "0"])
    if bad.any():
        raise TableError(
            problem_message(
                "candidates",
                [
                    f"row {k + 1}: explore is {value!r}, not True or False"
                    for k, value in zip(np.flatnonzero(bad), flags[bad], strict=True)
                ],
            )
        )
    return text.isin(["true", "1"])


def split_exploration(
    table: pd.DataFrame, candidates: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranking of the search's candidates and that of the exploration targets (rows of
    ``candidates`` flagged ``explore``), each in ranked order."""
    flagged = explore_flags(candidates).to_numpy()
    explored = table["candidate_id"].isin(set(candidates["candidate_id"][flagged]))
    return table[~explored].reset_index(drop=True), table[explored].reset_index(drop=True)


def rank_files(
    scores: str | Path,
    grades: str | Path | list[str | Path],
    out: str | Path,
    *,
    latex: str | Path | None = None,
    plot: str | Path | None = None,
) -> pd.DataFrame:
    """Read scores and grades files, rank, and write the table, the LaTeX table and the plot.

    Parameters
    ----------
    scores : path
        Candidates or scores (Parquet file or folder, or CSV) with ``ID`` or
        ``candidate_id`` and ``p_cnn``; ``RAJ2000``, ``DECJ2000``, ``MAG_AUTO``, ``Z_B``
        fill the LaTeX table where present; ``explore`` flags exploration targets.
    grades : path or list of paths
        Grades CSV files (``candidate_id,grader,grade``).
    out : path
        The ranking table, ``.csv``, ``.ecsv`` or ``.parquet``. When the candidates have
        exploration targets, their ranking goes to :func:`exploration_path` of ``out``
        (otherwise an old one there is removed: it would belong to other candidates).
    latex, plot : path, optional
        Where the LaTeX table and the p_CNN-p_hum plot go (None: not written); both
        show the search's candidates only.

    Returns
    -------
    pandas.DataFrame
        The ranking table of the search's candidates.
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.formats.grades import read_grades

    ranking_format(out)  # fail on a bad extension before any work
    candidates = read_candidates(scores, keep_nan=True)
    graded = read_grades(grades, known=candidates["candidate_id"])
    no_p = candidates[candidates["p_cnn"].isna()]
    no_p = no_p[no_p["candidate_id"].isin(set(graded["candidate_id"]))]
    if len(no_p):
        raise TableError(
            problem_message(
                scores,
                [
                    f"row {k + 1}: graded candidate {cid!r} has no p_cnn"
                    for k, cid in zip(no_p.index, no_p["candidate_id"], strict=True)
                ],
            )
        )
    table, explored = split_exploration(rank_candidates(candidates, graded), candidates)
    logger.info(
        "rank: %d graded candidates of %d (%d golden, %d high, %d low) -> %s",
        len(table),
        len(candidates),
        int((table["quality"] == "golden").sum()),
        int((table["quality"] == "high").sum()),
        int((table["quality"] == "low").sum()),
        out,
    )
    write_ranking(table, out)
    apart = exploration_path(out)
    if explore_flags(candidates).any():
        write_ranking(explored, apart)
        logger.info(
            "rank: %d graded exploration targets (%d golden, %d high) -> %s",
            len(explored),
            int((explored["quality"] == "golden").sum()),
            int((explored["quality"] == "high").sum()),
            apart,
        )
    else:
        apart.unlink(missing_ok=True)
    if latex is not None:
        Path(latex).parent.mkdir(parents=True, exist_ok=True)
        Path(latex).write_text(latex_table(table, candidates))
    if plot is not None:
        plot_pcnn_phum(table, graded[graded["candidate_id"].isin(set(table["candidate_id"]))], plot)
    return table
