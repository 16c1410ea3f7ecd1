"""simulate_lenses on small synthetic cutout stores and a real LocalCluster.

References are independent of the job's own reading and writing: raw cutouts are read
back from the cutout store with zarr by (tile, ID), the store's arrays are compared file by
file, and the arcs of a batch are redrawn from ``SeedSequence([seed, split, batch])`` with
the kernels of :mod:`lensdask.lensing.mocks`.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from click.testing import CliRunner
from distributed import Client, LocalCluster
from hypothesis import example, given, settings
from hypothesis import strategies as st

import lensdask.cli
from lensdask.config import NEGATIVE_KINDS, SimulateConfig
from lensdask.formats.trainset import read_table
from lensdask.lensing.image import Grid
from lensdask.lensing.mocks import draw_lenses, paint_arcs, render_arcs
from lensdask.lensing.psf import moffat_psf
from lensdask.lensing.simulate import (
    SPLITS,
    NoCutoutsError,
    TrainsetReport,
    cutout_inventory,
    leave_out_bad,
    make_examples,
    parameter_names,
    plan_batches,
    plan_trainset,
    simulate_lenses,
)
from lensdask.normalise import normalise_stamps
from lensdask.runner import EXIT_PARTIAL, FAILURES_FILE
from lensdask.testing import write_cutout_store
from lensdask.units import MARKER_DIR

TILES = ("KIDS_1.0_0.5", "KIDS_2.0_0.5")
PER_TILE = {"LRG": 20, "BG": 10}
EDGE = 2
"""Edge cutouts per tile (factory rows after the clean ones): never in a training set."""
PIXEL_SCALE = 0.2
CONFIG = SimulateConfig(
    positives=24, negatives=16, test_positives=6, test_negatives=6, batch_size=8, seed=11
)
ARRAYS = ("images", "label", "kind", "source_id", "source_tile")


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two tiles of 20 LRG + 10 BG clean cutouts and 2 edge cutouts each."""
    path = tmp_path_factory.mktemp("cutouts") / "cutouts.zarr"
    return write_cutout_store(
        path, {tile: PER_TILE for tile in TILES}, edge=EDGE, pixel_scale=PIXEL_SCALE, seed=5
    )


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory, client) -> TrainsetReport:
    """The reference run of CONFIG on the session's two-worker cluster (do not modify)."""
    out = tmp_path_factory.mktemp("reference") / "trainset.zarr"
    report = simulate_lenses(store, out, config=CONFIG, client=client, progress=False)
    assert report.units.ok, report.units.failures
    return report


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger onto CliRunner's streams: undo it afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("lensdask")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    ours.setLevel(our_level)


def read_split(out: Path, split: str) -> dict[str, np.ndarray]:
    """Every array of a split, read with zarr (params by their column names)."""
    group = zarr.open_group(str(out / split), mode="r")
    arrays = {name: group[name][:] for name in ARRAYS}
    for name in group["params"].attrs["columns"]:
        arrays[f"params/{name}"] = group["params"][name][:]
    return arrays


