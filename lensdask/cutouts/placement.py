"""Targets placed on the image groups of an image index by sky position, one Dask task per
targets file, resumable like every stage's units.

Targets that name no tile (LSST, Euclid and HSC catalogs have no KiDS ``THELI_NAME``) go
to the image group in whose detection-band image they lie furthest from the edge
(:func:`lensdask.images.match.match_targets`): each targets file's unit writes one Parquet
file per group it has targets on, ``<cutouts>/_placement/<file>/<group>.parquet``, with the
group as ``THELI_NAME``, so that the cutout stage's units stay one per image group. Where
the targets do name their tile, the key wins and the units only check it against the
positions. Either way each unit lists, in ``<cutouts>/_placement/<file>/_listing.csv``, the
targets that lie on no image, those off their key's image and those whose key the index
does not have: counted, named and never dropped silently.

A unit is redone when its targets file or the image index changes, so a resumed cutout run
neither places its targets again nor remakes tiles whose targets did not move.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.formats.targets import CUTOUT_COLUMNS
from lensdask.runner import UnitReport, run_stage
from lensdask.units import (
    Marker,
    clear_marker,
    commit_folder,
    config_hash,
    folder_files,
    ids_hash,
    read_marker,
    staging_path,
    write_marker,
)

logger = logging.getLogger(__name__)

PLACEMENT_DIR = "_placement"
"""Folder of the cutout store holding the placement of its targets on the image groups."""

LISTING = "_listing.csv"
"""Each placement unit's listing of the targets worth naming."""

OUTCOMES = ("by_key", "by_position", "on_no_image", "off_their_key", "unknown_key")
"""What happened to each target (:attr:`lensdask.images.match.TargetMatch.counts`)."""

SHOWN = 5
"""Target IDs of each listed outcome that a unit's marker names (the listing has all)."""


def has_tile_key(targets: str | Path) -> bool:
    """Whether the targets name each one's tile (KiDS ``THELI_NAME``)."""
    from lensdask.formats.parquet import dataset_parts, open_file

    first = next(iter(dataset_parts(targets, what="targets")))
    return "THELI_NAME" in open_file(first).schema_arrow.names


def place_file(
    source: Path,
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    index: Any,
    band: str,
    keyed: bool,
) -> dict[str, int]:
    """Match the targets of one targets file to the image groups of ``index`` and commit
    the unit ``out/<unit>/``: the targets of each group (only without a tile key) and the
    listing of those on no image, off their key or with a key the index lacks.

    Returns
    -------
    dict
        The count of each of :data:`OUTCOMES`.
    """
    import pyarrow as pa

    from lensdask.formats.files import write_text_atomic
    from lensdask.formats.parquet import WRITE_OPTIONS, read_file
    from lensdask.images.match import match_targets

    clear_marker(out, unit)
    columns = [name for name in CUTOUT_COLUMNS if keyed or name != "THELI_NAME"]
    table = read_file(source, columns=columns)
    ids = table["ID"].to_numpy(zero_copy_only=False).astype(str)
    match = match_targets(
        table["RAJ2000"].to_numpy(),
        table["DECJ2000"].to_numpy(),
        index,
        band=band,
        keys=table["THELI_NAME"].to_numpy(zero_copy_only=False) if keyed else None,
        ids=ids,
    )
    staged = staging_path(out, unit)
    staged.mkdir()
    if not keyed:
        import pyarrow.parquet as pq

        for group, rows in match.groups().items():
            part = table.take(pa.array(np.sort(rows))).append_column(
                "THELI_NAME", pa.array([group] * len(rows), pa.string())
            )
            pq.write_table(
                part.select(list(CUTOUT_COLUMNS)), staged / f"{group}.parquet", **WRITE_OPTIONS
            )
    listed = listed_targets(match)
    listing = match.listing(listed).assign(outcome=outcome_column(match, listed), file=str(source))
    write_text_atomic(staged / LISTING, listing.to_csv(index=False))
    final = out / unit
    commit_folder(staged, final)
    counts = match.counts
    named = {
        outcome: [str(i) for i in listing["ID"][listing["outcome"] == outcome][:SHOWN]]
        for outcome in ("on_no_image", "off_their_key", "unknown_key")
    }
    write_marker(
        out,
        Marker(
            unit=unit,
            rows=len(ids),
            ids_hash=ids_hash(ids.tolist()),
            config_hash=chash,
            inputs=lineage,
            files=folder_files(out, final),
            extra={"counts": counts, "named": named},
        ),
    )
    return counts


def listed_targets(match: Any) -> np.ndarray:
    """Indices of the targets a listing names (on no image, off their key, a key the index
    lacks), in target order."""
    return np.union1d(np.union1d(match.unmatched, match.disagreements), match.unknown_keys)


