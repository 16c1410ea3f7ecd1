"""Work units committed as a whole: staging, atomic moves and completion markers.

Every stage splits its work into units (a tile, a simulation batch) with deterministic
names. A unit writes its data into a staging folder, checks it, moves it into place with
:func:`os.replace` and only then writes its completion marker, a small JSON file under
``<out>/_units/``. A rerun skips a unit only when its marker agrees with the files on disk
and with the hash of the configuration that made it (docs/architecture.md, Reliability
rules).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensdask import __version__
from lensdask.formats.files import jsonable, write_json_atomic

logger = logging.getLogger(__name__)

MARKER_DIR = "_units"
STAGING_DIR = "_staging"


def config_hash(config: Any) -> str:
    """Hash a (dataclass) configuration into a short, stable hex string.

    Parameters
    ----------
    config : dataclass instance or mapping
        The configuration that determines the content of the units.

    Returns
    -------
    str
        The first 16 hex digits of the SHA-256 of the canonical JSON form.
    """
    payload = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    text = json.dumps(jsonable(payload), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ids_hash(ids: Iterable[str]) -> str:
    """SHA-256 (16 hex digits) of a sequence of IDs in order: of ``"id1\\nid2\\n...idN\\n"``.

    A pyarrow string array is hashed without a Python loop; any other iterable of str gives
    the same hash for the same IDs.
    """
    import pyarrow as pa

    digest = hashlib.sha256()
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        import pyarrow.compute as pc

        if len(ids):
            wrapped = pa.ListArray.from_arrays(pa.array([0, len(ids)], pa.int32()), ids)
            digest.update(pc.binary_join(wrapped, "\n")[0].as_py().encode())
            digest.update(b"\n")
        return digest.hexdigest()[:16]
    for item in ids:
        digest.update(str(item).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Marker:
    """What a completed unit wrote, as recorded in its completion marker."""

    unit: str
    """Name of the unit (tile name, batch name)."""
    rows: int
    """Number of rows (sources, cutouts, images) the unit wrote."""
    ids_hash: str
    """Hash of the unit's IDs in order (:func:`ids_hash`)."""
    config_hash: str
    """Hash of the configuration that made the unit (:func:`config_hash`)."""
    files: Mapping[str, int]
    """Paths (relative to the output root) and sizes in bytes of the unit's files."""
    code_version: str = __version__
    """lensdask version that wrote the unit."""
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Stage-specific facts (counts per sample, skipped targets, ...)."""


def marker_path(root: Path, unit: str) -> Path:
    """Path of the completion marker of ``unit`` under output root ``root``."""
    return Path(root) / MARKER_DIR / f"{unit}.json"


def staging_path(root: Path, name: str) -> Path:
    """A fresh staging path for ``name`` under ``root`` (its parent exists, it does not)."""
    path = Path(root) / STAGING_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # left over from an interrupted attempt of the same unit
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    return path


def commit_file(staged: Path, final: Path) -> None:
    """Move a fully written staged file into place atomically (same file system)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)


def commit_folder(staged: Path, final: Path) -> None:
    """Move a fully written staged folder into place, replacing an incomplete old one."""
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(staged, final)


def folder_files(root: Path, folder: Path) -> dict[str, int]:
    """Paths (relative to ``root``) and sizes of every file under ``folder``: what a unit
    committed as a folder lists in its marker."""
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def write_marker(root: Path, marker: Marker) -> None:
    """Write the completion marker of a unit, atomically, after its data is in place."""
    write_json_atomic(marker_path(root, marker.unit), dataclasses.asdict(marker), indent=None)


def read_marker(root: Path, unit: str) -> Marker | None:
    """The completion marker of ``unit``, or None when there is none (or it is damaged)."""
    path = marker_path(root, unit)
    try:
        return Marker(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError) as err:
        logger.warning("ignoring damaged completion marker %s: %s", path, err)
        return None


def clear_marker(root: Path, unit: str) -> None:
    """Remove the marker of ``unit`` so that it counts as incomplete before it is rewritten."""
    marker_path(root, unit).unlink(missing_ok=True)


def is_complete(root: Path, unit: str, *, config_hash: str) -> bool:
    """Whether ``unit`` is complete: its marker exists, was made with the same
    configuration, and every file it lists is on disk with the recorded size."""
    marker = read_marker(root, unit)
    if marker is None or marker.config_hash != config_hash:
        return False
    for rel, size in marker.files.items():
        path = Path(root) / rel
        if not path.exists() or path.stat().st_size != size:
            return False
    return True


def complete_units(root: Path, *, config_hash: str | None = None) -> dict[str, Marker]:
    """All units under ``root`` with a marker (and, if given, the same configuration hash)."""
    folder = Path(root) / MARKER_DIR
    markers = {}
    for path in sorted(folder.glob("*.json")):
        marker = read_marker(root, path.stem)
        if marker is not None and (config_hash is None or marker.config_hash == config_hash):
            markers[marker.unit] = marker
    return markers


def file_state(path: Path) -> list[Any]:
    """Resolved path, size and modification time of a file: what changes when it is
    rewritten (for configuration hashes of units made from input files)."""
    stat = Path(path).stat()
    return [os.fspath(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def source_config_hash(config: Any, source: Path) -> str:
    """Configuration hash of a unit made from one input file: changes with the file too."""
    return config_hash({"config": dataclasses.asdict(config), "source": file_state(source)})
