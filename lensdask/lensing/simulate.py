"""The training-set job: mock lenses painted on real LRG cutouts, and real negatives.

The training set's layout (``trainset.zarr``) is :mod:`lensdask.formats.trainset`. The
driver makes a plan: which cutout each example comes from and its label, from the run seed
alone. The test split's LRGs (its negatives, and the hosts of its mock lenses) are kept out
of the other splits. Each batch of ``batch_size`` examples is one task that draws from
``SeedSequence([seed, split, batch])`` and writes exactly one chunk of every array, then its
marker; so the bytes are the same whatever the number of workers, and a rerun redoes only
the batches without a marker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensdask import __version__
from lensdask.config import SimulateConfig
from lensdask.formats.cutout_store import (
    complete_tiles,
    is_store,
    read_bad_fraction,
    read_band_rows,
    read_tile_attrs,
    read_tile_columns,
)
from lensdask.formats.files import jsonable
from lensdask.formats.targets import read_truth
from lensdask.formats.trainset import SPLITS, prepare_trainset, write_batch_arrays
from lensdask.normalise import NORMALISATION
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import (
    Marker,
    clear_marker,
    config_hash,
    ids_hash,
    read_manifest,
    write_marker,
)

logger = logging.getLogger(__name__)

STAGE = "simulate"
PLAN_STREAM = 2**31 - 1
"""Second entropy word of the plan's seed, ``SeedSequence([seed, PLAN_STREAM])``; batches
use ``[seed, split_index, batch]``, so the streams never coincide."""
TRUTH_KINDS = ("spiral", "ring", "merger")
"""Negative kinds taken from a ``TRUE_TYPE`` column of the targets."""
RENDER_CHUNK = 32
"""Mock lenses rendered at once inside a batch (bounds the memory of the ray grids)."""


class NoCutoutsError(FileNotFoundError):
    """The cutout store has no usable cutouts of a kind the training set needs."""


def cutout_inventory(cutouts: str | Path, *, band: str, targets: str | Path | None = None):
    """Every clean cutout of a store with its kind, as a DataFrame sorted by (tile, row).

    A cutout is clean when it lies wholly inside its image (no NaN pixel in ``band``). Its
    kind is its sample (``LRG`` or ``BG``), or its ``TRUE_TYPE`` where the targets have one
    in :data:`TRUTH_KINDS`. Galaxies flagged ``TRUE_LENS`` in the targets (lenses injected into
    a mock survey) are left out.

    Parameters
    ----------
    cutouts : path
        The cutout store (``lensdask cutouts``).
    band : str
        Band the training set is made from.
    targets : path, optional
        The targets dataset, for the ``TRUE_TYPE`` and ``TRUE_LENS`` columns of mock surveys.

    Returns
    -------
    pandas.DataFrame
        Columns ``ID``, ``tile``, ``row`` (index in the tile's group), ``kind`` and
        ``bad_fraction`` (of non-finite, zero-weight and flagged pixels in ``band``;
        :func:`leave_out_bad` drops the cutouts with too many).

    Raises
    ------
    NoCutoutsError
        If ``cutouts`` is not a cutout store or has no complete tile.
    KeyError
        If a tile lacks ``band``.
    """
    import pandas as pd

    cutouts = Path(cutouts)
    if not is_store(cutouts):
        raise NoCutoutsError(f"{cutouts}: not a cutout store (make one with `lensdask cutouts`)")
    tiles = complete_tiles(cutouts)
    if not tiles:
        raise NoCutoutsError(f"{cutouts}: no complete tile in the cutout store")
    frames = []
    for tile in tiles:
        bands = list(read_tile_attrs(cutouts, tile)["bands"])
        if band not in bands:
            raise KeyError(f"{cutouts}/{tile}: no band {band!r} (has {bands})")
        columns = read_tile_columns(cutouts, tile, ["ID", "sample", "edge", "nonfinite_fraction"])
        nonfinite_fraction = columns["nonfinite_fraction"][:, bands.index(band)]
        bad = read_bad_fraction(cutouts, tile, fallback=columns["nonfinite_fraction"])
        frame = pd.DataFrame(
            {
                "ID": columns["ID"].astype(object),
                "tile": tile,
                "row": np.arange(nonfinite_fraction.size),
                "kind": columns["sample"].astype(object),
                "bad_fraction": bad[:, bands.index(band)].astype(np.float64),
            }
        )
        frames.append(frame[(nonfinite_fraction == 0) & ~columns["edge"]])
    inventory = pd.concat(frames, ignore_index=True)
    if targets is not None:
        inventory = _apply_truth(inventory, Path(targets))
    return inventory.reset_index(drop=True)


def leave_out_bad(inventory, *, max_bad_fraction: float):
    """The cutouts of an inventory with at most ``max_bad_fraction`` bad pixels, and how
    many of each kind were left out (a star's halo, missing data: neither a negative nor a
    lens host).

    Returns
    -------
    inventory : pandas.DataFrame
        The rows kept, in order.
    left_out : dict of str to int
        Cutouts left out, by kind.
    """
    bad = inventory["bad_fraction"].to_numpy(dtype=np.float64) > max_bad_fraction
    left_out = {
        str(kind): int(n) for kind, n in inventory["kind"][bad].value_counts().sort_index().items()
    }
    return inventory[~bad].reset_index(drop=True), left_out


def _apply_truth(inventory, targets: Path):
    """Kinds from ``TRUE_TYPE`` and removal of ``TRUE_LENS`` galaxies, where the targets
    have those columns."""
    truth = read_truth(targets)
    if truth is None:
        return inventory
    truth = truth.reindex(inventory["ID"])
    if "TRUE_TYPE" in truth:
        true_type = truth["TRUE_TYPE"].astype(str).to_numpy()
        special = np.isin(true_type, TRUTH_KINDS)
        inventory.loc[special, "kind"] = true_type[special]
    if "TRUE_LENS" in truth:
        lens = truth["TRUE_LENS"].fillna(False).to_numpy(dtype=bool)
        if lens.any():
            logger.info("simulate: leaving out %d injected lenses of the mock survey", lens.sum())
        inventory = inventory[~lens]
    return inventory


def _even_draw(pool, n: int, rng: np.random.Generator, *, what: str, notes: list[str]):
    """``n`` rows of ``pool``, each used as evenly as possible (whole permutations first)."""
    if n == 0:
        return pool.iloc[:0]
    if len(pool) == 0:
        raise NoCutoutsError(f"no cutouts of {what} to draw {n} examples from")
    if n > len(pool):
        notes.append(f"{n} {what} examples from {len(pool)} cutouts: reused")
    repeats = -(-n // len(pool))
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(repeats)])[:n]
    return pool.iloc[order]


def _shares(config: SimulateConfig, available: dict[str, int], notes: list[str]) -> dict[str, int]:
    """Number of negatives of each kind, from the mix restricted to available kinds."""
    mix = {kind: share for kind, share in config.negative_mix.items() if share > 0}
    missing = [kind for kind in mix if not available.get(kind)]
    if missing:
        notes.append(f"no cutouts of kind(s) {missing}; their share goes to the others")
    mix = {kind: share for kind, share in mix.items() if kind not in missing}
    if config.negatives and not mix:
        raise NoCutoutsError(f"none of the negative kinds {list(config.negative_mix)} has cutouts")
    total = sum(mix.values())
    quota = {kind: config.negatives * share / total for kind, share in mix.items()}
    counts = {kind: int(q + 1e-9) for kind, q in quota.items()}  # 5.999... is 6
    left = max(0, config.negatives - sum(counts.values()))
    # Largest remainders first, so every kind gets its share to within one.
    for kind in sorted(mix, key=lambda kind: counts[kind] - quota[kind])[:left]:
        counts[kind] += 1
    return counts


def plan_trainset(inventory, *, config: SimulateConfig, notes: list[str] | None = None):
    """Which cutout each example comes from, its label and split (pure; seed-determined).

    Parameters
    ----------
    inventory : pandas.DataFrame
        From :func:`cutout_inventory`.
    config : SimulateConfig
        Sizes, negative mix, validation fraction and seed.
    notes : list of str, optional
        Where to add what the plan had to make do with (cutouts reused, a negative kind
        missing), for the caller to report where it makes the examples; without it they
        are logged as warnings.

    Returns
    -------
    pandas.DataFrame
        One row per example, ordered by split (train, val, test) and shuffled inside each:
        ``split``, ``label`` (1 lens, 0 negative), ``kind``, ``ID``, ``tile``, ``row``.

    Raises
    ------
    NoCutoutsError
        If there are too few LRG cutouts for the test split and the rest, naming the store's
        count and the configuration keys.
    """
    import pandas as pd

    if notes is None:
        notes = []
        plan = plan_trainset(inventory, config=config, notes=notes)
        for note in notes:
            logger.warning("simulate: %s", note)
        return plan
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, PLAN_STREAM]))
    lrg = inventory[inventory["kind"] == "LRG"]
    n_test = config.test_negatives or (-(-len(lrg) // 10) if config.test_positives else 0)
    needs_train = config.positives > 0 or config.negative_mix.get("LRG", 0) > 0
    if len(lrg) < n_test + needs_train or (n_test == 0 and config.test_positives):
        raise NoCutoutsError(
            f"the cutouts have {len(lrg)} clean LRGs; simulate.test_negatives = "
            f"{config.test_negatives} of them go to the test split and the other splits need "
            "more: make more LRG cutouts or lower simulate.test_negatives"
        )
    order = rng.permutation(len(lrg))
    test_lrg, train_lrg = lrg.iloc[order[:n_test]], lrg.iloc[order[n_test:]]

    def rows(pool, n: int, label: int, what: str):
        drawn = _even_draw(pool, n, rng, what=what, notes=notes)
        return drawn.assign(label=np.int8(label), kind=drawn["kind"] if label == 0 else "lens")

    kinds = inventory["kind"]
    fit = [rows(train_lrg, config.positives, 1, "LRG lens hosts")]
    counts = _shares(config, kinds.value_counts().to_dict(), notes)
    for kind, n in counts.items():
        pool = train_lrg if kind == "LRG" else inventory[kinds == kind]
        fit.append(rows(pool, n, 0, kind))
    fit_rows = pd.concat(fit, ignore_index=True)
    fit_rows = fit_rows.iloc[rng.permutation(len(fit_rows))]
    n_val = round(config.validation_fraction * len(fit_rows))
    test_rows = pd.concat(
        [
            rows(test_lrg, config.test_positives, 1, "test LRG lens hosts"),
            test_lrg.assign(label=np.int8(0)),
        ],
        ignore_index=True,
    )
    test_rows = test_rows.iloc[rng.permutation(len(test_rows))]
    plan = pd.concat(
        [
            fit_rows.iloc[n_val:].assign(split="train"),
            fit_rows.iloc[:n_val].assign(split="val"),
            test_rows.assign(split="test"),
        ],
        ignore_index=True,
    )
    return plan[["split", "label", "kind", "ID", "tile", "row"]]


def plan_hash(plan) -> str:
    """Short hash of a plan's content (splits, labels, kinds and source cutouts)."""
    digest = hashlib.sha256()
    for column in ("split", "label", "kind", "ID", "tile", "row"):
        digest.update(column.encode())
        digest.update("\x00".join(map(str, plan[column].tolist())).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Batch:
    """One work unit: ``rows`` of the plan, written at ``start`` of split ``split``."""

    split: str
    index: int
    start: int
    rows: Any


def plan_batches(plan, *, batch_size: int) -> dict[str, Batch]:
    """The plan cut into batches of ``batch_size`` per split, by unit name."""
    batches = {}
    for split in SPLITS:
        part = plan[plan["split"] == split].reset_index(drop=True)
        for index, start in enumerate(range(0, len(part), batch_size)):
            rows = part.iloc[start : start + batch_size]
            batches[f"{split}-{index:05d}"] = Batch(split, index, start, rows)
    return batches


def parameter_names(config: SimulateConfig) -> list[str]:
    """Columns of ``<split>/params``: the drawn parameters, then derived quantities."""
    from lensdask.lensing.mocks import draw_lenses

    drawn = draw_lenses(0, np.random.default_rng(0), config=config.lenses)
    return [*drawn, "magnification", "arc_scale"]


def read_cutouts(cutouts: Path, rows, *, band: str) -> np.ndarray:
    """The ``band`` cutouts of plan ``rows`` (any order), read tile by tile."""
    result: np.ndarray | None = None
    for tile, part in rows.groupby("tile", sort=True):
        data = read_band_rows(cutouts, tile, band, part["row"].to_numpy())
        if result is None:
            result = np.empty((len(rows), *data.shape[1:]), dtype=np.float32)
        result[rows.index.get_indexer(part.index)] = data
    if result is None:
        raise ValueError("read_cutouts: no rows")
    return result


def make_examples(
    raw: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    config: SimulateConfig,
    pixel_scale: float,
    psf: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Training images from raw cutouts: arcs painted where ``labels == 1``, all normalised.

    Pure kernel of a batch.

    Parameters
    ----------
    raw : ndarray, shape (N, size, size), counts
        Real cutouts.
    labels : ndarray of int, shape (N,)
        1: paint a mock lens; 0: keep as a negative.
    rng : numpy.random.Generator
        The batch's generator (parameters, then Gaussian random fields).
    config : SimulateConfig
        Priors, supersampling.
    pixel_scale : float, arcsec / pixel
        Of the cutouts.
    psf : ndarray
        PSF image at ``pixel_scale``.

    Returns
    -------
    images : ndarray, shape (N, size, size), float32 in [0, 255]
    params : dict of str to ndarray, shape (N,)
        :func:`parameter_names` columns, NaN for negatives.
    """
    from lensdask.lensing.image import Grid
    from lensdask.lensing.mocks import draw_lenses, paint_arcs, render_arcs
    from lensdask.normalise import normalise_stamps

    positive = np.flatnonzero(labels == 1)
    drawn = draw_lenses(positive.size, rng, config=config.lenses)
    grid = Grid(raw.shape[-1], pixel_scale, config.supersample)
    arcs, magnification = render_arcs(drawn, rng, grid=grid, psf=psf, chunk=RENDER_CHUNK)
    images = raw.copy()
    images[positive], arc_scale = paint_arcs(raw[positive], arcs, drawn["arc_peak_ratio"])
    columns = {**drawn, "magnification": magnification, "arc_scale": arc_scale}
    params = {}
    for name, values in columns.items():
        full = np.full(labels.size, np.nan)
        full[positive] = values
        params[name] = full
    return normalise_stamps(images), params


def write_batch(
    batch: Batch,
    out: Path,
    *,
    unit: str,
    chash: str,
    lineage: dict[str, str],
    cutouts: Path,
    config: SimulateConfig,
    pixel_scale: float,
    psf: np.ndarray,
) -> dict[str, int]:
    """Make one batch and write it into its chunk of every array, then its marker."""
    clear_marker(out, unit)
    rows = batch.rows
    seed = np.random.SeedSequence([config.seed, SPLITS.index(batch.split), batch.index])
    images, params = make_examples(
        read_cutouts(cutouts, rows, band=config.band),
        rows["label"].to_numpy(),
        np.random.default_rng(seed),
        config=config,
        pixel_scale=pixel_scale,
        psf=psf,
    )
    arrays = {
        "images": images,
        "label": rows["label"].to_numpy(),
        "kind": rows["kind"].to_numpy(dtype=str),
        "source_id": rows["ID"].to_numpy(dtype=str),
        "source_tile": rows["tile"].to_numpy(dtype=str),
        **{f"params/{name}": values for name, values in params.items()},
    }
    files = write_batch_arrays(
        out, batch.split, index=batch.index, start=batch.start, arrays=arrays
    )
    positives = int(rows["label"].sum())
    write_marker(
        out,
        Marker(
            unit=unit,
            rows=len(rows),
            ids_hash=ids_hash(rows["ID"].astype(str)),
            config_hash=chash,
            inputs=lineage,
            files=files,
            extra={"positives": positives, "negatives": len(rows) - positives},
        ),
    )
    return {"rows": len(rows), "positives": positives}


def load_psf(config: SimulateConfig, *, pixel_scale: float) -> np.ndarray:
    """The PSF image arcs are convolved with: ``config.psf_image`` or a Moffat."""
    if config.psf_image is None:
        from lensdask.lensing.psf import moffat_psf

        return moffat_psf(config.psf_fwhm, pixel_scale=pixel_scale, beta=config.psf_beta)
    from astropy.io import fits

    psf = np.asarray(fits.getdata(config.psf_image), dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0 or not psf.sum() > 0:
        raise ValueError(
            f"simulate.psf_image: {config.psf_image} must hold a 2-d image with odd sides "
            f"and positive sum, got shape {psf.shape}"
        )
    return psf / psf.sum()


@dataclass(frozen=True)
class TrainsetReport(UnitCounts):
    """Outcome of :func:`simulate_lenses`."""

    out: Path
    counts: dict[str, dict[str, int]]
    """Examples per split and kind (``lens`` for mock lenses)."""
    plot: Path | None
    units: UnitReport
    left_out_bad: dict[str, int] = dataclasses.field(default_factory=dict)
    """Cutouts left out by kind, with more than ``max_bad_fraction`` bad pixels."""


def simulate_lenses(
    cutouts: str | Path,
    out: str | Path,
    *,
    config: SimulateConfig,
    client: Any,
    targets: str | Path | None = None,
    plot: str | Path | None = None,
    progress: bool = True,
) -> TrainsetReport:
    """Build a training set from a cutout store on the Dask cluster of ``client``.

    Parameters
    ----------
    cutouts : path
        The cutout store.
    out : path
        The training set to write (``trainset.zarr``, :mod:`lensdask.formats.trainset`).
    config : SimulateConfig
        Sizes, priors, PSF, batch size and seed.
    client : distributed.Client
        The injected Dask client; one task per batch.
    targets : path, optional
        The targets dataset (kinds from ``TRUE_TYPE`` in mock surveys).
    plot : path, optional
        Where to write the figure of example positives and negatives (default:
        ``<out>_examples.png`` next to ``out``).
    progress : bool
        Show a progress bar over batches.

    Returns
    -------
    TrainsetReport
    """
    cutouts, out = Path(cutouts), Path(out)
    inventory = cutout_inventory(cutouts, band=config.band, targets=targets)
    inventory, left_out_bad = leave_out_bad(inventory, max_bad_fraction=config.max_bad_fraction)
    if left_out_bad:
        logger.info(
            "simulate: left out %d cutouts with more than %.3g of bad pixels in %s (%s)",
            sum(left_out_bad.values()),
            config.max_bad_fraction,
            config.band,
            ", ".join(f"{n} {kind}" for kind, n in left_out_bad.items()),
        )
    notes: list[str] = []
    plan = plan_trainset(inventory, config=config, notes=notes)
    first = read_tile_attrs(cutouts, inventory["tile"].iloc[0])
    pixel_scale = float(first["pixel_scale"][config.band])
    size = int(first["size"])
    counts = {
        split: {str(k): int(v) for k, v in part["kind"].value_counts().sort_index().items()}
        for split, part in plan.groupby("split", sort=False)
    }
    settings = dataclasses.asdict(config)
    attrs = {
        "lensdask_version": __version__,
        "config": config_hash(config),
        "settings": settings,
        "plan_hash": plan_hash(plan),
        "counts": counts,
        "left_out_bad": left_out_bad,
        "band": config.band,
        "size": size,
        "pixel_scale": pixel_scale,
        "cutouts": str(cutouts.resolve()),
        "cutouts_units": read_manifest(cutouts).digest,
        "normalisation": NORMALISATION,
        "labels": {"1": "mock lens", "0": "real negative"},
    }
    attrs = jsonable(attrs)
    prepare_trainset(
        out,
        attrs=attrs,
        split_sizes=plan["split"].value_counts().to_dict(),
        chunk=config.batch_size,
        size=size,
        parameters=parameter_names(config),
    )
    batches = plan_batches(plan, batch_size=config.batch_size)
    chash = config_hash({"config": attrs["config"], "plan": attrs["plan_hash"]})
    # a changed cutout store remakes every batch: any batch may hold any tile's cutouts
    store = attrs["cutouts_units"]
    report = run_stage(
        client,
        write_batch,
        out,
        batches,
        chash=chash,
        lineage={batch: {"cutouts": store} for batch in batches},
        stage=STAGE,
        progress=progress,
        cutouts=cutouts,
        config=config,
        pixel_scale=pixel_scale,
        psf=load_psf(config, pixel_scale=pixel_scale),
    )
    if report.results or report.failures:  # they describe batches made now
        for note in notes:
            logger.warning("simulate: %s", note)
    plot_path = None
    if not report.failures:
        from lensdask.lensing.figures import plot_examples

        plot_path = Path(plot) if plot else out.with_name(out.stem + "_examples.png")
        plot_examples(out, plot_path)
    return TrainsetReport(
        out=out,
        counts=counts,
        plot=plot_path,
        units=report,
        left_out_bad=left_out_bad,
    )


def run(
    config: SimulateConfig,
    io: StageIO,
    *,
    client: Any,
    progress: bool = True,
    plot: Path | None = None,
) -> StageOutcome:
    """The ``simulate`` stage: :func:`simulate_lenses` from the ``cutouts`` (negatives
    picked with the ``targets`` where they exist)."""
    report = simulate_lenses(
        io.need("cutouts"),
        io.out("trainset"),
        config=config,
        client=client,
        targets=io.optional("targets"),
        plot=plot,
        progress=progress,
    )
    outcome = StageOutcome(reports=[report.units], outputs={"training set": report.out})
    for split, kinds in report.counts.items():
        parts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        outcome.lines.append(f"simulate: {split}: {parts}")
        outcome.counts[f"{split} examples"] = sum(kinds.values())
    if report.left_out_bad:
        parts = ", ".join(f"{n} {kind}" for kind, n in report.left_out_bad.items())
        outcome.lines.append(
            f"simulate: left out {sum(report.left_out_bad.values())} cutouts with more than "
            f"{config.max_bad_fraction:g} bad pixels in {config.band}: {parts}"
        )
    outcome.lines.append(
        f"simulate: {report.written} batches written, {report.skipped} already complete, "
        f"{len(report.units.failures)} failed -> {report.out}"
    )
    if report.plot is not None:
        outcome.outputs["training examples"] = report.plot
        outcome.lines.append(f"examples -> {report.plot}")
    return outcome
