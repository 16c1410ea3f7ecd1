"""Colour and single-band stamps of the candidates, one task per tile, and contact sheets.

Layout of the stamps folder (``stamps/``)::

    <tile>/colour/<name>.png   20"x20" colour stamp (i, r, g as red, green, blue; Lupton
                               asinh stretch), north up; grey (the mono band) when a
                               colour band is missing
    <tile>/mono/<name>.png     the mono band (r) alone, same stretch, grey
    <tile>/stamps.parquet      candidate_id, THELI_NAME, colour_png, mono_png (relative to
                               the stamps folder), colour (False: grey fallback)
    _units/<tile>.json         completion markers
    sheets/sheet_00001.png ... contact sheets of the candidates by decreasing p_CNN, with
                               IDs and scores (named by the rank of their first candidate)
    sheets/ranked_sheet_00001.png ...  contact sheets in the order of a ranking table
                               (``--ranking``: decreasing P), beside the p_CNN ones

``<name>`` is the candidate ID with every run of characters other than letters, digits,
``.``, ``+`` and ``-`` replaced by ``_`` (``KiDS J122456.016+005048.05`` ->
``KiDS_J122456.016+005048.05``). A tile's stamps are written into ``_staging/<tile>`` and
moved into place whole, then its marker is written; a rerun skips complete tiles and
redoes a tile when its candidates, its cutouts or the stamp settings changed. The
contact sheets are drawn again on every run (one task per sheet), so a new ranking only
costs the sheets.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.config import StampConfig
from lensdask.formats.cutout_store import (
    has_tile,
    read_band_rows,
    read_tile_attrs,
    read_tile_columns,
    tile_markers,
)
from lensdask.formats.files import atomic_path
from lensdask.formats.ids import require_unique_ids
from lensdask.formats.parquet import WRITE_OPTIONS, read_file
from lensdask.runner import UnitCounts, UnitReport, run_stage, run_units
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import (
    Marker,
    clear_marker,
    commit_folder,
    config_hash,
    folder_files,
    ids_hash,
    marker_digest,
    planned_units,
    staging_path,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "stamps"
SHEET_STAGE = "sheets"
INDEX_FILE = "stamps.parquet"
SHEETS_DIR = "sheets"
INDEX_COLUMNS = ("candidate_id", "THELI_NAME", "colour_png", "mono_png", "colour")
SHEET_PREFIXES = {False: "sheet", True: "ranked_sheet"}
"""Start of the contact sheets' names: in p_CNN order, or in the order of a ranking table
(``--ranking``); each ordering keeps its own sheets."""


def stamp_name(candidate_id: str) -> str:
    """File name stem of a candidate's stamps: the ID with unsafe characters as ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", candidate_id).strip("_") or "_"


def sky_and_noise(image: np.ndarray) -> tuple[float, float]:
    """Sky level (median) and sky noise (1.4826 x median absolute deviation) of a stamp,
    ignoring NaN; ``(0, 1)`` where the stamp has no usable pixels."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    sky = float(np.median(finite))
    sigma = 1.4826 * float(np.median(np.abs(finite - sky)))
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.std(finite)) or 1.0
    return sky, sigma


def lupton_stamp(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    noise: np.ndarray,
    config: StampConfig,
) -> np.ndarray:
    """A colour stamp of three band cutouts: the pure kernel.

    Each band has its sky (median) subtracted, is multiplied by its weight and divided by
    the sky noise of ``noise`` (the mono band), then mapped with
    :func:`astropy.visualization.make_lupton_rgb` (``Q``, ``stretch`` and ``minimum`` of
    ``config``, in noise units). NaN pixels (outside the survey image) are shown as sky.

    Parameters
    ----------
    red, green, blue : ndarray, shape (ny, nx)
        Cutouts of the red, green and blue bands, survey units (counts).
    noise : ndarray, shape (ny, nx)
        Cutout whose sky noise sets the scale (the mono band).
    config : StampConfig
        Stretch and weights.

    Returns
    -------
    ndarray, shape (ny, nx, 3), uint8
        RGB image with north up (row 0 of the cutout at the bottom).
    """
    from astropy.visualization import make_lupton_rgb

    _, sigma = sky_and_noise(noise)
    channels = []
    for image, weight in zip((red, green, blue), config.band_weights, strict=True):
        sky, _ = sky_and_noise(image)
        scaled = (np.asarray(image, dtype=np.float64) - sky) * (weight / sigma)
        channels.append(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0))
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where the intensity is 0
        rgb = make_lupton_rgb(*channels, minimum=config.minimum, stretch=config.stretch, Q=config.q)
    return np.ascontiguousarray(rgb[::-1])


def render_stamps(
    images: Mapping[str, np.ndarray], *, config: StampConfig
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The colour and mono stamps of one candidate from its cutouts by band.

    Parameters
    ----------
    images : mapping of str to ndarray (ny, nx)
        The candidate's cutouts by band; needs the mono band, the colour bands are used
        when all three are present with some data.
    config : StampConfig

    Returns
    -------
    colour : ndarray (ny, nx, 3) uint8
        Colour stamp, or the mono band in grey when a colour band is missing.
    mono : ndarray (ny, nx) uint8
        The mono band alone.
    is_colour : bool
        Whether ``colour`` is in colour (False: the grey fallback).
    """
    mono_image = images[config.mono_band]
    mono = lupton_stamp(mono_image, mono_image, mono_image, noise=mono_image, config=config)
    bands = [images.get(band) for band in config.rgb_bands]
    is_colour = all(band is not None and np.isfinite(band).any() for band in bands)
    if not is_colour:
        return mono, np.ascontiguousarray(mono[..., 0]), False
    colour = lupton_stamp(*bands, noise=mono_image, config=config)  # type: ignore[misc]
    return colour, np.ascontiguousarray(mono[..., 0]), True


