"""Select the BG and LRG targets from a Parquet catalog, one Dask task per catalog file.

Each task reads only the columns it needs, applies the samples and commits
``OUT/<tile>.parquet`` with its completion marker. The kids-dr4 preset runs as the kernel of
:mod:`lensdask.catalog.cuts`, with the ``SG2DPHOT == 0`` and ``MAG_AUTO <= bg_mag_max``
cuts pushed down to the Parquet reader (row groups that cannot hold a BG are skipped); other
presets and ``select.samples`` are expressions (:mod:`lensdask.catalog.presets`), checked
against each file's columns before its rows are read.
``OUT`` (``targets.parquet``) is then a Parquet dataset that pandas, Dask, DuckDB and
Arrow read as one table. :func:`targets_frame` gives the same selection as a lazy Dask
dataframe, one partition per catalog file, for interactive work.

Once the units are made, target IDs that occur more than once (within a file or across
files) are found by a distributed check and refused, or resolved as ``select.duplicates``
says (:mod:`lensdask.catalog.duplicates`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.catalog.cuts import expression_masks, target_masks, unmasked
from lensdask.catalog.duplicates import (
    DUPLICATES_FILE,
    DuplicateIDError,
    check_target_ids,
    dropped_rows,
    units_to_redo,
)
from lensdask.catalog.presets import (
    KERNEL_PRESET,
    POSITION_COLUMNS,
    column_map,
    parse_samples,
    uses_kernel,
)
from lensdask.catalog.schema import (
    CATALOG_COLUMNS,
    SAMPLES,
    SELECTION_COLUMNS,
    SchemaError,
    check_columns,
    contract_types,
)
from lensdask.config import SelectConfig
from lensdask.formats.files import write_json_atomic, write_text_atomic
from lensdask.formats.parquet import (
    CatalogError,
    commit_parquet,
    dataset_files,
    dataset_parts,
    open_file,
    read_metadata,
)
from lensdask.runner import UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.storage import as_path
from lensdask.units import (
    Marker,
    clear_manifest,
    clear_marker,
    config_hash,
    has_units,
    ids_hash,
    lineage_hash,
    planned_units,
    read_marker,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "select"
COUNTS = ("sources", "rows", "LRG", "BG", "nan_colour")
"""Counts kept per catalog file (in its marker) and summed in the summary."""
SUMMARY_FILE = "_summary.json"
TILES_FILE = "_tiles.csv"


def output_columns(config: SelectConfig) -> list[str]:
    """Catalog columns written to the targets table, in order. With the kids-dr4 preset,
    the whole catalog contract; with another, ``ID``, ``RAJ2000`` and ``DECJ2000`` and the
    other contract columns the column map names. A selection by expressions adds the
    columns they read (by the names they use); then ``select.extra_columns``."""
    if config.preset == KERNEL_PRESET:
        names = list(CATALOG_COLUMNS)
    else:
        mapping = column_map(config)
        names = [*POSITION_COLUMNS, *(name for name in CATALOG_COLUMNS if name in mapping)]
    if not uses_kernel(config):
        names += parse_samples(config).names
    return _unique(config, [*names, *config.extra_columns])


def file_columns(config: SelectConfig) -> dict[str, str]:
    """Name in the targets table -> name in the catalog files, for every column the
    selection reads (``MASK`` only where ``config.mask_bits`` asks for the mask cut)."""
    names = output_columns(config)
    if config.mask_bits:
        names = _unique(config, [*names, "MASK"])
    mapping = column_map(config)
    return {name: mapping.get(name, name) for name in names}


def _unique(config: SelectConfig, names: list[str]) -> list[str]:
    """``names`` without repeats of a name or of the catalog column it reads."""
    mapping = column_map(config)
    seen: set[str] = set()
    kept = []
    for name in names:
        if name not in kept and mapping.get(name, name) not in seen:
            kept.append(name)
            seen.add(mapping.get(name, name))
    return kept


@dataclass(frozen=True)
class TileTargets:
    """The targets of one catalog file."""

    table: Any
    """pyarrow Table of the BGs with the targets columns (``sample`` last)."""
    nan_colour: int
    """BGs with a NaN colour (never LRGs)."""
    sources: int
    """Rows of the catalog file (from its footer)."""


def open_catalog(path: Path, *, columns: list[str]):
    """Open one catalog file's footer and check it has ``columns`` (names in the file).

    Returns
    -------
    pyarrow.parquet.ParquetFile
        Dictionary-encoded string columns (``THELI_NAME``) read as dictionaries.

    Raises
    ------
    SchemaError
        A column is missing (the message names it and the file).
    CatalogError
        The file cannot be read (the message names it).
    """
    import pyarrow as pa

    try:
        metadata = read_metadata(path)
        parquet = open_file(path, metadata=metadata, read_dictionary=_dictionary_strings(metadata))
    except (OSError, pa.ArrowException) as err:
        raise CatalogError(f"{path}: cannot read Parquet: {err}") from None
    check_columns(parquet.schema_arrow.names, columns, source=str(path))
    return parquet


def read_tile_targets(path: str | Path, *, config: SelectConfig) -> TileTargets:
    """Read one catalog file and return its targets.

    Parameters
    ----------
    path : path
        A Parquet catalog file with the column names of ``config.preset`` (KiDS DR4 by
        default) or ``config.column_map``.
    config : SelectConfig
        Cuts and columns.

    Returns
    -------
    TileTargets
        The BGs with their ``sample``, the NaN-colour count and the file's row count.

    Raises
    ------
    SchemaError
        A column is missing or, for an expression, not a number (the message names it
        and the file).
    lensdask.catalog.expressions.ExpressionError
        An expression names a column the file lacks (the message shows where).
    CatalogError
        The file cannot be read (the message names it).
    """
    import pyarrow as pa

    path = as_path(path)
    names = file_columns(config)
    kernel = uses_kernel(config)
    parquet = open_catalog(path, columns=list(names.values()) if kernel else [])
    if not kernel:  # an unknown name is shown in its expression
        present = parquet.schema_arrow.names
        selection = parse_samples(config, columns=present)
        check_columns(present, list(names.values()), source=str(path))
    try:
        groups = (
            bg_row_groups(parquet.metadata, names=names, config=config)
            if kernel
            else list(range(parquet.metadata.num_row_groups))
        )
        # one thread: the Dask worker's threads are the parallelism
        table = parquet.read_row_groups(groups, columns=list(names.values()), use_threads=False)
    except (OSError, pa.ArrowException) as err:
        raise CatalogError(f"{path}: cannot read Parquet: {err}") from None
    table = table.rename_columns(list(names))
    mask = table["MASK"].fill_null(0).to_numpy() if config.mask_bits else None
    if kernel:
        masks = target_masks(
            *(_numpy(table[name]) for name in SELECTION_COLUMNS), config=config, mask=mask
        )
    else:
        read_as = {column: name for name, column in names.items()}
        columns = {
            name: _floats(table[read_as[column]], column_name=column, path=path)
            for name, column in selection.names.items()
        }
        keep = None if mask is None else unmasked(mask, config.mask_bits)
        masks = expression_masks(
            selection.bg, selection.lrg, columns, rows=table.num_rows, keep=keep
        )
    table = table.filter(pa.array(masks.bg))
    if "MASK" in names and "MASK" not in output_columns(config):  # read for the cut only
        table = table.drop_columns(["MASK"])
    lrg = masks.lrg[masks.bg]
    sample = pa.DictionaryArray.from_arrays(
        pa.array(np.where(lrg, 0, 1).astype(np.int32)), pa.array(SAMPLES)
    ).cast(pa.string())
    table = table.append_column("sample", sample)
    return TileTargets(
        table=contract_types(table),
        nan_colour=int(masks.nan_colour.sum()),
        sources=parquet.metadata.num_rows,
    )


def _dictionary_strings(metadata) -> list[str]:
    """String columns stored dictionary-encoded (e.g. ``THELI_NAME``): read them as
    dictionaries instead of expanding every row, and cast after filtering."""
    if metadata.num_row_groups == 0:
        return []
    group = metadata.row_group(0)
    return [
        group.column(j).path_in_schema
        for j in range(group.num_columns)
        if group.column(j).physical_type == "BYTE_ARRAY" and group.column(j).has_dictionary_page
    ]


def bg_row_groups(metadata, *, names: dict[str, str], config: SelectConfig) -> list[int]:
    """Row groups that may hold BGs, from the Parquet statistics (the filter pushdown).

    A row group is skipped when its ``MAG_AUTO`` minimum is fainter than ``bg_mag_max`` or
    its ``SG2DPHOT`` range excludes 0; row groups without statistics are kept.

    Parameters
    ----------
    metadata : pyarrow.parquet.FileMetaData
        The file's footer.
    names : dict
        Canonical column name -> name in the file.
    config : SelectConfig
        The cuts.
    """
    columns = metadata.schema.names
    mag = columns.index(names["MAG_AUTO"])
    flag = columns.index(names["SG2DPHOT"])
    kept = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        mag_stats = group.column(mag).statistics
        flag_stats = group.column(flag).statistics
        if mag_stats is not None and mag_stats.has_min_max and mag_stats.min > config.bg_mag_max:
            continue
        if (
            flag_stats is not None
            and flag_stats.has_min_max
            and not (flag_stats.min <= 0 <= flag_stats.max)
        ):
            continue
        kept.append(index)
    return kept


def _numpy(column) -> np.ndarray:
    """A column as a NumPy array, nulls as NaN (or -1 for integers)."""
    import pyarrow as pa

    if pa.types.is_integer(column.type):
        return column.fill_null(-1).to_numpy()
    if column.null_count:
        return column.to_numpy().astype(np.float64)  # nulls come back as NaN
    return column.to_numpy()


def _floats(column, *, column_name: str, path: Path) -> np.ndarray:
    """A numeric or boolean column as float64, nulls as NaN (an expression's input)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    ):
        raise SchemaError(f"{path}: column {column_name} is {kind}; expressions read numbers")
    return pc.cast(column, pa.float64()).to_numpy()


def targets_frame(catalog: str | Path, *, config: SelectConfig | None = None):
    """The targets of a catalog as a lazy Dask dataframe, one partition per file.

    Parameters
    ----------
    catalog : path
        Parquet file or folder of Parquet files.
    config : SelectConfig, optional
        Cuts and columns (default: Li et al. 2020).

    Returns
    -------
    dask.dataframe.DataFrame
    """
    import dask.dataframe as dd

    config = config or SelectConfig()
    files = dataset_files(catalog)
    return dd.from_map(_targets_pandas, files, config=config, label="select-targets")


def _targets_pandas(path: Path, *, config: SelectConfig):
    return read_tile_targets(path, config=config).table.to_pandas()


def select_tile(
    path: Path, out: Path, *, unit: str, chash: str, lineage: dict[str, str], config: SelectConfig
):
    """Select the targets of one catalog file and commit ``out/<unit>.parquet``.

    Returns
    -------
    dict
        ``sources`` (rows of the catalog file), ``rows`` (targets), ``LRG``, ``BG`` and
        ``nan_colour`` counts of the file.
    """
    clear_marker(out, unit)
    targets = read_tile_targets(path, config=config)
    table = targets.table
    rel = f"{unit}.parquet"
    size = commit_parquet(table, out, rel)
    samples = table["sample"].to_numpy(zero_copy_only=False)
    counts = {
        "sources": targets.sources,
        "rows": table.num_rows,
        "LRG": int((samples == "LRG").sum()),
        "BG": int((samples == "BG").sum()),
        "nan_colour": targets.nan_colour,
    }
    write_marker(
        out,
        Marker(
            unit=unit,
            rows=table.num_rows,
            ids_hash=ids_hash(table["ID"]),
            config_hash=chash,
            inputs=lineage,
            files={rel: size},
            extra={**counts, "source": str(path)},
        ),
    )
    return counts


@dataclass(frozen=True)
class SelectReport:
    """Outcome of :func:`select_targets`: counts over all tiles and per tile."""

    out: Path
    per_tile: dict[str, dict[str, int]]
    units: UnitReport
    dropped: int = 0
    """Rows dropped as repeated IDs (``duplicates: keep-first``), over all the units."""

    def total(self, key: str) -> int:
        """Sum of one count (``sources``, ``rows``, ``LRG``, ``BG``, ``nan_colour``) over
        all tiles."""
        return sum(counts[key] for counts in self.per_tile.values())


def select_targets(
    catalog: str | Path,
    out: str | Path,
    *,
    config: SelectConfig | None = None,
    client: Any,
    progress: bool = True,
) -> SelectReport:
    """Select BG and LRG targets from a Parquet catalog into the dataset ``out``.

    Parameters
    ----------
    catalog : path
        Parquet file or folder of Parquet files (one per tile), or a HATS catalog (one unit
        per HEALPix pixel: :mod:`lensdask.catalog.hats`), with the column names
        of ``config.preset`` (KiDS DR4 by default) or ``config.column_map``.
    out : path
        Targets dataset folder (``targets.parquet``): one Parquet file per catalog file,
        completion markers, ``_summary.json`` and ``_tiles.csv`` (counts per tile).
    config : SelectConfig, optional
        Cuts and columns (default: Li et al. 2020).
    client : distributed.Client
        The injected Dask client: one task per catalog file.
    progress : bool
        Show a progress bar over files.

    Returns
    -------
    SelectReport
        Counts per tile and per sample, and the failed files.
    """
    config = config or SelectConfig()
    if not uses_kernel(config):  # bad syntax fails here, not in every task
        parse_samples(config)
    from lensdask.catalog.hats import hats_units
    from lensdask.formats.hats import is_hats

    if is_hats(catalog):  # one unit per HEALPix pixel, the schema checked first
        pixels = hats_units(catalog, columns=list(file_columns(config).values()))
        parts = dict(pixels.values())
        units = list(pixels)
    else:
        parts = dataset_parts(catalog)
        units = [path.stem for path in parts]
    files = list(parts)
    if len(set(units)) != len(units):
        raise CatalogError(f"catalog {catalog}: two files share a name: units must be unique")
    out = as_path(out)
    if out.exists() and not has_units(out) and any(out.iterdir()):
        raise CatalogError(f"{out} exists and is not a targets dataset: refusing to write there")
    out.mkdir(parents=True, exist_ok=True)
    chash = units_hash(config)
    # a file's targets are selected again when the file changed
    lineage = {unit: {"catalog": parts[path]} for unit, path in zip(units, files, strict=True)}
    planned = {unit: lineage_hash(chash, lineage[unit]) for unit in units}
    redo = units_to_redo(
        {unit: read_marker(out, unit) for unit in units}, planned, mode=config.duplicates
    )
    if redo:  # units that dropped repeated rows, made again from their catalog file
        clear_manifest(out)
        for unit in redo:
            clear_marker(out, unit)
    report = run_stage(
        client,
        select_tile,
        out,
        dict(zip(units, files, strict=True)),
        chash=chash,
        lineage=lineage,
        stage=STAGE,
        progress=progress,
        small_units=True,
        config=config,
    )
    ids = check_target_ids(
        out, mode=config.duplicates, stage=STAGE, client=client, progress=progress
    )
    if ids.failures:
        report.failures.extend(ids.failures)
        report.failures.sort(key=lambda failure: failure.unit)
        report.write_failures(out)
    markers = planned_units(out)
    per_tile = {
        unit: {key: int(marker.extra[key]) for key in COUNTS} for unit, marker in markers.items()
    }
    result = SelectReport(out=out, per_tile=per_tile, units=report, dropped=dropped_rows(markers))
    _write_summary(result, catalog=as_path(catalog), config=config, n_files=len(files))
    return result


def units_hash(config: SelectConfig) -> str:
    """The configuration hash of the selection's units: every field but ``duplicates``,
    which decides what happens after the units are made, not what they hold (units that
    dropped rows are made again where the mode changes, see
    :func:`lensdask.catalog.duplicates.units_to_redo`)."""
    import dataclasses

    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "duplicates"}
    if uses_kernel(config):  # units made before the presets existed stay complete
        del fields["preset"], fields["samples"]
    return config_hash(fields)


