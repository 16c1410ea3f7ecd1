"""What the candidates recover: injected lenses (the selection function) and known lenses.

- :func:`measure_completeness` compares the candidates with a truth table of injected
  lenses (a mock survey's ``lenses/<tile>.parquet``: ``ID``, ``theta_E``,
  ``arc_peak_ratio``, ...): the fraction of the scored lenses recovered, overall and by
  Einstein radius, arc brightness, seeing, host magnitude, host size and neighbours
  (:mod:`lensdask.selection`, with Clopper-Pearson intervals), and the candidates that are
  not lenses per 1000 targets of each sample.
- :func:`recover_known` looks up a list of known lenses or earlier candidates (CSV, ECSV,
  FITS, VOTable or Parquet; decimal or sexagesimal positions), by ``ID`` or by position,
  and reports each one's target, separation, ``p_cnn``, whether it is a candidate and if
  not, why (the reference run recovered 54 of 60 earlier candidates). Its kernels work on
  DataFrames: :func:`known_positions` reads the coordinates, :func:`match_known` finds
  the targets, :func:`explain_recovery` gives the reasons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.config import CandidateConfig
from lensdask.formats.files import TEXT_COLUMNS, TableError, atomic_path, read_table
from lensdask.formats.ids import require_unique_ids
from lensdask.formats.parquet import read_rows, write_frame
from lensdask.formats.targets import read_positions
from lensdask.score.thresholds import candidate_mask
from lensdask.selection import HOST_COLUMNS, host_properties, plot_completeness, selection_function

logger = logging.getLogger(__name__)

POSITION_COLUMNS = (
    ("RAJ2000", "DECJ2000"),
    ("RAJ2000", "DEJ2000"),
    ("_RAJ2000", "_DEJ2000"),
    ("RA_ICRS", "DE_ICRS"),
    ("RA", "DEC"),
    ("RAdeg", "DEdeg"),
)
"""Column pairs that give a known lens's position, in order of preference, compared in any
case (``ra``/``dec``, ``RA``/``Dec``); failing every pair, the first right ascension of
:data:`RA_NAMES` with the first declination of :data:`DEC_NAMES` (VizieR's ``_RAJ2000``
with ``DEJ2000``)."""
RA_NAMES = ("RAJ2000", "_RAJ2000", "RA_ICRS", "RA", "RAdeg")
"""Names of a right ascension column, in order of preference (any case)."""
DEC_NAMES = ("DECJ2000", "DEJ2000", "_DEJ2000", "DE_ICRS", "DEC", "DEdeg")
"""Names of a declination column, in order of preference (any case)."""
KNOWN_FORMATS = {
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
}
"""astropy's format of a table of known lenses, by the end of its file name; astropy
identifies other files from their content."""
HOUR_UNITS = ("h:m:s", "hms", "h", "hr", "hour", "hours", "hourangle")
"""Units (as written in files) of angles in hours: a right ascension in ``hourangle``."""

NO_TARGET_WITHIN = 'no target within {radius}"'
"""Reason: no target within the match radius of the known lens's position."""
NOT_SELECTED = "not selected"
"""Reason: a source of the catalog, but not among the targets (known only given the
catalog)."""
NO_SUCH_TARGET = "no target with this ID"
"""Reason: the known lens's ID (without a position) names no target."""
NOT_SCORED = "not scored"
"""Reason: a target without a score (its tile not cut or not scored)."""
MASKED_STAMP = "on a masked stamp"
"""Reason: the target's stamp has no p_cnn, or too many non-finite (or bad) pixels
(``CandidateConfig.masked_fraction``)."""
BELOW_THRESHOLD = "below threshold"
"""Reason: scored, with p_cnn not above its sample's threshold."""
REPORT_COLUMNS = (
    "matched_ID",
    "matched_by",
    "separation_arcsec",
    "sample",
    "p_cnn",
    "recovered",
    "reason",
    "note",
)
"""Columns the report of known lenses adds to theirs."""


@dataclass
class Measured:
    """A measurement: its summary (JSON-able) and the files written."""

    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    table: pd.DataFrame | None = None


