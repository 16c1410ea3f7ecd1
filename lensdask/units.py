"""Work units committed as a whole: staging, atomic moves, completion markers, manifests.

Every stage splits its work into units (a tile, a simulation batch) with deterministic
names. A unit writes its data into a staging folder, checks it, puts it in place (a rename
with :func:`os.replace` on a local file system, an upload to an object store:
:mod:`lensdask.storage`) and only then writes its completion marker, a small JSON file under
``<out>/_units/`` that lists its files (sizes, and a SHA-256 of the small ones) and the
identity of the inputs it was made from (its lineage). A rerun skips a unit only when its
marker agrees with the files on disk and with the hash of the configuration and lineage
that would make it now.

When a stage's run ends, its output holds exactly the units that its inputs and
configuration planned: units no longer planned are moved under ``<out>/_superseded/``, and
``<out>/_manifest.json`` lists the planned units with the digest of each marker. Readers
take a stage's output from its manifest only (:func:`planned_units`), never from a listing
of the folder; a stage that did not finish has no manifest. (docs/architecture.md,
Reliability rules.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensdask import __version__
from lensdask.formats.files import jsonable, write_json_atomic
from lensdask.storage import as_path, is_url, move, remove, replace

logger = logging.getLogger(__name__)

MARKER_DIR = "_units"
STAGING_DIR = "_staging"
SUPERSEDED_DIR = "_superseded"
DAMAGED_DIR = "_damaged"
MANIFEST_FILE = "_manifest.json"
SMALL_FILE = 64 << 20
"""Files up to this size (bytes) get a SHA-256 in their unit's marker, checked whenever the
unit's completeness is; larger ones (Zarr shards) carry the format's own checksums."""


class StaleOutputError(ValueError):
    """A stage's output is incomplete, changed since its stage finished, or was made from
    other inputs than the ones given: the message says which stage to run again."""


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
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Lineage: the identity of each input the unit was made from (the digest of an
    upstream unit's marker, a model id, a hash of an input file's state), by name."""
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """SHA-256 (hex) of each of its files up to :data:`SMALL_FILE` bytes."""


