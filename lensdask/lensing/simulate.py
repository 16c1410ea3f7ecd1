"""The training-set job: mock lenses painted on real LRG cutouts, and real negatives.

The training set's layout (``trainset.zarr``) is :mod:`lensdask.formats.trainset`. The
driver makes a plan: which cutout each example comes from and its label, from the run seed
alone. The test split's LRGs (its negatives, and the hosts of its mock lenses) are kept out
of the other splits, as are its negatives of other kinds (``test_negative_mix``: rings,
spirals, mergers beside the LRGs), so a large test split of real negatives costs no
simulation. Every example also records its host's selection quantities (seeing, magnitude,
size, neighbours: :data:`HOST_PARAMETERS`).

Each arc is convolved with the PSF of its host's tile in each band (``simulate.tile_psf``:
a Moffat of the FWHM the cutout store records, :mod:`lensdask.cutouts.psf`), or the
configured PSF where the tile records none. With several ``simulate.bands`` the images are
(size, size, B): the arc is the same lensed source in every band, its brightness set in
``simulate.band`` and scaled to the others by the source's colours (drawn like the mock
survey's lensed sources, :func:`lensdask.mock.population.colour_offset`), on the
assumption that the cutouts of every band share one photometric zeropoint (as the mock
survey's do). Each batch of ``batch_size`` examples is one
task that draws from ``SeedSequence([seed, split, batch])`` and writes exactly one chunk of
every array, then its marker; so the bytes are the same whatever the number of workers, and
a rerun redoes only the batches without a marker.
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
from lensdask.formats.parquet import read_rows
from lensdask.formats.targets import read_positions, read_truth
from lensdask.formats.trainset import SPLITS, prepare_trainset, write_batch_arrays
from lensdask.runner import UnitCounts, UnitReport, run_stage
from lensdask.selection import HOST_COLUMNS, host_properties
from lensdask.stages import StageIO, StageOutcome
from lensdask.storage import as_path
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
HOST_PARAMETERS = ("seeing", "host_mag", "host_size", "neighbours")
"""Quantities of every example, lens or not (``<split>/hosts/<name>``, NaN where unknown):
the selection quantities of :mod:`lensdask.selection` that are not the lens's."""
RENDER_CHUNK = 32
"""Mock lenses rendered at once inside a batch (bounds the memory of the ray grids)."""


class NoCutoutsError(FileNotFoundError):
    """The cutout store has no usable cutouts of a kind the training set needs."""


def cutout_inventory(
    cutouts: str | Path,
    *,
    band: str,
    targets: str | Path | None = None,
    bands: tuple[str, ...] | None = None,
):
    """Every clean cutout of a store with its kind, as a DataFrame sorted by (tile, row).

    A cutout is clean when it lies wholly inside its image (no NaN pixel in ``band``, nor
    in any of ``bands``). Its
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
    bands : tuple of str, optional
        Every band the training images take (default: ``band``).

    Returns
    -------
    pandas.DataFrame
        Columns ``ID``, ``tile``, ``row`` (index in the tile's group), ``kind`` and
        ``bad_fraction`` (of non-finite, zero-weight and flagged pixels, in the worst of
        ``bands``; :func:`leave_out_bad` drops the cutouts with too many).

    Raises
    ------
    NoCutoutsError
        If ``cutouts`` is not a cutout store or has no complete tile.
    KeyError
        If a tile lacks ``band`` or one of ``bands``.
    """
    import pandas as pd

    cutouts = as_path(cutouts)
    if not is_store(cutouts):
        raise NoCutoutsError(f"{cutouts}: not a cutout store (make one with `lensdask cutouts`)")
    tiles = complete_tiles(cutouts)
    if not tiles:
        raise NoCutoutsError(f"{cutouts}: no complete tile in the cutout store")
    wanted = list(dict.fromkeys((band, *(bands or ()))))
    frames = []
    for tile in tiles:
        has = list(read_tile_attrs(cutouts, tile)["bands"])
        missing = [name for name in wanted if name not in has]
        if missing:
            raise KeyError(f"{cutouts}/{tile}: no band(s) {missing} (has {has})")
        at = [has.index(name) for name in wanted]
        columns = read_tile_columns(cutouts, tile, ["ID", "sample", "edge", "nonfinite_fraction"])
        nonfinite_fraction = columns["nonfinite_fraction"][:, at].max(axis=1)
        bad = read_bad_fraction(cutouts, tile, fallback=columns["nonfinite_fraction"])
        frame = pd.DataFrame(
            {
                "ID": columns["ID"].astype(object),
                "tile": tile,
                "row": np.arange(nonfinite_fraction.size),
                "kind": columns["sample"].astype(object),
                "bad_fraction": bad[:, at].max(axis=1).astype(np.float64),
            }
        )
        frames.append(frame[(nonfinite_fraction == 0) & ~columns["edge"]])
    inventory = pd.concat(frames, ignore_index=True)
    if targets is not None:
        inventory = _apply_truth(inventory, as_path(targets))
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