def measure_completeness(
    truth: str | Path,
    scores: str | Path,
    candidates: pd.DataFrame,
    *,
    counts: dict[str, int],
    config: CandidateConfig,
    stem: Path,
    targets: str | Path | None = None,
) -> Measured:
    """Completeness of the candidates against a truth table of injected lenses.

    Parameters
    ----------
    truth : path
        Truth table(s): a folder of Parquet files or one file, with ``ID``, ``theta_E``
        (arcsec) and ``arc_peak_ratio``, and optionally ``seeing`` (arcsec, of the lens's
        image).
    scores : path
        The scores (to know which lenses were scored at all: a lens galaxy that is not a
        target, or whose cutout is missing, cannot be found).
    candidates : DataFrame
        The candidates (``ID``, ``sample``).
    counts : dict
        Targets scored per sample.
    config : CandidateConfig
        Thresholds and bins.
    stem : path
        Output prefix: ``<stem>_completeness.csv`` and ``.png``.
    targets : path, optional
        The targets: the lens hosts' magnitude, size (``R_EFF``) and neighbours
        (:func:`lensdask.selection.host_properties`). Quantities without values are not
        binned.

    Returns
    -------
    Measured
        Summary: ``lenses``, ``scored``, ``recovered``, ``completeness``
        (recovered / scored), ``false_per_1000`` by sample.
    """
    table = read_table(truth)
    missing = [name for name in ("ID", "theta_E", "arc_peak_ratio") if name not in table]
    if missing:
        raise KeyError(f"{truth}: truth table lacks column(s) {', '.join(missing)}")
    # one lens per galaxy: a repeated ID would be counted twice, or join another's score
    require_unique_ids(table, what=f"{truth}: truth table of injected lenses")
    # the scores say what each lens was scored as (read_rows refuses repeated IDs)
    table = table.drop(columns=["sample", "p_cnn"], errors="ignore")
    found = read_rows(scores, table["ID"].tolist(), ["sample", "p_cnn"])
    table = table.merge(found, on="ID", how="left")
    scored = table["p_cnn"].notna().to_numpy()
    recovered = scored & candidate_mask(
        table["sample"].fillna("").to_numpy(),
        table["p_cnn"].fillna(-1.0).to_numpy(),
        dict(config.thresholds),
    )
    quantities = {name: table[name].to_numpy(float) for name in ("theta_E", "arc_peak_ratio")}
    if "seeing" in table:
        quantities["seeing"] = table["seeing"].to_numpy(float)
    if targets is not None:
        hosts = read_rows(targets, table["ID"].tolist(), list(HOST_COLUMNS)).set_index("ID")
        positioned = {"RAJ2000", "DECJ2000"} <= set(hosts)
        everyone = read_positions(targets) if positioned else None
        properties = host_properties(hosts, everyone).reindex(table["ID"])
        quantities |= {name: properties[name].to_numpy(float) for name in properties}
    bins = selection_function(
        quantities,
        scored,
        recovered,
        edges={"theta_E": config.theta_e_bins, "arc_peak_ratio": config.arc_ratio_bins},
    )
    lens_ids = set(table["ID"])
    false_per_1000 = {}
    for sample, n in counts.items():
        in_sample = candidates[candidates["sample"] == sample]
        false = int((~in_sample["ID"].isin(lens_ids)).sum())
        false_per_1000[sample] = 1000.0 * false / n if n else float("nan")
    n_scored, n_recovered = int(scored.sum()), int(recovered.sum())
    summary = {
        "lenses": len(table),
        "scored": n_scored,
        "recovered": n_recovered,
        "completeness": n_recovered / n_scored if n_scored else float("nan"),
        "false_per_1000": false_per_1000,
    }
    logger.info(
        "candidates: %d of %d scored injected lenses recovered (%.1f%%; %d lenses not scored); "
        "non-lens candidates per 1000 targets: %s",
        n_recovered,
        n_scored,
        100 * summary["completeness"],
        len(table) - n_scored,
        ", ".join(f"{s} {v:.2f}" for s, v in false_per_1000.items()),
    )
    csv = Path(f"{stem}_completeness.csv")
    bins.to_csv(csv, index=False)
    lenses = Path(f"{stem}_lenses.parquet")
    write_frame(table.assign(recovered=recovered), lenses)
    plot = plot_completeness(bins, Path(f"{stem}_completeness.png"))
    return Measured(
        summary=summary,
        files={"completeness table": csv, "injected lenses": lenses, "completeness plot": plot},
        table=bins,
    )


