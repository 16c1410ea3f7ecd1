"""Parquet datasets: a file, or a folder of one Parquet file per unit (catalogs, targets,
scores, truth tables), committed whole and read by their ``ID`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lensdask.formats.files import atomic_path
from lensdask.units import commit_file, staging_path


class CatalogError(OSError):
    """A Parquet dataset (a catalog, the targets, the scores) cannot be found or read."""


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
    path = Path(path)
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


def read_rows(dataset: str | Path, ids: list[str], columns: list[str]):
    """The rows of a Parquet file or dataset whose ``ID`` is in ``ids``, as a DataFrame with
    ``ID`` and those of ``columns`` the dataset has."""
    import pyarrow.dataset as ds

    data = ds.dataset(str(dataset), format="parquet", exclude_invalid_files=True)
    present = [name for name in columns if name in data.schema.names]
    if "ID" not in data.schema.names:
        raise KeyError(f"{dataset}: no ID column")
    table = data.to_table(columns=["ID", *present], filter=ds.field("ID").isin(ids))
    return table.to_pandas()


def write_frame(frame: Any, path: str | Path) -> None:
    """Write a pandas DataFrame to one Parquet file atomically (without its index)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


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
        compression="zstd",
        row_group_size=1 << 20,
        use_dictionary=dictionary_columns(table),
    )
    written = pq.read_metadata(staged).num_rows
    if written != table.num_rows:
        raise OSError(f"{staged}: wrote {written} rows instead of {table.num_rows}")
    final = Path(root) / rel
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