def outcome_column(match: Any, rows: np.ndarray) -> np.ndarray:
    """The outcome of the listed targets ``rows``: ``on_no_image``, ``off_their_key`` or
    ``unknown_key``."""
    outcome = np.full(len(rows), "on_no_image", dtype=object)
    outcome[np.isin(rows, match.disagreements)] = "off_their_key"
    outcome[np.isin(rows, match.unknown_keys) & np.isin(rows, match.unmatched, invert=True)] = (
        "unknown_key"
    )
    return outcome


@dataclass(frozen=True)
class PlacementReport:
    """Outcome of :func:`place_targets`."""

    folder: Path
    keyed: bool
    """Whether the targets name their tile (the key wins; the positions only check it)."""
    counts: dict[str, int]
    """Totals of :data:`OUTCOMES` over all targets files."""
    named: dict[str, list[str]]
    """The first target IDs of each listed outcome."""
    units: UnitReport

    def line(self) -> str:
        """``placement: 1204 targets by their tile key; 3 on no image (e.g. ...) ...``."""
        how = "by their tile key" if self.keyed else "by position"
        placed = self.counts["by_key"] + self.counts["by_position"]
        text = f"placement: {placed} targets on the image groups {how}"
        issues = []
        for outcome, what in (
            ("on_no_image", "on no image"),
            ("off_their_key", "off their tile key's image (the key still wins)"),
            ("unknown_key", "with a tile key the image index lacks (placed by position)"),
        ):
            if self.counts[outcome]:
                first = ", ".join(self.named.get(outcome, []))
                issues.append(f"{self.counts[outcome]} {what}, e.g. {first}")
        if issues:
            text += "; " + "; ".join(issues)
            text += f"; all are listed in {self.folder}/<targets file>/{LISTING}"
        return text


def place_targets(
    targets: str | Path,
    index: str | Path,
    out: Path,
    *,
    band: str,
    client: Any,
    progress: bool = True,
) -> PlacementReport:
    """Place the targets on the image groups of the image index ``index`` by position, or
    check the tile key they name, one task per targets file, into ``out/_placement``.

    Parameters
    ----------
    targets : path
        Targets (Parquet file or dataset) with ``ID``, ``RAJ2000``, ``DECJ2000``,
        ``sample`` and optionally ``THELI_NAME``.
    index : path
        The image index (:func:`lensdask.formats.image_index.read_image_index`).
    out : path
        The cutout store.
    band : str, the detection band
        Its images decide where a target lies.
    client : distributed.Client
        The injected Dask client; the index is sent to the workers once.
    progress : bool
        Show a progress bar over targets files.
    """
    from lensdask.formats.image_index import read_image_index
    from lensdask.formats.parquet import dataset_parts

    keyed = has_tile_key(targets)
    sources = dataset_parts(targets, what="targets")
    index_parts = dataset_parts(index, what="image index")
    units = {path.stem: path for path in sources}
    if len(units) != len(sources):
        twins = [stem for stem, n in Counter(path.stem for path in sources).items() if n > 1]
        raise ValueError(f"{targets}: targets files share a name: {', '.join(sorted(twins))}")
    index_id = config_hash({str(path): identity for path, identity in index_parts.items()})
    folder = Path(out) / PLACEMENT_DIR
    report = run_stage(
        client,
        place_file,
        folder,
        units,
        chash=config_hash({"placement": {"band": band, "keyed": keyed}}),
        lineage={
            unit: {"targets": sources[path], "image_index": index_id}
            for unit, path in units.items()
        },
        stage="placement",
        progress=progress,
        small_units=True,
        index=client.scatter(read_image_index(index), broadcast=True),
        band=band,
        keyed=keyed,
    )
    counts = dict.fromkeys(OUTCOMES, 0)
    named: dict[str, list[str]] = {}
    for unit in units:
        marker = read_marker(folder, unit)
        if marker is None:
            continue
        for outcome, n in marker.extra["counts"].items():
            counts[outcome] += n
        for outcome, ids in marker.extra["named"].items():
            named[outcome] = (named.get(outcome, []) + ids)[:SHOWN]
    placement = PlacementReport(
        folder=folder, keyed=keyed, counts=counts, named=named, units=report
    )
    if any(counts[outcome] for outcome in ("on_no_image", "off_their_key", "unknown_key")):
        logger.warning("cutouts: %s", placement.line())
    return placement


__all__ = [
    "LISTING",
    "OUTCOMES",
    "PLACEMENT_DIR",
    "PlacementReport",
    "has_tile_key",
    "place_file",
    "place_targets",
]
