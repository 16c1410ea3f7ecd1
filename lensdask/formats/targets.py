"""The targets dataset (``targets.parquet``): one Parquet file per catalog file, written by
``lensdask select`` with the catalog contract's columns plus ``sample`` (``LRG`` or ``BG``),
and completion markers under ``_units/``.

The later stages read parts of it: the cutouts read :data:`CUTOUT_COLUMNS` of one tile at a
time, the candidates take :data:`DESCRIPTION_COLUMNS`, known lenses are matched by position,
and the training set reads the truth columns of mock surveys (:func:`read_truth`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lensdask.formats.ids import require_unique_ids
from lensdask.formats.parquet import dataset_parts, open_dataset, read_file, read_metadata

CUTOUT_COLUMNS = ("ID", "RAJ2000", "DECJ2000", "THELI_NAME", "sample")
"""Columns the cutouts are made from: ID, position (deg), tile and sample."""
DESCRIPTION_COLUMNS = ("RAJ2000", "DECJ2000", "MAG_AUTO", "Z_B")
"""Columns that describe a candidate: position (deg), magnitude and photometric redshift."""
POSITION_COLUMNS = ("ID", "RAJ2000", "DECJ2000")
"""Columns that place every target on the sky (deg)."""
TRUTH_COLUMNS = ("TRUE_TYPE", "TRUE_LENS")
"""Columns a mock survey's targets add: the galaxy's true kind, and whether a lens was
injected into it."""


def tile_sources(targets: str | Path) -> dict[str, dict[Path, str]]:
    """Which targets files hold each tile, each with the identity of its content
    (:func:`lensdask.formats.parquet.dataset_parts`), from the Parquet footers where
    possible.

    A file whose ``THELI_NAME`` statistics say it holds one tile (as ``lensdask select``
    writes them) costs only its footer; other files have that one column read.
    """
    import pyarrow.compute as pc

    sources: dict[str, dict[Path, str]] = defaultdict(dict)
    for path, identity in dataset_parts(targets, what="targets").items():
        metadata = read_metadata(path)
        names = metadata.schema.names
        if "THELI_NAME" not in names:
            raise KeyError(f"{path}: missing column THELI_NAME")
        column = names.index("THELI_NAME")
        stats = [
            metadata.row_group(i).column(column).statistics for i in range(metadata.num_row_groups)
        ]
        if stats and all(s is not None and s.has_min_max and s.min == s.max for s in stats):
            tiles = {s.min for s in stats}
        else:
            tiles = set(
                pc.unique(read_file(path, columns=["THELI_NAME"])["THELI_NAME"]).to_pylist()
            )
        for tile in tiles:
            sources[tile][path] = identity
    return dict(sorted(sources.items()))


def load_tile_targets(tile: str, sources: list[Path]):
    """The :data:`CUTOUT_COLUMNS` of the targets of ``tile`` from its targets files, as a
    pyarrow Table (IDs, tile and sample as strings, positions as float64)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = open_dataset(sources)
    missing = [name for name in CUTOUT_COLUMNS if name not in dataset.schema.names]
    if missing:
        raise KeyError(f"{sources[0]}: missing column(s) {', '.join(missing)}")
    table = dataset.to_table(
        columns=list(CUTOUT_COLUMNS), filter=ds.field("THELI_NAME") == tile, use_threads=False
    )
    return table.cast(
        pa.schema(
            [
                (name, pa.float64() if name in ("RAJ2000", "DECJ2000") else pa.string())
                for name in CUTOUT_COLUMNS
            ]
        )
    )


def read_positions(targets: str | Path):
    """:data:`POSITION_COLUMNS` of every target, as a DataFrame."""
    data = open_dataset(dataset_parts(targets, what="targets"))
    missing = [c for c in POSITION_COLUMNS if c not in data.schema.names]
    if missing:
        raise KeyError(f"{targets}: missing column(s) {', '.join(missing)}")
    return data.to_table(columns=list(POSITION_COLUMNS)).to_pandas()


def read_truth(targets: str | Path):
    """The :data:`TRUTH_COLUMNS` the targets have, indexed by ``ID``; None when they have
    neither (targets of a real survey)."""
    dataset = open_dataset(dataset_parts(targets, what="targets"))
    columns = [c for c in TRUTH_COLUMNS if c in dataset.schema.names]
    if not columns:
        return None
    frame = dataset.to_table(columns=["ID", *columns]).to_pandas()
    require_unique_ids(frame, what=f"{targets}: targets")  # an index by ID
    return frame.set_index("ID")