def marker_digest(marker: Marker) -> str:
    """The identity of a unit's content: a hash of its whole marker (16 hex digits)."""
    text = json.dumps(jsonable(dataclasses.asdict(marker)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with as_path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage_hash(chash: str, lineage: Mapping[str, str]) -> str:
    """The hash a unit's marker records: its configuration hash and its lineage together,
    so that a unit is remade when either changes."""
    return config_hash({"config": chash, "inputs": dict(lineage)}) if lineage else chash


def marker_path(root: Path, unit: str) -> Path:
    """Path of the completion marker of ``unit`` under output root ``root``."""
    return as_path(root) / MARKER_DIR / f"{unit}.json"


def staging_path(root: Path, name: str) -> Path:
    """A fresh local staging path for ``name`` of the output ``root`` (its parent exists, it
    does not): under ``root/_staging/`` on a local file system, so that the commit is a
    rename, or in the local temporary folder for a remote ``root``, whose commit uploads
    it (:mod:`lensdask.storage`)."""
    if is_url(root):  # unique: the commit's upload removes it, and nothing is left behind
        import tempfile
        import uuid

        return Path(tempfile.gettempdir()) / f"lensdask-staging-{uuid.uuid4().hex}-{name}"
    path = Path(root) / STAGING_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # left over from an interrupted attempt of the same unit
        remove(path)
    return path


def commit_file(staged: Path, final: Path) -> None:
    """Put a fully written staged file in place: a rename on one file system, an upload
    (atomic per object) to an object store."""
    replace(staged, final)


def commit_folder(staged: Path, final: Path) -> None:
    """Put a fully written staged folder in place, replacing an incomplete old one (on an
    object store, the old objects are removed first, then the folder uploaded: the unit's
    marker, written after, is the commit point)."""
    replace(staged, final)


def folder_files(root: Path, folder: Path) -> dict[str, int]:
    """Paths (relative to ``root``) and sizes of every file under ``folder``: what a unit
    committed as a folder lists in its marker."""
    root = as_path(root)
    return {
        path.relative_to(root).as_posix(): path.stat().st_size
        for path in sorted(as_path(folder).rglob("*"))
        if path.is_file()
    }


def write_marker(root: Path, marker: Marker) -> None:
    """Write the completion marker of a unit, atomically, after its data is in place; the
    SHA-256 of its small files is taken now."""
    if not marker.checksums:
        sums = {
            rel: file_sha256(as_path(root) / rel)
            for rel, size in marker.files.items()
            if size <= SMALL_FILE
        }
        marker = dataclasses.replace(marker, checksums=sums)
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


def damage(root: Path, marker: Marker) -> str | None:
    """What is wrong with the files of a unit, or None: a file missing, of another size, or
    (for small files) with other content than when it was committed."""
    for rel, size in marker.files.items():
        path = as_path(root) / rel
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes instead of {size}"
        if rel in marker.checksums and file_sha256(path) != marker.checksums[rel]:
            return f"{path} changed since it was written (SHA-256 differs)"
    return None


def is_complete(root: Path, unit: str, *, config_hash: str) -> bool:
    """Whether ``unit`` is complete: its marker exists, was made with the same
    configuration and lineage, and its files are on disk as recorded (:func:`damage`)."""
    marker = read_marker(root, unit)
    if marker is None or marker.config_hash != config_hash:
        return False
    problem = damage(root, marker)
    if problem:
        logger.warning("%s: unit %s is redone: %s", root, unit, problem)
    return problem is None


def invalidate(root: Path, unit: str, reason: str) -> None:
    """Take back the completion of a unit found damaged by a reader: its marker moves to
    ``<root>/_damaged/`` (with the reason), so the next run of its stage redoes it."""
    path = marker_path(root, unit)
    if not path.exists():
        return
    target = as_path(root) / DAMAGED_DIR / f"{unit}.json"
    write_json_atomic(target.with_suffix(".reason.json"), {"unit": unit, "reason": reason})
    move(path, target)
    logger.warning(
        "%s: unit %s is damaged (%s); the next run of its stage redoes it", root, unit, reason
    )


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The output of a stage's last finished run: its planned units and their markers."""

    stage: str
    units: Mapping[str, str]
    """Each planned unit that completed -> the digest of its marker (:func:`marker_digest`)."""
    failed: tuple[str, ...] = ()
    """Planned units that did not complete in that run."""
    code_version: str = __version__

    @property
    def digest(self) -> str:
        """The identity of the whole output (its units and what failed)."""
        return config_hash({"units": dict(self.units), "failed": list(self.failed)})


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Record the finished run of a stage: the commit point of its output as a whole."""
    write_json_atomic(as_path(root) / MANIFEST_FILE, dataclasses.asdict(manifest))


def clear_manifest(root: Path) -> None:
    """Take back the manifest of a stage about to run: until it finishes, its output is not
    a finished run's."""
    remove(as_path(root) / MANIFEST_FILE)


def has_units(root: Path) -> bool:
    """Whether ``root`` is the output of a lensdask stage (it has completion markers, a
    manifest, or the staging folder where its units write first: a stage stopped before
    its first unit completed), as opposed to files a user made."""
    root = as_path(root)
    return any((root / name).exists() for name in (MARKER_DIR, MANIFEST_FILE, STAGING_DIR))


def read_manifest(root: Path) -> Manifest:
    """The manifest of a stage's output.

    Raises
    ------
    StaleOutputError
        There is none (the stage did not finish its last run) or it cannot be read.
    """
    path = as_path(root) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
        return Manifest(**{**data, "failed": tuple(data.get("failed", ()))})
    except FileNotFoundError:
        raise StaleOutputError(
            f"{root}: its stage has not finished a run (no {MANIFEST_FILE}); run it again"
        ) from None
    except (json.JSONDecodeError, TypeError) as err:
        raise StaleOutputError(f"{path}: damaged ({err}); run its stage again") from None


def planned_units(root: Path) -> dict[str, Marker]:
    """The units of a stage's output as its last finished run left them, by name.

    Only the units of the manifest count, and each one's marker must still be the one the
    manifest recorded. A unit whose marker is gone since (being redone, or found damaged
    and taken back by :func:`invalidate`) is left out, with a warning: it is not complete.

    Raises
    ------
    StaleOutputError
        No manifest, or a unit was remade since the run that wrote the manifest.
    """
    manifest = read_manifest(root)
    markers = {}
    for unit, digest in manifest.units.items():
        marker = read_marker(root, unit)
        if marker is None:
            logger.warning("%s: unit %s is not complete any more; leaving it out", root, unit)
            continue
        if marker_digest(marker) != digest:
            raise StaleOutputError(
                f"{root}: unit {unit} changed since the {manifest.stage} run that wrote it; "
                f"run {manifest.stage} again"
            )
        markers[unit] = marker
    return markers


def supersede(root: Path, keep: Iterable[str]) -> list[str]:
    """Move the units under ``root`` that are not in ``keep`` (no longer planned), files and
    marker, under ``<root>/_superseded/<unit>/``, where no reader looks.

    Returns
    -------
    list of str
        The units moved.
    """
    root = as_path(root)
    keep = set(keep)
    moved = []
    for path in sorted((root / MARKER_DIR).glob("*.json")):
        unit = path.stem
        if unit in keep:
            continue
        marker = read_marker(root, unit)
        target = root / SUPERSEDED_DIR / unit
        remove(target)
        for rel in marker.files if marker else {}:
            source = root / rel
            if source.exists():
                move(source, target / rel)
                _remove_empty_parents(source.parent, root)
        move(path, target / path.name)
        moved.append(unit)
    if moved:
        logger.info(
            "%s: %d unit(s) no longer planned moved to %s", root, len(moved), SUPERSEDED_DIR
        )
    return moved


def complete_units(root: Path, *, config_hash: str | None = None) -> dict[str, Marker]:
    """All units under ``root`` with a marker (and, if given, the same configuration hash)."""
    folder = as_path(root) / MARKER_DIR
    markers = {}
    for path in sorted(folder.glob("*.json")):
        marker = read_marker(root, path.stem)
        if marker is not None and (config_hash is None or marker.config_hash == config_hash):
            markers[marker.unit] = marker
    return markers


def file_state(path: Path) -> list[Any]:
    """Resolved path (or URL), size and modification time (or the object store's version
    tag) of a file: what changes when it is rewritten (for configuration hashes of units
    made from input files)."""
    from lensdask.storage import file_state as state

    return state(path)


def file_identity(path: Path) -> str:
    """The identity of an input file that no lensdask stage made (a catalog, an image): a
    hash of its :func:`file_state`, for the lineage of the units made from it."""
    return config_hash({"file": file_state(path)})


def _remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while empty."""
    if is_url(root):  # an object store has no empty folders
        return
    while folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
