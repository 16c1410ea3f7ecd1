"""Target IDs that occur more than once, found across every unit of the selection.

A catalog can repeat an ID: a row written twice in one file, or an ID reused in another
tile (tiles that overlap, catalogs merged by hand). Every later stage identifies a target
by its ``ID`` (cutouts, scores, candidates), so the selection finds them and refuses them
unless the job says how to resolve them (``select.duplicates``).

How they are found (:func:`find_duplicates`), once the units are committed. Up to
:data:`GATHER_LIMIT` targets, each unit's task reads its ``ID`` column and sends back a
64-bit hash of each ID (8 bytes per target); the client finds the hashes that occur more
than once, and the units holding them send back those rows' IDs, which are compared as
strings (a hash collision is never taken for a repeat). Beyond that, each unit's ``ID``
column is read with its unit (an index into the sorted unit names) and row number, one
partition per unit, and hash-partitioned by ``ID`` with a Dask dataframe shuffle on the
injected client: equal IDs meet in the same partition, whatever unit they came from, and
only the rows of repeated IDs come back, so no process ever holds all the IDs. The shuffle
of a few hundred partitions costs seconds even for a small selection (its tasks grow as
the square of the units), which the hashes avoid.

What happens then (:func:`check_target_ids`):

- ``error``: the rows are written to ``<targets>/_duplicates.csv`` and the selection fails
  with :class:`~lensdask.formats.ids.DuplicateIDError` naming the first IDs; the targets
  have no manifest, so no later stage reads them (:mod:`lensdask.units`) until a run finds
  no duplicate.
- ``keep-first``: of each ID, the first row in (unit name, row) order is kept. Each unit
  holding rows to drop is committed again without them (staged file, then its marker, one
  task per unit): its marker keeps its configuration hash and lineage, so a rerun skips it,
  and records in ``extra`` how many rows it dropped (``duplicates_dropped``) and the units
  that hold the kept rows with the configuration hash each had (``duplicates_kept_in``). A
  rerun makes the unit again from its catalog file where one of those units is no longer
  planned or is made from another file or configuration (:func:`units_to_redo`), so a row
  is never dropped in favour of one that has gone. Then the manifest is written, with the
  new markers' digests.

A finished check is recorded in ``<targets>/_ids_checked.json`` with the digest of the
manifest it checked; a rerun that changed no unit does not shuffle again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.formats.files import write_json_atomic, write_text_atomic
from lensdask.formats.ids import DuplicateIDError, describe_repeats
from lensdask.formats.parquet import commit_parquet, read_file
from lensdask.runner import Failure, run_units
from lensdask.storage import as_path
from lensdask.units import (
    Manifest,
    clear_manifest,
    clear_marker,
    ids_hash,
    marker_digest,
    read_manifest,
    read_marker,
    write_manifest,
    write_marker,
)

logger = logging.getLogger(__name__)

DUPLICATES_FILE = "_duplicates.csv"
"""Every row of every repeated target ID, from the last check that found some."""
CHECKED_FILE = "_ids_checked.json"
"""The digest of the last manifest whose IDs were found unique."""
DROPPED = "duplicates_dropped"
"""Marker ``extra`` key: rows a unit dropped as repeats of rows of earlier units."""
KEPT_IN = "duplicates_kept_in"
"""Marker ``extra`` key: unit holding kept rows -> its configuration hash then."""
COLUMNS = ("ID", "unit", "row")
GATHER_LIMIT = 20_000_000
"""Most targets whose ID hashes the client gathers (160 MB); beyond, a Dask shuffle."""


# --- kernel (pandas, no I/O) --------------------------------------------------------------


def duplicated_rows(part: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``part`` whose ``ID`` occurs more than once in it (missing IDs never
    repeat)."""
    ids = part["ID"]
    return part[ids.duplicated(keep=False) & ids.notna()]