def read_candidate_cutouts(
    cutouts: Path, tile: str, ids: Sequence[str], bands: Sequence[str]
) -> dict[str, np.ndarray]:
    """The cutouts of candidates ``ids`` of ``tile``, for those of ``bands`` the store has.

    Only the candidates' rows are read, not the whole tile.

    Returns
    -------
    dict of str to ndarray (len(ids), ny, nx)
        Cutouts by band, in the order of ``ids``.

    Raises
    ------
    FileNotFoundError
        The store has no (complete) group for the tile.
    KeyError
        Some candidates have no cutout in the tile (the first are named).
    """
    if not has_tile(cutouts, tile):
        raise FileNotFoundError(f"{cutouts}: no complete tile {tile} in the cutout store")
    stored = [str(cid) for cid in read_tile_columns(cutouts, tile, ["ID"])["ID"].tolist()]
    where = {cid: k for k, cid in enumerate(stored)}
    missing = [cid for cid in ids if cid not in where]
    if missing:
        raise KeyError(
            f"{Path(cutouts) / tile}: {len(missing)} candidate(s) have no cutout, "
            f"e.g. {missing[:3]}"
        )
    rows = np.array([where[cid] for cid in ids], dtype=np.int64)
    have = list(read_tile_attrs(cutouts, tile).get("bands", []))
    return {band: read_band_rows(cutouts, tile, band, rows) for band in bands if band in have}


def write_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 grey (ny, nx) or RGB (ny, nx, 3) image as PNG (same bytes each time)."""
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")


def stamp_tile(
    ids: list[str],
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    cutouts: Path,
    config: StampConfig,
) -> dict[str, int]:
    """Make the stamps of the candidates ``ids`` of tile ``unit`` and commit them.

    Returns
    -------
    dict
        ``stamps`` written and ``grey`` (colour stamps that fell back to the mono band).
    """
    tile = unit
    clear_marker(out, tile)
    bands = list(dict.fromkeys((*config.rgb_bands, config.mono_band)))
    images = read_candidate_cutouts(cutouts, tile, ids, bands)
    if config.mono_band not in images:
        raise KeyError(f"{cutouts}/{tile}: no {config.mono_band} band for the stamps")
    staged = staging_path(out, tile)
    for kind in ("colour", "mono"):
        (staged / kind).mkdir(parents=True)
    rows = []
    for k, cid in enumerate(ids):
        colour, mono, is_colour = render_stamps(
            {band: stack[k] for band, stack in images.items()}, config=config
        )
        name = stamp_name(cid)
        write_png(colour, staged / "colour" / f"{name}.png")
        write_png(mono, staged / "mono" / f"{name}.png")
        rows.append((cid, tile, f"{tile}/colour/{name}.png", f"{tile}/mono/{name}.png", is_colour))
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index.to_parquet(staged / INDEX_FILE, index=False, **WRITE_OPTIONS)
    final = out / tile
    commit_folder(staged, final)
    files = folder_files(out, final)
    grey = int((~index["colour"]).sum())
    write_marker(
        out,
        Marker(
            unit=tile,
            rows=len(ids),
            ids_hash=ids_hash(ids),
            config_hash=chash,
            inputs=lineage,
            files=files,
            extra={"stamps": len(ids), "grey": grey},
        ),
    )
    return {"stamps": len(ids), "grey": grey}


def read_stamp_index(stamps: str | Path) -> pd.DataFrame:
    """The stamps of every complete tile of a stamps folder (columns :data:`INDEX_COLUMNS`)."""
    stamps = Path(stamps)
    frames = [
        read_file(stamps / tile / INDEX_FILE).to_pandas()
        for tile in planned_units(stamps)
        if (stamps / tile / INDEX_FILE).exists()
    ]
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in INDEX_COLUMNS})
    index = pd.concat(frames, ignore_index=True)
    # joined with the candidates and rankings by candidate_id: one stamp per candidate
    require_unique_ids(index, column="candidate_id", what=f"{stamps}: stamp index")
    return index


def without_stamps(candidate_ids: Sequence[str], stamps: str | Path) -> list[str]:
    """The candidates of ``candidate_ids`` that have no stamps in the stamps folder (their
    cutout is missing, or their tile failed): nobody can grade them."""
    have = set(read_stamp_index(stamps)["candidate_id"])
    return [cid for cid in candidate_ids if cid not in have]


def bad_label(fraction: float) -> str:
    """The label of a cutout with bad pixels on a contact sheet: ``bad 12%`` (at least
    ``bad <1%`` for any)."""
    percent = round(100 * fraction)
    return "bad <1%" if percent < 1 else f"bad {percent}%"


def sheet_pages(count: int, per_sheet: int) -> list[slice]:
    """Slices of a ranked list of ``count`` entries onto sheets of ``per_sheet``."""
    return [slice(start, min(start + per_sheet, count)) for start in range(0, count, per_sheet)]


SHEET_PANEL = (2.0, 1.93)
"""Width and height of a stamp's panel on a contact sheet, inches."""
SHEET_TITLE = 0.32
"""Height kept above each panel for its two-line label, inches: a fixed height, not a
fraction of the sheet, so that a sheet of one row does not clip its top labels."""
SHEET_MARGIN = 0.03
"""Margin below the last row and at the sides, inches."""


