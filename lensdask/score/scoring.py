"""Score every cutout: one task per tile, the model resident on every worker.

``lensdask score CUTOUTS --model MODEL --out scores.parquet`` registers a
:class:`~lensdask.score.resident.ModelPlugin` so that every worker loads the model once,
then runs one task per complete tile of the cutout store. A task reads its tile's cutouts
chunk by chunk (the next chunk is read in a background thread while the model works on the
current one), applies the normalisation the model card names, predicts in batches of one
fixed size, and commits ``<out>/<tile>.parquet`` (``ID``, ``THELI_NAME``, ``sample``,
``p_cnn``, ``model_id``: one row per cutout, in the store's order) with its completion
marker. The marker records the hash of the IDs, which must equal the cutout tile's: no row
is lost or duplicated, and :func:`check_scores` verifies it for the whole store at the end.
A rerun skips tiles scored with the same model from the same cutouts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.config import ScoreConfig
from lensdask.formats.cutout_store import (
    open_band,
    read_store_attrs,
    read_tile_columns,
    tile_markers,
)
from lensdask.formats.scores import commit_tile_scores
from lensdask.runner import UnitCounts, UnitReport, run_stage
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

    Returns
    -------
    dict
        ``rows``, ``per_sample`` counts and ``seconds`` spent.
    """
    from lensdask.normalise import normalise_stamps
    from lensdask.score.resident import load_resident, worker_threads

    began = time.perf_counter()
    tile = unit
    clear_marker(out, tile)
    resident = load_resident(model_dir, model_id, config=config, threads=worker_threads())
    columns = read_tile_columns(cutouts, tile, ["ID", "sample"])
    ids = np.asarray(columns["ID"], dtype=object)
    sample = np.asarray(columns["sample"], dtype=object)
    images = open_band(cutouts, tile, band)
    if images.shape[0] != ids.size:
        raise OSError(f"{cutouts}/{tile}: {images.shape[0]} {band} cutouts for {ids.size} IDs")
    step = -(-config.read_chunk // resident.batch_size) * resident.batch_size
    p_cnn = np.empty(ids.size, dtype=np.float32)
    for start, chunk in prefetched_chunks(images, step):
        p_cnn[start : start + chunk.shape[0]] = resident.predict(normalise_stamps(chunk))
    written = ids_hash(ids.tolist())
    if written != cutout_ids_hash:
        raise OSError(f"{cutouts}/{tile}: its IDs changed since the tile was cut out")
    rel, size = commit_tile_scores(
        out, tile, ids=ids, sample=sample, p_cnn=p_cnn, model_id=model_id
    )
    per_sample = {str(k): int(n) for k, n in Counter(sample.tolist()).items()}
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
            extra={"per_sample": per_sample, "model_id": model_id, "device": resident.device},
        ),
    )
    return {"rows": int(ids.size), "per_sample": per_sample, "seconds": seconds}


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
    problems: list[str]
    """Tiles whose scores do not match the cutout store (see :func:`check_scores`)."""
    units: UnitReport


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
    from lensdask.normalise import NORMALISATION
    from lensdask.score.resident import ModelPlugin

    config = config or ScoreConfig()
    cutouts, model_dir, out = Path(cutouts), Path(model_dir), Path(out)
    card = read_card(model_dir)
    model_id = card["model_id"]
    band = card.get("band") or "r"
    if card.get("normalisation") != NORMALISATION:
        raise ModelError(
            f"{model_dir}: the model was trained on images normalised by "
            f"{card.get('normalisation')!r}; this lensdask applies {NORMALISATION!r}"
        )
    markers = tile_markers(cutouts)
    if not markers:
        raise FileNotFoundError(f"{cutouts}: no complete tile of cutouts to score")
    root = read_store_attrs(cutouts)
    if band not in root.get("bands", []):
        raise ModelError(
            f"{model_dir}: the model was trained on the {band} band; {cutouts} has "
            f"{root.get('bands')}"
        )
    size = root.get("size")
    if size is not None and list(card["input_shape"][:2]) != [size, size]:
        raise ModelError(
            f"{model_dir}: the model takes {card['input_shape'][:2]} px stamps; {cutouts} "
            f"holds {size}x{size}"
        )
    inputs = {tile: marker.ids_hash for tile, marker in markers.items()}
    chash = config_hash(
        {"model_id": model_id, "band": band, "normalisation": card.get("normalisation")}
    )
    # a tile is scored again when its cutouts changed
    lineage = {
        tile: {"cutouts": marker_digest(marker), "model": model_id}
        for tile, marker in markers.items()
    }
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
    )
    problems = check_scores(out, cutouts)
    per_sample: dict[str, int] = {}
    for result in report.results.values():
        for sample, n in result["per_sample"].items():
            per_sample[sample] = per_sample.get(sample, 0) + n
    rows = sum(result["rows"] for result in report.results.values())
    logger.info(
        "score: %d tiles scored, %d skipped (complete), %d failed; %d cutouts scored with model %s",
        len(report.results),
        len(report.skipped),
        len(report.failures),
        rows,
        model_id,
    )
    for problem in problems:
        logger.error("score: %s", problem)
    return ScoreReport(
        out=out,
        model_id=model_id,
        tiles=len(inputs),
        rows=rows,
        per_sample=per_sample,
        problems=problems,
        units=report,
    )


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
    return StageOutcome(
        reports=[report.units],
        outputs={"scores": report.out},
        counts={"cutouts scored now": report.rows},
        problems=list(report.problems),
        lines=[
            f"score: {report.rows} cutouts scored now ({parts or 'none'}) in {report.written} "
            f"tiles, {report.skipped} tiles already scored, {len(report.units.failures)} "
            f"failed; model {report.model_id} -> {report.out}"
        ],
    )
