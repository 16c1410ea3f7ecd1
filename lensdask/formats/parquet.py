"""Parquet datasets: a file, or a folder of one Parquet file per unit (catalogs, targets,
scores, truth tables), committed whole and read by their ``ID`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensdask.formats.files import atomic_path, parquet_format
from lensdask.storage import as_path, is_url
from lensdask.units import (
    commit_file,
    file_identity,
    has_units,
    marker_digest,
    planned_units,
    staging_path,
)

WRITE_OPTIONS = {"compression": "zstd", "write_page_checksum": True}
"""How lensdask writes Parquet: zstd, and a CRC checksum in every page, which every reader
here verifies (:func:`read_file`, :func:`open_file`, :func:`open_dataset`)."""


class CatalogError(OSError):
    """A Parquet dataset (a catalog, the targets, the scores) cannot be found or read."""


def arrow_file(path: Any) -> tuple[str, Any]:
    """How pyarrow reaches ``path``: its path string and a pyarrow file system (None for a
    local file; fsspec's file system of a URL, wrapped, with its credentials)."""
    path = as_path(path)
    if not is_url(path):
        return str(path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path.path, PyFileSystem(FSSpecHandler(path.fs))


def read_file(path: Any, **options: Any):
    """``pyarrow.parquet.read_table`` of one file (local or URL), verifying its page
    checksums."""
    import pyarrow.parquet as pq

    where, filesystem = arrow_file(path)
    return pq.read_table(where, filesystem=filesystem, page_checksum_verification=True, **options)


def read_metadata(path: Any):
    """The Parquet footer of one file (local or URL)."""
    import pyarrow.parquet as pq

    where, filesystem = arrow_file(path)
    return pq.read_metadata(where, filesystem=filesystem)


def read_schema(path: Any):
    """The Arrow schema of one Parquet file (local or URL), from its footer."""
    import pyarrow.parquet as pq

    where, filesystem = arrow_file(path)
    return pq.read_schema(where, filesystem=filesystem)


def open_file(path: Any, **options: Any):
    """``pyarrow.parquet.ParquetFile`` of one file (local or URL), verifying its page
    checksums."""
    import pyarrow.parquet as pq

    where, filesystem = arrow_file(path)
    return pq.ParquetFile(where, filesystem=filesystem, page_checksum_verification=True, **options)


def open_dataset(files: Any):
    """A pyarrow dataset of Parquet ``files`` (paths or URLs, or a folder), verifying page
    checksums as it reads."""
    import pyarrow.dataset as ds

    many = not isinstance(files, str | Path) and not hasattr(files, "protocol")
    located = [arrow_file(file) for file in files] if many else [arrow_file(files)]
    filesystem = located[0][1] if located else None
    paths = [where for where, _ in located] if many else located[0][0]
    return ds.dataset(paths, format=parquet_format(), filesystem=filesystem)


def dataset_files(path: str | Path, *, what: str = "catalog") -> list[Path]:
    """The Parquet files of a dataset: the file itself, or ``*.parquet`` in a folder.

    Files and folders whose names start with ``_`` or ``.`` (markers, staging, temporary
    files) are skipped.

    Parameters
    ----------
    path : path
        A Parquet file or a folder of them.
    what : str
        What the dataset is, for the error messages.

    Raises
    ------
    CatalogError
        If ``path`` does not exist or holds no Parquet file.
    """
    path = as_path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CatalogError(f"{what} {path} does not exist")
    files = sorted(
        file
        for file in path.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in file.relative_to(path).parts)
    )
    if not files:
        raise CatalogError(f"{what} {path} holds no .parquet files")
    return files


def dataset_parts(path: str | Path, *, what: str = "catalog") -> dict[Path, str]:
    """The Parquet files of a dataset, each with the identity of its content.

    The output of a lensdask stage (it has completion markers) is read from its manifest:
    the files of the units its last finished run planned, each with its unit's marker
    digest; files the folder holds beside them (superseded, from another run) are not
    seen. Any other file or folder (a catalog, a table made by hand) is listed by
    :func:`dataset_files`, each file with a hash of its path, size and modification time.

    Raises
    ------
    CatalogError
        If ``path`` does not exist or holds no Parquet file.
    lensdask.units.StaleOutputError
        If the stage that wrote ``path`` did not finish its last run.
    """
    path = as_path(path)
    if path.is_dir() and has_units(path):
        parts = {}
        for marker in planned_units(path).values():
            for rel in marker.files:
                if rel.endswith(".parquet"):
                    parts[path / rel] = marker_digest(marker)
        return dict(sorted(parts.items()))
    files = dataset_files(path, what=what)
    return {file: file_identity(file) for file in files}


def read_rows(dataset: str | Path, ids: list[str], columns: list[str]):
    """The rows of a Parquet file or dataset whose ``ID`` is in ``ids``, as a DataFrame with
    ``ID`` and those of ``columns`` the dataset has (the files of :func:`dataset_parts`).

    The rows are joined by ``ID``, so an ID must name one row: where several rows have one
    of ``ids``, :class:`lensdask.formats.ids.DuplicateIDError` names them and their files.
    """
    import pyarrow.dataset as ds

    from lensdask.formats.ids import DuplicateIDError, describe_repeats, repeated_ids

    data = open_dataset(dataset_parts(dataset))
    present = [name for name in columns if name in data.schema.names]
    if "ID" not in data.schema.names:
        raise KeyError(f"{dataset}: no ID column")
    table = data.to_table(columns=["ID", *present], filter=ds.field("ID").isin(ids))
    frame = table.to_pandas()
    repeats = repeated_ids(frame["ID"])
    if repeats:
        files: dict[str, list[str]] = {key: [] for key in repeats}
        for fragment in data.get_fragments():
            found = fragment.to_table(columns=["ID"], filter=ds.field("ID").isin(list(repeats)))
            for key in found["ID"].to_pylist():
                files[key].append(Path(fragment.path).name)
        raise DuplicateIDError(
            f"{dataset}: {len(repeats)} ID(s) are in more than one row, so they cannot be "
            f"joined by ID: {describe_repeats(files, where='in')}"
        )
    return frame


def write_frame(frame: Any, path: str | Path) -> None:
    """Write a pandas DataFrame to one Parquet file atomically (without its index)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, **WRITE_OPTIONS)


def commit_parquet(table: Any, root: Path, rel: str) -> int:
    """Write a pyarrow Table to ``root/rel`` through the staging folder, atomically.

    The staged file's row count is checked against the table before it is moved into
    place. Only low-cardinality columns are dictionary-encoded (see
    :func:`dictionary_columns`). Returns the size of the committed file in bytes.
    """
    import pyarrow.parquet as pq

    staged = staging_path(root, rel.replace("/", "__"))
    pq.write_table(
        table,
        staged,
        row_group_size=1 << 20,
        use_dictionary=dictionary_columns(table),
        **WRITE_OPTIONS,
    )
    written = pq.read_metadata(staged).num_rows
    if written != table.num_rows:
        raise OSError(f"{staged}: wrote {written} rows instead of {table.num_rows}")
    final = as_path(root) / rel
    commit_file(staged, final)
    return final.stat().st_size


def dictionary_columns(table: Any, *, sample: int = 2000, max_distinct: int = 64) -> list[str]:
    """Columns worth dictionary-encoding in Parquet: dictionary-typed ones, and string or
    integer ones with at most ``max_distinct`` values among their first ``sample`` rows.

    Dictionary pages on high-cardinality columns (IDs, coordinates, magnitudes) make both
    writing and reading several times slower for no gain in size.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    chosen = []
    for name in table.column_names:
        column = table[name]
        kind = column.type
        if pa.types.is_dictionary(kind):
            chosen.append(name)
        elif (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
        ):
            head = column.slice(0, sample)
            if pc.count_distinct(head).as_py() <= max_distinct:
                chosen.append(name)
    return chosen