def sheet_figure(
    entries: list[tuple],
    *,
    stamps: Path,
    columns: int,
    rows: int,
    label: str,
):
    """The figure of one contact sheet (see :func:`draw_sheet`), not yet saved.

    Returns
    -------
    matplotlib.figure.Figure
        ``columns`` panels across and as many rows as the entries fill (at most ``rows``).
    """
    from matplotlib.figure import Figure
    from PIL import Image

    rows = min(rows, -(-len(entries) // columns))  # a short last sheet has fewer rows
    width = columns * SHEET_PANEL[0] + 2 * SHEET_MARGIN
    height = rows * (SHEET_PANEL[1] + SHEET_TITLE) + SHEET_MARGIN
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (rank, cid, score, png, *rest) in zip(axes.flat, entries, strict=False):
        with Image.open(stamps / png) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        ax.set_title(f"#{rank} {cid}\n{label} = {score:.3f}", fontsize=6.5)
        bad = rest[0] if rest else float("nan")
        if bad > 0:  # NaN: not known
            ax.text(
                0.03,
                0.03,
                bad_label(bad),
                transform=ax.transAxes,
                fontsize=6,
                color="yellow",
                backgroundcolor="black",
            )
    fig.subplots_adjust(
        left=SHEET_MARGIN / width,
        right=1 - SHEET_MARGIN / width,
        bottom=SHEET_MARGIN / height,
        top=1 - SHEET_TITLE / height,
        wspace=0.05,
        hspace=SHEET_TITLE / SHEET_PANEL[1],
    )
    return fig


def draw_sheet(
    entries: list[tuple],
    folder: Path,
    *,
    stamps: Path,
    columns: int,
    rows: int,
    label: str,
    prefix: str = "sheet",
) -> str:
    """Draw one contact sheet: each entry ``(rank, candidate_id, score, png)`` as a panel,
    or ``(rank, candidate_id, score, png, bad_fraction)``: a cutout with bad pixels
    (non-finite, zero weight, flagged) is labelled ``bad 12%`` under its score.

    The sheet goes to ``folder/<prefix>_<first rank>.png``; written beside and moved into
    place.
    """
    fig = sheet_figure(entries, stamps=stamps, columns=columns, rows=rows, label=label)
    final = folder / f"{prefix}_{entries[0][0]:05d}.png"
    with atomic_path(final) as tmp:
        fig.savefig(tmp, dpi=120, metadata={"Software": None})
    return str(final)


def make_sheets(
    ranked: pd.DataFrame,
    stamps: str | Path,
    *,
    label: str,
    prefix: str = "sheet",
    config: StampConfig,
    client: Any,
    progress: bool = True,
) -> tuple[list[Path], UnitReport]:
    """Contact sheets of ranked candidates, one Dask task per sheet.

    Parameters
    ----------
    ranked : pandas.DataFrame
        ``candidate_id``, ``score`` and ``colour_png``, in ranked order (best first), and
        optionally ``bad_fraction`` (labelled on the sheets where above 0).
    stamps : path
        The stamps folder; sheets go to ``stamps/sheets`` (old sheets of the same
        ``prefix`` are removed, the other ordering's stay).
    label : str
        Name of the score on the sheets (``p_CNN`` or ``P``).
    prefix : str
        Start of the sheets' file names (``sheet`` or ``ranked_sheet``).
    config : StampConfig
        Sheet size and limit.
    client : distributed.Client
    progress : bool

    Returns
    -------
    sheets : list of Path
        The sheets in order.
    report : UnitReport
        One unit per sheet.
    """
    stamps = Path(stamps)
    folder = stamps / SHEETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{prefix}_*.png"):
        old.unlink()
    if config.sheet_limit is not None:
        ranked = ranked.iloc[: config.sheet_limit]
    bad = ranked["bad_fraction"] if "bad_fraction" in ranked else [float("nan")] * len(ranked)
    entries = [
        (rank, cid, float(score), png, float(fraction))
        for rank, (cid, score, png, fraction) in enumerate(
            zip(ranked["candidate_id"], ranked["score"], ranked["colour_png"], bad, strict=True),
            start=1,
        )
    ]
    per_sheet = config.sheet_columns * config.sheet_rows
    pages = [entries[page] for page in sheet_pages(len(entries), per_sheet)]
    names = [f"{prefix}_{page[0][0]:05d}" for page in pages]
    report = run_units(
        client,
        draw_sheet,
        names,
        folder,
        stage=SHEET_STAGE,
        progress=progress,
        unit_args=pages,
        stamps=stamps,
        columns=config.sheet_columns,
        rows=config.sheet_rows,
        label=label,
        prefix=prefix,
    )
    sheets = [Path(report.results[name]) for name in names if name in report.results]
    return sheets, report


@dataclass(frozen=True)
class StampReport(UnitCounts):
    """Outcome of :func:`make_stamps`."""

    out: Path
    tiles: int
    stamps: int
    """Candidates with stamps (all complete tiles)."""
    grey: int
    """Of those, colour stamps that fell back to the mono band (a colour band missing)."""
    sheets: list[Path]
    units: UnitReport
    """One unit per tile."""
    sheet_units: UnitReport
    """One unit per contact sheet."""


def tile_lineage(groups: Mapping[str, list[str]], cutouts: Path) -> dict[str, dict[str, str]]:
    """The inputs of each tile's stamps: the tile's unit of the cutout store (``missing``
    where the store's last run has none) and the tile's candidates."""
    markers = tile_markers(cutouts)
    return {
        tile: {
            "cutouts": marker_digest(markers[tile]) if tile in markers else "missing",
            "candidates": ids_hash(ids),
        }
        for tile, ids in groups.items()
    }


def make_stamps(
    candidates: str | Path | pd.DataFrame,
    cutouts: str | Path,
    out: str | Path,
    *,
    config: StampConfig | None = None,
    ranking: str | Path | None = None,
    client: Any,
    progress: bool = True,
) -> StampReport:
    """Colour and mono stamps of every candidate (one task per tile), and contact sheets.

    Parameters
    ----------
    candidates : path or pandas.DataFrame
        Candidates (Parquet or CSV) with ``ID`` (or ``candidate_id``), ``THELI_NAME`` and
        ``p_cnn``.
    cutouts : path
        The cutout store holding the candidates' cutouts.
    out : path
        The stamps folder, created if needed.
    config : StampConfig, optional
        Bands, stretch, sheet size.
    ranking : path, optional
        A ranking table (``lensdask rank``): the sheets show its candidates by decreasing
        P, labelled with P; without it, all candidates by decreasing p_CNN.
    client : distributed.Client
        The injected Dask client.
    progress : bool
        Show progress bars.

    Returns
    -------
    StampReport
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.formats.files import TableError

    config = config or StampConfig()
    cutouts = Path(cutouts)
    out = Path(out)
    if not cutouts.is_dir():
        raise FileNotFoundError(f"cutout store {cutouts} does not exist")
    frame = (
        candidates.copy()
        if isinstance(candidates, pd.DataFrame)
        else read_candidates(candidates, require=("THELI_NAME", "p_cnn"), keep_nan=True)
    )
    names = frame["candidate_id"].map(stamp_name)
    clash = names.duplicated(keep=False)
    if clash.any():
        pairs = frame.loc[clash].groupby(names[clash])["candidate_id"].apply(list)
        raise TableError(
            f"{candidates}: candidate IDs that give the same stamp file name: {pairs.tolist()[:3]}"
        )
    groups = {
        str(tile): list(ids) for tile, ids in frame.groupby("THELI_NAME", sort=True)["candidate_id"]
    }
    report = run_stage(
        client,
        stamp_tile,
        out,
        groups,
        # the stamp settings, not the sheet ones, make the stamps
        chash=config_hash(
            {k: v for k, v in dataclasses.asdict(config).items() if not k.startswith("sheet_")}
        ),
        lineage=tile_lineage(groups, cutouts),
        stage=STAGE,
        progress=progress,
        cutouts=cutouts,
        config=config,
    )
    index = read_stamp_index(out)
    index = index[index["candidate_id"].isin(set(frame["candidate_id"]))]
    ranked, label = sheet_order(frame, index, ranking)
    sheets, sheet_report = make_sheets(
        ranked,
        out,
        label=label,
        prefix=SHEET_PREFIXES[ranking is not None],
        config=config,
        client=client,
        progress=progress,
    )
    grey = int((~index["colour"].astype(bool)).sum())
    logger.info(
        "stamps: %d tiles written, %d skipped (complete), %d failed; %d candidates with "
        "stamps (%d grey for want of a colour band); %d contact sheets -> %s",
        len(report.results),
        len(report.skipped),
        len(report.failures),
        len(index),
        grey,
        len(sheets),
        out,
    )
    return StampReport(
        out=out,
        tiles=len(groups),
        stamps=len(index),
        grey=grey,
        sheets=sheets,
        units=report,
        sheet_units=sheet_report,
    )


def sheet_order(
    candidates: pd.DataFrame, index: pd.DataFrame, ranking: str | Path | None
) -> tuple[pd.DataFrame, str]:
    """The candidates of the contact sheets in ranked order, with their score and label.

    With a ranking table: its rows in order (decreasing P), labelled ``P``; otherwise the
    candidates by decreasing ``p_cnn``, labelled ``p_CNN``. Candidates without a stamp are
    left out (and counted in the log).
    """
    if ranking is not None:
        from lensdask.review.rank import read_ranking

        table = read_ranking(ranking)
        order = pd.DataFrame({"candidate_id": table["candidate_id"], "score": table["p_value"]})
        label = "P"
    else:
        order = candidates[["candidate_id", "p_cnn"]].rename(columns={"p_cnn": "score"})
        order = order.sort_values("score", ascending=False, kind="stable", na_position="last")
        label = "p_CNN"
    ranked = order.merge(index[["candidate_id", "colour_png"]], on="candidate_id", how="inner")
    if "bad_fraction" in candidates:
        bad = candidates[["candidate_id", "bad_fraction"]].drop_duplicates("candidate_id")
        ranked = ranked.merge(bad, on="candidate_id", how="left")
    if len(ranked) < len(order):
        logger.warning(
            "contact sheets: %d of %d ranked candidates have no stamp and are left out",
            len(order) - len(ranked),
            len(order),
        )
    return ranked, label


def run(
    config: StampConfig,
    io: StageIO,
    *,
    client: Any,
    progress: bool = True,
    ranking: Path | None = None,
) -> StageOutcome:
    """The ``stamps`` stage: :func:`make_stamps` of the ``candidates`` from the
    ``cutouts``; its next steps are the grading commands."""
    candidates, out = io.need("candidates"), io.out("stamps")
    report = make_stamps(
        candidates,
        io.need("cutouts"),
        out,
        config=config,
        ranking=ranking,
        client=client,
        progress=progress,
    )
    outcome = StageOutcome(
        reports=[report.units, report.sheet_units],
        outputs={"stamps": report.out},
        counts={"candidates with stamps": report.stamps},
        lines=[
            f"stamps: {report.written} tiles written, {report.skipped} already complete, "
            f"{len(report.units.failures)} failed; {report.stamps} candidates with stamps "
            f"({report.grey} grey for want of a colour band); {len(report.sheets)} contact "
            f"sheets -> {report.out}"
        ],
    )
    if report.sheets:
        outcome.outputs["contact sheets"] = report.sheets[0].parent
    db = out.parent / "grades.sqlite"
    outcome.next_steps += [
        f"lensdask inspect add-grader NAME --db {db}   (a grading link per grader)",
        f"lensdask inspect {candidates} --stamps {out} --db {db}",
        f"lensdask inspect export --db {db} --out grades.csv && lensdask rank --scores "
        f"{candidates} --grades grades.csv --out {out.parent / 'ranking.ecsv'}",
    ]
    return outcome
