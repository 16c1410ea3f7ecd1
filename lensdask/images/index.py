"""Build the image index: which FITS file holds each tile's image of each band.

Three ways to say which files are images, one way to read them:

1. a name template (:func:`entries_from_templates`): ``KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits``
   with sibling templates of the weight and flag maps and a template of the catalog's tile
   key (``KIDS_{ra}_{dec}``), or a named preset (``kids-dr4``);
2. a manifest table (:func:`entries_from_manifest`): ``path``, ``band`` and optionally
   ``tile``, ``hdu``, ``weight_path``, ``weight_hdu``, ``flag_path``, ``flag_hdu``;
3. a scan of every FITS file of a folder or glob (:func:`entries_from_scan`): the band
   from the ``FILTER`` keyword (through a map of values), the tile from ``OBJECT``, else the
   image's own key, so that renamed files (ESO's ``ADP.*.fits``) are recognised; files the
   header calls ancillary (ESO ``PRODCATG = 'ANCILLARY.*'``) are left out.

Each way gives a list of :class:`ImageEntry`, planned here without opening any file. The
headers are then read on the cluster, one task per batch of files
(:func:`index_batch`; a unit named ``batch-<k>`` whose lineage is its files' paths, sizes
and modification times), and each batch commits one Parquet part of the index
(:mod:`lensdask.formats.image_index`) through :func:`lensdask.runner.run_stage`: resumable,
with a manifest when the run finishes. The three ways give the same index for the same
files. An image whose headers cannot give a row (no 2-D HDU, no celestial WCS, no band, a
weight map of another size) is left out of the index, recorded by path in its batch's
marker and reported (the stage's outcome is partial); it is read again when the file
changes.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lensdask.config import ConfigError, ImageIndexConfig
from lensdask.formats.image_index import (
    ImageIndexError,
    commit_index_part,
    read_image_index,
)
from lensdask.images.headers import (
    HeaderError,
    image_row,
    is_ancillary,
    is_fits_name,
    read_image_header,
)
from lensdask.images.templates import TemplateError, match_templates
from lensdask.runner import UnitCounts, UnitReport, is_deterministic, one_line, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.storage import as_path, is_url, options_of, url_or_path
from lensdask.units import (
    Marker,
    clear_marker,
    config_hash,
    file_state,
    has_units,
    ids_hash,
    planned_units,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "index-images"
MANIFEST_COLUMNS = (
    "path",
    "band",
    "tile",
    "hdu",
    "weight_path",
    "weight_hdu",
    "flag_path",
    "flag_hdu",
)
"""Columns a manifest may have (``path`` and ``band`` are required)."""


@dataclass(frozen=True)
class ImageEntry:
    """An image file to index, with what its name or the manifest says about it (None:
    the headers decide)."""

    path: str
    """Absolute path of the FITS file."""
    band: str | None = None
    tile: str | None = None
    hdu: int | None = None
    weight_path: str | None = None
    weight_hdu: int | None = None
    flag_path: str | None = None
    flag_hdu: int | None = None
    scanned: bool = False
    """Found by a scan of the headers: left out when its header calls it ancillary."""


def _absolute(path: str | Path) -> str:
    """A local path made absolute, or the URL of a remote one."""
    return url_or_path(path) if is_url(path) else os.path.abspath(os.fspath(path))


# --- planning: which files are images (no file is opened) ------------------------------------


def list_names(folder: Path, *, depths: set[int]) -> list[str]:
    """Relative paths (``/`` separated) of the files ``depths`` path components below
    ``folder``, sorted; names starting with ``.`` are skipped."""
    names = set()
    for depth in sorted(depths):
        for path in folder.glob("/".join(["*"] * depth)):
            rel = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                names.add(rel.as_posix())
    return sorted(names)


def entries_from_templates(folder: str | Path, *, config: ImageIndexConfig) -> list[ImageEntry]:
    """The images of ``folder`` that ``config.template`` names, with the weight and flag
    maps of the sibling templates where they exist.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not a folder.
    TemplateError
        No file matches the template (the message shows it and a file that exists), or a
        template is malformed.
    """
    folder = as_path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {folder} does not exist")
    templates = [config.template, config.weight_template, config.flag_template]
    depths = {text.count("/") + 1 for text in templates if text}
    matches = match_templates(
        list_names(folder, depths=depths),
        template=config.template,
        weight_template=config.weight_template,
        flag_template=config.flag_template,
        tile_template=config.tile_template,
        source=str(folder),
    )
    return [
        ImageEntry(
            path=_absolute(folder / match.name),
            band=match.band,
            tile=match.tile,
            hdu=config.hdu,
            weight_path=_absolute(folder / match.weight) if match.weight else None,
            weight_hdu=config.weight_hdu if match.weight else None,
            flag_path=_absolute(folder / match.flag) if match.flag else None,
            flag_hdu=config.flag_hdu if match.flag else None,
        )
        for match in matches
    ]


def entries_from_manifest(manifest: str | Path, *, config: ImageIndexConfig) -> list[ImageEntry]:
    """The images a manifest table lists (CSV, ECSV or Parquet).

    Paths are relative to the manifest's folder unless absolute; empty optional cells
    (``tile``, ``hdu``, ...) are left to the headers and the configuration.

    Raises
    ------
    ImageIndexError
        A required column is missing or empty, a column is unknown, an HDU is not a whole
        number >= 0, or a listed file does not exist (the message names the manifest, the
        column and the rows).
    """
    import pandas as pd

    from lensdask.formats.files import read_table

    manifest = Path(manifest)
    frame = read_table(manifest)
    unknown = [name for name in frame.columns if name not in MANIFEST_COLUMNS]
    if unknown:
        raise ImageIndexError(
            f"{manifest}: unknown column(s) {', '.join(map(str, unknown))}; known: "
            f"{', '.join(MANIFEST_COLUMNS)}"
        )
    missing = [name for name in ("path", "band") if name not in frame.columns]
    if missing:
        raise ImageIndexError(f"{manifest}: missing column(s) {', '.join(missing)}")
    problems = []
    base = manifest.parent

    def text(value: Any) -> str | None:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        value = str(value).strip()
        return value or None

    def number(value: Any, *, column: str, row: int) -> int | None:
        if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
            return None
        try:
            result = float(value)
        except (TypeError, ValueError):
            result = -1.0
        if result < 0 or result != int(result):
            problems.append(f"row {row}: column {column}: not an HDU number: {value!r}")
            return None
        return int(result)

    def place(value: str | None, *, column: str, row: int) -> str | None:
        if value is None:
            return None
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            problems.append(f"row {row}: column {column}: no such file {path}")
        return _absolute(path)

    entries = []
    for row, record in enumerate(frame.to_dict("records"), start=1):
        get = {name: record.get(name) for name in MANIFEST_COLUMNS}
        path, band = text(get["path"]), text(get["band"])
        for name, value in (("path", path), ("band", band)):
            if value is None:
                problems.append(f"row {row}: column {name} is empty")
        if path is None:
            continue
        weight = place(text(get["weight_path"]), column="weight_path", row=row)
        flag = place(text(get["flag_path"]), column="flag_path", row=row)
        weight_hdu = number(get["weight_hdu"], column="weight_hdu", row=row)
        flag_hdu = number(get["flag_hdu"], column="flag_hdu", row=row)
        hdu = number(get["hdu"], column="hdu", row=row)
        entries.append(
            ImageEntry(
                path=place(path, column="path", row=row),
                band=band,
                tile=text(get["tile"]),
                hdu=config.hdu if hdu is None else hdu,
                weight_path=weight,
                weight_hdu=(config.weight_hdu if weight_hdu is None else weight_hdu)
                if weight
                else None,
                flag_path=flag,
                flag_hdu=(config.flag_hdu if flag_hdu is None else flag_hdu) if flag else None,
            )
        )
    if problems:
        from lensdask.formats.files import problem_message

        raise ImageIndexError(problem_message(manifest, problems))
    if not entries:
        raise ImageIndexError(f"{manifest}: lists no image")
    return entries


def scan_paths(source: str | Path) -> list[str]:
    """The FITS files of a folder (recursively, hidden names skipped) or of a glob, as
    sorted absolute paths.

    Raises
    ------
    FileNotFoundError
        The folder does not exist, or it or the glob holds no FITS file.
    """
    name = url_or_path(source) if is_url(source) else os.fspath(source)
    if glob.has_magic(name):
        if is_url(source):
            fs = as_path(source).fs
            found = [f"{as_path(source).protocol}://{p}" for p in fs.glob(as_path(source).path)]
            paths = [p for p in found if fs.isfile(p)]
        else:
            paths = [path for path in glob.glob(name, recursive=True) if os.path.isfile(path)]
        if not paths:
            raise FileNotFoundError(f"no file matches {name}")
        return sorted(_absolute(path) for path in paths)
    folder = as_path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {folder} does not exist")
    paths = [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and is_fits_name(path.name)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not paths:
        raise FileNotFoundError(f"images folder {folder} holds no FITS files")
    return sorted(_absolute(path) for path in paths)


def entries_from_scan(source: str | Path, *, config: ImageIndexConfig) -> list[ImageEntry]:
    """Every FITS file of a folder or glob (:func:`scan_paths`), to be recognised by its
    headers."""
    return [ImageEntry(path=path, hdu=config.hdu, scanned=True) for path in scan_paths(source)]


def index_method(config: ImageIndexConfig) -> str:
    """How ``config`` finds the images: ``manifest``, ``template`` or ``headers``."""
    if config.manifest is not None:
        return "manifest"
    return "template" if config.template is not None else "headers"


def plan_entries(source: str | Path | None, *, config: ImageIndexConfig) -> list[ImageEntry]:
    """The images to index, by the way ``config`` says (:func:`index_method`).

    Parameters
    ----------
    source : path or str, optional
        The images folder (templates) or a folder or glob (scan of the headers); not used
        with a manifest.
    """
    method = index_method(config)
    if method == "manifest":
        entries = entries_from_manifest(config.manifest, config=config)
    elif source is None:
        raise ConfigError("index_images: give the images folder (source) or a manifest")
    elif method == "template":
        entries = entries_from_templates(source, config=config)
    else:
        entries = entries_from_scan(source, config=config)
    check_repeats(entries, source=config.manifest or source)
    return entries


def check_repeats(entries: list[ImageEntry], *, source: Any) -> None:
    """Fail before any header is read when the names or the manifest give two images the
    same tile and band (the message names them)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for entry in entries:
        if entry.tile is not None and entry.band is not None:
            seen.setdefault((entry.tile, entry.band), []).append(entry.path)
    repeats = [(key, paths) for key, paths in sorted(seen.items()) if len(paths) > 1]
    if repeats:
        shown = "; ".join(
            f"tile {tile} band {band}: {', '.join(paths)}" for (tile, band), paths in repeats[:3]
        )
        more = f" (and {len(repeats) - 3} more)" if len(repeats) > 3 else ""
        raise ImageIndexError(f"{source}: more than one image of {shown}{more}")