def _write_summary(report: SelectReport, *, catalog: Path, config: SelectConfig, n_files: int):
    import dataclasses

    totals = {key: report.total(key) for key in COUNTS}
    bg_fraction = totals["rows"] / max(totals["sources"], 1)
    lrg_per_bg = totals["LRG"] / max(totals["rows"], 1)
    summary = {
        "catalog": str(catalog),
        "files": n_files,
        "files_done": len(report.per_tile),
        "files_failed": [failure.unit for failure in report.units.failures],
        "sources": totals["sources"],
        "bright_galaxies": totals["rows"],
        "sample_LRG": totals["LRG"],
        "sample_BG": totals["BG"],
        "bg_fraction_of_sources": bg_fraction,
        "lrg_fraction_of_bgs": lrg_per_bg,
        "bg_with_nan_colour": totals["nan_colour"],
        "duplicates": config.duplicates,
        "duplicate_rows_dropped": report.dropped,
        "config": {
            k: (dict(v) if k == "column_map" else v) for k, v in dataclasses.asdict(config).items()
        },
    }
    write_json_atomic(report.out / SUMMARY_FILE, summary, sort_keys=False)
    lines = ["tile,sources,targets,LRG,BG,nan_colour"] + [
        f"{unit},{c['sources']},{c['rows']},{c['LRG']},{c['BG']},{c['nan_colour']}"
        for unit, c in sorted(report.per_tile.items())
    ]
    write_text_atomic(report.out / TILES_FILE, "\n".join(lines) + "\n")
    for unit, c in sorted(report.per_tile.items()):
        logger.info("select: %s: %d LRG, %d BG", unit, c["LRG"], c["BG"])
    logger.info(
        "select: %d targets (%d LRG, %d BG) of %d sources from %d/%d files: %.2f%% of "
        "sources are BGs, %.2f%% of BGs are LRGs; %d BGs miss a value the LRG cuts read "
        "(a NaN colour); %d rows dropped as repeated IDs",
        totals["rows"],
        totals["LRG"],
        totals["BG"],
        totals["sources"],
        len(report.per_tile),
        n_files,
        100 * bg_fraction,
        100 * lrg_per_bg,
        totals["nan_colour"],
        report.dropped,
    )


__all__ = [
    "DUPLICATES_FILE",
    "SAMPLES",
    "CatalogError",
    "DuplicateIDError",
    "SchemaError",
    "SelectReport",
    "read_tile_targets",
    "select_targets",
    "targets_frame",
]


def run(config: SelectConfig, io: StageIO, *, client: Any, progress: bool = True) -> StageOutcome:
    """The ``select`` stage: :func:`select_targets` from the ``catalog`` artifact."""
    report = select_targets(
        io.need("catalog"), io.out("targets"), config=config, client=client, progress=progress
    )
    rows, lrg, bg = report.total("rows"), report.total("LRG"), report.total("BG")
    counts = {"targets selected": rows, "LRG": lrg, "BG (not LRG)": bg}
    dropped = ""
    if report.dropped:
        counts["repeated IDs dropped"] = report.dropped
        dropped = (
            f"; {report.dropped} rows of repeated IDs dropped (keep-first, listed in "
            f"{report.out / DUPLICATES_FILE})"
        )
    return StageOutcome(
        reports=[report.units],
        outputs={"targets": report.out},
        counts=counts,
        lines=[f"select: {rows} targets ({lrg} LRG, {bg} BG){dropped} -> {report.out}"],
    )