def split_files(out: Path) -> dict[str, bytes]:
    """Content of every file under the splits' folders, by path relative to ``out``."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for split in SPLITS
        for path in sorted((out / split).rglob("*"))
        if path.is_file()
    }


class RawCutouts:
    """Raw cutouts read straight from the cutout store with zarr, by (tile, ID)."""

    def __init__(self, store: Path, band: str = "r") -> None:
        self.store, self.band = store, band
        self.tiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def tile(self, tile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if tile not in self.tiles:
            group = zarr.open_group(str(self.store / tile), mode="r")
            self.tiles[tile] = (group["ID"][:], group["sample"][:], group[self.band][:])
        return self.tiles[tile]

    def row(self, tile: str, source_id: str) -> int:
        ids = self.tile(tile)[0]
        (where,) = np.nonzero(ids == source_id)
        assert where.size == 1, f"{source_id} found {where.size} times in {tile}"
        return int(where[0])

    def sample(self, tile: str, source_id: str) -> str:
        return str(self.tile(tile)[1][self.row(tile, source_id)])

    def image(self, tile: str, source_id: str) -> np.ndarray:
        return self.tile(tile)[2][self.row(tile, source_id)]

    def images(self, tiles, ids) -> np.ndarray:
        return np.stack([self.image(t, i) for t, i in zip(tiles, ids, strict=True)])


def n_batches(config: SimulateConfig) -> dict[str, int]:
    n_fit = config.positives + config.negatives
    n_val = round(config.validation_fraction * n_fit)
    sizes = {"train": n_fit - n_val, "val": n_val, "test": config.test_positives}
    sizes["test"] += config.test_negatives
    return {split: -(-n // config.batch_size) for split, n in sizes.items()}


# --- split sizes, leakage, provenance ------------------------------------------------------


def test_split_sizes_and_composition(reference):
    out = reference.out
    n_fit = CONFIG.positives + CONFIG.negatives
    n_val = round(CONFIG.validation_fraction * n_fit)
    tables = {split: read_table(out, split) for split in SPLITS}
    assert {split: len(table) for split, table in tables.items()} == {
        "train": n_fit - n_val,
        "val": n_val,
        "test": CONFIG.test_positives + CONFIG.test_negatives,
    }
    fit = pd.concat([tables["train"], tables["val"]])
    assert (fit["label"] == 1).sum() == CONFIG.positives
    assert (fit["label"] == 0).sum() == CONFIG.negatives
    assert (tables["test"]["label"] == 1).sum() == CONFIG.test_positives
    assert (tables["test"]["label"] == 0).sum() == CONFIG.test_negatives
    for split, table in tables.items():
        arrays = read_split(out, split)
        assert {len(values) for values in arrays.values()} == {len(table)}, split
        assert arrays["label"].dtype == np.int8 and set(arrays["label"]) <= {0, 1}
        # kind "lens" exactly for the mock lenses; the store's counts are the report's
        assert ((table["kind"] == "lens") == (table["label"] == 1)).all()
        counts = {str(k): int(v) for k, v in table["kind"].value_counts().items()}
        assert reference.counts[split] == counts
    assert zarr.open_group(str(out), mode="r").attrs["counts"] == reference.counts
    assert (tables["test"]["kind"][tables["test"]["label"] == 0] == "LRG").all()
    batches = n_batches(CONFIG)
    assert reference.written == sum(batches.values()) and reference.skipped == 0
    markers = sorted(path.stem for path in (out / MARKER_DIR).glob("*.json"))
    assert markers == sorted(f"{s}-{k:05d}" for s, n in batches.items() for k in range(n))


def test_test_split_is_kept_out_of_training(reference):
    tables = {split: read_table(reference.out, split) for split in SPLITS}
    test = tables["test"]
    negatives = test.loc[test["label"] == 0, "source_id"]
    assert negatives.is_unique
    hosts = test.loc[test["label"] == 1, "source_id"]
    assert set(hosts) <= set(negatives)
    fit_ids = set(tables["train"]["source_id"]) | set(tables["val"]["source_id"])
    assert not fit_ids & set(test["source_id"])
    # IDs embed the tile in the factory, so no two tiles share one: ID alone identifies
    assert all(
        tile in sid for sid, tile in zip(test["source_id"], test["source_tile"], strict=True)
    )


def test_provenance_of_every_example(reference, store):
    names = parameter_names(CONFIG)
    priors = CONFIG.lenses
    raw = RawCutouts(store)
    for split in SPLITS:
        table = read_table(reference.out, split)
        assert list(table.columns[4:]) == names
        lens = table["label"].to_numpy() == 1
        values = table[names].to_numpy()
        assert np.isfinite(values[lens]).all(), split
        assert np.isnan(values[~lens]).all(), split
        for tile, sid, kind in zip(
            table["source_tile"], table["source_id"], table["kind"], strict=True
        ):
            sample = raw.sample(tile, sid)  # asserts the ID exists, once, in that tile
            assert sample == ("LRG" if kind == "lens" else kind), (tile, sid, kind)
        lenses = table[lens]
        theta = lenses["theta_E"]
        assert ((theta >= priors.theta_E[0]) & (theta <= priors.theta_E[1])).all()
        assert (lenses["magnification"] > 0).all()
        assert (lenses["arc_scale"] > 0).all()
        ratio = lenses["arc_peak_ratio"]
        assert ((ratio >= priors.arc_peak_ratio[0]) & (ratio <= priors.arc_peak_ratio[1])).all()
        amps = lenses[[f"clump{k}_amp" for k in range(priors.clumps[1])]].to_numpy()
        drawn = (amps > 0).sum(axis=1)
        # the drawn clumps come first: zero amplitude beyond the drawn count
        assert ((amps > 0) == (np.arange(amps.shape[1]) < drawn[:, None])).all()
        assert ((drawn >= priors.clumps[0]) & (drawn <= priors.clumps[1])).all()
        low, high = priors.clump_contrast
        assert ((amps[amps > 0] >= low) & (amps[amps > 0] <= high)).all()


def test_edge_cutouts_never_used(reference, store):
    edge_ids = set()
    for tile in TILES:
        group = zarr.open_group(str(store / tile), mode="r")
        flagged = group["ID"][:][group["edge"][:]]
        assert len(flagged) == EDGE
        edge_ids |= set(flagged)
    for split in SPLITS:
        assert not edge_ids & set(read_table(reference.out, split)["source_id"])
    inventory = cutout_inventory(store, band="r")
    assert len(inventory) == len(TILES) * sum(PER_TILE.values())
    assert not edge_ids & set(inventory["ID"])


# --- pixels ----------------------------------------------------------------------------------


def test_pixels_negatives_are_normalised_raw_cutouts(reference, store):
    raw = RawCutouts(store)
    for split in SPLITS:
        arrays = read_split(reference.out, split)
        images, labels = arrays["images"], arrays["label"]
        assert images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 255
        originals = normalise_stamps(raw.images(arrays["source_tile"], arrays["source_id"]))
        negative = labels == 0
        np.testing.assert_array_equal(images[negative], originals[negative])
        # every positive is its host plus an arc: not the normalised host
        for image, host in zip(images[~negative], originals[~negative], strict=True):
            assert np.abs(image - host).max() > 1.0
        # each stamp spans [0, 255] (the max to float32 rounding): the min-max normalisation
        assert (images.min(axis=(1, 2)) == 0).all()
        np.testing.assert_allclose(images.max(axis=(1, 2)), 255, rtol=1e-6)


@pytest.mark.parametrize(("split", "batch"), [("train", 1), ("test", 0)])
def test_positives_redrawn_from_the_batch_seed(reference, store, split, batch):
    """The arcs of batch ``batch`` drawn again from SeedSequence([seed, split, batch])."""
    arrays = read_split(reference.out, split)
    part = slice(batch * CONFIG.batch_size, (batch + 1) * CONFIG.batch_size)
    arrays = {name: values[part] for name, values in arrays.items()}
    positive = np.flatnonzero(arrays["label"] == 1)
    assert positive.size > 0
    raw = RawCutouts(store).images(arrays["source_tile"], arrays["source_id"])
    seed = np.random.SeedSequence([CONFIG.seed, SPLITS.index(split), batch])
    rng = np.random.default_rng(seed)
    drawn = draw_lenses(positive.size, rng, config=CONFIG.lenses)
    grid = Grid(raw.shape[-1], PIXEL_SCALE, CONFIG.supersample)
    psf = moffat_psf(CONFIG.psf_fwhm, pixel_scale=PIXEL_SCALE, beta=CONFIG.psf_beta)
    arcs, magnification = render_arcs(drawn, rng, grid=grid, psf=psf)
    painted, scale = paint_arcs(raw[positive], arcs, drawn["arc_peak_ratio"])
    np.testing.assert_array_equal(arrays["images"][positive], normalise_stamps(painted))
    for name, values in drawn.items():
        np.testing.assert_array_equal(arrays[f"params/{name}"][positive], values, err_msg=name)
    np.testing.assert_array_equal(arrays["params/magnification"][positive], magnification)
    np.testing.assert_array_equal(arrays["params/arc_scale"][positive], scale)


def test_make_examples_paints_only_the_positives():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:41, :41] - 20
    raw = 100 * np.exp(-(xx**2 + yy**2) / 8.0)[None] + rng.standard_normal((5, 41, 41))
    raw = raw.astype(np.float32)
    labels = np.array([0, 1, 0, 1, 1])
    psf = moffat_psf(0.7, pixel_scale=0.2)
    images, params = make_examples(
        raw, labels, np.random.default_rng(0), config=CONFIG, pixel_scale=0.2, psf=psf
    )
    assert images.shape == raw.shape and images.dtype == np.float32
    np.testing.assert_array_equal(images[labels == 0], normalise_stamps(raw[labels == 0]))
    assert not np.array_equal(images[labels == 1], normalise_stamps(raw[labels == 1]))
    assert list(params) == parameter_names(CONFIG)
    for name, values in params.items():
        assert values.shape == (5,), name
        assert np.isnan(values[labels == 0]).all() and np.isfinite(values[labels == 1]).all(), name


# --- determinism and resume ------------------------------------------------------------------


def test_same_bytes_whatever_the_worker_count(reference, store, tmp_path):
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as one,
    ):
        assert len(one.scheduler_info()["workers"]) == 1
        report = simulate_lenses(
            store, tmp_path / "one.zarr", config=CONFIG, client=one, progress=False
        )
    assert report.units.ok
    two, single = split_files(reference.out), split_files(report.out)
    assert sum("/images/c/" in name for name in two) == sum(n_batches(CONFIG).values())
    assert two.keys() == single.keys()
    different = [name for name in two if two[name] != single[name]]
    assert not different


def test_resume_redoes_only_the_missing_batch(reference, store, client, tmp_path):
    out = tmp_path / "trainset.zarr"
    shutil.copytree(reference.out, out)
    total = sum(n_batches(CONFIG).values())
    (out / MARKER_DIR / "train-00001.json").unlink()
    chunk = out / "train" / "images" / "c" / "1" / "0" / "0"
    chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    assert split_files(out) != split_files(reference.out)

    again = simulate_lenses(store, out, config=CONFIG, client=client, progress=False)
    assert again.units.ok
    assert list(again.units.results) == ["train-00001"]
    assert (again.written, again.skipped) == (1, total - 1)
    assert split_files(out) == split_files(reference.out)

    nothing = simulate_lenses(store, out, config=CONFIG, client=client, progress=False)
    assert (nothing.written, nothing.skipped) == (0, total)

    reseeded = replace(CONFIG, seed=CONFIG.seed + 1)
    other = simulate_lenses(store, out, config=reseeded, client=client, progress=False)
    assert other.units.ok
    assert (other.written, other.skipped) == (total, 0)
    assert zarr.open_group(str(out), mode="r").attrs["settings"]["seed"] == reseeded.seed
    for split in SPLITS:
        new, old = read_split(out, split), read_split(reference.out, split)
        assert not np.array_equal(new["images"], old["images"]), split


# --- failures ----------------------------------------------------------------------------------


def test_a_failed_batch_is_reported_and_the_rest_complete(tmp_path, client, restore_logging):
    tiles = [f"KIDS_{k}.0_0.5" for k in range(12)]
    store = write_cutout_store(tmp_path / "c.zarr", {t: {"LRG": 4, "BG": 2} for t in tiles})
    config = replace(CONFIG, positives=16, negatives=8, test_positives=4, test_negatives=4)
    plan = plan_trainset(cutout_inventory(store, band="r"), config=config)
    batches = plan_batches(plan, batch_size=config.batch_size)
    readers = {t: {u for u, b in batches.items() if t in set(b.rows["tile"])} for t in tiles}
    broken = min((t for t in tiles if readers[t]), key=lambda t: len(readers[t]))
    expected = readers[broken]
    assert 0 < len(expected) < len(batches)
    backup = tmp_path / "backup"
    shutil.move(store / broken / "r", backup)  # the tile's r cutouts are gone

    out = tmp_path / "trainset.zarr"
    report = simulate_lenses(store, out, config=config, client=client, progress=False)
    assert {failure.unit for failure in report.units.failures} == expected
    assert all("FileNotFoundError" in failure.error for failure in report.units.failures)
    assert report.written == len(batches) - len(expected) and report.skipped == 0
    assert report.plot is None
    markers = {path.stem for path in (out / MARKER_DIR).glob("*.json")}
    assert markers == set(batches) - expected
    with (out / FAILURES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["unit"] for row in rows} == expected
    assert {row["stage"] for row in rows} == {"simulate"}

    address = client.scheduler.address
    args = ["simulate", str(store), "--out", str(out), "--cluster", address, "--no-progress"]
    sizes = ["--positives", "16", "--negatives", "8", "--test-positives", "4"]
    sizes += ["--test-negatives", "4", "--batch-size", "8", "--seed", str(CONFIG.seed)]
    result = CliRunner().invoke(lensdask.cli.main, args + sizes)
    assert result.exit_code == EXIT_PARTIAL, result.output
    for unit in expected:
        assert f"FAILED simulate {unit}" in result.output

    shutil.move(backup, store / broken / "r")
    fixed = simulate_lenses(store, out, config=config, client=client, progress=False)
    assert fixed.units.ok
    assert set(fixed.units.results) == expected
    assert fixed.skipped == len(batches) - len(expected)
    assert not (out / FAILURES_FILE).exists()
    assert fixed.plot is not None and fixed.plot.is_file()


# --- errors -------------------------------------------------------------------------------


def test_cutouts_with_bad_pixels_are_left_out_and_counted(tmp_path, client):
    """6 cutouts per tile with half their pixels bad (zero weight, flagged): neither
    negatives nor lens hosts, and counted; a looser max_bad_fraction keeps them."""
    store = write_cutout_store(
        tmp_path / "c.zarr", {tile: PER_TILE for tile in TILES}, pixel_scale=PIXEL_SCALE, bad=6
    )
    bad_ids = set()
    for tile in TILES:
        group = zarr.open_group(str(store / tile), mode="r")
        bad_ids |= set(group["ID"][:][group["bad_fraction"][:, 0] > CONFIG.max_bad_fraction])
    assert len(bad_ids) == 6 * len(TILES)
    report = simulate_lenses(
        store, tmp_path / "t.zarr", config=CONFIG, client=client, progress=False
    )
    assert report.units.ok
    assert report.left_out_bad == {"LRG": 6 * len(TILES)}  # the first cutouts are LRGs
    for split in SPLITS:
        assert not bad_ids & set(read_table(report.out, split)["source_id"])
    assert zarr.open_group(str(report.out), mode="r").attrs["left_out_bad"] == {"LRG": 12}
    loose = replace(CONFIG, max_bad_fraction=0.5)
    inventory = cutout_inventory(store, band="r")
    assert bad_ids <= set(inventory["ID"])  # the inventory lists them with their fraction
    kept, left_out = leave_out_bad(inventory, max_bad_fraction=loose.max_bad_fraction)
    assert left_out == {} and len(kept) == len(inventory)


def test_not_a_cutout_store(tmp_path, client):
    folder = tmp_path / "not-a-store"
    folder.mkdir()
    with pytest.raises(NoCutoutsError, match="not a cutout store") as caught:
        simulate_lenses(folder, tmp_path / "t.zarr", config=CONFIG, client=client)
    assert str(folder) in str(caught.value)
    assert not (tmp_path / "t.zarr").exists()


def test_store_without_lrgs(tmp_path, client):
    store = write_cutout_store(tmp_path / "c.zarr", {"KIDS_1.0_0.5": {"BG": 30}})
    with pytest.raises(NoCutoutsError, match="0 clean LRGs"):
        simulate_lenses(store, tmp_path / "t.zarr", config=CONFIG, client=client)
    assert not (tmp_path / "t.zarr").exists()


def test_too_few_lrgs_for_the_test_split(tmp_path, client):
    """5 clean LRGs (and 20 edge ones that do not count) for 6 test negatives."""
    store = write_cutout_store(tmp_path / "c.zarr", {"KIDS_1.0_0.5": {"LRG": 5, "BG": 30}}, edge=20)
    with pytest.raises(NoCutoutsError) as caught:
        simulate_lenses(store, tmp_path / "t.zarr", config=CONFIG, client=client)
    message = str(caught.value)
    assert "simulate.test_negatives" in message
    assert "5 clean LRGs" in message and f"= {CONFIG.test_negatives}" in message


# --- kinds from the truth of a mock survey ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    negatives=st.integers(0, 60),
    shares=st.lists(st.integers(0, 100), min_size=5, max_size=5).filter(any),
    seed=st.integers(0, 2**32 - 1),
)
@example(negatives=10, shares=[50, 30, 8, 6, 6], seed=0)  # the default mix
@example(negatives=16, shares=[50, 30, 0, 0, 0], seed=0)  # 16 * 0.3 / 0.8 == 5.999...
def test_plan_follows_the_negative_mix(negatives, shares, seed):
    """Each kind gets its share of the negatives to within one (largest remainders)."""
    mix = dict(zip(NEGATIVE_KINDS, (s / 100 for s in shares), strict=True))
    inventory = pd.DataFrame(
        {
            "ID": [f"G{k:03d}" for k in range(100)],
            "tile": "T",
            "row": np.arange(100),
            "kind": np.repeat(NEGATIVE_KINDS, 20),
        }
    )
    config = SimulateConfig(
        positives=5,
        negatives=negatives,
        test_positives=3,
        test_negatives=4,
        negative_mix=mix,
        seed=seed,
    )
    plan = plan_trainset(inventory, config=config)
    fit = plan[(plan["split"] != "test") & (plan["label"] == 0)]
    counts = fit["kind"].value_counts()
    total = sum(mix.values())
    assert len(fit) == negatives
    for kind, share in mix.items():
        assert abs(counts.get(kind, 0) - negatives * share / total) < 1, (kind, counts)


def test_kinds_from_the_truth_of_a_mock_survey(tmp_path, client):
    counts = {tile: {"LRG": 20, "BG": 24} for tile in TILES}
    store = write_cutout_store(tmp_path / "c.zarr", counts)
    truth = []
    for tile in TILES:
        group = zarr.open_group(str(store / tile), mode="r")
        for k, (sid, sample) in enumerate(zip(group["ID"][:], group["sample"][:], strict=True)):
            kind = "red" if sample == "LRG" else ("spiral", "ring", "merger", "blue")[k % 4]
            truth.append({"ID": str(sid), "TRUE_TYPE": kind, "TRUE_LENS": k % 7 == 3})
    truth = pd.DataFrame(truth)
    targets = tmp_path / "targets.parquet"
    targets.mkdir()
    pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), targets / "part-0.parquet")
    lenses = set(truth.loc[truth["TRUE_LENS"], "ID"])
    assert truth.loc[truth["TRUE_LENS"], "TRUE_TYPE"].nunique() > 1  # LRGs and others

    config = replace(
        CONFIG, positives=8, negatives=50, test_positives=4, test_negatives=4, batch_size=16
    )
    report = simulate_lenses(
        store, tmp_path / "t.zarr", config=config, client=client, targets=targets, progress=False
    )
    assert report.units.ok
    tables = pd.concat([read_table(report.out, split).assign(split=split) for split in SPLITS])
    assert not lenses & set(tables["source_id"])
    true_type = truth.set_index("ID")["TRUE_TYPE"]
    negatives = tables[(tables["split"] != "test") & (tables["label"] == 0)]
    assert len(negatives) == config.negatives
    kinds = negatives["kind"].value_counts()
    total = sum(config.negative_mix.values())
    for kind, share in config.negative_mix.items():
        assert abs(kinds.get(kind, 0) - config.negatives * share / total) < 1, kind
    assert {"spiral", "ring", "merger"} <= set(kinds.index)
    for sid, kind in zip(negatives["source_id"], negatives["kind"], strict=True):
        if kind in ("spiral", "ring", "merger"):
            assert true_type[sid] == kind
        else:
            assert true_type[sid] == ("red" if kind == "LRG" else "blue")


# --- the command -------------------------------------------------------------------------------


def test_cli_simulate(reference, store, tmp_path, restore_logging):
    import matplotlib.image

    out = tmp_path / "cli.zarr"
    args = ["simulate", str(store), "--out", str(out), "--no-progress", "--workers", "1"]
    args += ["--dashboard-address", "127.0.0.1:0"]
    sizes = {
        "--positives": CONFIG.positives,
        "--negatives": CONFIG.negatives,
        "--test-positives": CONFIG.test_positives,
        "--test-negatives": CONFIG.test_negatives,
        "--batch-size": CONFIG.batch_size,
        "--seed": CONFIG.seed,
    }
    for option, value in sizes.items():
        args += [option, str(value)]
    result = CliRunner().invoke(lensdask.cli.main, args)
    assert result.exit_code == 0, result.output
    assert "Dask dashboard: http://127.0.0.1:" in result.output
    for split in SPLITS:
        kinds = read_table(out, split)["kind"].value_counts().sort_index()
        line = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        assert f"simulate: {split}: {line}\n" in result.output
    total = sum(n_batches(CONFIG).values())
    assert f"simulate: {total} batches written, 0 already complete, 0 failed" in result.output
    # the command's job is the library's: the same bytes as the reference run
    assert split_files(out) == split_files(reference.out)

    png = tmp_path / "cli_examples.png"
    assert f"examples -> {png}" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plan_warnings_only_where_batches_are_made(tmp_path, client, caplog):
    store = write_cutout_store(tmp_path / "c.zarr", {"KIDS_1.0_0.5": {"LRG": 10, "BG": 5}})
    config = replace(CONFIG, positives=24, negatives=8, test_positives=2, test_negatives=2)
    out = tmp_path / "trainset.zarr"

    def warnings() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lensdask"):
            simulate_lenses(store, out, config=config, client=client, progress=False)
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    first = warnings()
    assert any("LRG lens hosts examples from 8 cutouts: reused" in w for w in first), first
    assert warnings() == []  # a rerun that makes nothing has nothing to warn about
