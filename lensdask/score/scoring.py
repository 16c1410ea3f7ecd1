"""Score every cutout: one task per tile, the model resident on every worker.

``lensdask score CUTOUTS --model MODEL --out scores.parquet`` registers a
:class:`~lensdask.score.resident.ModelPlugin` so that every worker loads the model once,
then runs one task per complete tile of the cutout store. A task reads its tile's cutouts
chunk by chunk (the next chunk is read in a background thread while the model works on the
current one), applies the normalisation the model card names, predicts in batches of one
fixed size, and commits ``<out>/<tile>.parquet`` (``ID``, ``THELI_NAME``, ``sample``,
``p_cnn``, ``model_id``, ``nonfinite_fraction`` and ``bad_fraction``, the store's fraction
of non-finite, zero-weight or flagged pixels: one row per cutout, in the store's order)
with its completion marker (a committee's scores also hold each member's p_CNN,
``p_cnn_<k>``, all members resident on every worker). A cutout without any finite pixel in
the model's band is never
given to the network: its ``p_cnn`` is NaN, its ``nonfinite_fraction`` 1, and it is counted
per sample (``no_data``). The marker records the hash of the IDs, which must equal the
cutout tile's: no row is lost or duplicated, and :func:`check_scores` verifies it for the
whole store at the end.
A rerun skips tiles scored with the same model from the same cutouts.

Before any task, every tile's pixel scale in the model's band is compared with the card's
``pixel_scale``: tiles that differ by more than 1% are refused (:func:`plan_resampling`),
or with ``score.resample`` their stamps are resampled flux-conservingly to the model's scale
and input size (:mod:`lensdask.score.resample`) before normalising; their
``nonfinite_fraction`` is then that of the resampled stamps the network saw, and their
lineage records the resampling, so that a tile resampled otherwise (or no longer) is
scored again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.config import ScoreConfig
from lensdask.formats.cutout_store import (
    open_band,
    read_bad_fraction,
    read_store_attrs,
    read_tile_attrs,
    read_tile_columns,
    tile_markers,
)
from lensdask.formats.scores import SCORE_COLUMNS, commit_tile_scores, member_column
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.score.resample import METHOD
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import (
    Marker,
    clear_marker,
    config_hash,
    ids_hash,
    marker_digest,
    read_marker,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "score"


def prefetched_chunks(array: Any, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, array[start:start + step])`` over the first axis of a (Zarr) array, each
    chunk read in a background thread while the caller works on the previous one."""
    n = array.shape[0]
    starts = list(range(0, n, step))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lensdask-read") as pool:
        pending = pool.submit(lambda s: array[s : s + step], starts[0])
        for index, start in enumerate(starts):
            data = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(lambda s: array[s : s + step], starts[index + 1])
            yield start, np.asarray(data)


class BandStack:
    """The cutouts of several bands of a tile as one lazy array (N, size, size, B): a slice
    of the first axis reads that slice of every band."""

    def __init__(self, arrays: list[Any]) -> None:
        self.arrays = arrays
        self.shape = (*arrays[0].shape, len(arrays))

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.stack([np.asarray(array[rows]) for array in self.arrays], axis=-1)