def mark_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of repeated IDs (``ID``, ``unit``, ``row``) in (unit, row) order, with ``first``
    (the first occurrence of its ID in that order: the row ``keep-first`` keeps) and
    ``kept_unit`` (the unit of that first occurrence)."""
    ordered = rows.sort_values(["unit", "row"], kind="stable", ignore_index=True)
    ordered["first"] = ~ordered.duplicated("ID", keep="first")
    ordered["kept_unit"] = ordered.groupby("ID", sort=False)["unit"].transform("first")
    return ordered


def describe_duplicates(rows: pd.DataFrame) -> str:
    """``N target IDs occur more than once (...): 'A' (T1 rows 3, 7), 'B' (T1 row 2, T2 row
    5) and M more``: the first IDs, each with its units and rows."""
    places: dict[str, list[str]] = {}
    for (key, unit), group in rows.groupby(["ID", "unit"], sort=True):
        rows_of = group["row"].tolist()
        word = "row" if len(rows_of) == 1 else "rows"
        places.setdefault(str(key), []).append(f"{unit} {word} {', '.join(map(str, rows_of))}")
    across = rows.groupby("ID")["unit"].nunique()
    return (
        f"{len(places)} target ID(s) occur more than once ({len(rows)} rows; "
        f"{int((across == 1).sum())} within one catalog file, {int((across > 1).sum())} across "
        f"files): {describe_repeats(places, where=None)}"
    )


# --- the distributed check ------------------------------------------------------------------


def unit_ids(item: tuple[int, Path]) -> pd.DataFrame:
    """One partition of the check: the ``ID`` column of a unit's targets file with the unit's
    index and each row's number (0-based)."""
    index, path = item
    ids = read_file(path, columns=["ID"])["ID"]
    return pd.DataFrame(
        {
            "ID": pd.Series(ids.to_pandas(), dtype="string[pyarrow]"),
            "unit": np.full(len(ids), index, dtype=np.int32),
            "row": np.arange(len(ids), dtype=np.int64),
        }
    )


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each ID, in order (a missing ID gets 0 and is never taken for a
    repeat: :func:`rows_with_hashes` leaves it out)."""
    hashes = pd.util.hash_array(np.asarray(ids, dtype=object), categorize=False)
    hashes[pd.isna(ids)] = 0
    return hashes


def file_ids(path: Path) -> np.ndarray:
    """The ``ID`` column of a targets file, in row order."""
    return read_file(path, columns=["ID"])["ID"].to_numpy(zero_copy_only=False)


def id_hashes(path: Path) -> np.ndarray:
    """:func:`hash_ids` of the IDs of a targets file."""
    return hash_ids(file_ids(path))


def rows_with_hashes(item: tuple[int, Path, np.ndarray]) -> pd.DataFrame:
    """The rows of one unit's targets file whose ID hash is in ``wanted``: ``ID``, ``unit``
    (its index) and ``row``."""
    index, path, wanted = item
    ids = file_ids(path)
    rows = np.flatnonzero(np.isin(hash_ids(ids), wanted) & ~pd.isna(ids))
    return pd.DataFrame(
        {"ID": ids[rows].astype(object), "unit": np.full(len(rows), index), "row": rows}
    )


def _gathered_duplicates(parts: list[tuple[int, Path]], *, client: Any) -> pd.DataFrame:
    """Rows of repeated IDs by the hashes of :func:`id_hashes` (see the module)."""
    hashed = client.gather(client.map(id_hashes, [path for _, path in parts], pure=False))
    every = np.concatenate(hashed) if hashed else np.zeros(0, dtype=np.uint64)
    values, counts = np.unique(every[every != 0], return_counts=True)
    repeated = values[counts > 1]
    if not repeated.size:
        return pd.DataFrame({"ID": [], "unit": [], "row": []})
    holders = [
        (index, path, repeated)
        for (index, path), hashes in zip(parts, hashed, strict=True)
        if np.isin(hashes, repeated).any()
    ]
    found = pd.concat(
        client.gather(client.map(rows_with_hashes, holders, pure=False)), ignore_index=True
    )
    return duplicated_rows(found)


def find_duplicates(
    files: Mapping[str, Path], *, client: Any, gather_limit: int = GATHER_LIMIT, rows: int = 0
) -> pd.DataFrame:
    """Every row of every ID that occurs more than once among ``files``.

    Parameters
    ----------
    files : mapping
        Unit name -> its Parquet file (with an ``ID`` column).
    client : distributed.Client
        The injected Dask client: a task per unit.
    gather_limit : int
        Up to this many targets (``rows``), their ID hashes are gathered; beyond, the IDs
        are shuffled (see the module).
    rows : int
        How many targets the files hold (0: unknown, taken as within the limit).

    Returns
    -------
    pandas.DataFrame
        ``ID``, ``unit`` (name) and ``row`` (0-based row of the unit's file), sorted by unit
        and row; empty when every ID is unique.
    """
    import dask.dataframe as dd

    names = sorted(files)
    empty = pd.DataFrame(
        {"ID": pd.Series(dtype=object), "unit": pd.Series(dtype=object), "row": []}
    ).astype({"row": np.int64})
    if not names:
        return empty
    meta = pd.DataFrame(
        {
            "ID": pd.Series(dtype="string[pyarrow]"),
            "unit": pd.Series(dtype=np.int32),
            "row": pd.Series(dtype=np.int64),
        }
    )
    parts = [(index, as_path(files[name])) for index, name in enumerate(names)]
    if rows <= gather_limit:
        repeats = _gathered_duplicates(parts, client=client)
    else:
        frame = dd.from_map(unit_ids, parts, meta=meta, label="select-ids", enforce_metadata=False)
        shuffled = frame.shuffle(on="ID", npartitions=len(parts))
        found = shuffled.map_partitions(duplicated_rows, meta=meta)
        repeats = client.compute(found).result()
    if repeats.empty:
        return empty
    result = pd.DataFrame(
        {
            "ID": repeats["ID"].astype(object).to_numpy(),
            "unit": np.asarray(names, dtype=object)[repeats["unit"].to_numpy()],
            "row": repeats["row"].to_numpy(np.int64),
        }
    )
    return result.sort_values(["unit", "row"], kind="stable", ignore_index=True)


# --- resolving them -------------------------------------------------------------------------


def units_to_redo(
    markers: Mapping[str, Any], planned: Mapping[str, str], *, mode: str
) -> list[str]:
    """Units that dropped repeated rows in an earlier run and must be made again from their
    catalog file: all of them under ``error``; under ``keep-first`` those where a unit
    holding a kept row is no longer planned, or is planned with another configuration hash
    (another file, other cuts) than when the rows were dropped.

    Parameters
    ----------
    markers : mapping
        Unit -> its current marker (or None).
    planned : mapping
        Unit -> the configuration hash this run plans for it.
    mode : str
        ``error`` or ``keep-first``.
    """
    redo = []
    for unit, marker in markers.items():
        if marker is None or not marker.extra.get(DROPPED):
            continue
        kept_in = marker.extra.get(KEPT_IN, {})
        if mode != "keep-first" or any(planned.get(k) != h for k, h in kept_in.items()):
            redo.append(unit)
    return sorted(redo)


def drop_rows(item: tuple[str, list[int], dict[str, str]], out: Path) -> dict[str, int]:
    """Commit unit ``item[0]`` of the targets ``out`` again without the rows ``item[1]``
    (0-based), kept in the units ``item[2]`` (unit -> configuration hash).

    The marker is taken back first, the smaller file committed through the staging folder,
    and the marker written again with the new rows, IDs and counts, and ``extra`` recording
    the rows dropped (added to those of earlier runs) and where their IDs are kept.

    Returns
    -------
    dict
        ``rows`` left and ``dropped``.
    """
    import pyarrow as pa

    unit, rows, kept_in = item
    marker = read_marker(out, unit)
    if marker is None:
        raise FileNotFoundError(f"{out}: unit {unit} has no completion marker")
    (rel,) = [name for name in marker.files if name.endswith(".parquet")]
    table = read_file(as_path(out) / rel)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[np.asarray(rows, dtype=np.int64)] = False
    table = table.filter(pa.array(keep))
    clear_marker(out, unit)
    size = commit_parquet(table, out, rel)
    samples = table["sample"].to_numpy(zero_copy_only=False)
    extra = {
        **marker.extra,
        "rows": table.num_rows,
        "LRG": int((samples == "LRG").sum()),
        "BG": int((samples == "BG").sum()),
        DROPPED: int(marker.extra.get(DROPPED, 0)) + len(rows),
        KEPT_IN: {**marker.extra.get(KEPT_IN, {}), **kept_in},
    }
    write_marker(
        out,
        dataclasses.replace(
            marker,
            rows=table.num_rows,
            ids_hash=ids_hash(table["ID"]),
            files={rel: size},
            checksums={},
            extra=extra,
        ),
    )
    return {"rows": table.num_rows, "dropped": len(rows)}


@dataclass
class IDCheck:
    """Outcome of :func:`check_target_ids`."""

    checked: bool
    """Whether the IDs were checked now (False: the output was checked as it is before)."""
    duplicates: pd.DataFrame | None = None
    """The rows of repeated IDs found now (:func:`mark_first`), or None."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows dropped now, by unit (``keep-first``)."""
    failures: list[Failure] = field(default_factory=list)
    """Units that could not be committed again without their dropped rows."""


def check_target_ids(
    out: Path, *, mode: str, stage: str, client: Any, progress: bool = True
) -> IDCheck:
    """Find the repeated IDs of the targets ``out`` that ``stage`` just wrote (its manifest
    is there) and resolve them by ``mode``; see the module's docstring.

    Raises
    ------
    DuplicateIDError
        Under ``error``, when an ID occurs more than once: the message names the first ones
        with their units and rows; ``out`` is left without a manifest.
    """
    manifest = read_manifest(out)
    record = out / CHECKED_FILE
    if _checked_digest(record) == manifest.digest:
        return IDCheck(checked=False)
    # not a finished run's output until its IDs are known to be unique
    clear_manifest(out)
    markers = {unit: read_marker(out, unit) for unit in manifest.units}
    files = {
        unit: out / next(rel for rel in marker.files if rel.endswith(".parquet"))
        for unit, marker in markers.items()
        if marker is not None
    }
    total = sum(marker.rows for marker in markers.values() if marker is not None)
    found = find_duplicates(files, client=client, rows=total)
    if found.empty:
        (out / DUPLICATES_FILE).unlink(missing_ok=True)
        write_manifest(out, manifest)
        write_json_atomic(record, {"manifest": manifest.digest})
        return IDCheck(checked=True)
    rows = mark_first(found)
    sources = {unit: str(m.extra.get("source", "")) for unit, m in markers.items() if m}
    table = rows[["ID", "unit", "row", "first"]].assign(source=rows["unit"].map(sources))
    write_text_atomic(
        out / DUPLICATES_FILE, table.sort_values(["ID", "unit", "row"]).to_csv(index=False)
    )
    if mode != "keep-first":
        raise DuplicateIDError(
            f"{out}: {describe_duplicates(rows)} (rows are 0-based rows of "
            f"<unit>.parquet; all of them in {out / DUPLICATES_FILE}). Fix the catalog, or "
            "set select.duplicates to keep-first (--duplicates keep-first) to keep the first "
            "of each in (unit, row) order; until then the targets are not usable"
        )
    dropped = rows[~rows["first"]]
    items = []
    for unit, group in dropped.groupby("unit", sort=True):
        holders = sorted(set(group["kept_unit"]) - {unit})
        kept_in = {k: markers[k].config_hash for k in holders}
        items.append((str(unit), group["row"].tolist(), kept_in))
    names = [item[0] for item in items]
    report = run_units(
        client, drop_rows, names, out, stage=stage, unit_args=items, progress=progress
    )
    for failure in report.failures:  # its file may hold the repeats: make it again
        clear_marker(out, failure.unit)
    after = {unit: read_marker(out, unit) for unit in manifest.units}
    failed = {failure.unit for failure in report.failures}
    rewritten = Manifest(
        stage=manifest.stage,
        units={unit: marker_digest(m) for unit, m in after.items() if m is not None},
        failed=tuple(sorted(set(manifest.failed) | failed)),
    )
    write_manifest(out, rewritten)
    if not failed:
        write_json_atomic(record, {"manifest": rewritten.digest})
    counts = {unit: result["dropped"] for unit, result in report.results.items()}
    logger.warning(
        "%s: keep-first: %s; dropped %d row(s) from %d unit(s), listed in %s",
        stage,
        describe_duplicates(rows),
        sum(counts.values()),
        len(counts),
        out / DUPLICATES_FILE,
    )
    return IDCheck(checked=True, duplicates=rows, dropped=counts, failures=report.failures)


def _checked_digest(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("manifest")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def dropped_rows(markers: Mapping[str, Any]) -> int:
    """Rows the units dropped as repeated IDs, over all their runs (from their markers)."""
    return sum(int(m.extra.get(DROPPED, 0)) for m in markers.values() if m is not None)


__all__: Sequence[str] = (
    "DuplicateIDError",
    "IDCheck",
    "check_target_ids",
    "describe_duplicates",
    "drop_rows",
    "duplicated_rows",
    "find_duplicates",
    "id_hashes",
    "mark_first",
    "units_to_redo",
)
