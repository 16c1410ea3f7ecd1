"""Pre-flight checks: the problems of a stage's inputs that would fail every one of its
units, found before any cluster starts.

Each stage of :data:`lensdask.stages.STAGES` may name a check here (``Stage.check``),
``check(config, io) -> list[str]``. A check reads only what is cheap: Parquet footers,
Zarr attributes, the model card, file names; it takes seconds for a survey. Every problem
is one line naming the file, column or parameter. Inputs that an earlier stage of the same
run makes (``io.made``) are not there yet and are left out.

The commands call :func:`check_stage` (a stage command) or :func:`check_job`
(``lensdask run`` and ``--dry-run``) and refuse to start when a problem is found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lensdask.stages import Stage, StageIO, describe, stage_named
from lensdask.storage import StorageError, check_reachable, is_url

SHOWN = 20
"""Problems of one kind listed by name; the rest are counted."""
FOOTER_THREADS = 16
"""Catalog footers read at once (a parallel file system answers many small reads)."""


def check_stage(stage: Stage, config: Any, io: StageIO) -> list[str]:
    """The problems of ``stage`` with ``config`` and the paths of ``io``, each a line
    starting with the stage's name: its required inputs that are neither there nor made
    earlier in the run, then what its check function finds."""
    problems = []
    for item in stage.inputs:
        if not item.required or item.artifact in io.made:
            continue
        path = io.paths.get(item.artifact)
        if path is None:
            problems.append(
                f"needs {describe(item.artifact)}: give its path (`{item.artifact}:` in the "
                f"job file, --{item.artifact} on the command line)"
            )
        elif is_url(path):
            try:
                check_reachable(path, what=describe(item.artifact))
            except StorageError as err:
                problems.append(str(err))
        elif not Path(path).exists():
            problems.append(
                f"needs {describe(item.artifact)} at {path}; run the stage that makes it first"
            )
    for artifact in stage.outputs:  # an output's bucket must exist and answer
        path = io.paths.get(artifact)
        if path is not None and is_url(path):
            try:
                check_reachable(path, what=describe(artifact), must_exist=False)
            except StorageError as err:
                problems.append(str(err))
    check = stage.check_function()
    if not problems and check is not None:
        problems = check(config, io)
    return [f"{stage.name}: {problem}" for problem in problems]


def check_job(job: Any, stages: Iterable[str]) -> list[str]:
    """The problems of the ``stages`` of the job ``job`` (a :class:`lensdask.job.JobConfig`),
    each stage checked with the artifacts the stages before it make as ``made``."""
    made: set[str] = set()
    problems = []
    for name in stages:
        stage = stage_named(name)
        io = dataclasses.replace(job.io(stage), made=frozenset(made))
        problems += check_stage(stage, getattr(job, stage.section), io)
        made.update(stage.outputs)
    return problems


def present(io: StageIO, name: str) -> Path | None:
    """The path of input ``name`` where it is there now (not made by this run), else None."""
    return None if name in io.made else io.optional(name)


def listed(problems: list[str], *, what: str) -> list[str]:
    """The first :data:`SHOWN` of ``problems`` and a line counting the rest."""
    if len(problems) <= SHOWN:
        return problems
    return [*problems[:SHOWN], f"... and {len(problems) - SHOWN} more {what}"]


def parquet_problems(files: Iterable[Path], columns: dict[str, str], *, fix: str) -> list[str]:
    """Parquet files whose footer cannot be read or lacks a column.

    Parameters
    ----------
    files : iterable of path
        The files (their footers only are read).
    columns : dict
        Name in the contract -> name in the files, of every column needed.
    fix : str
        How to map other names (``select.column_map``), for the message.
    """
    import pyarrow as pa

    from lensdask.formats.parquet import read_schema

    def problem(path: Path) -> str | None:
        try:
            names = set(read_schema(path).names)
        except (OSError, pa.ArrowException) as err:
            return f"{path}: cannot read Parquet: {err}"
        missing = [
            name if name == canonical else f"{name} (for {canonical})"
            for canonical, name in columns.items()
            if name not in names
        ]
        if missing:
            return f"{path}: missing column(s) {', '.join(missing)}; {fix}"
        return None

    with ThreadPoolExecutor(FOOTER_THREADS, thread_name_prefix="lensdask-footer") as pool:
        found = [p for p in pool.map(problem, list(files)) if p is not None]
    return listed(found, what="catalog files with problems")


def check_ingest(config: Any, io: StageIO) -> list[str]:
    """The FITS catalogs to ingest are there."""
    if config.source is None:
        return ["ingest.source: the folder of FITS catalogs is not set"]
    source = Path(config.source)
    if not source.is_dir():
        return [f"ingest.source: {source} is not a folder"]
    if not any(source.glob(config.pattern)):
        return [f"ingest.source: no file in {source} matches ingest.pattern {config.pattern!r}"]
    return []


def check_select(config: Any, io: StageIO) -> list[str]:
    """The samples' expressions parse (where the preset is not the kids-dr4 kernel) and
    name numeric columns of the catalog (its first file's schema), every catalog file is
    Parquet with the columns the samples and the targets table need (names through
    ``select.column_map``), and no two files make the same unit."""
    from lensdask.catalog.expressions import ExpressionError
    from lensdask.catalog.presets import parse_samples, uses_kernel
    from lensdask.catalog.select import file_columns
    from lensdask.formats.parquet import dataset_parts
    from lensdask.units import StaleOutputError

    kernel = uses_kernel(config)
    if not kernel:
        try:
            parse_samples(config)
        except ExpressionError as err:
            return [str(err)]
    catalog = present(io, "catalog")
    if catalog is None:
        return []
    try:
        files = list(dataset_parts(catalog))
    except (OSError, StaleOutputError) as err:
        return [str(err)]
    seen: dict[str, Path] = {}
    problems = []
    for path in files:
        if path.stem in seen:
            problems.append(f"{seen[path.stem]} and {path} are both catalog file {path.stem}")
        seen.setdefault(path.stem, path)
    if not kernel and files:
        found = sample_problems(config, files[0])
        if found:  # the same columns would be listed missing in every file
            return problems + found
    fix = "name the survey's columns with select.column_map"
    return problems + parquet_problems(files, file_columns(config), fix=fix)


def sample_problems(config: Any, path: Path) -> list[str]:
    """The samples' expressions against the schema of the catalog file ``path``: a name
    that is not a column (the expression shown with a caret under it), or a column that
    is not a number. An unreadable schema is left to :func:`parquet_problems`."""
    import pyarrow as pa

    from lensdask.catalog.expressions import ExpressionError
    from lensdask.catalog.presets import parse_samples
    from lensdask.formats.parquet import read_schema

    try:
        schema = read_schema(path)
    except (OSError, pa.ArrowException):
        return []
    try:
        selection = parse_samples(config, columns=schema.names)
    except ExpressionError as err:
        return [f"{path}: {err}"]
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal)
    return [
        f"{path}: column {column} (for `{name}`) is {schema.field(column).type}; the samples' "
        "expressions read numbers"
        for name, column in selection.names.items()
        if not any(test(schema.field(column).type) for test in numeric)
    ]


def check_cutouts(config: Any, io: StageIO) -> list[str]:
    """Every band's image of every tile of the targets is there: in the image index where
    the stage has one, else in the images folder (by ``cutouts.image_pattern``)."""
    if "image_index" in io.made:
        return []
    index = present(io, "image_index")
    if index is not None:
        return _index_problems(config, io, Path(index))
    images = io.paths.get("images")
    if "images" in io.made or images is None:
        return []
    images = Path(images)
    if not images.exists():
        try:
            io.need("images")
        except FileNotFoundError as err:  # the stage name is added to every problem
            return [str(err).removeprefix(f"{io.stage}: ")]
    if not images.is_dir():
        return [f"images folder {images} is not a folder"]
    targets = present(io, "targets")
    if targets is None:
        return []
    from lensdask.formats.targets import tile_sources
    from lensdask.units import StaleOutputError

    try:
        tiles = list(tile_sources(targets))
    except (OSError, KeyError, ValueError, StaleOutputError) as err:
        return [f"targets {targets}: {err}"]
    try:
        names = {path.name for path in images.iterdir()}
    except OSError as err:
        return [f"images folder {images}: {err}"]
    missing = [
        name
        for tile in tiles
        for band in config.bands
        if (name := config.image_pattern.format(tile=tile, band=band)) not in names
        and not (images / name).exists()
    ]
    if not missing:
        return []
    shown = ", ".join(missing[:SHOWN]) + (
        f" ... ({len(missing)} in all)" if len(missing) > SHOWN else ""
    )
    return [
        f"{len(missing)} tile image(s) missing in {images} (cutouts.image_pattern "
        f"{config.image_pattern!r}, bands {', '.join(config.bands)}): {shown}"
    ]


def _index_problems(config: Any, io: StageIO, index: Path) -> list[str]:
    """The tiles of the targets whose images the index lacks, by band."""
    from lensdask.formats.image_index import read_image_index
    from lensdask.formats.targets import tile_sources
    from lensdask.units import StaleOutputError

    try:
        frame = read_image_index(index)
    except (OSError, ValueError, StaleOutputError) as err:
        return [f"image index {index}: {err}"]
    targets = present(io, "targets")
    if targets is None or "targets" in io.made:
        return []
    try:
        tiles = list(tile_sources(targets))
    except (OSError, KeyError, ValueError, StaleOutputError) as err:
        return [f"targets {targets}: {err}"]
    have = set(zip(frame["tile"], frame["band"], strict=True))
    missing = [
        f"{tile} {band}" for tile in tiles for band in config.bands if (tile, band) not in have
    ]
    if not missing:
        return []
    shown = ", ".join(missing[:SHOWN]) + (
        f" ... ({len(missing)} in all)" if len(missing) > SHOWN else ""
    )
    return [f"{len(missing)} tile image(s) not in the image index {index}: {shown}"]


def store_problems(cutouts: Path) -> tuple[list[str], dict[str, Any]]:
    """Whether ``cutouts`` is a cutout store with complete tiles; its root attributes."""
    from lensdask.formats.cutout_store import is_store, read_store_attrs, tile_markers
    from lensdask.units import StaleOutputError

    if not is_store(cutouts):
        return [f"{cutouts} is not a cutout store (no zarr.json)"], {}
    try:
        attrs = read_store_attrs(cutouts)
        tiles = tile_markers(cutouts)
    except (OSError, ValueError, KeyError, StaleOutputError) as err:
        return [f"cutout store {cutouts}: {err}"], {}
    if not tiles:
        return [f"cutout store {cutouts} has no complete tile"], attrs
    return [], attrs


def check_simulate(config: Any, io: StageIO) -> list[str]:
    """The cutout store has complete tiles and the band the training set is made of."""
    return store_band_problems(io, config.band, field="simulate.band")


def check_train(config: Any, io: StageIO) -> list[str]:
    """The training set holds every split and its simulation finished."""
    trainset = present(io, "trainset")
    if trainset is None:
        return []
    from lensdask.formats.trainset import check_trainset
    from lensdask.units import StaleOutputError

    try:
        check_trainset(trainset)
    except (OSError, ValueError, StaleOutputError) as err:
        return [f"training set {trainset}: {err}"]
    return []


def model_problems(
    model: Path, attrs: dict[str, Any], cutouts: Path | None, *, resample: bool = False
) -> list[str]:
    """Whether the model of ``model`` can score the cutouts of a store with root attributes
    ``attrs`` (none where the store is made later): its card, normalisation, band, stamp
    size (unless the stamps are resampled to the model's) and channels."""
    from lensdask.formats.model_dir import ModelError, read_card
    from lensdask.normalise import NORMALISATION

    try:
        card = read_card(model)
    except (OSError, ModelError) as err:
        return [str(err)]
    problems = []
    if card.get("normalisation") != NORMALISATION:
        problems.append(
            f"model {model}: trained on images normalised by {card.get('normalisation')!r}; "
            f"this lensdask applies {NORMALISATION!r}"
        )
    shape = list(card.get("input_shape") or [])
    band = card.get("band") or "r"
    if len(shape) != 3:
        return [
            *problems,
            f"model {model}: card.json input_shape {shape} is not [height, width, channels]",
        ]
    if shape[2] != 1:
        problems.append(
            f"model {model}: takes {shape[2]} channels (input_shape {shape}); scoring feeds one "
            f"band ({band}) of the cutouts"
        )
    bands, size = attrs.get("bands"), attrs.get("size")
    if bands is not None and band not in bands:
        problems.append(
            f"model {model}: trained on the {band} band; the cutout store {cutouts} has "
            f"{', '.join(bands)}"
        )
    if size is not None and shape[:2] != [size, size] and not resample:
        problems.append(
            f"model {model}: takes {shape[0]}x{shape[1]} px stamps; the cutout store {cutouts} "
            f"holds {size}x{size}"
        )
    return problems


def check_score(config: Any, io: StageIO) -> list[str]:
    """The cutout store has complete tiles and the model fits them: card intact, same
    normalisation, its band in the store, its input shape the store's stamps in one
    channel."""
    cutouts = present(io, "cutouts")
    problems, attrs = store_problems(cutouts) if cutouts is not None else ([], {})
    model = present(io, "model")
    if model is not None:
        problems += model_problems(model, attrs, cutouts, resample=config.resample)
    if model is not None and cutouts is not None and not problems:
        problems += scale_problems(config, cutouts, model)
    return problems


def scale_problems(config: Any, cutouts: Path, model: Path) -> list[str]:
    """The tiles whose pixel scale the model cannot take (without ``score.resample``), as
    scoring would refuse them (:func:`lensdask.score.scoring.plan_resampling`)."""
    from lensdask.formats.cutout_store import complete_tiles
    from lensdask.formats.model_dir import ModelError, read_card
    from lensdask.score.scoring import plan_resampling

    card = read_card(model)
    try:
        plan_resampling(
            cutouts,
            complete_tiles(cutouts),
            card,
            model_dir=model,
            band=card.get("band") or "r",
            config=config,
        )
    except ModelError as err:
        return [str(err)]
    return []


def check_candidates(config: Any, io: StageIO) -> list[str]:
    """The model's card, where a model is given, and the list of known lenses."""
    problems = []
    model = present(io, "model")
    if model is not None:
        from lensdask.formats.model_dir import ModelError, read_card

        try:
            read_card(model)
        except (OSError, ModelError) as err:
            problems.append(str(err))
    if config.known is not None and not Path(config.known).is_file():
        problems.append(f"candidates.known: {config.known} does not exist")
    return problems


def check_stamps(config: Any, io: StageIO) -> list[str]:
    """The cutout store has complete tiles and the band of the grey stamps."""
    return store_band_problems(io, config.mono_band, field="stamps.mono_band")


def store_band_problems(io: StageIO, band: str, *, field: str) -> list[str]:
    """The cutout store has complete tiles and ``band`` (the value of setting ``field``)."""
    cutouts = present(io, "cutouts")
    if cutouts is None:
        return []
    problems, attrs = store_problems(cutouts)
    bands = attrs.get("bands")
    if not problems and bands is not None and band not in bands:
        problems.append(
            f"{field}: {band!r} is not a band of the cutout store {cutouts} "
            f"(it has {', '.join(bands)})"
        )
    return problems
