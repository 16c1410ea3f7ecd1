"""Ingest per-tile FITS catalogs (as KiDS DR4 distributes them) into the Parquet layout.

One Dask task per FITS file: open it memory-mapped, take the catalog columns (renamed
from the survey's names with ``column_map``), cast them to the types of the catalog
contract (docs/architecture.md, Contracts), and commit ``OUT/<tile>.parquet`` with its
completion marker.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.catalog.schema import CATALOG_COLUMNS, SchemaError, check_columns, contract_types
from lensdask.config import IngestConfig
from lensdask.formats.parquet import commit_parquet
from lensdask.runner import UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import (
    Marker,
    clear_marker,
    config_hash,
    file_identity,
    ids_hash,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "ingest"


def tile_name(path: Path, *, config: IngestConfig) -> str:
    """The tile a FITS catalog file belongs to, from its name (``config.tile_regex``)."""
    match = re.search(config.tile_regex, path.name)
    if not match:
        raise SchemaError(
            f"{path}: no THELI_NAME column and the file name does not match "
            f"ingest.tile_regex {config.tile_regex!r}"
        )
    if len(match.groups()) == 2:
        return f"KIDS_{match.group(1)}_{match.group(2)}"
    return match.group(1)


def read_fits_catalog(path: str | Path, *, config: IngestConfig):
    """Read one FITS catalog into a pyarrow Table with the canonical column names.

    Parameters
    ----------
    path : path
        FITS file with a binary table in HDU ``config.hdu``.
    config : IngestConfig
        Column map, HDU, extra columns and the tile-name rule.

    Returns
    -------
    pyarrow.Table
        The catalog columns of the contract (with its types) followed by the extra columns.

    Raises
    ------
    SchemaError
        A needed column is missing (named with the file).
    OSError
        The file cannot be read as FITS (named).
    """
    import pyarrow as pa
    from astropy.io import fits

    path = Path(path)
    wanted = [*CATALOG_COLUMNS, *config.extra_columns]
    names = {name: config.column_map.get(name, name) for name in wanted}
    try:
        hdul = fits.open(path, memmap=True)
    except (OSError, ValueError) as err:
        raise OSError(f"{path}: cannot read FITS: {err}") from None
    with hdul:
        try:
            data = hdul[config.hdu].data
            present = list(hdul[config.hdu].columns.names)
        except (IndexError, AttributeError, KeyError) as err:
            raise SchemaError(f"{path}: HDU {config.hdu} holds no table ({err})") from None
        derive_tile = names["THELI_NAME"] not in present
        needed = [names[name] for name in wanted if not (name == "THELI_NAME" and derive_tile)]
        check_columns(present, needed, source=str(path))
        n = len(data)
        columns = {}
        for name in wanted:
            if name == "THELI_NAME" and derive_tile:
                values = np.full(n, tile_name(path, config=config))
            else:
                values = _native(data[names[name]])
            columns[name] = pa.array(values)
    return contract_types(pa.table(columns))


def _native(values: np.ndarray) -> np.ndarray:
    """A FITS column as a native-endian array; byte strings decoded and stripped."""
    if values.dtype.kind == "S":
        return np.char.strip(np.char.decode(values, "ascii"))
    if values.dtype.kind == "U":
        return np.char.strip(values)
    return values.astype(values.dtype.newbyteorder("="), copy=True)


def ingest_file(
    path: Path, out: Path, *, unit: str, chash: str, lineage: dict[str, str], config: IngestConfig
):
    """Ingest one FITS catalog and commit ``out/<unit>.parquet``; returns its row count."""
    clear_marker(out, unit)
    table = read_fits_catalog(path, config=config)
    rel = f"{unit}.parquet"
    size = commit_parquet(table, out, rel)
    write_marker(
        out,
        Marker(
            unit=unit,
            rows=table.num_rows,
            ids_hash=ids_hash(table["ID"]),
            config_hash=chash,
            inputs=lineage,
            files={rel: size},
            extra={"source": str(path)},
        ),
    )
    return table.num_rows


@dataclass(frozen=True)
class IngestReport:
    """Outcome of :func:`ingest_catalogs`."""

    files: int
    rows: int
    units: UnitReport


def ingest_catalogs(
    source: str | Path,
    out: str | Path,
    *,
    config: IngestConfig | None = None,
    client: Any,
    progress: bool = True,
) -> IngestReport:
    """Ingest every FITS catalog in ``source`` into the Parquet catalog folder ``out``.

    Parameters
    ----------
    source : path
        Folder of FITS catalogs, one per tile (``config.pattern``).
    out : path
        Catalog folder: ``<tile>.parquet`` per input file, plus completion markers.
    config : IngestConfig, optional
        Column map, HDU, pattern.
    client : distributed.Client
        The injected Dask client: one task per file.
    progress : bool
        Show a progress bar over files.
    """
    config = config or IngestConfig()
    source = Path(source)
    files = sorted(source.glob(config.pattern))
    if not files:
        raise FileNotFoundError(f"{source}: no file matches {config.pattern!r}")
    units = [_unit_name(path, config=config) for path in files]
    seen: dict[str, Path] = {}
    for unit, path in zip(units, files, strict=True):
        if unit in seen:
            raise SchemaError(f"{seen[unit]} and {path} are both tile {unit}")
        seen[unit] = path
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = run_stage(
        client,
        ingest_file,
        out,
        dict(zip(units, files, strict=True)),
        chash=config_hash(config),
        # a file is ingested again when it changed
        lineage={
            unit: {"source": file_identity(path)} for unit, path in zip(units, files, strict=True)
        },
        stage=STAGE,
        progress=progress,
        config=config,
    )
    rows = sum(report.results.values())
    logger.info("ingest: %d sources from %d of %d files", rows, len(report.results), len(files))
    return IngestReport(files=len(files), rows=rows, units=report)


def _unit_name(path: Path, *, config: IngestConfig) -> str:
    try:
        return tile_name(path, config=config)
    except SchemaError:
        return path.stem


def run(config: IngestConfig, io: StageIO, *, client: Any, progress: bool = True) -> StageOutcome:
    """The ``ingest`` stage: :func:`ingest_catalogs` of ``config.source`` into the
    ``catalog`` artifact."""
    if config.source is None:
        raise ValueError("ingest.source: the folder of FITS catalogs is not set")
    out = io.out("catalog")
    report = ingest_catalogs(config.source, out, config=config, client=client, progress=progress)
    return StageOutcome(
        reports=[report.units],
        outputs={"catalog": out},
        lines=[f"ingest: {report.rows} sources from {report.files} files -> {out}"],
    )