def batch_entries(
    entries: list[ImageEntry], *, batch_size: int
) -> dict[str, tuple[ImageEntry, ...]]:
    """The units of the header reading: batches of ``batch_size`` entries in path order,
    named ``batch-00000``, ``batch-00001``, ..."""
    entries = sorted(entries, key=lambda entry: entry.path)
    return {
        f"batch-{k:05d}": tuple(entries[start : start + batch_size])
        for k, start in enumerate(range(0, len(entries), batch_size))
    }


def batch_lineage(
    entries: tuple[ImageEntry, ...], *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The identity of a batch's inputs: its entries and the path, size and modification
    time (or object version) of each of their files (a changed file remakes its batch)."""

    def located(path: str) -> Any:
        return as_path(path, storage_options=storage_options)

    states = []
    for entry in entries:
        files = [entry.path, entry.weight_path, entry.flag_path]
        states.append(
            [
                asdict(entry),
                [file_state(located(p)) if p and located(p).exists() else None for p in files],
            ]
        )
    return {"images": config_hash({"entries": states})}


# --- the work unit: read a batch's headers ---------------------------------------------------


def describe_entry(
    entry: ImageEntry,
    *,
    config: ImageIndexConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The index row of one image from its headers (and its weight and flag maps'), or None
    for a scanned file its header calls ancillary.

    Raises
    ------
    FileNotFoundError, HeaderError
        The image or a map is missing or cannot give a row; a map's size differs from the
        image's (the message names the files).
    """
    image = read_image_header(entry.path, hdu=entry.hdu, storage_options=storage_options)
    if entry.scanned and is_ancillary(image):
        return None
    row = image_row(
        image,
        path=entry.path,
        band=entry.band,
        tile=entry.tile,
        band_keyword=config.band_keyword,
        band_map=config.band_map,
        tile_keyword=config.tile_keyword,
        seeing_keywords=config.seeing_keywords,
    )
    for kind in ("weight", "flag"):
        path = getattr(entry, f"{kind}_path")
        if path is None:
            continue
        other = read_image_header(
            path, hdu=getattr(entry, f"{kind}_hdu"), storage_options=storage_options
        )
        if other.shape != image.shape:
            raise HeaderError(
                f"{path} (HDU {other.hdu}): the {kind} map is {other.shape[0]}x"
                f"{other.shape[1]} px, its image {entry.path} {image.shape[0]}x{image.shape[1]}"
            )
        row[f"{kind}_path"] = path
        row[f"{kind}_hdu"] = other.hdu
    return row


def index_batch(
    entries: tuple[ImageEntry, ...],
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    config: ImageIndexConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the headers of one batch of files (URLs with ``storage_options``) and commit
    ``out/<unit>.parquet``.

    A file that cannot give a row for a reason another attempt would not change is left
    out and recorded (``extra["unreadable"]`` of the marker: path -> error); any other
    error fails the unit (Dask retries it).

    Returns
    -------
    dict
        ``rows`` (images indexed), ``ancillary`` (scanned files left out as weight or flag
        maps) and ``unreadable`` (path -> error).
    """
    clear_marker(out, unit)
    rows, ancillary, unreadable = [], [], {}
    for entry in entries:
        try:
            row = describe_entry(entry, config=config, storage_options=storage_options)
        except Exception as exc:
            if not is_deterministic(exc):
                raise
            unreadable[entry.path] = one_line(exc)
            continue
        if row is None:
            ancillary.append(entry.path)
        else:
            rows.append(row)
    rel = f"{unit}.parquet"
    table, size = commit_index_part(rows, out, rel)
    write_marker(
        out,
        Marker(
            unit=unit,
            rows=table.num_rows,
            ids_hash=ids_hash(table["path"]),
            config_hash=chash,
            inputs=lineage,
            files={rel: size},
            extra={"files": len(entries), "ancillary": ancillary, "unreadable": unreadable},
        ),
    )
    return {"rows": table.num_rows, "ancillary": ancillary, "unreadable": unreadable}


# --- the Dask entry point --------------------------------------------------------------------


@dataclass(frozen=True)
class ImageIndexReport(UnitCounts):
    """Outcome of :func:`index_images`."""

    out: Path
    """The index dataset folder."""
    method: str
    """``template``, ``manifest`` or ``headers``."""
    files: int
    """Files planned (images to read, with the scanned files that turn out ancillary)."""
    units: UnitReport
    index: Any = None
    """The index as read back (:func:`lensdask.formats.image_index.read_image_index`)."""
    ancillary: tuple[str, ...] = ()
    """Scanned files left out because their header calls them ancillary."""
    unreadable: Mapping[str, str] = field(default_factory=dict)
    """Files left out because their headers cannot give a row: path -> error."""

    @property
    def images(self) -> int:
        """Images in the index."""
        return 0 if self.index is None else len(self.index)

    @property
    def tiles(self) -> int:
        """Tiles (image groups) in the index."""
        return 0 if self.index is None else int(self.index["tile"].nunique())


def index_images(
    source: str | Path | None,
    out: str | Path,
    *,
    config: ImageIndexConfig | None = None,
    client: Any,
    progress: bool = True,
) -> ImageIndexReport:
    """Index the image files of a survey into the dataset ``out``.

    Parameters
    ----------
    source : path or str, optional
        The images: the folder the templates are relative to, or the folder or glob whose
        FITS files are scanned; not used with ``config.manifest``. Default:
        ``config.source``.
    out : path
        The index dataset folder (``images.parquet``): a Parquet part per batch of files,
        completion markers and the manifest.
    config : ImageIndexConfig, optional
        How to find the images (default: a scan of the headers).
    client : distributed.Client
        The injected Dask client: one task per batch of ``config.batch_size`` files.
    progress : bool
        Show a progress bar over batches.

    Returns
    -------
    ImageIndexReport
        The index, the files left out and the failed batches.

    Raises
    ------
    TemplateError
        The template matches no file (the message shows it and a file that exists).
    ImageIndexError
        The manifest is malformed, or two images have the same tile and band (the message
        names them).
    FileNotFoundError
        The images folder, glob or manifest has nothing to index.
    """
    config = config or ImageIndexConfig()
    source = source if source is not None else config.source
    entries = plan_entries(source, config=config)
    out = as_path(out)
    if out.exists() and not has_units(out) and any(out.iterdir()):
        raise ImageIndexError(f"{out} exists and is not an image index: refusing to write there")
    batches = batch_entries(entries, batch_size=config.batch_size)
    options = options_of(as_path(source) if source is not None else None, out)
    lineage = {
        unit: batch_lineage(batch, storage_options=options) for unit, batch in batches.items()
    }
    report = run_stage(
        client,
        index_batch,
        out,
        batches,
        chash=config_hash(config),
        lineage=lineage,
        stage=STAGE,
        progress=progress,
        config=config,
        storage_options=options,
    )
    markers = planned_units(out)
    ancillary = tuple(path for m in markers.values() for path in m.extra.get("ancillary", ()))
    unreadable = {
        path: error
        for m in markers.values()
        for path, error in m.extra.get("unreadable", {}).items()
    }
    index = read_image_index(out) if markers else None
    result = ImageIndexReport(
        out=out,
        method=index_method(config),
        files=len(entries),
        units=report,
        index=index,
        ancillary=tuple(sorted(ancillary)),
        unreadable=dict(sorted(unreadable.items())),
    )
    logger.info(
        "%s: %d images of %d tiles from %d files (%s); %d ancillary, %d unreadable -> %s",
        STAGE,
        result.images,
        result.tiles,
        result.files,
        result.method,
        len(result.ancillary),
        len(result.unreadable),
        out,
    )
    return result


def run(
    config: ImageIndexConfig, io: StageIO, *, client: Any, progress: bool = True
) -> StageOutcome:
    """The ``index-images`` stage: :func:`index_images` of ``config.source`` (default: the
    ``images`` artifact; none with a manifest) into the ``image_index`` artifact."""
    source: str | Path | None = config.source
    if source is None and config.manifest is None:
        source = io.need("images")
    report = index_images(
        source, io.out("image_index"), config=config, client=client, progress=progress
    )
    bands = (
        ", ".join(
            f"{band}: {n}" for band, n in report.index["band"].value_counts().sort_index().items()
        )
        if report.index is not None
        else "none"
    )
    lines = [
        f"{STAGE}: {report.images} images of {report.tiles} tiles ({bands}) from "
        f"{report.files} files by {report.method} -> {report.out}"
    ]
    if report.ancillary:
        lines.append(
            f"{STAGE}: {len(report.ancillary)} ancillary files (weight, flag maps) left out"
        )
    return StageOutcome(
        reports=[report.units],
        outputs={"image index": report.out},
        counts={"images indexed": report.images, "image tiles": report.tiles},
        lines=lines,
        problems=[
            f"{path}: left out of the index: {error}" for path, error in report.unreadable.items()
        ],
    )


__all__ = [
    "ImageEntry",
    "ImageIndexReport",
    "TemplateError",
    "batch_entries",
    "check_repeats",
    "entries_from_manifest",
    "entries_from_scan",
    "entries_from_templates",
    "index_images",
    "index_method",
    "plan_entries",
    "run",
    "scan_paths",
]