def nearest_positions(
    ra: np.ndarray, dec: np.ndarray, cat_ra: np.ndarray, cat_dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest catalog entry of each position, at any separation
    (:func:`astropy.coordinates.match_coordinates_sky`).

    Parameters
    ----------
    ra, dec : ndarray, deg
        Positions to match.
    cat_ra, cat_dec : ndarray, deg
        The catalog.

    Returns
    -------
    index : ndarray of int
        Catalog index of each position's nearest entry (-1 for an empty catalog).
    separation : ndarray, arcsec
        Separation to it (NaN for an empty catalog).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    ra = np.asarray(ra, dtype=float)
    if len(cat_ra) == 0 or len(ra) == 0:
        return np.full(len(ra), -1), np.full(len(ra), np.nan)
    points = SkyCoord(ra * u.deg, np.asarray(dec, dtype=float) * u.deg)
    catalog = SkyCoord(np.asarray(cat_ra, float) * u.deg, np.asarray(cat_dec, float) * u.deg)
    index, separation, _ = match_coordinates_sky(points, catalog)
    return np.asarray(index), separation.to_value(u.arcsec)


def match_positions(
    ra: np.ndarray,
    dec: np.ndarray,
    cat_ra: np.ndarray,
    cat_dec: np.ndarray,
    *,
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest catalog entry of each position, within ``radius``.

    Parameters
    ----------
    ra, dec : ndarray, deg
        Positions to match.
    cat_ra, cat_dec : ndarray, deg
        The catalog.
    radius : float, arcsec
        Largest separation of a match.

    Returns
    -------
    index : ndarray of int
        Catalog index of each position's match, -1 where none is within ``radius``.
    separation : ndarray, arcsec
        Separation to the nearest catalog entry (NaN for an empty catalog).
    """
    index, arcsec = nearest_positions(ra, dec, cat_ra, cat_dec)
    return np.where(arcsec <= radius, index, -1), arcsec


def _find_column(names: list[str], wanted: tuple[str, ...]) -> str | None:
    """The first of ``wanted`` that ``names`` holds, compared in any case."""
    lower = {}
    for name in names:
        lower.setdefault(name.lower(), name)
    for name in wanted:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def position_columns(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The right ascension and declination columns of a table (:data:`POSITION_COLUMNS`,
    in any case), or None."""
    names = [str(name) for name in frame.columns]
    for ra, dec in POSITION_COLUMNS:
        pair = _find_column(names, (ra,)), _find_column(names, (dec,))
        if pair[0] is not None and pair[1] is not None:
            return pair[0], pair[1]
    ra, dec = _find_column(names, RA_NAMES), _find_column(names, DEC_NAMES)
    return (ra, dec) if ra is not None and dec is not None else None


def id_column(frame: pd.DataFrame) -> str | None:
    """The ``ID`` column of a table (in any case), or None."""
    return _find_column([str(name) for name in frame.columns], ("ID",))


def read_known(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A table of known lenses as a DataFrame, with the units of its columns.

    CSV, ECSV, FITS and VOTable files are read by :meth:`astropy.table.Table.read`, the
    format chosen by the file's extension (:data:`KNOWN_FORMATS`) or, for another
    extension, by astropy from the file's content; Parquet files and folders by
    :func:`lensdask.formats.files.read_table`. The ID columns of a CSV file stay strings
    (``00123`` is not 123); columns of more than one dimension are left out.

    Returns
    -------
    frame : DataFrame
        One row per known lens, indexed from 0.
    units : dict
        The unit of each column that has one, as astropy writes it (``deg``,
        ``hourangle``; VizieR's ``h:m:s``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TableError
        If no reader can read it.
    """
    import warnings

    from astropy.io import ascii
    from astropy.table import Table
    from astropy.utils.exceptions import AstropyWarning

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq")):
        return read_table(path).reset_index(drop=True), {}
    fmt = next((f for ending, f in KNOWN_FORMATS.items() if name.endswith(ending)), None)
    options: dict[str, Any] = {}
    if fmt == "ascii.csv":
        options["converters"] = {c: [ascii.convert_numpy(str)] for c in TEXT_COLUMNS}
    try:
        with warnings.catch_warnings():
            # VizieR's units (h:m:s, d:m:s) are not astropy's; they are read as text here
            warnings.simplefilter("ignore", AstropyWarning)
            try:
                table = Table.read(path, format=fmt, **options)
            except Exception:
                if fmt is not None:
                    raise
                table = Table.read(path, format="ascii")  # astropy guesses the dialect
    except Exception as err:
        if fmt is None:
            try:
                return read_table(path).reset_index(drop=True), {}
            except Exception:
                pass
        raise TableError(
            f"{path}: cannot read as a table of known lenses ({fmt or 'format guessed'}): {err}"
        ) from None
    flat = [c for c in table.colnames if len(table[c].shape) <= 1]
    left = sorted(set(table.colnames) - set(flat))
    if left:
        logger.debug("%s: column(s) of several dimensions left out: %s", path, left)
    table = table[flat]
    units = {c: str(table[c].unit) for c in flat if table[c].unit is not None}
    table.meta.clear()
    frame = table.to_pandas(index=False)
    for column in frame.columns:  # FITS text may come as bytes
        if frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            )
    return frame.reset_index(drop=True), units


def _angle_unit(unit: str | None, *, column: str, source: str):
    """The astropy unit of a column's angles, from the unit it was read with (None
    without one): its own where astropy knows it, hours for ``h:m:s`` (VizieR) and
    :data:`HOUR_UNITS`, degrees for ``d:m:s``."""
    from astropy import units as u

    if unit is None or not unit.strip():
        return None
    text = unit.strip().strip('"').lower()
    if text in HOUR_UNITS:
        return u.hourangle
    if text in ("d:m:s", "dms", "deg", "degree", "degrees"):
        return u.deg
    try:
        parsed = u.Unit(unit)
    except ValueError:
        parsed = None
    if parsed is None or parsed.physical_type != "angle":
        raise TableError(f"{source}: column {column} has unit {unit!r}, which is not an angle")
    return parsed


def parse_angles(
    values: pd.Series,
    *,
    unit: str | None = None,
    right_ascension: bool,
    column: str,
    source: str,
) -> np.ndarray:
    """Angles in degrees from a column of decimal numbers or sexagesimal strings.

    Decimal numbers are in the column's unit, degrees without one. Strings
    (``12 34 56.7``, ``12:34:56.7``, ``12h34m56.7s``, ``-01 23 45``, ``-1d23m45s``) are
    read by :class:`astropy.coordinates.Angle`: in the column's unit, or without one, in
    hours for a right ascension and degrees for a declination. Empty cells give NaN.

    Parameters
    ----------
    values : Series
        The column, indexed by row (from 0).
    unit : str, optional
        The column's unit (:func:`read_known`).
    right_ascension : bool
        A right ascension (in [0, 360] deg) rather than a declination (in [-90, 90] deg).
    column, source : str
        The column's and the file's names, for the error messages.

    Returns
    -------
    ndarray of float, deg
        NaN where the cell is empty.

    Raises
    ------
    TableError
        Naming the file, the row and the column of the first value that is not an angle,
        mixes decimal and sexagesimal notation, or is out of range.
    """
    from astropy import units as u
    from astropy.coordinates import Angle

    given = _angle_unit(unit, column=column, source=source)
    out = np.full(len(values), np.nan)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
        present = numbers.notna().to_numpy()
        out[present] = Angle(numbers.to_numpy()[present], unit=given or u.deg).deg
    else:
        text = values.astype("string").str.strip()
        present = (text.notna() & (text != "")).to_numpy()
        numbers = pd.to_numeric(text.where(present), errors="coerce")
        decimal = numbers.notna().to_numpy()
        if decimal.any() and not decimal[present].all():
            first = int(np.flatnonzero(present)[0])  # the notation of the column
            row = int(np.flatnonzero(present & (decimal != decimal[first]))[0])
            kinds = ("sexagesimal", "decimal") if decimal[row] else ("decimal", "sexagesimal")
            raise TableError(
                f"{source}: row {row}, column {column}: {text.iloc[row]!r} is {kinds[1]}, "
                f"row {first} {kinds[0]} ({text.iloc[first]!r}); write the column in one "
                "notation"
            )
        if decimal.any():
            out[present] = Angle(numbers.to_numpy(float)[present], unit=given or u.deg).deg
        elif present.any():
            sexagesimal = given or (u.hourangle if right_ascension else u.deg)
            strings = text.to_numpy(dtype=object)[present]
            try:
                out[present] = Angle(list(strings), unit=sexagesimal).deg
            except Exception:
                for row in np.flatnonzero(present):
                    try:
                        Angle(text.iloc[row], unit=sexagesimal)
                    except Exception as err:
                        raise TableError(
                            f"{source}: row {row}, column {column}: cannot read "
                            f"{text.iloc[row]!r} as an angle in {sexagesimal}: {err}"
                        ) from None
                raise
    low, high = (0.0, 360.0) if right_ascension else (-90.0, 90.0)
    bad = np.flatnonzero(present & ~((out >= low) & (out <= high)))
    if bad.size:
        row = int(bad[0])
        raise TableError(
            f"{source}: row {row}, column {column}: {values.iloc[row]!r} is "
            f"{out[row]:.6g} deg, outside [{low:g}, {high:g}]"
        )
    return out


def known_positions(
    frame: pd.DataFrame,
    columns: tuple[str, str],
    *,
    units: dict[str, str] | None = None,
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Right ascension and declination (deg) of each known lens, NaN where it has none.

    Raises
    ------
    TableError
        For a value that cannot be read (:func:`parse_angles`), or a row with one
        coordinate and not the other.
    """
    units = units or {}
    ra_name, dec_name = columns
    ra = parse_angles(
        frame[ra_name],
        unit=units.get(ra_name),
        right_ascension=True,
        column=ra_name,
        source=source,
    )
    dec = parse_angles(
        frame[dec_name],
        unit=units.get(dec_name),
        right_ascension=False,
        column=dec_name,
        source=source,
    )
    half = np.isnan(ra) != np.isnan(dec)
    if half.any():
        row = int(np.flatnonzero(half)[0])
        empty = ra_name if np.isnan(ra[row]) else dec_name
        raise TableError(f"{source}: row {row}, column {empty}: empty, while the other is given")
    return ra, dec


def match_known(
    ids: pd.Series,
    ra: np.ndarray,
    dec: np.ndarray,
    targets: pd.DataFrame,
    *,
    radius: float,
    catalog: pd.DataFrame | None = None,
    source: str = "known lenses",
) -> pd.DataFrame:
    """The target each known lens is, by ID or by position.

    A known lens whose ``ID`` names a target is that target. Any other (without an ID, or
    whose ID names no target: another naming scheme) with a position is the nearest target
    within ``radius``; failing that, the nearest source of the ``catalog`` within
    ``radius`` (a galaxy the selection did not keep). A known lens with an ID and no
    position that names no target keeps its ID.

    Parameters
    ----------
    ids : Series of str
        Each known lens's ID (NA or empty where none).
    ra, dec : ndarray, deg
        Each known lens's position (NaN where none).
    targets : DataFrame
        ``ID`` of the targets and, to match by position, ``RAJ2000`` and ``DECJ2000``
        (deg). Without positions, only IDs are looked up.
    radius : float, arcsec
        Largest separation of a match.
    catalog : DataFrame, optional
        ``ID``, ``RAJ2000`` and ``DECJ2000`` (deg) of catalog sources near the known
        lenses: tells a galaxy that is not a target from no galaxy at all.
    source : str
        The file of known lenses, for the log and error messages.

    Returns
    -------
    DataFrame
        On the index of ``ids``: ``matched_ID`` (str, NA where none), ``matched_by``
        (``ID``, ``position`` or empty), ``is_target`` (bool), ``separation_arcsec``
        (from the known lens's position to the matched target's; NaN where either is
        unknown), ``nearest_ID`` and ``nearest_arcsec`` (the nearest target of a known lens
        matched to none), ``catalog_ID`` and ``catalog_arcsec`` (its catalog source).

    Raises
    ------
    TableError
        For rows with neither an ID nor a position.
    ValueError
        If known lenses need matching by position and ``targets`` has no positions.
    """
    n = len(ids)
    ids = ids.astype("string").str.strip()
    ids = ids.mask(ids == "")
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    has_id = ids.notna().to_numpy()
    has_pos = np.isfinite(ra) & np.isfinite(dec)
    lost = ~has_id & ~has_pos
    if lost.any():
        rows = np.flatnonzero(lost)[:5].tolist()
        raise TableError(f"{source}: row(s) {rows} have neither an ID nor a position")
    target_ids = targets["ID"].astype("string")
    by_id = has_id & ids.isin(set(target_ids.dropna())).fillna(False).to_numpy(bool)
    by_pos = ~by_id & has_pos
    positioned = "RAJ2000" in targets and "DECJ2000" in targets
    foreign = bool(has_id.any() and not by_id.any())
    if not positioned:
        if (by_pos & ~has_id).any() or (foreign and by_pos.any()):
            raise ValueError(
                f"{source}: known lenses given by position need the targets (--targets) to "
                "match them"
            )
        by_pos[:] = False
    if foreign and by_pos.any():
        logger.info(
            "%s: none of its %d IDs names a target (another naming scheme?): matching by "
            "position within %s arcsec",
            source,
            int(has_id.sum()),
            radius,
        )
    elif foreign:
        logger.warning(
            "%s: none of its %d IDs names a target, and it gives no positions to match by",
            source,
            int(has_id.sum()),
        )
    elif (has_id & by_pos).any():
        logger.info(
            "%s: %d ID(s) name no target: matching those by position within %s arcsec",
            source,
            int((has_id & by_pos).sum()),
            radius,
        )
    out = pd.DataFrame(
        {
            "matched_ID": pd.Series(pd.NA, index=ids.index, dtype="string"),
            "matched_by": "",
            "is_target": by_id,
            "separation_arcsec": np.nan,
            "nearest_ID": pd.Series(pd.NA, index=ids.index, dtype="string"),
            "nearest_arcsec": np.nan,
            "catalog_ID": pd.Series(pd.NA, index=ids.index, dtype="string"),
            "catalog_arcsec": np.nan,
        },
        index=ids.index,
    )
    kept = has_id & ~by_pos  # by ID, or an ID that names no target and no position
    out.loc[kept, "matched_ID"] = ids[kept]
    out.loc[kept, "matched_by"] = "ID"
    if positioned and n:
        t_ids = target_ids.to_numpy(dtype=object)
        t_ra = targets["RAJ2000"].to_numpy(float)
        t_dec = targets["DECJ2000"].to_numpy(float)
        both = by_id & has_pos
        if both.any():
            where = pd.Index(target_ids).get_indexer(ids[both])
            out.loc[both, "separation_arcsec"] = _pairwise_arcsec(
                ra[both], dec[both], t_ra[where], t_dec[where]
            )
        if by_pos.any():
            index, sep = nearest_positions(ra[by_pos], dec[by_pos], t_ra, t_dec)
            hit = (index >= 0) & (sep <= radius)
            rows = np.flatnonzero(by_pos)
            found = rows[hit]
            out.iloc[found, out.columns.get_loc("matched_ID")] = t_ids[index[hit]]
            out.iloc[found, out.columns.get_loc("matched_by")] = "position"
            out.iloc[found, out.columns.get_loc("is_target")] = True
            out.iloc[found, out.columns.get_loc("separation_arcsec")] = sep[hit]
            missed = rows[~hit & (index >= 0)]
            out.iloc[missed, out.columns.get_loc("nearest_ID")] = t_ids[index[~hit & (index >= 0)]]
            out.iloc[missed, out.columns.get_loc("nearest_arcsec")] = sep[~hit & (index >= 0)]
    if catalog is not None and len(catalog):
        c_ids = catalog["ID"].astype("string").to_numpy(dtype=object)
        unmatched = np.flatnonzero(by_pos & out["matched_ID"].isna().to_numpy())
        if unmatched.size:
            index, sep = match_positions(
                ra[unmatched],
                dec[unmatched],
                catalog["RAJ2000"].to_numpy(float),
                catalog["DECJ2000"].to_numpy(float),
                radius=radius,
            )
            hit = index >= 0
            out.iloc[unmatched[hit], out.columns.get_loc("catalog_ID")] = c_ids[index[hit]]
            out.iloc[unmatched[hit], out.columns.get_loc("catalog_arcsec")] = sep[hit]
        named = kept & ~by_id & ids.isin(set(c_ids)).fillna(False).to_numpy(bool)
        out.loc[named, "catalog_ID"] = ids[named]
    return out


def _pairwise_arcsec(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray):
    """Separation (arcsec) of each pair of positions (deg), by astropy."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    first = SkyCoord(np.asarray(ra1, float) * u.deg, np.asarray(dec1, float) * u.deg)
    second = SkyCoord(np.asarray(ra2, float) * u.deg, np.asarray(dec2, float) * u.deg)
    return first.separation(second).to_value(u.arcsec)


def explain_recovery(
    matches: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    thresholds: dict[str, float],
    radius: float,
    masked_fraction: float,
    targets_listed: bool,
) -> pd.DataFrame:
    """Whether each matched known lens is recovered, and if not, why.

    Parameters
    ----------
    matches : DataFrame
        :func:`match_known`'s table.
    scores : DataFrame
        The score rows of the matched IDs: ``ID``, ``sample``, ``p_cnn`` and, where the
        scores have them, ``nonfinite_fraction`` and ``bad_fraction``.
    thresholds : dict
        p_cnn threshold per sample.
    radius : float, arcsec
        The match radius (for the reasons).
    masked_fraction : float
        A stamp with at least this fraction of non-finite (or bad) pixels is masked.
    targets_listed : bool
        Whether the targets were given, so that an ID which is not among them is known not
        to be a target.

    Returns
    -------
    DataFrame
        ``matches`` with ``sample``, ``p_cnn``, ``recovered`` (bool), ``reason`` (empty when
        recovered; otherwise :data:`NO_TARGET_WITHIN` with the radius,
        :data:`NOT_SELECTED`, :data:`NO_SUCH_TARGET`, :data:`NOT_SCORED`,
        :data:`MASKED_STAMP` or :data:`BELOW_THRESHOLD`) and ``note`` (the details).
    """
    fractions = [c for c in ("nonfinite_fraction", "bad_fraction") if c in scores]
    rows = scores[["ID", "sample", "p_cnn", *fractions]].rename(columns={"ID": "matched_ID"})
    rows = rows.astype({"matched_ID": "string"})
    p_dtype = rows["p_cnn"].dtype if len(rows) else np.dtype(np.float32)
    result = matches.merge(rows, on="matched_ID", how="left", validate="many_to_one")
    result.index = matches.index
    has_row = matches["matched_ID"].isin(set(rows["matched_ID"].dropna())).to_numpy(bool)
    p_cnn = result["p_cnn"].to_numpy(dtype=p_dtype, na_value=np.nan)
    sample = result["sample"].astype("string").fillna("").to_numpy(dtype=object)
    has_p = ~np.isnan(p_cnn)
    recovered = has_p & candidate_mask(sample, np.where(has_p, p_cnn, -1), thresholds)
    fraction = (
        result[fractions].astype(float).max(axis=1, skipna=True).to_numpy()
        if fractions
        else np.full(len(result), np.nan)
    )
    masked = has_row & (~has_p | (fraction >= masked_fraction))
    no_match = result["matched_ID"].isna().to_numpy()
    in_catalog = result["catalog_ID"].notna().to_numpy()
    not_target = ~result["is_target"].to_numpy(bool) & ~has_row
    choices = [
        (recovered, ""),
        (no_match & in_catalog, NOT_SELECTED),
        (no_match, NO_TARGET_WITHIN.format(radius=radius)),
        (not_target & in_catalog, NOT_SELECTED),
        (not_target & targets_listed, NO_SUCH_TARGET),
        (~has_row, NOT_SCORED),
        (masked, MASKED_STAMP),
    ]
    reason = np.select([c for c, _ in choices], [r for _, r in choices], BELOW_THRESHOLD)
    notes = []
    for k, why in enumerate(reason):
        notes.append(
            _note(
                why,
                radius=radius,
                nearest=(result["nearest_ID"].iloc[k], result["nearest_arcsec"].iloc[k]),
                catalog=(result["catalog_ID"].iloc[k], result["catalog_arcsec"].iloc[k]),
                p_cnn=float(p_cnn[k]),
                sample=str(sample[k]),
                threshold=thresholds.get(str(sample[k])),
                fraction=float(fraction[k]),
            )
        )
    result["p_cnn"] = p_cnn
    result["recovered"] = recovered
    result["reason"] = reason.astype(object)
    result["note"] = notes
    return result.drop(columns=fractions)


def _note(
    reason: str,
    *,
    radius: float,
    nearest: tuple[Any, float],
    catalog: tuple[Any, float],
    p_cnn: float,
    sample: str,
    threshold: float | None,
    fraction: float,
) -> str:
    """The details of a reason, for a person reading the report."""
    if reason == "":
        return ""
    if reason == NOT_SELECTED:
        if np.isfinite(catalog[1]):
            return f"catalog source {catalog[0]} at {catalog[1]:.2f} arcsec is not a target"
        return f"{catalog[0]} is in the catalog but not among the targets"
    if reason.startswith("no target within"):
        text = f"no target within {radius} arcsec"
        if not pd.isna(nearest[0]):
            text += f" (the nearest, {nearest[0]}, is {nearest[1]:.1f} arcsec away)"
        return text
    if reason in (NO_SUCH_TARGET, NOT_SCORED):
        return "not among the scored targets"
    pixels = f"nonfinite/bad pixel fraction {fraction:.2f}" if np.isfinite(fraction) else ""
    if reason == MASKED_STAMP:
        score = "p_cnn NaN (not scored)" if np.isnan(p_cnn) else f"p_cnn {p_cnn:.3f}"
        return f"{score}; {pixels}" if pixels else score
    limit = (
        f"{sample} threshold {threshold}"
        if threshold is not None
        else f"no threshold for {sample!r}"
    )
    return f"p_cnn {p_cnn:.3f} not above the {limit}"


def read_catalog_near(
    catalog: str | Path, ids: list[str], ra: np.ndarray, dec: np.ndarray, *, radius: float
) -> pd.DataFrame:
    """``ID``, ``RAJ2000`` and ``DECJ2000`` of the catalog sources named by ``ids`` or
    within ``radius`` (arcsec) in declination of a position (deg): the catalog's row
    groups far from every known lens are skipped by their statistics."""
    import pyarrow.dataset as ds

    from lensdask.formats.parquet import dataset_parts, open_dataset

    data = open_dataset(dataset_parts(catalog))
    columns = ["ID", "RAJ2000", "DECJ2000"]
    missing = [c for c in columns if c not in data.schema.names]
    if missing:
        raise KeyError(f"{catalog}: catalog lacks column(s) {', '.join(missing)}")
    wanted = None
    if ids:
        wanted = ds.field("ID").isin(ids)
    window = radius / 3600.0
    decs = np.sort(np.asarray(dec, float)[np.isfinite(dec)])
    spans: list[list[float]] = []
    for value in decs:  # windows in declination, merged where they overlap
        if spans and value - window <= spans[-1][1]:
            spans[-1][1] = value + window
        else:
            spans.append([value - window, value + window])
    for low, high in spans:
        near = (ds.field("DECJ2000") >= low) & (ds.field("DECJ2000") <= high)
        wanted = near if wanted is None else wanted | near
    if wanted is None:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns}).astype({"ID": "string"})
    return data.to_table(columns=columns, filter=wanted).to_pandas().drop_duplicates("ID")


def _score_rows(scores: str | Path, ids: list[str], columns: list[str]) -> pd.DataFrame:
    """:func:`lensdask.formats.parquet.read_rows` of the scores (which refuses repeated IDs),
    without reading them for no ID."""
    if ids:
        return read_rows(scores, ids, columns)
    frame = pd.DataFrame({"ID": pd.Series(dtype="string"), "sample": pd.Series(dtype="string")})
    return frame.assign(p_cnn=pd.Series(dtype=np.float32))


def recover_known(
    known: str | Path,
    scores: str | Path,
    *,
    config: CandidateConfig,
    targets: str | Path | None,
    stem: Path,
    catalog: str | Path | None = None,
) -> Measured:
    """Which known lenses (or earlier candidates) the scores recover, and why the others
    are not.

    Parameters
    ----------
    known : path
        The known lenses, as astronomers have them (:func:`read_known`): CSV, ECSV, FITS,
        VOTable or Parquet, with an ``ID`` (the targets' IDs) and/or a position
        (:data:`POSITION_COLUMNS`: decimal degrees, or sexagesimal with the right ascension
        in hours; columns with a unit in that unit). A known lens whose ID names no target
        (none, or another naming scheme) is matched by position to the nearest target
        within ``config.match_radius``.
    scores : path
        The scores.
    config : CandidateConfig
        Thresholds, match radius and the masked fraction of a stamp.
    targets : path, optional
        The targets, needed to match by position.
    stem : path
        Output prefix: ``<stem>_known.csv``.
    catalog : path, optional
        The catalog the targets were selected from: a known lens near a catalog source
        that is not a target is ``not selected`` (without it, ``no target within``).

    Returns
    -------
    Measured
        Summary: ``known``, ``scored``, ``recovered``, ``fraction`` (recovered / known);
        the table (also ``<stem>_known.csv``): the known lenses' columns (those named like
        the report's columns get a ``_known`` suffix), then ``matched_ID``, ``matched_by``,
        ``separation_arcsec``, ``sample``, ``p_cnn``, ``recovered``, ``reason`` and ``note``.

    Raises
    ------
    KeyError
        If the table has neither an ID nor position columns (the message lists its columns).
    TableError
        If a coordinate cannot be read (the message names the file, the row and the column).
    """
    table, units = read_known(known)
    columns = position_columns(table)
    id_name = id_column(table)
    if id_name is None and columns is None:
        raise KeyError(
            f"{known}: needs an ID column or positions "
            f"({', '.join('/'.join(pair) for pair in POSITION_COLUMNS)}, in any case); "
            f"its columns are {', '.join(map(str, table.columns))}"
        )
    source = str(known)
    if columns is not None:
        ra, dec = known_positions(table, columns, units=units, source=source)
    else:
        ra = dec = np.full(len(table), np.nan)
    ids = (
        table[id_name].astype("string")
        if id_name is not None
        else pd.Series(pd.NA, index=table.index, dtype="string")
    )
    given = ids.str.strip().replace("", pd.NA).dropna().unique().tolist()
    if targets is not None:
        listed = read_positions(targets)
    else:  # only the scores say which IDs are targets
        listed = _score_rows(scores, given, [])[["ID"]]
    near = None
    if catalog is not None:
        near = read_catalog_near(catalog, given, ra, dec, radius=config.match_radius)
    matches = match_known(
        ids, ra, dec, listed, radius=config.match_radius, catalog=near, source=source
    )
    wanted = matches["matched_ID"].dropna().unique().tolist()
    rows = _score_rows(scores, wanted, ["sample", "p_cnn", "nonfinite_fraction", "bad_fraction"])
    explained = explain_recovery(
        matches,
        rows,
        thresholds=dict(config.thresholds),
        radius=config.match_radius,
        masked_fraction=config.masked_fraction,
        targets_listed=targets is not None,
    )
    report_columns = list(REPORT_COLUMNS)
    result = table.rename(
        columns={c: f"{c}_known" for c in table.columns if c in report_columns}
    ).join(explained[report_columns])
    csv = Path(f"{stem}_known.csv")
    with atomic_path(csv) as tmp:
        result.to_csv(tmp, index=False)
    n = len(result)
    n_recovered = int(result["recovered"].sum())
    summary = {
        "known": n,
        "scored": int(np.isfinite(result["p_cnn"].to_numpy(float)).sum()),
        "recovered": n_recovered,
        "fraction": float(n_recovered / n) if n else float("nan"),
    }
    reasons = result.loc[~result["recovered"], "reason"].value_counts()
    logger.info(
        "candidates: %d of %d known lenses recovered (%d scored)%s",
        n_recovered,
        n,
        summary["scored"],
        "".join(f"; {count} {why}" for why, count in reasons.items()),
    )
    return Measured(summary=summary, files={"known lenses": csv}, table=result)
