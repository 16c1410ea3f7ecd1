"""Files written whole or not at all, JSON values, and tables read whatever their format.

A reader must never see half a file: every writer of lensdask writes into a temporary file
beside its target and renames it into place with :func:`os.replace`, which is atomic on one
local or POSIX file system (:func:`atomic_path`). For a file on an object store
(:mod:`lensdask.storage`), the temporary file is local and is uploaded in one put, which is
atomic by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

TEXT_COLUMNS = ("ID", "candidate_id", "THELI_NAME", "grader", "grade")
"""Columns a CSV table keeps as strings (IDs that look like numbers stay IDs)."""


class TableError(ValueError):
    """An input table cannot be read or is malformed; the message names the file, the rows
    and why."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; moved onto ``path`` when the block
    ends without error, removed when it fails.

    The temporary name keeps the suffix of ``path`` (writers such as Keras and matplotlib
    choose the format by it) and starts with ``.``, so that dataset listings skip it.

    Parameters
    ----------
    path : path
        The file to write; its folder is created if needed.

    Yields
    ------
    Path
        Where to write the file's content.
    """
    from lensdask.storage import as_path, is_url, replace

    path = as_path(path)
    name = f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    if is_url(path):
        import tempfile

        tmp = Path(tempfile.gettempdir()) / name
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(name)
    try:
        yield tmp
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig: Any, path: str | Path, *, dpi: int, **options: Any) -> Any:
    """Save a matplotlib figure to ``path`` (local or URL) atomically, in the format of its
    suffix; returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, **options)
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(
    path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = True
) -> None:
    """Write ``data`` (made JSON-ready by :func:`jsonable`) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(jsonable(data), indent=indent, sort_keys=sort_keys))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: mappings to dicts, tuples to lists, paths to strings.

    Raises
    ------
    TypeError
        For a value JSON cannot represent (the message shows it).
    """
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"cannot hash or write as JSON the value {value!r}")


def read_table(path: str | Path):
    """A Parquet file, a folder of Parquet files (a dataset), a CSV or an ECSV file, as a
    pandas DataFrame.

    IDs in a CSV file stay strings (:data:`TEXT_COLUMNS`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TableError
        If ``path`` cannot be read as Parquet.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".txt"):
        return pd.read_csv(path, dtype={name: str for name in TEXT_COLUMNS})
    if path.is_file() and suffix == ".ecsv":
        from astropy.table import Table

        return Table.read(path, format="ascii.ecsv").to_pandas()
    import pyarrow.dataset as ds

    try:
        return ds.dataset(str(path), format=parquet_format()).to_table().to_pandas()
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise TableError(f"{path}: cannot read as Parquet (or .csv): {err}") from None


def parquet_format():
    """pyarrow's Parquet format for datasets, verifying the pages' CRC checksums as it reads
    (lensdask writes them, :data:`lensdask.formats.parquet.WRITE_OPTIONS`): a damaged page
    fails the read instead of giving other values. Pages without a checksum are read as
    they are."""
    import pyarrow.dataset as ds

    return ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    )


def problem_message(path: str | Path, problems: Sequence[str], *, shown: int = 20) -> str:
    """One error message listing the problems found in ``path`` (the first ``shown``)."""
    lines = [f"{path}: {len(problems)} problem(s):", *(f"  {p}" for p in problems[:shown])]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)