def score_tile(
    cutout_ids_hash: str,
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    cutouts: Path,
    model_dir: Path,
    model_id: str,
    band: str,
    config: ScoreConfig,
    resample_from: Mapping[str, float] | None = None,
    model_scale: float | None = None,
    bands: tuple[str, ...] = (),
    normalisation: str | None = None,
) -> dict[str, Any]:
    """Score the cutouts of tile ``unit`` and commit ``<out>/<tile>.parquet``.

    Parameters
    ----------
    cutout_ids_hash : str
        The hash of the tile's IDs in the cutout store's marker; the scores must match it.
    out : path
        The scores folder.
    unit, chash, lineage
        Tile name, configuration hash and inputs (see :func:`lensdask.runner.run_stage`).
    cutouts : path
        The cutout store.
    model_dir : path
        The model directory; ``model_id`` its planned id.
    band : str
        The band the model was trained on.
    config : ScoreConfig
        Batch size, read chunk, mixed precision.
    resample_from : mapping of str to float, arcsec/px, optional
        The tiles whose stamps are resampled to ``model_scale`` (arcsec/px) and the
        model's input size before scoring (:func:`lensdask.score.resample.resample_stamps`),
        with their pixel scale; other tiles are scored as they are.
    bands : tuple of str
        The model's input bands in channel order, where it takes more than ``band``.
    normalisation : str, optional
        The card's normalisation (:func:`lensdask.normalise.normalise_for`; default: the
        one-band transform).

    Returns
    -------
    dict
        ``rows``, ``per_sample`` counts, ``no_data`` (cutouts without a finite pixel, not
        scored) per sample, ``resampled_from`` (the stamps' pixel scale where they were
        resampled, else None) and ``seconds`` spent.
    """
    from lensdask.normalise import NORMALISATION, nonfinite_fraction, normalise_for
    from lensdask.score.resident import load_resident, worker_threads

    channels = tuple(bands) or (band,)
    normalisation = normalisation or NORMALISATION

    began = time.perf_counter()
    tile = unit
    clear_marker(out, tile)
    resident = load_resident(model_dir, model_id, config=config, threads=worker_threads())
    columns = read_tile_columns(cutouts, tile, ["ID", "sample"])
    has = list(read_tile_attrs(cutouts, tile)["bands"])
    missing = [name for name in channels if name not in has]
    if missing:
        raise KeyError(f"{cutouts}/{tile}: no band(s) {missing} the model takes (has {has})")
    at = [has.index(name) for name in channels]
    bad = read_bad_fraction(cutouts, tile)[:, at].max(axis=1)  # of the stamps as cut out
    ids = np.asarray(columns["ID"], dtype=object)
    sample = np.asarray(columns["sample"], dtype=object)
    images = open_band(cutouts, tile, band)
    if len(channels) > 1:
        images = BandStack([open_band(cutouts, tile, name) for name in channels])
    if images.shape[0] != ids.size:
        raise OSError(f"{cutouts}/{tile}: {images.shape[0]} {band} cutouts for {ids.size} IDs")
    from_scale = (resample_from or {}).get(tile)
    if from_scale is not None:
        from lensdask.score.resample import resample_stamps

        size = int(resident.card["input_shape"][0])
    step = -(-config.read_chunk // resident.batch_size) * resident.batch_size
    members = np.full((len(resident.models), ids.size), np.nan, dtype=np.float32)
    nonfinite = np.ones(ids.size, dtype=np.float32)
    for start, chunk in prefetched_chunks(images, step):
        stop = start + chunk.shape[0]
        if from_scale is not None:
            chunk = np.stack(
                [
                    resample_stamps(plane, from_scale=from_scale, to_scale=model_scale, size=size)
                    for plane in (np.moveaxis(chunk, -1, 0) if chunk.ndim == 4 else [chunk])
                ],
                axis=-1,
            )
            chunk = chunk[..., 0] if len(channels) == 1 else chunk
        # of every band's pixels together
        nonfinite[start:stop] = fraction = nonfinite_fraction(chunk.reshape(*chunk.shape[:2], -1))
        has_data = fraction < 1  # a stamp without a finite pixel is not an image
        if has_data.all():
            members[:, start:stop] = resident.predict_members(normalise_for(chunk, normalisation))
        elif has_data.any():
            members[:, start:stop][:, has_data] = resident.predict_members(
                normalise_for(chunk[has_data], normalisation)
            )
    committee = resident.combination is not None
    p_cnn = resident.combine(members)  # NaN where no member scored
    written = ids_hash(ids.tolist())
    if written != cutout_ids_hash:
        raise OSError(f"{cutouts}/{tile}: its IDs changed since the tile was cut out")
    rel, size = commit_tile_scores(
        out,
        tile,
        ids=ids,
        sample=sample,
        p_cnn=p_cnn,
        model_id=model_id,
        nonfinite_fraction=nonfinite,
        bad_fraction=np.maximum(bad, nonfinite),
        members=members if committee else None,
    )
    per_sample = {str(k): int(n) for k, n in Counter(sample.tolist()).items()}
    no_data = {str(k): int(n) for k, n in Counter(sample[nonfinite >= 1].tolist()).items()}
    seconds = time.perf_counter() - began
    write_marker(
        out,
        Marker(
            unit=tile,
            rows=int(ids.size),
            ids_hash=written,
            config_hash=chash,
            inputs=lineage,
            files={rel: size},
            extra={
                "per_sample": per_sample,
                "no_data": no_data,
                "model_id": model_id,
                "device": resident.device,
                "resampled_from": from_scale,
            },
        ),
    )
    return {
        "rows": int(ids.size),
        "per_sample": per_sample,
        "no_data": no_data,
        "resampled_from": from_scale,
        "seconds": seconds,
    }


def check_scores(out: str | Path, cutouts: str | Path) -> list[str]:
    """Problems that keep the scores from matching the cutout store one to one.

    Every complete tile of ``cutouts`` needs a complete score file with the same number of
    rows and the same IDs in the same order (compared by the markers' ID hashes; each task
    checked its file against the data before committing it).

    Returns
    -------
    list of str
        One line per tile that is missing or differs; empty when the scores are complete.
    """
    problems = []
    for tile, cut in tile_markers(cutouts).items():
        scored = read_marker(Path(out), tile)
        if scored is None:
            problems.append(f"{tile}: not scored ({cut.rows} cutouts)")
        elif (scored.rows, scored.ids_hash) != (cut.rows, cut.ids_hash):
            problems.append(f"{tile}: {scored.rows} scores for {cut.rows} cutouts or different IDs")
    return problems


def _tiles_named(tiles: list[str], *, first: int = 3) -> str:
    """``"5 tiles (A, B, C and 2 more)"``."""
    shown = ", ".join(tiles[:first])
    more = f" and {len(tiles) - first} more" if len(tiles) > first else ""
    return f"{len(tiles)} tile{'s' if len(tiles) != 1 else ''} ({shown}{more})"


def card_pixel_scale(card: dict[str, Any], band: str) -> float | None:
    """arcsec/px: the pixel scale of the stamps the model was made for (its card's
    ``pixel_scale``, a number or one per band), None where the card records none."""
    scale = card.get("pixel_scale")
    if isinstance(scale, Mapping):
        scale = scale.get(band)
    return None if scale is None else float(scale)


def plan_resampling(
    cutouts: Path,
    tiles: list[str],
    card: dict[str, Any],
    *,
    model_dir: Path,
    band: str,
    config: ScoreConfig,
) -> dict[str, float]:
    """The tiles whose stamps the model cannot take at their pixel scale, to be resampled.

    A tile's stamps fit the model when their pixel scale in the model's ``band`` (the tile
    group's ``pixel_scale``) is within 1% of the card's ``pixel_scale``
    (:func:`lensdask.score.resample.scale_differs`).

    Returns
    -------
    dict of str to float, arcsec/px
        The tiles that differ, with their pixel scale: empty when all fit (or when the card
        records no pixel scale, as cards of models made before it did; a warning says so).

    Raises
    ------
    lensdask.formats.model_dir.ModelError
        If tiles differ and ``config.resample`` is off, naming the tiles and the scales; if
        a tile records no pixel scale; if ``config.resample`` is on and the card records
        none; or if resampled stamps would not cover the model's field.
    """
    from lensdask.formats.cutout_store import read_tile_attrs
    from lensdask.formats.model_dir import ModelError
    from lensdask.score.resample import SCALE_TOLERANCE, scale_differs

    model_scale = card_pixel_scale(card, band)
    if model_scale is None:
        if config.resample:
            raise ModelError(
                f"{model_dir}: card.json records no pixel_scale, so score.resample has no "
                "scale to resample the stamps to"
            )
        logger.warning(
            "score: the card of %s records no pixel_scale: the stamps' pixel scale is not "
            "checked against the model's",
            model_dir,
        )
        return {}
    scales: dict[str, float | None] = {}
    for tile in tiles:
        scale = (read_tile_attrs(cutouts, tile).get("pixel_scale") or {}).get(band)
        scales[tile] = None if scale is None else float(scale)
    unknown = [tile for tile, scale in scales.items() if scale is None]
    if unknown:
        raise ModelError(
            f"{cutouts}: {_tiles_named(unknown)} record no {band}-band pixel_scale; the model "
            f'{model_dir} takes {model_scale:.4g}"/px stamps'
        )
    differ = {tile: scale for tile, scale in scales.items() if scale_differs(scale, model_scale)}
    if differ and not config.resample:
        groups: dict[float, list[str]] = {}
        for tile, scale in differ.items():
            groups.setdefault(scale, []).append(tile)
        found = "; ".join(
            f'{_tiles_named(names)} have {band}-band stamps of {scale:.4g}"/px'
            for scale, names in sorted(groups.items())
        )
        raise ModelError(
            f'{cutouts}: {found}; the model {model_dir} takes {model_scale:.4g}"/px (its '
            f"card's pixel_scale, within {SCALE_TOLERANCE:.0%}): score them with a model made "
            "for their scale, or resample them (score.resample, --resample)"
        )
    height = int(card["input_shape"][0])
    size = read_store_attrs(cutouts).get("size")
    short = [
        tile
        for tile, scale in differ.items()
        if size is not None and size * scale < height * model_scale * (1 - SCALE_TOLERANCE)
    ]
    if short:
        raise ModelError(
            f"{cutouts}: the {size}x{size} px stamps of {_tiles_named(short)} cover "
            f'{size * differ[short[0]]:.4g}" a side; the model {model_dir} takes '
            f'{height * model_scale:.4g}" ({height} px of {model_scale:.4g}"): resampled, '
            "they would leave its edges empty"
        )
    return differ


@dataclass(frozen=True)
class ScoreReport(UnitCounts):
    """Outcome of :func:`score_cutouts`."""

    out: Path
    model_id: str
    tiles: int
    rows: int
    """Cutouts scored now."""
    per_sample: dict[str, int]
    """Cutouts scored now, by sample."""
    no_data: dict[str, int]
    """Cutouts of those without any finite pixel in the model's band, by sample: not given
    to the network, their ``p_cnn`` is NaN."""
    problems: list[str]
    """Tiles whose scores do not match the cutout store (see :func:`check_scores`)."""
    units: UnitReport
    resampled: dict[str, float] = field(default_factory=dict)
    """Tiles of the store whose stamps are scored resampled to ``model_scale``, with their
    own pixel scale (arcsec/px) (``score.resample``)."""
    model_scale: float | None = None
    """arcsec/px: the model card's pixel scale (None where the card records none)."""

    @property
    def resampled_now(self) -> int:
        """Tiles scored by this run from resampled stamps."""
        return sum(1 for tile in self.units.results if tile in self.resampled)

    def resampled_summary(self) -> str | None:
        """One sentence on the tiles resampled (None where none is)."""
        if not self.resampled:
            return None
        groups = Counter(self.resampled.values())
        scales = ", ".join(f'{n} from {scale:.4g}"/px' for scale, n in sorted(groups.items()))
        return (
            f"{len(self.resampled)} of {self.tiles} tiles resampled ({scales}) to the model's "
            f'{self.model_scale:.4g}"/px, flux-conserving (reproject), {self.resampled_now} '
            "of them scored now"
        )


def score_cutouts(
    cutouts: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    config: ScoreConfig | None = None,
    client: Any,
    progress: bool = True,
) -> ScoreReport:
    """Score every cutout of ``cutouts`` with the model of ``model_dir`` into ``out``.

    Parameters
    ----------
    cutouts : path
        The cutout store (``lensdask cutouts``).
    model_dir : path
        The model directory (``lensdask train``): ``model.keras`` + ``card.json``.
    out : path
        The scores folder, a Parquet dataset of one file per tile (``scores.parquet``).
    config : ScoreConfig, optional
        Batch size, read chunk, mixed precision.
    client : distributed.Client
        The injected Dask client: the model is loaded once per worker, one task per tile.
    progress : bool
        Show a progress bar over tiles.

    Raises
    ------
    lensdask.formats.model_dir.ModelError
        If the model directory is missing or damaged, or does not fit the cutouts.
    FileNotFoundError
        If the cutout store has no complete tile.
    """
    from lensdask.formats.model_dir import ModelError, read_card
    from lensdask.normalise import known_normalisations
    from lensdask.score.resident import ModelPlugin

    config = config or ScoreConfig()
    cutouts, model_dir, out = Path(cutouts), Path(model_dir), Path(out)
    card = read_card(model_dir)
    model_id = card["model_id"]
    band = card.get("band") or "r"
    bands = tuple(card.get("bands") or [band])  # the model's channels, in order
    if card.get("normalisation") not in known_normalisations():
        raise ModelError(
            f"{model_dir}: the model was trained on images normalised by "
            f"{card.get('normalisation')!r}; this lensdask applies one of "
            f"{known_normalisations()}"
        )
    markers = tile_markers(cutouts)
    if not markers:
        raise FileNotFoundError(f"{cutouts}: no complete tile of cutouts to score")
    root = read_store_attrs(cutouts)
    missing = [name for name in bands if name not in root.get("bands", [])]
    if missing:
        raise ModelError(
            f"{model_dir}: the model was trained on the {', '.join(bands)} band(s); "
            f"{cutouts} has {root.get('bands')}, without {', '.join(missing)}"
        )
    # tiles of another pixel scale are refused, or resampled to the model's scale and size
    resample_from = plan_resampling(
        cutouts, sorted(markers), card, model_dir=model_dir, band=band, config=config
    )
    model_scale = card_pixel_scale(card, band)
    size = root.get("size")
    if (
        size is not None
        and list(card["input_shape"][:2]) != [size, size]
        and len(resample_from) < len(markers)
    ):
        raise ModelError(
            f"{model_dir}: the model takes {card['input_shape'][:2]} px stamps; {cutouts} "
            f"holds {size}x{size}"
        )
    inputs = {tile: marker.ids_hash for tile, marker in markers.items()}
    members = (card.get("committee") or {}).get("members", [])
    columns = [*SCORE_COLUMNS, *(member_column(k) for k in range(len(members)))]
    chash = config_hash(
        {
            "model_id": model_id,
            "band": band,
            "normalisation": card.get("normalisation"),
            "columns": columns,  # tiles scored into another layout are redone
            **({"bands": list(bands)} if len(bands) > 1 else {}),
        }
    )
    # a tile is scored again when its cutouts changed
    lineage = {
        tile: {"cutouts": marker_digest(marker), "model": model_id}
        for tile, marker in markers.items()
    }
    for tile, scale in resample_from.items():  # and when it is resampled, or no longer
        lineage[tile]["resample"] = f"{METHOD} from {scale!r} to {model_scale!r} arcsec/px"
    report = run_stage(
        client,
        score_tile,
        out,
        inputs,
        chash=chash,
        lineage=lineage,
        stage=STAGE,
        progress=progress,
        # where tiles are left: every worker loads the model now, once (and workers that
        # join later load it too)
        prepare=lambda: client.register_plugin(ModelPlugin(model_dir, model_id, config=config)),
        cutouts=cutouts,
        model_dir=model_dir,
        model_id=model_id,
        band=band,
        config=config,
        resample_from=resample_from,
        model_scale=model_scale,
        bands=bands if len(bands) > 1 else (),
        normalisation=card["normalisation"],
    )
    problems = check_scores(out, cutouts)
    per_sample, no_data = Counter(), Counter()
    for result in report.results.values():
        per_sample.update(result["per_sample"])  # update keeps zero counts, unlike +
        no_data.update(result.get("no_data", {}))
    per_sample, no_data = dict(per_sample), dict(no_data)
    rows = sum(result["rows"] for result in report.results.values())
    logger.info(
        "score: %d tiles scored, %d skipped (complete), %d failed; %d cutouts scored with "
        "model %s; %d without any finite pixel in the %s band, not scored (p_cnn NaN)",
        len(report.results),
        len(report.skipped),
        len(report.failures),
        rows,
        model_id,
        sum(no_data.values()),
        band,
    )
    for problem in problems:
        logger.error("score: %s", problem)
    result = ScoreReport(
        out=out,
        model_id=model_id,
        tiles=len(inputs),
        rows=rows,
        per_sample=per_sample,
        no_data=no_data,
        problems=problems,
        units=report,
        resampled=resample_from,
        model_scale=model_scale,
    )
    if resample_from:
        logger.info("score: %s", result.resampled_summary())
    return result


def run(config: ScoreConfig, io: StageIO, *, client: Any, progress: bool = True) -> StageOutcome:
    """The ``score`` stage: :func:`score_cutouts` of the ``cutouts`` with the ``model``, into
    the model's own folder of the ``scores`` (``<scores>/<model_id>``), so that the scores
    of several models live side by side."""
    from lensdask.formats.model_dir import read_card

    cutouts, model = io.need("cutouts"), io.need("model")
    report = score_cutouts(
        cutouts,
        model,
        io.out("scores") / read_card(model)["model_id"],
        config=config,
        client=client,
        progress=progress,
    )
    parts = ", ".join(f"{n} {sample}" for sample, n in sorted(report.per_sample.items()))
    lines = [
        f"score: {report.rows} cutouts scored now ({parts or 'none'}) in {report.written} "
        f"tiles, {report.skipped} tiles already scored, {len(report.units.failures)} "
        f"failed; model {report.model_id} -> {report.out}"
    ]
    counts: dict[str, Any] = {"cutouts scored now": report.rows}
    if report.resampled:
        counts["tiles resampled to the model's pixel scale"] = len(report.resampled)
        lines.append(f"score: {report.resampled_summary()}")
    if any(report.no_data.values()):
        empty = ", ".join(f"{n} {sample}" for sample, n in sorted(report.no_data.items()))
        counts["cutouts without data (p_cnn NaN)"] = sum(report.no_data.values())
        lines.append(
            f"score: {sum(report.no_data.values())} of those cutouts ({empty}) have no finite "
            "pixel in the model's band: not scored (p_cnn NaN, nonfinite_fraction 1)"
        )
    return StageOutcome(
        reports=[report.units],
        outputs={"scores": report.out},
        counts=counts,
        problems=list(report.problems),
        lines=lines,
    )