def _shares(
    mix: dict[str, float], n: int, available: dict[str, int], notes: list[str], *, what: str
) -> dict[str, int]:
    """Number of ``n`` examples of each kind, from ``mix`` restricted to available kinds."""
    asked = list(mix)
    mix = {kind: share for kind, share in mix.items() if share > 0}
    missing = [kind for kind in mix if not available.get(kind)]
    if missing:
        notes.append(f"{what}: no cutouts of kind(s) {missing}; their share goes to the others")
    mix = {kind: share for kind, share in mix.items() if kind not in missing}
    if n and not mix:
        raise NoCutoutsError(f"{what}: none of the kinds {asked} has cutouts")
    total = sum(mix.values())
    quota = {kind: n * share / total for kind, share in mix.items()}
    counts = {kind: int(q + 1e-9) for kind, q in quota.items()}  # 5.999... is 6
    left = max(0, n - sum(counts.values()))
    # Largest remainders first, so every kind gets its share to within one.
    for kind in sorted(mix, key=lambda kind: counts[kind] - quota[kind])[:left]:
        counts[kind] += 1
    return counts


def _test_others(inventory, counts: dict[str, int], config: SimulateConfig, notes: list[str]):
    """The test split's negatives of kinds other than LRG: distinct cutouts of each kind,
    drawn from their own stream ``SeedSequence([seed, PLAN_STREAM, 1])`` so that the
    plan's other draws stay those of a test split of LRGs alone."""
    import pandas as pd

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, PLAN_STREAM, 1]))
    drawn = [inventory.iloc[:0]]
    for kind, n in counts.items():
        pool = inventory[inventory["kind"] == kind]
        if n > len(pool):
            notes.append(f"test split: {n} {kind} negatives asked, {len(pool)} cutouts: took all")
        drawn.append(pool.iloc[np.sort(rng.permutation(len(pool))[:n])])
    return pd.concat(drawn)


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
    test_counts = _shares(
        config.test_negative_mix,
        config.test_negatives or (-(-len(lrg) // 10) if config.test_positives else 0),
        # too few LRGs are refused below, naming the configuration keys
        inventory["kind"].value_counts().to_dict() | {"LRG": max(1, len(lrg))},
        notes,
        what="test split",
    )
    n_test = test_counts.pop("LRG", 0)
    test_others = _test_others(inventory, test_counts, config, notes)
    # the test split's cutouts of other kinds are kept out of the other splits too
    inventory = inventory.drop(index=test_others.index)
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
    counts = _shares(
        config.negative_mix,
        config.negatives,
        kinds.value_counts().to_dict(),
        notes,
        what="negatives",
    )
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
            test_others.assign(label=np.int8(0)),
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


def _tile_seeing(attrs: dict[str, Any], band: str) -> float:
    """A cutout tile's seeing in ``band`` (arcsec) from its ``seeing`` attribute (a number,
    or one per band), NaN where the store does not record it."""
    value = attrs.get("seeing")
    if isinstance(value, dict):
        value = value.get(band)
    return float(value) if isinstance(value, int | float) else float("nan")


def host_parameters(plan, *, cutouts: Path, targets: Path | None, band: str):
    """The :data:`HOST_PARAMETERS` of every example of a plan, NaN where unknown.

    ``seeing`` comes from the cutout tiles' ``seeing`` attribute where the store records
    it; ``host_mag``, ``host_size`` and ``neighbours`` from the targets
    (:func:`lensdask.selection.host_properties`) where they are given.

    Returns
    -------
    pandas.DataFrame
        On the plan's index, a float column per parameter.
    """
    import pandas as pd

    seeing = {
        tile: _tile_seeing(read_tile_attrs(cutouts, tile), band) for tile in plan["tile"].unique()
    }
    result = pd.DataFrame({"seeing": plan["tile"].map(seeing).astype(float)}, index=plan.index)
    for name in ("host_mag", "host_size", "neighbours"):
        result[name] = np.nan
    if targets is not None and len(plan):
        hosts = read_rows(targets, plan["ID"].unique().tolist(), list(HOST_COLUMNS))
        positioned = {"RAJ2000", "DECJ2000"} <= set(hosts)
        everyone = read_positions(targets) if positioned else None
        properties = host_properties(hosts.set_index("ID"), everyone)
        result.update(properties.reindex(plan["ID"]).set_axis(plan.index))
    return result[list(HOST_PARAMETERS)]


def host_psf_fwhm(plan, *, cutouts: Path, bands: tuple[str, ...]):
    """The PSF FWHM of every example's host tile in each band (arcsec; NaN where the tile
    records none), from the cutout store's ``seeing`` attributes.

    Returns
    -------
    pandas.DataFrame
        On the plan's index, a column ``psf_<band>`` per band.
    """
    import pandas as pd

    attrs = {tile: read_tile_attrs(cutouts, tile) for tile in plan["tile"].unique()}
    return pd.DataFrame(
        {
            f"psf_{band}": plan["tile"]
            .map({tile: _tile_seeing(tile_attrs, band) for tile, tile_attrs in attrs.items()})
            .astype(float)
            for band in bands
        },
        index=plan.index,
    )


def plan_hash(plan) -> str:
    """Short hash of a plan's content (splits, labels, kinds, source cutouts and the
    :data:`HOST_PARAMETERS` where the plan has them)."""
    digest = hashlib.sha256()
    hosts = [name for name in HOST_PARAMETERS if name in plan]
    for column in ("split", "label", "kind", "ID", "tile", "row", *hosts):
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
    colours = ["src_g_r", "src_r_i"] if len(config.channels) > 1 else []
    return [*drawn, *colours, "magnification", "arc_scale"]


def read_cutouts(cutouts: Path, rows, *, bands: tuple[str, ...]) -> np.ndarray:
    """The cutouts of plan ``rows`` (any order), read tile by tile: shape (N, size, size)
    of one band, (N, size, size, B) of several (in the order of ``bands``)."""
    result: np.ndarray | None = None
    for tile, part in rows.groupby("tile", sort=True):
        read = [read_band_rows(cutouts, tile, band, part["row"].to_numpy()) for band in bands]
        data = read[0] if len(bands) == 1 else np.stack(read, axis=-1)
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
    host_fwhm: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Training images from raw cutouts: arcs painted where ``labels == 1``, all normalised.

    Pure kernel of a batch.

    Parameters
    ----------
    raw : ndarray, shape (N, size, size) or (N, size, size, B), counts
        Real cutouts, in the bands ``config.channels``.
    labels : ndarray of int, shape (N,)
        1: paint a mock lens; 0: keep as a negative.
    rng : numpy.random.Generator
        The batch's generator (parameters, then Gaussian random fields).
    config : SimulateConfig
        Priors, supersampling.
    pixel_scale : float, arcsec / pixel
        Of the cutouts.
    psf : ndarray
        PSF image at ``pixel_scale``: the configured one, of every arc without ``host_fwhm``.
    host_fwhm : ndarray, shape (N, B), arcsec, optional
        The PSF FWHM of each example's host tile in each band (NaN: ``psf``); an arc is
        convolved with a Moffat of it (``config.psf_beta``).

    Returns
    -------
    images : ndarray, shape of ``raw``, float32 in [0, 255]
        Normalised by :func:`lensdask.normalise.normalise_stamps`, or with several bands
        :func:`lensdask.normalise.normalise_bands` (``config.normalise``).
    params : dict of str to ndarray, shape (N,)
        :func:`parameter_names` columns, NaN for negatives.
    """
    from lensdask.lensing.image import Grid
    from lensdask.lensing.mocks import draw_lenses, paint_arcs, render_arcs
    from lensdask.normalise import normalise_bands, normalise_stamps

    positive = np.flatnonzero(labels == 1)
    drawn = draw_lenses(positive.size, rng, config=config.lenses)
    grid = Grid(raw.shape[2], pixel_scale, config.supersample)
    fwhm = None if host_fwhm is None else np.asarray(host_fwhm, dtype=np.float64)[positive]
    if raw.ndim == 3 and (fwhm is None or np.isnan(fwhm).all()):
        # one band, one PSF: rendered and convolved chunk by chunk, as ever
        arcs, magnification = render_arcs(drawn, rng, grid=grid, psf=psf, chunk=RENDER_CHUNK)
        images = raw.copy()
        images[positive], arc_scale = paint_arcs(raw[positive], arcs, drawn["arc_peak_ratio"])
        colours = {}
    else:
        images, arc_scale, magnification, colours = paint_bands(
            raw, positive, drawn, rng, grid=grid, psf=psf, fwhm=fwhm, config=config
        )
    columns = {**drawn, **colours, "magnification": magnification, "arc_scale": arc_scale}
    params = {}
    for name, values in columns.items():
        full = np.full(labels.size, np.nan)
        full[positive] = values
        params[name] = full
    if images.ndim == 4:
        return normalise_bands(images, mode=config.normalise), params
    return normalise_stamps(images), params


def paint_bands(raw, positive, drawn, rng, *, grid, psf, fwhm, config: SimulateConfig):
    """:func:`make_examples`' arcs with a PSF per host (and band): rendered without a PSF,
    then each convolved with its host's PSF in each band; brightness set in ``config.band``,
    the other bands scaled by colours drawn after the rendering (so that the arcs of one
    band are those of a single-band training set of the same seed)."""
    from lensdask.lensing.mocks import paint_arcs, render_arcs
    from lensdask.mock.population import colour_offset

    unconvolved, magnification = render_arcs(drawn, rng, grid=grid, psf=None, chunk=RENDER_CHUNK)
    bands = config.channels
    stack = raw if raw.ndim == 4 else raw[..., None]
    if fwhm is None:
        fwhm = np.full((positive.size, len(bands)), np.nan)
    ref = bands.index(config.band)
    colours = {}
    if len(bands) > 1:
        colours["src_g_r"] = rng.uniform(*config.source_g_r, positive.size)
        colours["src_r_i"] = rng.uniform(*config.source_r_i, positive.size)
    images = stack.copy()
    arcs = host_convolved(unconvolved, fwhm[:, ref], fallback=psf, grid=grid, config=config)
    images[positive, ..., ref], arc_scale = paint_arcs(
        stack[positive, ..., ref], arcs, drawn["arc_peak_ratio"]
    )
    for k, band in enumerate(bands):
        if k == ref:
            continue
        offset = colour_offset(band, colours["src_g_r"], colours["src_r_i"]) - colour_offset(
            config.band, colours["src_g_r"], colours["src_r_i"]
        )
        scale = arc_scale * 10 ** (-0.4 * offset)
        arcs = host_convolved(unconvolved, fwhm[:, k], fallback=psf, grid=grid, config=config)
        images[positive, ..., k] = stack[positive, ..., k] + arcs * scale[:, None, None]
    return (images if raw.ndim == 4 else images[..., 0]), arc_scale, magnification, colours


def host_convolved(
    arcs: np.ndarray, fwhm: np.ndarray, *, fallback: np.ndarray, grid, config: SimulateConfig
) -> np.ndarray:
    """Each arc convolved with a Moffat PSF of its FWHM (``config.psf_beta``), or with
    ``fallback`` where the FWHM is NaN.

    Parameters
    ----------
    arcs : ndarray, shape (P, size, size)
        Unconvolved arcs.
    fwhm : ndarray, shape (P,), arcsec
    fallback : ndarray
        The configured PSF image.
    grid : lensdask.lensing.image.Grid
        The stamps' grid (its ``pixel_scale``).

    Returns
    -------
    ndarray, shape (P, size, size), float64
    """
    from lensdask.lensing.image import convolve
    from lensdask.lensing.psf import moffat_psf

    result = np.empty(arcs.shape, dtype=np.float64)
    keys = np.where(np.isfinite(fwhm), fwhm, -1.0)
    for value in np.unique(keys):  # a few tiles per batch: one kernel each
        chosen = keys == value
        kernel = (
            fallback
            if value < 0
            else moffat_psf(float(value), pixel_scale=grid.pixel_scale, beta=config.psf_beta)
        )
        result[chosen] = convolve(arcs[chosen], kernel)
    return result


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
    host_fwhm = None
    if config.tile_psf:
        host_fwhm = rows[[f"psf_{band}" for band in config.channels]].to_numpy(np.float64)
    images, params = make_examples(
        read_cutouts(cutouts, rows, bands=config.channels),
        rows["label"].to_numpy(),
        np.random.default_rng(seed),
        config=config,
        pixel_scale=pixel_scale,
        psf=psf,
        host_fwhm=host_fwhm,
    )
    arrays = {
        "images": images,
        "label": rows["label"].to_numpy(),
        "kind": rows["kind"].to_numpy(dtype=str),
        "source_id": rows["ID"].to_numpy(dtype=str),
        "source_tile": rows["tile"].to_numpy(dtype=str),
        **{f"params/{name}": values for name, values in params.items()},
        **{f"hosts/{name}": rows[name].to_numpy(float) for name in HOST_PARAMETERS},
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
    from lensdask.mock.population import colour_offset
    from lensdask.normalise import normalisation_name

    cutouts, out = as_path(cutouts), as_path(out)
    if len(config.channels) > 1:
        for band in config.channels:  # a band without a colour model fails before any task
            try:
                colour_offset(band, 0.0, 0.0)
            except ValueError as err:
                raise ValueError(f"simulate.bands: {err}") from None
    inventory = cutout_inventory(cutouts, band=config.band, targets=targets, bands=config.channels)
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
    plan = plan.join(host_parameters(plan, cutouts=cutouts, targets=targets, band=config.band))
    configured_psf = 0
    if config.tile_psf:
        plan = plan.join(host_psf_fwhm(plan, cutouts=cutouts, bands=config.channels))
        lenses = plan["label"].to_numpy() == 1
        unknown = plan[[f"psf_{band}" for band in config.channels]].isna().any(axis=1)
        configured_psf = int((lenses & unknown.to_numpy()).sum())
        if configured_psf:
            logger.info(
                "simulate: %d of %d mock lenses painted with the configured PSF: their "
                "host's tile records no PSF in one of %s",
                configured_psf,
                int(lenses.sum()),
                list(config.channels),
            )
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
        "bands": list(config.channels),
        "size": size,
        "pixel_scale": pixel_scale,
        "cutouts": str(cutouts.resolve()),
        "cutouts_units": read_manifest(cutouts).digest,
        "normalisation": normalisation_name(len(config.channels), config.normalise),
        "configured_psf_lenses": configured_psf,
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
        hosts=list(HOST_PARAMETERS),
        bands=len(config.channels),
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
